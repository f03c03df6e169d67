#!/usr/bin/env python3
"""Converts the lung-segmentation U-Net in PyPI `cheXwhatsApp` 0.1.5 to ONNX, without torch.

The network is IlliaOvcharenko/lung-segmentation's "unet-6v" (VGG11 encoder, trained on the
Montgomery and Shenzhen chest X-ray sets), MIT licensed (see NOTICE). The package ships it as
`cheXwhatsApp/lung_segmentation.pt`: a whole pickled `PretrainedUNet` in torch's legacy
(pre-1.6, non-zip) `torch.save` format. torch is ~4 GB, so this script reads that file itself:
the pickle goes through a restricted unpickler that knows only the handful of globals this model
uses (any other is an error naming it) and builds stand-ins, the raw storages that follow it
become numpy arrays, and the module tree is rebuilt as an ONNX graph (opset 17) node by node.
Anything in the tree the graph builder does not know is refused.

    pip install -r models/chest-lung-segmentation/requirements.txt
    python3 models/chest-lung-segmentation/convert.py                 # fetch, convert
    python3 models/chest-lung-segmentation/convert.py --fp16-weights --out model-fp16.onnx
    python3 models/chest-lung-segmentation/convert.py --check         # parity with torch (needs
                                                                      # onnxruntime, pillow, pydicom)

The model: input `image` float32 [N, 1, H, W] (grey / 255 - 0.5; H and W multiples of 32, the
package uses 512), output `logits` float32 [N, 2, H, W]; argmax over axis 1, class 1 = lung.
"""

import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "cheXwhatsApp==0.1.5"
SDIST_NAME = "cheXwhatsApp-0.1.5.tar.gz"
SDIST_SHA256 = "645e7ca4fbd184319ac6d1bb3ef4a39803357cec6233faa64a5297f8c022ba9d"
PACKAGE_MODEL = "cheXwhatsApp-0.1.5/cheXwhatsApp/lung_segmentation.pt"
OPSET = 17
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
MIN_IOU = 0.999


def fail(message):
    print(f"convert.py: {message}", file=sys.stderr)
    sys.exit(1)


class ConversionError(Exception):
    pass


def fetch_sdist(cache_dir):
    """The package sdist from PyPI (cached), checked against its recorded SHA-256."""
    path = os.path.join(cache_dir, SDIST_NAME)
    if not os.path.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary=:all:",
             "--retries", "2", "--timeout", "30", PACKAGE, "-d", cache_dir],
            check=True,
        )
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if digest != SDIST_SHA256:
        os.remove(path)
        fail(f"{path} has SHA-256 {digest}, expected {SDIST_SHA256}; removed it, run again")
    return path


# --- reading the pickle without torch -------------------------------------------------------

STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
# The module classes the graph builder knows; the package's module is pickled as
# `lung_segmentation` (it was saved from a script beside it), `cheXwhatsApp.lung_segmentation`
# would name the same classes.
MODULE_CLASSES = {
    ("torch.nn.modules.conv", "Conv2d"): "Conv2d",
    ("torch.nn.modules.batchnorm", "BatchNorm2d"): "BatchNorm2d",
    ("lung_segmentation", "Block"): "Block",
    ("lung_segmentation", "PretrainedUNet"): "PretrainedUNet",
    ("cheXwhatsApp.lung_segmentation", "Block"): "Block",
    ("cheXwhatsApp.lung_segmentation", "PretrainedUNet"): "PretrainedUNet",
}


class Module:
    """Stand-in for a pickled torch module: its `__dict__` state, nothing else."""

    kind = None

    def __setstate__(self, state):
        self.__dict__.update(state)


class Storage:
    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.array = dtype, numel, None


