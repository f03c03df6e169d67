#!/usr/bin/env python3
"""The README's figures: ONNX latency per frame (16 strips) on CPU at common widths, and, given
record_reference.py's `--scores` file, ONNX vs TorchScript over every score of every frame.

    python3 measure.py [--scores scores.npz]      # needs onnxruntime
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import convert  # noqa: E402
import reference  # noqa: E402
import reference_frames  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scores", help="record_reference.py --scores output")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    run = convert.session(os.path.join(HERE, "model.onnx"), args.threads)
    score = lambda strips: run.run(["scores"], {"strips": strips})[0]  # noqa: E731
    for width, height in ((854, 480), (1280, 720), (1920, 1080)):
        strips = np.random.default_rng(0).normal(size=(16, 5, 7, width)).astype(np.float32)
        score(strips)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            score(strips)
            times.append(time.perf_counter() - start)
        print(f"{width}x{height}: model {statistics.median(times) * 1e3:.2f} ms median of 20 "
              f"(16 strips, {args.threads} threads)")
    if args.scores:
        torch_scores = np.load(args.scores)
        worst = 0.0
        for name in reference_frames.FRAMES:
            ours = reference.estimate(reference_frames.make(name), score).scores
            worst = max(worst, float(np.abs(ours - torch_scores[name]).max()))
        print(f"ONNX vs TorchScript, every score of {len(torch_scores.files)} frames: "
              f"max abs diff {worst:.2e}")


if __name__ == "__main__":
    main()
