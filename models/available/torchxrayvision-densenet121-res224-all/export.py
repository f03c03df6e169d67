#!/usr/bin/env python3
"""Exports TorchXRayVision's densenet121-res224-all to model.onnx beside this file.

Needs (not installed by tramy): pip install torch torchxrayvision onnx
The weights are downloaded by torchxrayvision from its own release site, so run this where that
site is reachable, then copy the folder (with model.onnx) into tramy's models/ folder.

The exported graph takes "input" [N, 1, 224, 224] in [-1024, 1024] and returns "output" [N, 18]
in the order of model.pathologies (checked against model.toml's labels below). Those outputs are
TorchXRayVision's calibrated probabilities (op_threshs applied), so 0.5 is each label's operating
point; model.toml therefore uses activation = "none" and threshold = 0.5.
"""
import pathlib
import tomllib

import torch
import torchxrayvision as xrv

HERE = pathlib.Path(__file__).resolve().parent


def main():
    model = xrv.models.DenseNet(weights="densenet121-res224-all")
    model.eval()
    manifest = tomllib.loads((HERE / "model.toml").read_text())
    names = [label["name"] for label in manifest["labels"]]
    pathologies = [p for p in model.pathologies]
    if names != pathologies:
        raise SystemExit(f"model.toml labels {names} differ from the model's outputs {pathologies}")
    example = torch.zeros(1, 1, 224, 224)
    torch.onnx.export(
        model, example, HERE / "model.onnx", input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17,
    )
    print(f"wrote {HERE / 'model.onnx'}; copy {HERE.name}/ into models/ and run: tramy models check")


if __name__ == "__main__":
    main()
