#!/usr/bin/env python3
"""Converts the Keras pneumonia classifier in PyPI `pneumonia-model-package` 0.3.0 to ONNX.

The package's weights carry no licence, so tramy never commits them: this script runs at set-up
(`build.rs` calls it) and writes `model.onnx` beside `model.toml` on this machine only.

It needs neither TensorFlow nor Keras: it reads the `.keras` archive (a zip of `config.json` and
`model.weights.h5`) with h5py and rebuilds the functional graph layer by layer in ONNX. Only the
layer types this model uses are supported; any other is an error naming it.

    pip install -r models/chest-xray-pneumonia/requirements.txt
    python3 models/chest-xray-pneumonia/convert.py                  # fetch, convert
    python3 models/chest-xray-pneumonia/convert.py --images DIR     # also extract the 16 images
    python3 models/chest-xray-pneumonia/convert.py --check          # parity with Keras (needs
                                                                    # onnxruntime and pillow)
"""

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "pneumonia-model-package==0.3.0"
WHEEL_NAME = "pneumonia_model_package-0.3.0-py3-none-any.whl"
WHEEL_SHA256 = "4bb1ee80366db5de818c7255e62878871b8ec545681193f429e2575b791d3536"
PACKAGE_MODEL = "pneumonia_model_package/trained_models/pneumonia_xception_model_val-acc_0.861.keras"
PACKAGE_IMAGES = "pneumonia_model_package/datasets/pneumonia-data/val/"
INPUT_SIZE = 150
OPSET = 17


def fail(message):
    print(f"convert.py: {message}", file=sys.stderr)
    sys.exit(1)


def fetch_wheel(cache_dir):
    """The package wheel from PyPI (cached), checked against its recorded SHA-256."""
    path = os.path.join(cache_dir, WHEEL_NAME)
    if not os.path.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--retries", "2", "--timeout", "30", PACKAGE, "-d", cache_dir],
            check=True,
        )
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if digest != WHEEL_SHA256:
        os.remove(path)
        fail(f"{path} has SHA-256 {digest}, expected {WHEEL_SHA256}; removed it, run again")
    return path


def snake_case(class_name):
    """Keras 3's name for a layer's weight group (keras.src.utils.naming.to_snake_case)."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def weight_groups(layers):
    """Keras 3 stores each layer's variables under `<snake_case(class)>[_N]`, numbered per class
    in layer order; the config's layer names (block1_conv1, ...) do not appear in the file."""
    seen, groups = {}, {}
    for layer in layers:
        base = snake_case(layer["class_name"])
        n = seen.get(base, 0)
        seen[base] = n + 1
        groups[layer["name"]] = base if n == 0 else f"{base}_{n}"
    return groups


