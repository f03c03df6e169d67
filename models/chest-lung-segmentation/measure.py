#!/usr/bin/env python3
"""Measures the converted model with ONNX Runtime on the CPU (2 intra-op threads), for README.md
and for setting the chest gate's thresholds:

- conversion time, and model size with float32 and float16 weights;
- per-image latency at 512, 384, 320 and 256 input (median of 5 runs after one warm-up);
- mask IoU of each smaller input's mask (nearest-upsampled to 512) against the 512 mask, and of
  the float16-weights model against float32, on every reference image;
- lung area fraction of each reference image at 512.

    python3 models/chest-lung-segmentation/measure.py --sdist cheXwhatsApp-0.1.5.tar.gz
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import convert  # noqa: E402
import reference_images as ri  # noqa: E402

SIZES = [512, 384, 320, 256]


def timed_convert(sdist, out, fp16):
    args = [sys.executable, os.path.join(HERE, "convert.py"), "--sdist", sdist, "--out", out]
    start = time.perf_counter()
    subprocess.run(args + (["--fp16-weights"] if fp16 else []), check=True)
    return time.perf_counter() - start


def mask_of(run, x):
    import numpy as np

    (logits,) = run.run(["logits"], {"image": x[None]})
    return np.argmax(logits[0], axis=0) == 1


def upsample(mask, size=ri.SIZE):
    """Nearest upsampling of a square mask to size x size (pixel centres, as Pillow does)."""
    import numpy as np

    index = np.minimum(((np.arange(size) + 0.5) * mask.shape[0] / size).astype(int),
                       mask.shape[0] - 1)
    return mask[np.ix_(index, index)]


def main():
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", required=True, help=convert.SDIST_NAME)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        fp32, fp16 = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "fp16.onnx")
        seconds = {"fp32": timed_convert(args.sdist, fp32, False),
                   "fp16": timed_convert(args.sdist, fp16, True)}
        sizes = {"fp32": os.path.getsize(fp32), "fp16": os.path.getsize(fp16)}
        run32, run16 = convert.session(fp32), convert.session(fp16)
        images = ri.reference_images()
        latency = {}
        rows = []
        for relative, _ in images:
            image = ri.open_image(relative)
            full = mask_of(run32, ri.package_input(image))
            row = {"file": relative, "lung_fraction_512": float(full.mean()),
                   "iou_fp16_vs_fp32": ri.iou(mask_of(run16, ri.package_input(image)), full)}
            for size in SIZES:
                x = ri.package_input(image, size)
                if relative == images[0][0]:  # latency on one image: it does not depend on content
                    run32.run(["logits"], {"image": x[None]})
                    times = []
                    for _ in range(5):
                        start = time.perf_counter()
                        run32.run(["logits"], {"image": x[None]})
                        times.append(time.perf_counter() - start)
                    latency[size] = statistics.median(times) * 1000
                if size != ri.SIZE:
                    row[f"iou_{size}_vs_512"] = ri.iou(upsample(mask_of(run32, x)), full)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    print(json.dumps({"convert_seconds": seconds, "model_bytes": sizes,
                      "latency_ms_median_of_5": latency, "images": rows}, indent=1))


if __name__ == "__main__":
    main()
