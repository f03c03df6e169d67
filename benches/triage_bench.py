#!/usr/bin/env python3
"""Triage benchmarks (see triage_bench.sh).

  python-pipeline MODEL.onnx DATA_DIR     the same work as `tramy eval` (decode DICOM, window,
                                          MONOCHROME1 inversion, bilinear resize, ImageNet
                                          normalisation, onnxruntime) in Python; prints JSON
  time-to-flag PORT HTTP_PORT FILE N      C-STORE the file N times with fresh UIDs, one at a time;
                                          for each, the seconds from the C-STORE response to the
                                          finding being queryable; prints JSON p50/p95
"""
import glob
import json
import socket
import statistics
import sys
import time

import numpy
import onnxruntime
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut


def python_pipeline(model, directory):
    files = sorted(glob.glob(f"{directory}/**/*.dcm", recursive=True))
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    mean = numpy.array([0.485, 0.456, 0.406], dtype=numpy.float32)[:, None, None]
    std = numpy.array([0.229, 0.224, 0.225], dtype=numpy.float32)[:, None, None]
    latencies = []
    start = time.perf_counter()
    for f in files:
        t0 = time.perf_counter()
        ds = pydicom.dcmread(f)
        x = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(numpy.float64)
        lo, hi = x.min(), x.max()
        grey = ((x - lo) / max(hi - lo, 1e-9) * 255.0)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            grey = 255.0 - grey
        image = Image.fromarray(grey.astype(numpy.uint8)).resize((224, 224), Image.BILINEAR)
        chw = numpy.repeat(numpy.asarray(image, dtype=numpy.float32)[None] / 255.0, 3, axis=0)
        tensor = ((chw - mean) / std)[None].astype(numpy.float32)
        logits = session.run(None, {name: tensor})[0].reshape(-1)
        _ = numpy.exp(logits[0] - logits.max()) / numpy.exp(logits - logits.max()).sum()
        latencies.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - start
    latencies.sort()
    print(json.dumps({"images": len(files), "throughput_per_s": len(files) / total,
                      "latency_p50_ms": statistics.median(latencies),
                      "latency_p95_ms": latencies[int((len(latencies) - 1) * 0.95)]}))


def time_to_flag(port, http_port, path, n):
    import requests
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    template = pydicom.dcmread(path)
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(template.SOPClassUID, template.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="TRAMY")
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies = []
    for _ in range(n):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        status = assoc.send_c_store(ds)
        acked = time.perf_counter()
        assert status.Status == 0, status
        url = f"http://127.0.0.1:{http_port}/api/v1/studies/{ds.StudyInstanceUID}/findings"
        while True:
            found = requests.get(url).json()
            if found:
                latencies.append(time.perf_counter() - acked)
                break
            if time.perf_counter() - acked > 60:
                raise SystemExit("no finding within 60 s")
            time.sleep(0.005)
    assoc.release()
    latencies.sort()
    print(json.dumps({"instances": n, "p50_s": statistics.median(latencies),
                      "p95_s": latencies[int((len(latencies) - 1) * 0.95)]}))


if __name__ == "__main__":
    if sys.argv[1] == "python-pipeline":
        python_pipeline(sys.argv[2], sys.argv[3])
    else:
        time_to_flag(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
