#!/usr/bin/env python3
"""Triage benchmarks (see triage_bench.sh).

  python-pipeline MODEL_DIR DATA_DIR [cpu|cuda]
                                          the same work as `tramy eval` (decode DICOM, modality
                                          LUT, VOI window, MONOCHROME1 inversion, resize,
                                          scale/offset/normalisation as model.toml says,
                                          onnxruntime) in Python, one image at a time; prints JSON
  model-only MODEL_DIR N BATCH [cpu|cuda] onnxruntime alone on ready tensors (no decoding, no
                                          preprocessing): the ceiling end-to-end runs approach
  time-to-flag PORT HTTP_PORT FILE N      C-STORE the file N times with fresh UIDs, one at a time;
                                          for each, the seconds from the C-STORE response to the
                                          finding being queryable; prints JSON p50/p95
"""
import glob
import os
import json
import socket
import statistics
import sys
import time
import tomllib

import numpy
import onnxruntime
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut


def session_for(model_dir, device):
    manifest = tomllib.load(open(f"{model_dir}/model.toml", "rb"))
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        providers = ["CUDAExecutionProvider"]  # no silent CPU fallback in a GPU figure
    session = onnxruntime.InferenceSession(f"{model_dir}/{manifest['file']}", providers=providers)
    return manifest, session


def to_tensor(ds, manifest):
    """tramy's preprocessing (src/triage/preprocess.rs), in numpy and Pillow."""
    inp, pre = manifest["input"], manifest["preprocess"]
    x = apply_modality_lut(ds.pixel_array, ds)
    window = pre.get("window", {"source": "image"})["source"]
    if window == "image" and "WindowCenter" in ds:
        # pydicom windows into 0 .. 2^BitsStored - 1; tramy into 0 .. 255.
        x = apply_voi_lut(x, ds).astype(numpy.float64)
        lo, hi = 0.0, float(2 ** ds.BitsStored - 1)
    elif window == "image" and ds.BitsAllocated == 8:
        x = x.astype(numpy.float64)  # 8-bit without a window: used as stored
        lo, hi = 0.0, 255.0
    else:
        x = x.astype(numpy.float64)
        lo, hi = x.min(), x.max()
    grey = (x - lo) / max(hi - lo, 1e-9) * 255.0
    if ds.PhotometricInterpretation == "MONOCHROME1":
        grey = 255.0 - grey
    image = Image.fromarray(grey.round().astype(numpy.uint8))
    resample = Image.NEAREST if pre.get("resize_filter") == "nearest" else Image.BILINEAR
    image = image.resize((inp["width"], inp["height"]), resample)
    hw = numpy.asarray(image, dtype=numpy.float32) * numpy.float32(pre["scale"]) + numpy.float32(pre["offset"])
    chw = numpy.repeat(hw[None], inp["channels"], axis=0)
    if pre.get("mean"):
        chw = (chw - numpy.array(pre["mean"], numpy.float32)[:, None, None]) / numpy.array(pre["std"], numpy.float32)[:, None, None]
    tensor = chw if inp["layout"] == "NCHW" else chw.transpose(1, 2, 0)
    return numpy.ascontiguousarray(tensor[None], dtype=numpy.float32)


def python_pipeline(model_dir, directory, device):
    files = sorted(glob.glob(f"{directory}/**/*.dcm", recursive=True))
    manifest, session = session_for(model_dir, device)
    name = manifest["input"]["name"]
    latencies = []
    start = time.perf_counter()
    for f in files:
        t0 = time.perf_counter()
        tensor = to_tensor(pydicom.dcmread(f), manifest)
        logits = session.run(None, {name: tensor})[0].reshape(-1)
        _ = numpy.exp(logits - logits.max()) / numpy.exp(logits - logits.max()).sum()
        latencies.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - start
    latencies.sort()
    print(json.dumps({"images": len(files), "throughput_per_s": len(files) / total,
                      "latency_p50_ms": statistics.median(latencies),
                      "latency_p95_ms": latencies[int((len(latencies) - 1) * 0.95)]}))


def model_only(model_dir, n, batch, device):
    manifest, session = session_for(model_dir, device)
    inp = manifest["input"]
    shape = [batch, inp["channels"], inp["height"], inp["width"]] if inp["layout"] == "NCHW" \
        else [batch, inp["height"], inp["width"], inp["channels"]]
    tensor = numpy.random.default_rng(1).standard_normal(shape).astype(numpy.float32)
    session.run(None, {inp["name"]: tensor})  # warm-up
    start = time.perf_counter()
    done = 0
    while done < n:
        session.run(None, {inp["name"]: tensor})
        done += batch
    total = time.perf_counter() - start
    print(json.dumps({"images": done, "batch": batch, "device": device,
                      "throughput_per_s": done / total}))


def time_to_flag(port, http_port, path, n):
    import requests
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    template = pydicom.dcmread(path)
    auth = {"Authorization": f"Bearer {os.environ['TRAMY_TOKEN']}"}
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
            found = requests.get(url, headers=auth).json()
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
        python_pipeline(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "cpu")
    elif sys.argv[1] == "model-only":
        model_only(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                   sys.argv[5] if len(sys.argv) > 5 else "cpu")
    else:
        time_to_flag(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
