#!/usr/bin/env python3
"""Helpers of benches/forward_bench.sh (issue #10 forwarding benchmarks).

  stow URL DIR BATCH          STOW-RS every file of DIR to URL/studies, BATCH instances per
                              request, one request after the other (as tramy's sender does);
                              prints seconds and MB/s as JSON
  span STATION_URL STUDY N [SINCE]
                              waits until the station's delivery of STUDY to `hospital` has N
                              instances verified; prints seconds from first queued (or from
                              SINCE, Unix time) to last verified (its delivery timeline) as JSON
  urgent PORT FILE HOSPITAL_URL STUDY
                              C-STORE FILE to the station (pynetdicom, AE BENCH), then polls
                              the hospital's QIDO-RS for STUDY every 5 ms; prints seconds from
                              the C-STORE request to the study being found as JSON

BENCH_TOKEN (station) and HOSPITAL_TOKEN (hospital) are sent as bearer tokens.
"""
import datetime
import json
import os
import pathlib
import socket
import sys
import time
import uuid

import requests


def auth(var):
    return {"Authorization": "Bearer " + os.environ[var]} if os.environ.get(var) else {}


def stow(url, folder, batch):
    files = sorted(pathlib.Path(folder).glob("*.dcm"))
    total = sum(f.stat().st_size for f in files)
    session = requests.Session()
    start = time.monotonic()
    for i in range(0, len(files), batch):
        boundary = uuid.uuid4().hex
        parts = []
        for f in files[i : i + batch]:
            parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            parts.append(f.read_bytes())
            parts.append(b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        r = session.post(
            url + "/studies",
            data=b"".join(parts),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
                **auth("HOSPITAL_TOKEN"),
            },
        )
        r.raise_for_status()
    secs = time.monotonic() - start
    print(json.dumps({"seconds": secs, "mb_per_s": total / 1e6 / secs, "bytes": total}))


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def span(station, study, n, since=None):
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        r = requests.get(f"{station}/api/v1/studies/{study}/deliveries", headers=auth("BENCH_TOKEN"))
        entry = next((e for e in r.json() if e["peer"] == "hospital"), None) if r.ok else None
        if entry and entry["instances"]["verified"] == n:
            steps = {s["state"]: s for s in entry["timeline"]}
            end = parse_time(steps["verified"]["last"])
            start = parse_time(steps["queued"]["first"]).timestamp() if since is None else since
            # The manifest and receipt phase: after the last STOW-RS answer.
            receipt = (end - parse_time(steps["sent"]["last"])).total_seconds()
            print(json.dumps({"seconds": end.timestamp() - start, "receipt_seconds": receipt}))
            return
        time.sleep(0.05)
    sys.exit("the study was not verified in time")


def urgent(port, path, hospital, study):
    from pydicom import dcmread
    from pynetdicom import AE

    ds = dcmread(path)
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", int(port), ae_title="TRAMY")
    assert assoc.is_established, "association refused"
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    session = requests.Session()
    url = f"{hospital}/dicomweb/studies?StudyInstanceUID={study}"
    start = time.monotonic()
    status = assoc.send_c_store(ds)
    stored = time.monotonic() - start
    assoc.release()
    assert status.Status == 0, f"C-STORE status {status.Status:04X}"
    while time.monotonic() - start < 120:
        r = session.get(url, headers={"Accept": "application/dicom+json", **auth("HOSPITAL_TOKEN")})
        if r.status_code == 200 and r.content.strip() and r.json():
            print(json.dumps({"seconds": time.monotonic() - start, "c_store_seconds": stored}))
            return
        time.sleep(0.005)
    sys.exit("the urgent study never became queryable at the hospital")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "stow":
        stow(args[0], args[1], int(args[2]))
    elif cmd == "span":
        span(args[0], args[1], int(args[2]), float(args[3]) if len(args) > 3 else None)
    elif cmd == "urgent":
        urgent(*args)
    else:
        sys.exit(__doc__)
