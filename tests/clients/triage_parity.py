#!/usr/bin/env python3
"""Compares tramy's triage preprocessing and inference with an independent Python pipeline on the
same DICOM file: pydicom + the PS3.3 C.11.2.1.2.1 linear window for the input tensor, Python
onnxruntime for the outputs. Prints JSON with the largest differences.

usage: triage_parity.py MODEL.onnx DICOM TRAMY_INPUT.bin TRAMY_PROBABILITY
"""
import json
import sys

import numpy
import onnxruntime
import pydicom


def main():
    model, dicom, dumped, tramy_probability = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    ds = pydicom.dcmread(dicom)
    x = ds.pixel_array.astype(numpy.float64) * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    y = numpy.where(x <= c - 0.5 - (w - 1) / 2, 0.0,
                    numpy.where(x > c - 0.5 + (w - 1) / 2, 255.0, ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0))
    expected_input = (y / 255.0).astype(numpy.float32)[None, None, :, :]
    tramy_input = numpy.fromfile(dumped, dtype="<f4").reshape(expected_input.shape)
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image": tramy_input})[0][0]
    probability = float(numpy.exp(logits[1]) / numpy.exp(logits).sum())
    print(json.dumps({
        "max_input_difference": float(numpy.abs(tramy_input - expected_input).max()),
        "output_difference": abs(probability - tramy_probability),
        "python_probability": probability,
    }))


if __name__ == "__main__":
    main()
