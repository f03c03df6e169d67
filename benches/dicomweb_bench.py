#!/usr/bin/env python3
"""DICOMweb benchmarks, driven by one client (requests, K threads) against any origin server.

  make   OUT_DIR SIZE_MB N            write N instances of about SIZE_MB each (one study)
  bodies DIR                          write DIR/curl.cfg: one STOW-RS request per file (multipart
                                      bodies beside it), for `curl -Z --parallel-max K -K`
  stow   URL DIR K                    the same with python requests (slower client)
  latency URL PATH ACCEPT REPEAT      GET URL+PATH REPEAT times; prints p50/p99 ms as JSON

With BENCH_TOKEN set, every request sends `Authorization: Bearer $BENCH_TOKEN` (tramy since
issue #9 asks every request for a credential).

Needs pydicom (make) and requests (all); the test virtual environment has both.
"""
import concurrent.futures
import json
import os
import pathlib
import statistics
import sys
import time

import requests

if os.environ.get("BENCH_TOKEN"):
    _request = requests.Session.request

    def _with_token(self, method, url, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Authorization", "Bearer " + os.environ["BENCH_TOKEN"])
        return _request(self, method, url, headers=headers, **kwargs)

    requests.Session.request = _with_token


def make(out, size_mb, n):
    import numpy
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    side = int((size_mb * 1024 * 1024 / 2) ** 0.5)
    study, series = generate_uid(), generate_uid()
    rng = numpy.random.default_rng(7)
    pixels = rng.integers(0, 4095, size=(side, side), dtype=numpy.uint16).tobytes()
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.Modality = "BENCH^SYNTHETIC", "BENCH-1", "DX"
        ds.StudyDate, ds.StudyTime, ds.InstanceNumber = "20260101", "120000", i + 1
        ds.Rows = ds.Columns = side
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        ds.save_as(out / f"i{i:05d}.dcm", enforce_file_format=True)


def stow(url, directory, k):
    files = sorted(pathlib.Path(directory).glob("*.dcm"))
    payloads = [f.read_bytes() for f in files]
    boundary = "benchboundary0123456789"
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": "application/dicom+json"}

    def send(data):
        body = b"".join([f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), data,
                         f"\r\n--{boundary}--\r\n".encode()])
        r = requests.post(url, data=body, headers=headers)
        return r.status_code

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(k) as pool:
        codes = list(pool.map(send, payloads))
    seconds = time.perf_counter() - start
    total = sum(len(p) for p in payloads)
    print(json.dumps({"instances": len(files), "ok": sum(c == 200 for c in codes), "seconds": seconds,
                      "mb_per_s": total / 1e6 / seconds, "instances_per_s": len(files) / seconds}))


BOUNDARY = "benchboundary0123456789"


def bodies(directory):
    """A curl config that STOWs every file in DIR, one instance per request, with URL and the
    bearer token left as the placeholders @URL@ and @TOKEN@ for the caller to fill in (a server
    without authentication ignores the header)."""
    directory = pathlib.Path(directory)
    sections = []
    for f in sorted(directory.glob("*.dcm")):
        body = f.with_suffix(".body")
        body.write_bytes(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f.read_bytes()
                         + f"\r\n--{BOUNDARY}--\r\n".encode())
        sections.append(f'url = "@URL@"\nheader = "Content-Type: multipart/related; type=\\"application/dicom\\"; '
                        f'boundary={BOUNDARY}"\n'
                        # No "Expect: 100-continue": servers that ignore it would stall each upload
                        # by curl's one-second wait, which would measure curl, not the server.
                        f'header = "Expect:"\nheader = "Authorization: Bearer @TOKEN@"\n'
                        f'data-binary = "@{body}"\noutput = "/dev/null"\n'
                        f'write-out = "%{{http_code}}\\n"\n')
    (directory / "curl.cfg").write_text("next\n".join(sections))


def latency(url, path, accept, repeat):
    times = []
    session = requests.Session()
    for _ in range(repeat):
        start = time.perf_counter()
        r = session.get(url + path, headers={"Accept": accept})
        r.content
        times.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.status_code
    times.sort()
    print(json.dumps({"p50_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
                      "results_bytes": len(r.content)}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make":
        make(args[0], float(args[1]), int(args[2]))
    elif cmd == "bodies":
        bodies(args[0])
    elif cmd == "stow":
        stow(args[0], args[1], int(args[2]))
    elif cmd == "latency":
        latency(args[0], args[1], args[2], int(args[3]))
