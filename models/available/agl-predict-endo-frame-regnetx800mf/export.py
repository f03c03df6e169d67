#!/usr/bin/env python3
"""Exports a hospital's agl-predict-endo-frame checkpoint to model.onnx beside this file.

usage: export.py CHECKPOINT [--out model.onnx]

CHECKPOINT is the hospital's own trained weights of the package's MultiLabelClassificationNet
(agl_predict_endo_frame/model_loader.py): a PyTorch Lightning .ckpt ("state_dict" with keys
"model.stem.0.weight", ... and "hyper_parameters" with "labels" and "model_type"), or a plain
state dict of the torchvision network (with or without the "model." prefix).

Needs (not installed by tramy):
  pip install torch torchvision onnx
  pip install --no-deps agl-predict-endo-frame==0.2.7   (only to check the label order)

The network is rebuilt as the package builds it (model_loader.py:49-52): torchvision
regnet_x_800mf with fc replaced by Linear(672, 14); built here without ImageNet weights
(the package's pretrained=True would download them only to overwrite them). The exported
graph takes "input" [batch, 3, 716, 716] (RGB, normalised as model.toml says) and returns
"logits" [batch, 14] before the sigmoid the package applies (predict.py:25); model.toml says
activation = "sigmoid" per label.
"""
import argparse
import pathlib
import sys
import tomllib

import torch
import torchvision

HERE = pathlib.Path(__file__).resolve().parent


def manifest_labels():
    manifest = tomllib.loads((HERE / "model.toml").read_text())
    size = (manifest["input"]["height"], manifest["input"]["width"])
    return [label["name"] for label in manifest["labels"]], size


def package_labels():
    """The label order the package predicts in (predict.py sample_config), if it is installed."""
    try:
        from agl_predict_endo_frame.predict import sample_config
    except ImportError:
        print("note: agl-predict-endo-frame not installed; label order checked against the "
              "checkpoint only", file=sys.stderr)
        return None
    return list(sample_config["labels"])


def load_state(path, trusted):
    """The network's state dict and the checkpoint's hyper-parameters (empty when absent)."""
    try:
        # weights_only: unpickling a file runs code; only tensors and plain types are read.
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as e:  # pickle's errors vary by torch version
        raise SystemExit(f"{path}: {e}\nIf the checkpoint holds Lightning objects and you trust "
                         "its origin, rerun with --trust-checkpoint.")
    hparams = dict(ckpt.get("hyper_parameters", {})) if isinstance(ckpt, dict) else {}
    state = ckpt.get("state_dict", ckpt)
    # A Lightning state dict also holds the loss's buffer "criterion.pos_weight"; the network's
    # own tensors are those under "model.".
    if any(k.startswith("model.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return state, hparams


def build(labels, state):
    model = torchvision.models.regnet_x_800mf(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, len(labels))
    # strict: a checkpoint of another architecture (the package's EfficientNetB4 branch) or
    # with another number of labels fails here, by name, rather than exporting nonsense.
    model.load_state_dict(state, strict=True)
    return model.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=pathlib.Path)
    p.add_argument("--out", type=pathlib.Path, default=HERE / "model.onnx")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle the whole checkpoint (runs code in it), not tensors only")
    a = p.parse_args()
    labels, (height, width) = manifest_labels()
    state, hparams = load_state(a.checkpoint, a.trust_checkpoint)
    if hparams.get("model_type", "RegNetX800MF") != "RegNetX800MF":
        raise SystemExit(f"checkpoint model_type {hparams['model_type']!r}: this manifest is "
                         "for RegNetX800MF")
    for where, order in [("checkpoint hyper_parameters", hparams.get("labels")),
                         ("agl_predict_endo_frame.predict.sample_config", package_labels())]:
        if order is not None and list(order) != labels:
            raise SystemExit(f"model.toml labels {labels} differ from the {where} {list(order)}")
    model = build(labels, state)
    example = torch.zeros(1, 3, height, width)
    torch.onnx.export(
        model, example, a.out, input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
    )
    print(f"wrote {a.out}; copy {HERE.name}/ into models/ and run: tramy models check")


if __name__ == "__main__":
    main()