def inbound_tensors(node):
    """The (layer, node, index) histories of the Keras tensors a call node consumed."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                found.append(tuple(value["config"]["keras_history"]))
            else:
                for v in value.values():
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(node.get("args", []))
    return found


class GraphBuilder:
    """Accumulates ONNX nodes and initializers for a Keras functional model (NCHW inside)."""

    def __init__(self, onnx, numpy):
        self.onnx, self.np = onnx, numpy
        self.nodes, self.initializers = [], []

    def constant(self, name, array):
        self.initializers.append(
            self.onnx.numpy_helper.from_array(self.np.ascontiguousarray(array, dtype="float32"), name))
        return name

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def activation(self, x, kind, name):
        if kind in (None, "linear"):
            return x
        if kind == "relu":
            return self.node("Relu", [x], f"{name}/relu")
        if kind == "sigmoid":
            return self.node("Sigmoid", [x], f"{name}/sigmoid")
        if kind == "softmax":
            return self.node("Softmax", [x], f"{name}/softmax", axis=-1)
        fail(f"activation {kind!r} of layer {name} is not supported")

    def function(self, model_config, h5_group, inputs):
        """Adds the layers of a functional model; `inputs` are the ONNX names of its inputs."""
        config = model_config["config"]
        layers = config["layers"]
        groups = weight_groups(layers)
        tensors = {}
        for (layer_name, _, _), onnx_name in zip(config["input_layers"], inputs):
            tensors[layer_name] = onnx_name
        for layer in layers:
            name, kind, cfg = layer["name"], layer["class_name"], layer["config"]
            if kind == "InputLayer":
                continue
            if len(layer["inbound_nodes"]) != 1:
                fail(f"layer {name} is called {len(layer['inbound_nodes'])} times; only 1 is supported")
            args = [tensors[h[0]] for h in inbound_tensors(layer["inbound_nodes"][0])]
            group = h5_group["layers"][groups[name]]
            variables = [group["vars"][str(i)][()] for i in range(len(group["vars"]))]
            tensors[name] = self.layer(kind, name, cfg, args, variables, layer, group)
        return [tensors[h[0]] for h in config["output_layers"]]

    def layer(self, kind, name, cfg, args, variables, layer, group):
        np = self.np
        if kind == "Functional":
            (out,) = self.function(layer, group, args)
            return out
        (x,) = args if kind != "Add" else (None,)
        if kind in ("Conv2D", "SeparableConv2D"):
            if cfg["data_format"] != "channels_last" or cfg.get("groups", 1) != 1:
                fail(f"layer {name}: only channels_last, ungrouped convolutions are supported")
            pad = {"valid": "VALID", "same": "SAME_UPPER"}[cfg["padding"]]
            common = dict(strides=list(cfg["strides"]), dilations=list(cfg["dilation_rate"]))
            if kind == "Conv2D":
                kernel = variables[0].transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
                inputs = [x, self.constant(f"{name}/kernel", kernel)]
                if cfg["use_bias"]:
                    inputs.append(self.constant(f"{name}/bias", variables[1]))
                y = self.node("Conv", inputs, f"{name}/conv", kernel_shape=list(kernel.shape[2:]),
                              auto_pad=pad, **common)
            else:
                depthwise, pointwise = variables[0], variables[1]
                kh, kw, channels, multiplier = depthwise.shape
                dw = depthwise.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)
                y = self.node("Conv", [x, self.constant(f"{name}/depthwise", dw)],
                              f"{name}/depthwise_conv", kernel_shape=[kh, kw], group=channels,
                              auto_pad=pad, **common)
                pw = pointwise.transpose(3, 2, 0, 1)
                inputs = [y, self.constant(f"{name}/pointwise", pw)]
                if cfg["use_bias"]:
                    inputs.append(self.constant(f"{name}/bias", variables[2]))
                y = self.node("Conv", inputs, f"{name}/pointwise_conv", kernel_shape=[1, 1])
            return self.activation(y, cfg.get("activation"), name)
        if kind == "BatchNormalization":
            if cfg["axis"] not in (-1, 3, [3], [-1]):
                fail(f"layer {name}: batch normalisation over axis {cfg['axis']} is not supported")
            channels = variables[-1].shape[0]
            it = iter(variables)
            gamma = next(it) if cfg["scale"] else np.ones(channels, "float32")
            beta = next(it) if cfg["center"] else np.zeros(channels, "float32")
            mean, variance = next(it), next(it)
            return self.node(
                "BatchNormalization",
                [x] + [self.constant(f"{name}/{n}", v) for n, v in
                       (("gamma", gamma), ("beta", beta), ("mean", mean), ("variance", variance))],
                f"{name}/bn", epsilon=float(cfg["epsilon"]))
        if kind == "Activation":
            return self.activation(x, cfg["activation"], name)
        if kind == "MaxPooling2D":
            return self.node("MaxPool", [x], f"{name}/maxpool", kernel_shape=list(cfg["pool_size"]),
                             strides=list(cfg["strides"]),
                             auto_pad={"valid": "VALID", "same": "SAME_UPPER"}[cfg["padding"]])
        if kind == "Add":
            return self.node("Sum", args, f"{name}/add")
        if kind == "GlobalAveragePooling2D":
            if cfg.get("keepdims"):
                fail(f"layer {name}: keepdims is not supported")
            y = self.node("GlobalAveragePool", [x], f"{name}/gap")
            return self.node("Flatten", [y], f"{name}/flatten", axis=1)
        if kind == "Dense":
            inputs = [x, self.constant(f"{name}/kernel", variables[0])]
            y = self.node("MatMul", inputs, f"{name}/matmul")
            if cfg["use_bias"]:
                y = self.node("Add", [y, self.constant(f"{name}/bias", variables[1])], f"{name}/bias_add")
            return self.activation(y, cfg.get("activation"), name)
        if kind == "Dropout":
            return x  # inference: identity
        fail(f"layer {name} of type {kind} is not supported by this converter")


def convert(wheel_path, out_path):
    import h5py
    import numpy
    import onnx

    with zipfile.ZipFile(wheel_path) as wheel:
        keras_bytes = wheel.read(PACKAGE_MODEL)
    with zipfile.ZipFile(io.BytesIO(keras_bytes)) as archive:
        config = json.loads(archive.read("config.json"))
        weights_bytes = archive.read("model.weights.h5")
    builder = GraphBuilder(onnx, numpy)
    nhwc = "image"
    nchw = builder.node("Transpose", [nhwc], "image/nchw", perm=[0, 3, 1, 2])
    with h5py.File(io.BytesIO(weights_bytes), "r") as weights:
        (logits,) = builder.function(config, weights, [nchw])
    builder.nodes.append(onnx.helper.make_node("Identity", [logits], ["logits"], name="logits"))

    graph = onnx.helper.make_graph(
        builder.nodes,
        "pneumonia_xception",
        [onnx.helper.make_tensor_value_info(
            nhwc, onnx.TensorProto.FLOAT, ["batch", INPUT_SIZE, INPUT_SIZE, 3])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 2])],
        builder.initializers,
    )
    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="tramy models/chest-xray-pneumonia/convert.py",
        doc_string="Paediatric chest X-ray pneumonia classifier (Xception, Kermany data) from PyPI "
        "pneumonia-model-package 0.3.0; weights carry no licence. Research use only; "
        "not for diagnosis. Outputs logits [NORMAL, PNEUMONIA].",
    )
    model.ir_version = 8
    for key, value in {
        "source": f"PyPI {PACKAGE} ({WHEEL_NAME}, SHA-256 {WHEEL_SHA256})",
        "labels": "NORMAL,PNEUMONIA",
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


def image_label(name):
    return "NORMAL" if name.startswith("NORMAL") else "PNEUMONIA"


def extract_images(wheel_path, directory):
    """The package's 16 labelled validation images, as `DIR/NORMAL/*.jpeg`, `DIR/PNEUMONIA/*.jpeg`
    (the folder-per-class layout `tramy eval` reads)."""
    count = 0
    with zipfile.ZipFile(wheel_path) as wheel:
        for member in wheel.namelist():
            if member.startswith(PACKAGE_IMAGES) and member.endswith(".jpeg"):
                name = member[len(PACKAGE_IMAGES):]
                folder = os.path.join(directory, image_label(name))
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(wheel.read(member))
                count += 1
    print(f"extracted {count} labelled images into {directory}", file=sys.stderr)


def keras_input(jpeg_bytes):
    """The package's preprocessing without TensorFlow: keras `load_img` (PIL, RGB, nearest
    resize to 150x150), float32, then Xception's `preprocess_input` (x / 127.5 - 1)."""
    import numpy
    from PIL import Image

    image = Image.open(io.BytesIO(jpeg_bytes))
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (INPUT_SIZE, INPUT_SIZE):
        image = image.resize((INPUT_SIZE, INPUT_SIZE), Image.NEAREST)
    x = numpy.asarray(image, dtype="float32").copy()
    x /= 127.5
    x -= 1.0
    return x


