#!/usr/bin/env python3
"""Writes a tiny ONNX classifier for tramy's triage tests, with fixed weights so its outputs are
known: input "image" [N, 1, H, W] float32; logits [N, 2] = mean(image) * [-4, 4] + [2, -2];
output "logits". A model for testing the plumbing, never for findings.

usage: make_test_model.py OUT.onnx H W
"""
import sys

import onnx
from onnx import TensorProto, helper


def main():
    out, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, h, w])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    weight = helper.make_tensor("weight", TensorProto.FLOAT, [1, 2], [-4.0, 4.0])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [2], [2.0, -2.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "one_axis"], ["mean2d"]),
        helper.make_node("MatMul", ["mean2d", "weight"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["logits"]),
    ]
    one_axis = helper.make_tensor("one_axis", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "brightness", [image], [logits], initializer=[weight, bias, axes, one_axis])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, out)


if __name__ == "__main__":
    main()
