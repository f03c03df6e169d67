#!/usr/bin/env python3
"""pynetdicom-based helpers for tramy's integration tests, for what the stock pynetdicom apps
cannot do: retrieve with exact transfer syntaxes, send deliberately malformed C-STOREs, and stream
C-STOREs while recording each acknowledgement durably.

Every subcommand prints one JSON document on stdout.
"""
import argparse
import hashlib
import io
import json
import os
import pathlib
import socket
import sys

from pydicom import dcmread
from pydicom.uid import generate_uid
import time

from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

ALL_NATIVE_AND_COMPRESSED = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
]


def nodelay(assoc):
    try:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception:
        pass


def cmd_get_exact(a):
    """C-GET each study, proposing one presentation context per (SOP class, transfer syntax) so
    tramy can send every instance in the syntax it was stored in; writes the raw data set bytes."""
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    received = {}

    def on_store(event):
        raw = event.request.DataSet.getvalue()
        uid = event.request.AffectedSOPInstanceUID
        (out / f"{uid}.raw").write_bytes(raw)
        received[uid] = event.context.transfer_syntax
        return 0x0000

    ae = AE(ae_title="GETEXACT")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 90
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    classes = sorted(set(a.sop_class))
    for cls in classes:
        for ts in ALL_NATIVE_AND_COMPRESSED:
            if len(ae.requested_contexts) < 127:
                ae.add_requested_context(cls, ts)
        roles.append(build_role(cls, scp_role=True))
    assoc = ae.associate(a.host, a.port, ae_title=a.aec, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}))
        return 1
    nodelay(assoc)
    statuses = []
    from pydicom.dataset import Dataset
    for study in a.study:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = study
        for status, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
            if status:
                statuses.append(status.Status)
    assoc.release()
    print(json.dumps({"final_statuses": statuses, "received": received}))
    return 0


def send_raw(assoc, context_id, sop_class, sop_instance, raw, message_id=1):
    req = C_STORE()
    req.MessageID = message_id
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_instance
    req.Priority = 0
    req.DataSet = io.BytesIO(raw)
    # Pause the association's reactor as pynetdicom's own send_c_store does, or it may take the
    # response off the queue before we read it.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:
        return None, None
    return rsp.Status, getattr(rsp, "ErrorComment", None)


def cmd_send_raw(a):
    """Sends one C-STORE whose data set is the bytes of --dataset-file, on a context negotiated for
    --sop-class with transfer syntax --ts."""
    raw = pathlib.Path(a.dataset_file).read_bytes()
    ae = AE(ae_title="BADSENDER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 90
    ae.add_requested_context(a.sop_class, a.ts)
    assoc = ae.associate(a.host, a.port, ae_title=a.aec)
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}))
        return 1
    cx = [c for c in assoc.accepted_contexts if c.abstract_syntax == a.sop_class][0]
    status, comment = send_raw(assoc, cx.context_id, a.sop_class, a.sop_instance, raw)
    assoc.release()
    print(json.dumps({"status": status, "error_comment": str(comment) if comment else None}))
    return 0


def cmd_stream(a):
    """Sends --count copies of --template, each with fresh Series/SOP Instance UIDs, one at a time;
    after each success status appends "SOP_UID SHA256_OF_DATASET" to --ack-file and fsyncs it, so
    the file lists exactly what tramy acknowledged even if the server dies mid-stream."""
    template = dcmread(a.template)
    study = generate_uid()
    series = generate_uid()
    ae = AE(ae_title="STREAMER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 90
    ts = template.file_meta.TransferSyntaxUID
    ae.add_requested_context(template.SOPClassUID, ts)
    assoc = ae.associate(a.host, a.port, ae_title=a.aec)
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}))
        return 1
    nodelay(assoc)
    cx = assoc.accepted_contexts[0]
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    acked = 0
    with open(a.ack_file, "a") as ack:
        for i in range(a.count):
            ds = template.copy()
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = i + 1
            buf = DicomBytesIO()
            buf.is_little_endian = True
            buf.is_implicit_VR = ts == "1.2.840.10008.1.2"
            write_dataset(buf, ds)
            raw = buf.getvalue()
            try:
                status, _ = send_raw(assoc, cx.context_id, ds.SOPClassUID, ds.SOPInstanceUID, raw, i % 65535 + 1)
            except Exception:
                break
            if status is None:
                break
            if status == 0:
                ack.write(f"{ds.SOPInstanceUID} {hashlib.sha256(raw).hexdigest()}\n")
                ack.flush()
                os.fsync(ack.fileno())
                acked += 1
    try:
        assoc.release()
    except Exception:
        pass
    print(json.dumps({"acknowledged": acked}))
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--aec", default="TRAMY")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get-exact")
    g.add_argument("--out", required=True)
    g.add_argument("--study", action="append", required=True)
    g.add_argument("--sop-class", action="append", required=True)
    r = sub.add_parser("send-raw")
    r.add_argument("--sop-class", required=True)
    r.add_argument("--sop-instance", required=True)
    r.add_argument("--ts", required=True)
    r.add_argument("--dataset-file", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--template", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--ack-file", required=True)
    a = p.parse_args()
    return {"get-exact": cmd_get_exact, "send-raw": cmd_send_raw, "stream": cmd_stream}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