def check(wheel_path, model_path, reference_path, tolerance):
    """Runs the ONNX model on the inputs the Keras reference was recorded on and compares."""
    import numpy
    import onnxruntime

    reference = json.load(open(reference_path))
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    worst = 0.0
    with zipfile.ZipFile(wheel_path) as wheel:
        for image in reference["images"]:
            x = keras_input(wheel.read(PACKAGE_IMAGES + image["file"]))
            same_input = hashlib.sha256(x.tobytes()).hexdigest() == image["input_sha256"]
            (logits,) = session.run(["logits"], {"image": x[None]})
            diff = float(numpy.max(numpy.abs(logits[0] - numpy.array(image["logits"]))))
            worst = max(worst, diff)
            print(json.dumps({"file": image["file"], "onnx": [float(v) for v in logits[0]],
                              "keras": image["logits"], "max_abs_diff": diff,
                              "same_input_as_keras": same_input}))
            if not same_input:
                fail(f"{image['file']}: the preprocessed input differs from the one Keras saw "
                     "(different Pillow/JPEG decoder?); parity cannot be judged")
    print(json.dumps({"images": len(reference["images"]), "worst_max_abs_diff": worst,
                      "tolerance": tolerance, "parity": worst <= tolerance}))
    if worst > tolerance:
        fail(f"ONNX logits differ from Keras by up to {worst:.2e} (tolerance {tolerance:.0e})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help=f"use this {WHEEL_NAME} instead of fetching it")
    parser.add_argument("--cache", default=os.path.join(HERE, "..", "..", "target", "pneumonia-model-package"),
                        help="where the fetched wheel is kept (default: target/pneumonia-model-package)")
    parser.add_argument("--out", default=os.path.join(HERE, "model.onnx"), help="ONNX file to write")
    parser.add_argument("--images", help="also extract the 16 labelled images into this folder")
    parser.add_argument("--check", action="store_true",
                        help="compare the ONNX model's logits with keras-reference.json")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    wheel = args.wheel or fetch_wheel(os.path.normpath(args.cache))
    if not os.path.isfile(args.out):
        convert(wheel, args.out)
    if args.images:
        extract_images(wheel, args.images)
    if args.check:
        check(wheel, args.out, os.path.join(HERE, "keras-reference.json"), args.tolerance)


if __name__ == "__main__":
    main()
