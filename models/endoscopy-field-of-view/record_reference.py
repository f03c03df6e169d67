#!/usr/bin/env python3
"""Records reference.json once, with torch: the package's own network (TorchScript
`kernel_3_8.pt` from the pinned wheel, run by torch as the package runs it) and its
post-processing (reference.py) on every frame of reference_frames.py.

    python3 record_reference.py [--wheel WHEEL] [--scores scores.npz]

For each frame: the SHA-256 of the RGB bytes, the edge scores at every 16th column, the 32 edge
points, the circle (x, y, r, confidence) or null, the true circle the frame was drawn with and
the mask IoU between the two. `--scores` also saves every score, for measure.py's ONNX vs
TorchScript comparison over whole frames.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import convert  # noqa: E402
import reference  # noqa: E402
import reference_frames  # noqa: E402

COLUMN_STEP = 16


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--wheel", default=os.path.join(HERE, "..", "..", "target",
                                                        "torchcontentarea", convert.WHEEL_NAME))
    parser.add_argument("--scores", help="also save every frame's scores here (.npz)")
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as wheel:
        model = torch.jit.load(io.BytesIO(wheel.read(convert.PACKAGE_MODEL)), map_location="cpu")
    model.eval()

    def score(strips):
        with torch.no_grad():
            return torch.sigmoid(model(torch.from_numpy(strips))).numpy()

    frames, full = [], {}
    for name, (width, height, truth, kind, seed) in reference_frames.FRAMES.items():
        image = reference_frames.make(name)
        result = reference.estimate(image, score)
        columns = list(range(0, result.scores.shape[1], COLUMN_STEP))
        true_circle = list(truth) if truth else None
        iou = reference.circle_iou(true_circle, result.circle, height, width)
        full[name] = result.scores
        frames.append({
            "name": name, "width": width, "height": height, "kind": kind,
            "input_sha256": hashlib.sha256(image.tobytes()).hexdigest(),
            "score_columns": columns,
            "scores": [[round(float(v), 7) for v in row[columns]] for row in result.scores],
            "points": [[int(x), int(y), round(s, 7)] for x, y, s in result.points],
            "circle": result.circle,
            "true_circle": true_circle,
            "iou_vs_true": round(iou, 5),
        })
        print(f"{name:<28} circle {result.circle} true {true_circle} IoU {iou:.4f}")
    out = {
        "source": f"PyPI {convert.PACKAGE} {convert.PACKAGE_MODEL} (SHA-256 of the wheel "
                  f"{convert.WHEEL_SHA256}), run by torch {torch.__version__} on CPU",
        "frames": frames,
    }
    # One frame a line: small, and a re-recording diffs frame by frame.
    lines = ",\n".join(json.dumps(frame, separators=(",", ":")) for frame in frames)
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        f.write(f'{{"source": {json.dumps(out["source"])},\n"frames": [\n{lines}\n]}}\n')
    if args.scores:
        np.savez_compressed(args.scores, **full)


if __name__ == "__main__":
    main()
