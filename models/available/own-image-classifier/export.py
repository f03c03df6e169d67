#!/usr/bin/env python3
"""Exports a hospital's own torchvision or timm image classifier to ONNX with a tramy manifest.

usage (from tramy's repository root):
  export.py --library torchvision --arch resnet18 --weights polyp_resnet18.pt \
            --labels polyp --out models/own-polyp-resnet18 [options]

Writes OUT/model.onnx ("input" [batch, 3, H, W] -> "logits" [batch, len(labels)]) and
OUT/model.toml (the manifest tramy reads), then: tramy models check; tramy eval --model OUT
--data LABELLED_FOLDER. See docs/bring-your-own-model.md.

--weights is a state dict saved with torch.save(model.state_dict(), path), or a checkpoint
dict holding one under "state_dict" or "model" (prefixes "module." and "model." are removed).
The network is built with weights=None / pretrained=False and the number of outputs set to the
number of labels; the weights are loaded strictly, so a mismatch fails by name.

--manifest-only writes model.toml alone and needs neither torch nor the weights (to review the
manifest first; tramy reports the model "not installed" until model.onnx is there).

Needs for the export: pip install torch torchvision onnx (and timm for --library timm).
"""
import argparse
import pathlib
import shlex
import sys

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Video Endoscopic and VL Endoscopic Image Storage (PS3.4 Annex B.5).
ENDOSCOPY_SOP_CLASSES = ["1.2.840.10008.5.1.4.1.1.77.1.1.1", "1.2.840.10008.5.1.4.1.1.77.1.1"]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--library", choices=["torchvision", "timm"], required=True)
    p.add_argument("--arch", required=True, help="e.g. resnet18, efficientnet_b0, regnet_x_800mf")
    p.add_argument("--weights", required=True, help="the hospital's trained state dict")
    p.add_argument("--labels", required=True,
                   help="comma-separated, in the order of the network's outputs")
    p.add_argument("--out", required=True, type=pathlib.Path, help="the model's folder")
    p.add_argument("--name", help="model name (default: the --out folder's name)")
    p.add_argument("--version", default="1")
    p.add_argument("--size", type=int, nargs="+", default=[224],
                   help="input height [width] the network was trained at")
    p.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN,
                   help="per-channel mean on 0..1 RGB (default ImageNet's)")
    p.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD)
    p.add_argument("--resize-filter", default="triangle",
                   choices=["nearest", "triangle", "catmull-rom", "lanczos3"],
                   help="triangle is torchvision's bilinear Resize")
    p.add_argument("--activation", default="sigmoid", choices=["sigmoid", "softmax", "none"],
                   help="sigmoid: independent labels; softmax: one class of --labels per image")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--urgency", default="routine", choices=["routine", "urgent", "emergency"])
    p.add_argument("--task", default="per-frame", choices=["per-frame", "multi-label", "binary"])
    p.add_argument("--frame-step", type=int, default=5)
    p.add_argument("--max-frames", type=int, default=64)
    p.add_argument("--routing", default="endoscopy", choices=["endoscopy", "any"])
    p.add_argument("--training-data", default="the hospital's own labelled frames (describe them)")
    p.add_argument("--intended-use", default="research: ranking frames for review")
    p.add_argument("--manifest-only", action="store_true")
    a = p.parse_args(argv)
    a.labels = [label.strip() for label in a.labels.split(",") if label.strip()]
    if not a.labels:
        p.error("--labels names at least one label")
    if len(a.size) not in (1, 2):
        p.error("--size is H or H W")
    a.height, a.width = a.size[0], a.size[-1]
    a.name = a.name or a.out.resolve().name
    return a


def toml_str(value):
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_list(values):
    return "[" + ", ".join(toml_str(v) if isinstance(v, str) else repr(v) for v in values) + "]"


def manifest(a, command):
    """model.toml for these arguments (tramy's schema: src/triage/manifest.rs)."""
    source = f"the hospital's own {a.library} {a.arch}, weights {pathlib.Path(a.weights).name}"
    lines = [
        f"# {a.name}: the hospital's own {a.library} {a.arch}, exported by",
        "# models/available/own-image-classifier/export.py (see docs/bring-your-own-model.md).",
        "",
        f"name = {toml_str(a.name)}",
        f"version = {toml_str(a.version)}",
        f"task = {toml_str(a.task)}",
        'file = "model.onnx"',
        "",
        "[routing]",
    ]
    if a.routing == "endoscopy":
        lines.append(f"sop_classes = {toml_list(ENDOSCOPY_SOP_CLASSES)}")
    lines += [
        "",
        "[input]",
        'name = "input"',
        'layout = "NCHW"',
        f"height = {a.height}",
        f"width = {a.width}",
        "channels = 3",
        "",
        "[preprocess]",
        'window = { source = "image" }',
        f"resize_filter = {toml_str(a.resize_filter)}",
        "# 0..255 -> 0..1 as torchvision's ToTensor, then Normalize(mean, std).",
        "scale = 0.00392156862745098",
        "offset = 0.0",
        f"mean = {toml_list(a.mean)}",
        f"std = {toml_list(a.std)}",
        f"frame_step = {a.frame_step}",
        f"max_frames = {a.max_frames}",
    ]
    for i, label in enumerate(a.labels):
        lines += [
            "",
            "[[labels]]",
            f"name = {toml_str(label)}",
            'output = "logits"',
            f"index = {i}",
            f"threshold = {a.threshold}",
            f"urgency = {toml_str(a.urgency)}",
            f"activation = {toml_str(a.activation)}",
        ]
    lines += [
        "",
        "[provenance]",
        f"source = {toml_str(source)}",
        'licence = "the hospital\'s own weights and terms"',
        f"training_data = {toml_str(a.training_data)}",
        f"intended_use = {toml_str(a.intended_use)}",
        'validation = "none measured by tramy; run tramy eval on local labelled data before any use"',
        'statement = "Research use only. Not a medical device; not for diagnosis."',
        "",
        "[setup]",
        f"command = {toml_str(command)}",
        'why = "the weights are the hospital\'s own and are not shipped with tramy"',
        "",
    ]
    return "\n".join(lines)


def export(a):
    import torch
    if a.library == "torchvision":
        import torchvision
        model = torchvision.models.get_model(a.arch, weights=None, num_classes=len(a.labels))
    else:
        import timm
        model = timm.create_model(a.arch, pretrained=False, num_classes=len(a.labels))
    state = torch.load(a.weights, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, a.height, a.width)).shape[-1]
    if outputs != len(a.labels):
        raise SystemExit(f"the network has {outputs} outputs for {len(a.labels)} labels")
    torch.onnx.export(
        model, torch.zeros(1, 3, a.height, a.width), a.out / "model.onnx",
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
    )


def main(argv):
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    # The command that redoes this export, for the manifest's [setup].
    rerun = [arg for arg in argv if arg != "--manifest-only"]
    command = " ".join(["python3", "models/available/own-image-classifier/export.py",
                        *map(shlex.quote, rerun)])
    (a.out / "model.toml").write_text(manifest(a, command))
    if not a.manifest_only:
        export(a)
    done = "model.toml" if a.manifest_only else "model.toml and model.onnx"
    print(f"wrote {done} in {a.out}; then: tramy models check; "
          f"tramy eval --model {a.out} --data LABELLED_FOLDER")


if __name__ == "__main__":
    main(sys.argv[1:])
