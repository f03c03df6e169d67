#!/usr/bin/env python3
"""The issue #7 attack set against one running tramy, in order, while a prober measures C-ECHO
and /healthz latency; prints peak RSS (VmHWM) and the worst latencies as JSON.

  1. 64 idle DIMSE sockets and 4 that drip one byte every 5 s (kept open throughout);
  2. 1050 half-sent HTTP requests (kept open throughout);
  3. a 1 GiB DIMSE data set that never sends its last fragment, then silence;
  4. three 512 MiB STOW-RS parts in parallel;
  5. QIDO-RS instances?limit=100000000&includefield=all, 3 times;
  6. WADO-RS frames/1,1,1,... (2000 repeats), 3 times.

usage: attack_set.py PID DIMSE_PORT HTTP_PORT STUDY SERIES SOP
"""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import requests
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import encode

PID, DIMSE, HTTP = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
STUDY, SERIES, SOP = sys.argv[4:7]
BASE = f"http://127.0.0.1:{HTTP}"
# Every route but /healthz needs a credential: the superadmin token attack_rss.sh hands over.
AUTH = {"Authorization": f"Bearer {os.environ['TRAMY_TOKEN']}"}
SC = "1.2.840.10008.5.1.4.1.1.7"
# Attackers come from another loopback address than the prober (the legitimate client), as they
# would from another machine: tramy limits associations per peer address.
ATTACKER = ("127.0.0.2", 0)  # Secondary Capture Image Storage
worst = {"echo_ms": 0.0, "healthz_ms": 0.0, "echo_failures": [], "phase": "start"}
stop = threading.Event()


def vm(key):
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) // 1024
    return 0


def prober():
    # dcmtk's echoscu in its own process: a pynetdicom requestor in this process would compete
    # for the GIL with the attack threads and time out on its own.
    while not stop.is_set():
        t = time.perf_counter()
        try:
            requests.get(BASE + "/healthz", timeout=5)
            worst["healthz_ms"] = max(worst["healthz_ms"], (time.perf_counter() - t) * 1000)
        except requests.RequestException:
            worst["healthz_ms"] = max(worst["healthz_ms"], 5000)
        t = time.perf_counter()
        echo = subprocess.run(["echoscu", "-to", "5", "-aec", "TRAMY", "127.0.0.1", str(DIMSE)],
                              capture_output=True)
        if echo.returncode == 0:
            worst["echo_ms"] = max(worst["echo_ms"], (time.perf_counter() - t) * 1000)
        else:
            worst["echo_failures"].append(worst["phase"])
        time.sleep(0.5)


def idle_and_drip():
    socks = []
    for i in range(68):
        s = socket.create_connection(("127.0.0.1", DIMSE), source_address=ATTACKER)
        socks.append(s)
    while not stop.is_set():
        for s in socks[64:]:
            try:
                s.send(b"\x01")
            except OSError:
                pass
        stop.wait(5)


def half_sent_http():
    socks = []
    for _ in range(1050):
        try:
            s = socket.create_connection(("127.0.0.1", HTTP), source_address=ATTACKER)
            s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            break
    stop.wait()


def pdata(pc, command, last, data):
    item = struct.pack(">IBB", len(data) + 2, pc, (1 if command else 0) | (2 if last else 0)) + data
    return struct.pack(">BBI", 4, 0, len(item)) + item


def never_ending_dataset():
    ae = AE(ae_title="ATTACKER")
    ae.add_requested_context(SC, ExplicitVRLittleEndian)
    # From a third address: the idle sockets above spend the first one's per-peer allowance.
    for _ in range(5):
        assoc = ae.associate("127.0.0.1", DIMSE, ae_title="TRAMY", bind_address=("127.0.0.3", 0))
        if assoc.is_established:
            break
        time.sleep(1)
    else:
        raise SystemExit("the attacker's association was not established")
    cx = assoc.accepted_contexts[0].context_id
    cmd = Dataset()
    cmd.AffectedSOPClassUID = SC
    cmd.CommandField = 1
    cmd.MessageID = 1
    cmd.Priority = 0
    cmd.CommandDataSetType = 0
    cmd.AffectedSOPInstanceUID = generate_uid()
    body = encode(cmd, True, True)
    command = struct.pack("<HHII", 0, 0, 4, len(body)) + body
    sock = assoc.dul.socket.socket
    sock.sendall(pdata(cx, True, True, command))
    chunk = pdata(cx, False, False, b"\0" * 65536)
    for _ in range((1 << 30) // 65536):
        sock.sendall(chunk)
    time.sleep(3)
    assoc.abort()


def big_part(n):
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SC, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "OT", "ATTACK"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8192, 8192, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = 8
    pixels = 8192 * 8192 * 8  # 512 MiB
    meta = Dataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SC, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    mbody = encode(meta, False, True)
    head = b"\0" * 128 + b"DICM" + struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(mbody)) + mbody
    head += encode(ds, False, True) + struct.pack("<HH2sHI", 0x7FE0, 0x10, b"OB", 0, pixels)
    boundary = b"attackboundary"

    def gen():
        yield b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + head
        zeros = b"\0" * (1 << 20)
        for _ in range(pixels >> 20):
            yield zeros
        yield b"\r\n--" + boundary + b"--\r\n"

    r = requests.post(BASE + "/dicomweb/studies", data=gen(), timeout=600,
                      headers={**AUTH, "Content-Type": 'multipart/related; type="application/dicom"; boundary=attackboundary'})
    return r.status_code


def main():
    result = {"rss_mb_at_start": vm("VmRSS")}
    threads = [threading.Thread(target=f, daemon=True) for f in (prober, idle_and_drip, half_sent_http)]
    for t in threads:
        t.start()
    time.sleep(2)
    worst["phase"] = "never-ending data set"
    never_ending_dataset()
    result["after_never_ending_dataset_mb"] = vm("VmHWM")
    worst["phase"] = "large STOW-RS parts"
    parts = []
    ts = [threading.Thread(target=lambda i=i: parts.append(big_part(i))) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    result["stow_statuses"] = parts
    result["after_stow_mb"] = vm("VmHWM")
    worst["phase"] = "QIDO"
    for _ in range(3):
        r = requests.get(BASE + "/dicomweb/instances?limit=100000000&includefield=all", headers=AUTH,
                         timeout=120)
        result["qido_status"] = r.status_code
    result["after_qido_mb"] = vm("VmHWM")
    worst["phase"] = "frames"
    frames = ",".join(["1"] * 2000)
    for _ in range(3):
        r = requests.get(f"{BASE}/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/{frames}",
                         headers={**AUTH, "Accept": 'multipart/related; type="application/octet-stream"'}, timeout=60)
        result["frames_status"], result["frames_bytes"] = r.status_code, len(r.content)
    stop.set()
    time.sleep(1)
    result["peak_rss_mb"] = vm("VmHWM")
    result["rss_mb_at_end"] = vm("VmRSS")
    result["worst_echo_ms"] = round(worst["echo_ms"], 1)
    result["worst_healthz_ms"] = round(worst["healthz_ms"], 1)
    result["echo_refused_during"] = worst["echo_failures"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
