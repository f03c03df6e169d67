#!/usr/bin/env python3
"""TEST ONLY: random-weight ONNX graphs shaped like the bring-your-own classifiers' exports.

Not a model: every weight is drawn at random (seeded) at test time into a temporary folder and
is never committed. torch is not available in CI, so the graphs are built with onnx.helper in
the same architecture and with the same input/output names and shapes that the export scripts
(models/available/*/export.py, torch.onnx.export with BatchNorm folded into Conv) produce.

usage:
  random_regnetx_onnx.py regnetx OUT.onnx [--labels 14] [--size 716] [--seed 0]
      torchvision regnet_x_800mf with fc = Linear(672, labels): "input" [batch, 3, size, size]
      -> "logits" [batch, labels]; prints the architecture's stage widths/depths and its
      parameter count as torchvision counts it (BatchNorm weight and bias included).
  random_regnetx_onnx.py tiny OUT.onnx [--labels 2] [--size 224] [--seed 0]
      a small conv -> global pool -> linear classifier with the same names, standing in for
      any torchvision/timm classifier exported by models/available/own-image-classifier.
Needs numpy and onnx.
"""
import argparse
import json
import math

import numpy
import onnx
from onnx import TensorProto, helper, numpy_helper


class Graph:
    """Accumulates nodes and random initialisers."""

    def __init__(self, seed):
        self.rng = numpy.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.torch_params = 0  # parameters as torchvision counts them (before BN folding)
        self.n = 0

    def name(self, what):
        self.n += 1
        return f"{what}_{self.n}"

    def conv_bn(self, x, c_in, c_out, k, stride=1, groups=1, relu=True):
        """Conv2dNormActivation: Conv(bias=False) + BatchNorm2d [+ ReLU], BN folded into the
        conv's weight and bias as torch.onnx.export does in eval mode."""
        fan_out = k * k * c_out
        # torchvision's init is N(0, sqrt(2/fan_out)); scaled down so 16 random residual blocks
        # keep finite, moderate activations.
        w = self.rng.normal(0, math.sqrt(2.0 / fan_out) * 0.5, (c_out, c_in // groups, k, k))
        b = self.rng.normal(0, 0.01, c_out)
        wn, bn, y = self.name("w"), self.name("b"), self.name("conv")
        self.inits += [numpy_helper.from_array(w.astype(numpy.float32), wn),
                       numpy_helper.from_array(b.astype(numpy.float32), bn)]
        self.nodes.append(helper.make_node(
            "Conv", [x, wn, bn], [y], kernel_shape=[k, k], strides=[stride, stride],
            pads=[k // 2] * 4, group=groups))
        self.torch_params += w.size + 2 * c_out  # conv weight + BN weight and bias
        return self.relu(y) if relu else y

    def relu(self, x):
        y = self.name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def add(self, a, b):
        y = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        return y

    def head(self, x, c_in, labels):
        """AdaptiveAvgPool2d(1) -> flatten -> Linear(c_in, labels) into "logits"."""
        pooled, flat = self.name("pool"), self.name("flat")
        self.nodes += [helper.make_node("GlobalAveragePool", [x], [pooled]),
                       helper.make_node("Flatten", [pooled], [flat], axis=1)]
        w = self.rng.normal(0, 0.01 * 30, (labels, c_in)).astype(numpy.float32)
        b = self.rng.normal(0, 0.5, labels).astype(numpy.float32)
        self.inits += [numpy_helper.from_array(w, "fc.weight"), numpy_helper.from_array(b, "fc.bias")]
        self.nodes.append(helper.make_node("Gemm", [flat, "fc.weight", "fc.bias"], ["logits"], transB=1))
        self.torch_params += w.size + b.size


def regnet_x_800mf_stages():
    """torchvision BlockParams.from_init_params(depth=16, w_0=56, w_a=35.73, w_m=2.28,
    group_width=16) (torchvision/models/regnet.py), in numpy: [(width, depth)] per stage."""
    depth, w_0, w_a, w_m, quant = 16, 56, 35.73, 2.28, 8
    widths_cont = numpy.arange(depth) * w_a + w_0
    capacity = numpy.round(numpy.log(widths_cont / w_0) / math.log(w_m))
    block_widths = (numpy.round(w_0 * numpy.power(w_m, capacity) / quant) * quant).astype(int)
    stages = []
    for w in block_widths.tolist():
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    # _adjust_widths_groups_compatibilty: each width made divisible by the group width 16
    # (torchvision's _make_divisible, bottleneck multiplier 1): 56 -> 64, 664 -> 672.
    return [(make_divisible(w, 16), d) for w, d in stages]


def make_divisible(v, divisor):
    """torchvision.models._utils._make_divisible (min_value = divisor)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def regnetx(g, labels):
    x = g.conv_bn("input", 3, 32, 3, stride=2)  # SimpleStemIN
    c_in = 32
    for width, depth in regnet_x_800mf_stages():
        for i in range(depth):
            stride = 2 if i == 0 else 1
            # ResBottleneckBlock: 1x1, 3x3 grouped (group width 16), 1x1; projection shortcut
            # when the shape changes; ReLU after the sum.
            f = g.conv_bn(x, c_in, width, 1)
            f = g.conv_bn(f, width, width, 3, stride=stride, groups=width // 16)
            f = g.conv_bn(f, width, width, 1, relu=False)
            shortcut = g.conv_bn(x, c_in, width, 1, stride=stride, relu=False) \
                if (c_in != width or stride != 1) else x
            x = g.relu(g.add(shortcut, f))
            c_in = width
    g.head(x, c_in, labels)


def tiny(g, labels):
    x = g.conv_bn("input", 3, 16, 3, stride=4)
    x = g.conv_bn(x, 16, 32, 3, stride=2)
    g.head(x, 32, labels)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["regnetx", "tiny"])
    p.add_argument("out")
    p.add_argument("--labels", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    labels = a.labels or (14 if a.kind == "regnetx" else 2)
    size = a.size or (716 if a.kind == "regnetx" else 224)
    g = Graph(a.seed)
    (regnetx if a.kind == "regnetx" else tiny)(g, labels)
    graph = helper.make_graph(
        g.nodes, f"RANDOM_{a.kind}_test_only",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    model.doc_string = "RANDOM WEIGHTS, TEST ONLY: not a model; made at test time, never shipped."
    onnx.checker.check_model(model)
    onnx.save(model, a.out)
    info = {"kind": a.kind, "labels": labels, "size": size, "torch_params": int(g.torch_params)}
    if a.kind == "regnetx":
        info["stages"] = regnet_x_800mf_stages()
    print(json.dumps(info))


if __name__ == "__main__":
    main()
