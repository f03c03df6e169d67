#!/usr/bin/env python3
"""Mixed DIMSE + STOW-RS load for tramy's crash tests: two senders (pynetdicom C-STORE on one
association at a time, and single-part STOW-RS POSTs with requests) send fresh copies of
--template until --stop-file exists. After each success each appends "SOP_UID SHA256_OF_DATASET"
to --ack-file and fsyncs it, so the file lists exactly what tramy acknowledged even when the server
is killed mid-request. Connection failures (the server being restarted) are retried.

Prints one JSON document on stdout at the end: counts per protocol.
"""
import argparse
import copy
import hashlib
import json
import os
import threading
import time

import requests
import tramy_auth  # noqa: F401  (sends TRAMY_TOKEN)
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dimse_client import nodelay, send_raw

LOCK = threading.Lock()


def fresh(template, study):
    # A deep copy: Dataset.copy() shares elements with the template, and two sender threads
    # would then write each other's UIDs.
    ds = copy.deepcopy(template)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    write_dataset(buf, ds)
    return ds, buf.getvalue()


def ack(path, uid, raw):
    with LOCK, open(path, "a") as f:
        f.write(f"{uid} {hashlib.sha256(raw).hexdigest()}\n")
        f.flush()
        os.fsync(f.fileno())


def dimse_sender(a, template, counts):
    ae = AE(ae_title="LOADDIMSE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(template.SOPClassUID, ExplicitVRLittleEndian)
    study = generate_uid()
    while not os.path.exists(a.stop_file):
        assoc = ae.associate("127.0.0.1", a.dimse_port, ae_title="TRAMY")
        if not assoc.is_established:
            time.sleep(0.2)
            continue
        nodelay(assoc)
        cx = assoc.accepted_contexts[0]
        message_id = 0
        while not os.path.exists(a.stop_file):
            ds, raw = fresh(template, study)
            message_id = message_id % 65535 + 1
            try:
                status, _ = send_raw(assoc, cx.context_id, ds.SOPClassUID, ds.SOPInstanceUID, raw, message_id)
            except Exception:
                break
            if status is None:
                break
            if status == 0:
                ack(a.ack_file, ds.SOPInstanceUID, raw)
                counts["dimse"] += 1
        try:
            assoc.release()
        except Exception:
            pass


def part10(ds, raw):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue() + raw


def stow_sender(a, template, counts):
    url = f"http://127.0.0.1:{a.http_port}/dicomweb/studies"
    boundary = "mixed-load-boundary-41"
    study = generate_uid()
    session = requests.Session()
    while not os.path.exists(a.stop_file):
        ds, raw = fresh(template, study)
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + part10(ds, raw)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        try:
            r = session.post(
                url,
                data=body,
                headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                    "Accept": "application/dicom+json",
                },
                timeout=10,
            )
        except requests.RequestException:
            session = requests.Session()
            time.sleep(0.2)
            continue
        if r.status_code == 200:
            ack(a.ack_file, ds.SOPInstanceUID, raw)
            counts["stow"] += 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dimse-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--template", required=True)
    p.add_argument("--ack-file", required=True)
    p.add_argument("--stop-file", required=True)
    a = p.parse_args()
    template = dcmread(a.template)
    counts = {"dimse": 0, "stow": 0}
    threads = [
        threading.Thread(target=dimse_sender, args=(a, template, counts)),
        threading.Thread(target=stow_sender, args=(a, template, counts)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