class Tensor:
    """A tensor whose storage bytes come after the pickle; materialised by `array()`."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self):
        import numpy as np

        base = self.storage.array
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if min(self.size, default=1) < 1 or min(self.stride, default=0) < 0 or last >= base.size:
            raise ConversionError("a tensor lies outside its storage")
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=self.size, strides=[s * item for s in self.stride])
        return np.ascontiguousarray(view)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    if not isinstance(storage, Storage):
        raise ConversionError("a tensor without a storage")
    return Tensor(storage, offset, size, stride)


def rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """Builds only what this model is made of; every other global is refused by name."""

    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return ("storage-type", STORAGE_DTYPES[name])
        if (module, name) in MODULE_CLASSES:
            return type(name, (Module,), {"kind": MODULE_CLASSES[(module, name)]})
        raise ConversionError(f"the checkpoint uses {module}.{name}, which this converter does "
                              "not know; refusing to load it")

    def persistent_load(self, pid):
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":  # (class, source file, source): the class is all we need
            return pid[1]
        if kind == "storage":
            storage_type, key, _location, numel, view = pid[1:6]
            if view is not None:
                raise ConversionError("storage views are not supported")
            if not (isinstance(storage_type, tuple) and storage_type[0] == "storage-type"):
                raise ConversionError(f"unknown storage type {storage_type!r}")
            if key not in self.storages:
                self.storages[key] = Storage(storage_type[1], numel)
            return self.storages[key]
        raise ConversionError(f"unknown persistent id {kind!r}")


def load_legacy_checkpoint(data):
    """torch.load of a legacy-format file: magic, protocol, system info, the object, the storage
    keys in file order, then each storage as int64 element count + raw little-endian bytes."""
    import numpy as np

    f = io.BytesIO(data)
    plain = lambda: RestrictedUnpickler(f).load()  # noqa: E731 (these hold only ints and strs)
    if data[:2] == b"PK":
        raise ConversionError("zip-format torch checkpoints are not supported (only the legacy "
                              "format this package ships)")
    if plain() != LEGACY_MAGIC or plain() != LEGACY_PROTOCOL:
        raise ConversionError("not a legacy torch.save file")
    info = plain()
    if not info.get("little_endian", False):
        raise ConversionError("big-endian checkpoints are not supported")
    unpickler = RestrictedUnpickler(f)
    root = unpickler.load()
    keys = plain()
    for key in keys:
        storage = unpickler.storages.get(key)
        if storage is None:
            raise ConversionError(f"storage {key} is not used by the object")
        (numel,) = struct.unpack("<q", f.read(8))
        dtype = np.dtype(storage.dtype)
        raw = f.read(numel * dtype.itemsize)
        if numel != storage.numel or len(raw) != numel * dtype.itemsize:
            raise ConversionError(f"storage {key} is truncated or has the wrong size")
        storage.array = np.frombuffer(raw, dtype=dtype)
    if any(s.array is None for s in unpickler.storages.values()):
        raise ConversionError("a storage has no data")
    return root


# --- the module tree --------------------------------------------------------------------------

ENCODER = ["conv1", "conv2", "conv3", "conv3s", "conv4", "conv4s", "conv5", "conv5s"]
DECODER = ["dec5", "dec4", "dec3", "dec2", "dec1"]
RESIZE = {  # torch interpolate(size=skip size, mode) on an exact 2x, as ONNX Resize attributes
    "nearest": dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor"),
    "bilinear": dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
}


def child(module, name, kind):
    found = module.__dict__.get("_modules", {}).get(name)
    if not isinstance(found, Module) or found.kind != kind:
        raise ConversionError(f"{module.kind}.{name} is not a {kind}")
    return found


def no_hooks(module):
    for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
        if module.__dict__.get(hooks):
            raise ConversionError(f"a {module.kind} has {hooks}, which would change its output")


def expect_children(module, names):
    found = set(module.__dict__.get("_modules", {}))
    if found != set(names):
        raise ConversionError(f"{module.kind} has modules {sorted(found)}, expected {sorted(names)}")


class GraphBuilder:
    """Accumulates ONNX nodes and initializers for the U-Net (NCHW throughout)."""

    def __init__(self, onnx, numpy, fp16_weights):
        self.onnx, self.np, self.fp16 = onnx, numpy, fp16_weights
        self.nodes, self.initializers = [], []

    def constant(self, name, array):
        array = self.np.ascontiguousarray(array, dtype="float32")
        if not self.fp16:
            self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
            return name
        self.initializers.append(self.onnx.numpy_helper.from_array(array.astype("float16"),
                                                                   f"{name}/fp16"))
        return self.node("Cast", [f"{name}/fp16"], name, to=self.onnx.TensorProto.FLOAT)

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x, module, name, relu=False):
        no_hooks(module)
        state = module.__dict__
        params = state.get("_parameters", {})
        weight, bias = params.get("weight"), params.get("bias")
        if not isinstance(weight, Tensor) or not isinstance(bias, Tensor):
            raise ConversionError(f"{name}: a convolution without weight and bias")
        weight, bias = weight.array(), bias.array()
        kh, kw = tuple(state.get("kernel_size", ()))
        if (tuple(state.get("stride", ())) != (1, 1) or tuple(state.get("dilation", ())) != (1, 1)
                or state.get("groups") != 1 or state.get("transposed") is not False
                or state.get("padding_mode", "zeros") != "zeros"
                or weight.shape[2:] != (kh, kw) or bias.shape != weight.shape[:1]):
            raise ConversionError(f"{name}: only plain stride-1 convolutions are supported")
        ph, pw = tuple(state.get("padding", ()))
        y = self.node("Conv", [x, self.constant(f"{name}/weight", weight),
                               self.constant(f"{name}/bias", bias)],
                      f"{name}/conv", kernel_shape=[kh, kw], pads=[ph, pw, ph, pw])
        return self.node("Relu", [y], f"{name}/relu") if relu else y

    def batch_norm(self, x, module, name):
        no_hooks(module)
        state = module.__dict__
        params, buffers = state.get("_parameters", {}), state.get("_buffers", {})
        tensors = [params.get("weight"), params.get("bias"), buffers.get("running_mean"),
                   buffers.get("running_var")]
        if (not all(isinstance(t, Tensor) for t in tensors) or state.get("affine") is not True
                or state.get("track_running_stats") is not True):
            raise ConversionError(f"{name}: only affine batch norm with running statistics")
        names = ("scale", "bias", "mean", "var")
        return self.node("BatchNormalization",
                         [x] + [self.constant(f"{name}/{n}", t.array()) for n, t in zip(names, tensors)],
                         f"{name}/bn", epsilon=float(state["eps"]))

    def block(self, x, module, name, batch_norm):
        """`Block.forward`: conv, [bn], relu, conv, [bn], relu."""
        no_hooks(module)
        if module.__dict__.get("batch_norm") is not batch_norm:
            raise ConversionError(f"{name}: batch_norm differs from the network's")
        expect_children(module, ["conv1", "conv2"] + (["bn1", "bn2"] if batch_norm else []))
        for i in (1, 2):
            x = self.conv(x, child(module, f"conv{i}", "Conv2d"), f"{name}/conv{i}")
            if batch_norm:
                x = self.batch_norm(x, child(module, f"bn{i}", "BatchNorm2d"), f"{name}/bn{i}")
            x = self.node("Relu", [x], f"{name}/relu{i}")
        return x

    def down(self, x, name):
        """`max_pool2d(x, kernel_size=2)`: stride 2, floor."""
        return self.node("MaxPool", [x], f"{name}/maxpool", kernel_shape=[2, 2], strides=[2, 2])

    def up(self, x, skip, name, upscale_mode):
        """`interpolate(x, size=skip.size()[-2:], mode)`: the output takes the skip's H and W."""
        batch_channels = self.node("Shape", [x], f"{name}/shape_nc", start=0, end=2)
        height_width = self.node("Shape", [skip], f"{name}/shape_hw", start=2)
        sizes = self.node("Concat", [batch_channels, height_width], f"{name}/sizes", axis=0)
        return self.node("Resize", [x, "", "", sizes], f"{name}/resize", **RESIZE[upscale_mode])

    def unet(self, root, x):
        """`PretrainedUNet.forward`."""
        if getattr(root, "kind", None) != "PretrainedUNet":
            raise ConversionError("the checkpoint does not hold a PretrainedUNet")
        no_hooks(root)
        state = root.__dict__
        batch_norm, upscale_mode = state.get("batch_norm"), state.get("upscale_mode")
        if not isinstance(batch_norm, bool) or upscale_mode not in RESIZE:
            raise ConversionError(f"batch_norm={batch_norm!r} upscale_mode={upscale_mode!r} "
                                  "is not supported")
        if state.get("in_channels") != 1 or state.get("out_channels") != 2:
            raise ConversionError("only 1 input channel and 2 output classes are supported")
        expect_children(root, ["init_conv"] + ENCODER + ["center"] + DECODER + ["out"])
        conv = lambda name, x: self.conv(x, child(root, name, "Conv2d"), name, relu=True)  # noqa: E731
        x = conv("init_conv", x)
        enc1 = conv("conv1", x)
        enc2 = conv("conv2", self.down(enc1, "enc2"))
        enc3 = conv("conv3s", conv("conv3", self.down(enc2, "enc3")))
        enc4 = conv("conv4s", conv("conv4", self.down(enc3, "enc4")))
        enc5 = conv("conv5s", conv("conv5", self.down(enc4, "enc5")))
        x = self.block(self.down(enc5, "center"), child(root, "center", "Block"), "center",
                       batch_norm)
        for name, skip in zip(DECODER, [enc5, enc4, enc3, enc2, enc1]):
            up = self.up(x, skip, name, upscale_mode)
            x = self.node("Concat", [up, skip], f"{name}/concat", axis=1)
            x = self.block(x, child(root, name, "Block"), name, batch_norm)
        return self.conv(x, child(root, "out", "Conv2d"), "out"), batch_norm, upscale_mode


