#!/usr/bin/env python3
"""Frames as OHIF asks for them (PS3.18 8.7.3.5), for tramy's integration tests. Prints one JSON
document: {"ok": bool, "details": ...}.

  frames_check.py BASE FILE...

For every file with pixel data: dicomweb-client retrieves all frames with
`transfer-syntax=*`; each must be the stored frame's bitstream (pydicom's frames of the file),
and, asked with OHIF's exact Accept header, each part's Content-Type must name the stored
transfer syntax (native: Explicit VR Little Endian, the byte order frames travel in).
"""
import email.parser
import email.policy
import json
import sys

import pydicom
import requests
import tramy_auth  # noqa: F401  (sends TRAMY_TOKEN)
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import generate_frames

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def stored_frames(ds):
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return list(generate_frames(ds.PixelData, number_of_frames=n))
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    raw = ds.PixelData
    if not ds.file_meta.TransferSyntaxUID.is_little_endian and ds.BitsAllocated == 16:
        raw = b"".join(raw[i + 1:i + 2] + raw[i:i + 1] for i in range(0, len(raw), 2))
    return [raw[i * size:(i + 1) * size] for i in range(n)]


def parts(response):
    head = f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    return [((p.get_content_type(), p.get_param("transfer-syntax")), p.get_payload(decode=True))
            for p in msg.iter_parts()]


def check(base, path, client):
    problems = []
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        return problems
    st, se, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    ts = ds.file_meta.TransferSyntaxUID
    want = stored_frames(ds)
    numbers = list(range(1, len(want) + 1))
    got = client.retrieve_instance_frames(st, se, sop, frame_numbers=numbers,
                                          media_types=(("application/octet-stream", "*"),))
    if [bytes(g) for g in got] != want:
        problems.append(f"{path}: dicomweb-client's frames differ from the stored ones")
    url = f"{base}/studies/{st}/series/{se}/instances/{sop}/frames/{','.join(map(str, numbers))}"
    r = requests.get(url, headers={"Accept": OHIF_ACCEPT})
    if r.status_code != 200:
        return problems + [f"{path}: HTTP {r.status_code} {r.headers.get('Warning')}"]
    named = ts if ts.is_compressed else EXPLICIT_LE
    expected_type = ("application/octet-stream", named)
    for i, (content_type, payload) in enumerate(parts(r)):
        if content_type != expected_type:
            problems.append(f"{path}: part {i + 1} is {content_type!r}, not {expected_type!r}")
        if payload != want[i]:
            problems.append(f"{path}: part {i + 1} differs from the stored frame")
    return problems


def main():
    base, files = sys.argv[1], sys.argv[2:]
    try:
        client = DICOMwebClient(base)
        details = [p for f in files for p in check(base, f, client)]
        ok = not details
    except Exception:  # report, do not hide: the Rust test prints this
        import traceback
        ok, details = False, traceback.format_exc()
    print(json.dumps({"ok": ok, "details": details}))


if __name__ == "__main__":
    main()