def convert(sdist_path, out_path, fp16_weights=False):
    import numpy
    import onnx

    with tarfile.open(sdist_path) as sdist:
        data = sdist.extractfile(PACKAGE_MODEL).read()
    try:
        root = load_legacy_checkpoint(data)
        builder = GraphBuilder(onnx, numpy, fp16_weights)
        logits, batch_norm, upscale_mode = builder.unet(root, "image")
    except (ConversionError, pickle.UnpicklingError, EOFError, ValueError, KeyError,
            TypeError) as e:
        fail(f"{PACKAGE_MODEL}: {e}")
    builder.nodes.append(onnx.helper.make_node("Identity", [logits], ["logits"], name="logits"))

    graph = onnx.helper.make_graph(
        builder.nodes,
        "lung_segmentation_unet_vgg11",
        [onnx.helper.make_tensor_value_info(
            "image", onnx.TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        [onnx.helper.make_tensor_value_info(
            "logits", onnx.TensorProto.FLOAT, ["batch", 2, "height", "width"])],
        builder.initializers,
    )
    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="tramy models/chest-lung-segmentation/convert.py",
        doc_string="Chest X-ray lung segmentation U-Net (VGG11 encoder; Montgomery + Shenzhen), "
        "IlliaOvcharenko/lung-segmentation via PyPI cheXwhatsApp 0.1.5, MIT. Input grey/255-0.5, "
        "[N,1,H,W] with H, W multiples of 32 (trained at 512). Output logits [background, lung]. "
        "Research use only; not for diagnosis.",
    )
    model.ir_version = 8
    for key, value in {
        "source": f"PyPI {PACKAGE} ({SDIST_NAME}, SHA-256 {SDIST_SHA256}), lung_segmentation.pt",
        "labels": "background,lung",
        "licence": "MIT (cheXwhatsApp, Sahil Lathiya 2024; IlliaOvcharenko/lung-segmentation)",
        "architecture": f"PretrainedUNet batch_norm={batch_norm} upscale_mode={upscale_mode}",
        "weights": "float16 (Cast to float32)" if fp16_weights else "float32",
        "statement": "Research use only; not for diagnosis.",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    partial = out_path + ".partial"
    onnx.save(model, partial)
    os.replace(partial, out_path)
    print(f"wrote {out_path} ({os.path.getsize(out_path) / 1e6:.1f} MB, "
          f"{len(builder.nodes)} nodes)", file=sys.stderr)


# --- parity with torch ------------------------------------------------------------------------

def session(model_path, threads=2):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def check(model_path, reference_path):
    """Runs the ONNX model on the inputs the torch reference was recorded on and compares masks."""
    import numpy

    sys.path.insert(0, HERE)
    import reference_images as ri

    reference = json.load(open(reference_path))
    run = session(model_path)
    misses = []
    print(f"{'image':<52} {'same input':>10} {'lung torch':>10} {'lung onnx':>10} {'IoU':>8}")
    for image in reference["images"]:
        x = ri.package_input(ri.open_image(image["file"]))
        same_input = hashlib.sha256(x.tobytes()).hexdigest() == image["input_sha256"]
        (logits,) = run.run(["logits"], {"image": x[None]})
        mask = numpy.argmax(logits[0], axis=0) == 1
        theirs = ri.decode_mask(image["mask"])
        score = ri.iou(mask, theirs)
        print(f"{image['file']:<52} {str(same_input):>10} {theirs.mean():>10.4f} "
              f"{mask.mean():>10.4f} {score:>8.5f}")
        if not same_input:
            misses.append(f"{image['file']}: the preprocessed input differs from the one torch "
                          "saw (different Pillow/pydicom?); parity cannot be judged")
        elif score < MIN_IOU:
            misses.append(f"{image['file']}: mask IoU {score:.5f} < {MIN_IOU}")
    print(json.dumps({"images": len(reference["images"]), "min_iou": MIN_IOU,
                      "parity": not misses}))
    if misses:
        fail("; ".join(misses))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", help=f"use this {SDIST_NAME} instead of fetching it")
    parser.add_argument("--cache", default=os.path.join(HERE, "..", "..", "target", "chexwhatsapp"),
                        help="where the fetched sdist is kept (default: target/chexwhatsapp)")
    parser.add_argument("--out", default=os.path.join(HERE, "model.onnx"), help="ONNX file to write")
    parser.add_argument("--fp16-weights", action="store_true",
                        help="store weights as float16 (Cast to float32 at load): half the size")
    parser.add_argument("--check", action="store_true",
                        help="compare the ONNX model's masks with torch-reference.json")
    args = parser.parse_args()

    if not os.path.isfile(args.out):
        sdist = args.sdist or fetch_sdist(os.path.normpath(args.cache))
        convert(sdist, args.out, args.fp16_weights)
    if args.check:
        check(args.out, os.path.join(HERE, "torch-reference.json"))


if __name__ == "__main__":
    main()
