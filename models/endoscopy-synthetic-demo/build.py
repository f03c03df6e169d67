#!/usr/bin/env python3
"""SYNTHETIC DEMO — the endoscopy triage model, rebuilt from nothing but this script.

No endoscopy images or models exist in the package registries tramy may use, so this demo makes
its own: a deterministic generator of endoscopy-like RGB frames (pink mucosa with texture and
vessels; in half of them a polyp-like lesion: a raised, redder ellipse with shading and a
specular highlight) with ground truth, and a small classifier trained on them (4×4 average
pooling, then logistic regression on the 16×16×3 pooled colours), exported to ONNX. It exercises
the same per-frame video path a real polyp model would. It is not a medical model.

usage:
  build.py model                 train on seed 1 and write model.onnx beside this file
  build.py frames DIR N SEED     write N labelled PNG frames into DIR/polyp and DIR/normal
  build.py clip FILE N SEED      write an N-frame Video Endoscopic DICOM clip (needs pydicom);
                                 prints the per-frame ground truth as JSON
Needs numpy and onnx.
"""
import json
import pathlib
import struct
import sys
import zlib

import numpy

SIZE = 64
HERE = pathlib.Path(__file__).resolve().parent


def frame(rng, polyp):
    y, x = numpy.mgrid[0:SIZE, 0:SIZE].astype(numpy.float64)
    texture = sum(
        rng.uniform(4, 10) * numpy.sin(rng.uniform(0.05, 0.3) * x + rng.uniform(0.05, 0.3) * y + rng.uniform(0, 6.3))
        for _ in range(4)
    )
    base = numpy.array([190.0, 105.0, 105.0]) + rng.normal(0, 8, 3)
    image = base[None, None, :] + texture[:, :, None] * numpy.array([1.0, 0.6, 0.6])
    for _ in range(rng.integers(2, 5)):  # vessels: dark red curves
        x0, y0, a, f = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(-1, 1), rng.uniform(0.05, 0.2)
        d = numpy.abs(y - (y0 + a * (x - x0) + 4 * numpy.sin(f * x)))
        image -= (d < 1.0)[:, :, None] * numpy.array([60.0, 50.0, 40.0])
    if polyp:
        cx, cy = rng.uniform(14, SIZE - 14), rng.uniform(14, SIZE - 14)
        rx, ry = rng.uniform(6, 13), rng.uniform(6, 13)
        r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        bump = numpy.clip(1 - r2, 0, 1)
        image += bump[:, :, None] * numpy.array([45.0, -15.0, -10.0])
        image += (numpy.exp(-(((x - cx + rx / 3) ** 2 + (y - cy - ry / 3) ** 2) / 3.0)) * 120)[:, :, None]
    image += rng.normal(0, 6, image.shape)
    return numpy.clip(image, 0, 255).astype(numpy.uint8)


def dataset(n, seed):
    rng = numpy.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(bool)
    return numpy.stack([frame(rng, bool(p)) for p in labels]), labels


def features(frames):
    """What the ONNX graph computes before its linear layer: scale to 0..1, 4x4 average pool."""
    x = frames.astype(numpy.float32) / 255.0  # N, H, W, 3
    pooled = x.reshape(len(x), SIZE // 4, 4, SIZE // 4, 4, 3).mean(axis=(2, 4))  # N, 16, 16, 3
    return pooled.transpose(0, 3, 1, 2).reshape(len(x), -1)  # channel-first, as NCHW pooling gives


def train():
    frames, labels = dataset(2000, seed=1)
    x = features(frames).astype(numpy.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    w, b = numpy.zeros(z.shape[1]), 0.0
    for _ in range(400):
        p = 1 / (1 + numpy.exp(-(z @ w + b)))
        grad = p - labels
        w -= 0.5 * (z.T @ grad / len(z) + 1e-3 * w)
        b -= 0.5 * grad.mean()
    # Fold the standardisation into the linear layer so the graph takes plain 0..1 pixels.
    weight = (w / std).astype(numpy.float32)
    bias = numpy.float32(b - (mean / std) @ w)
    return weight, bias


def export(weight, bias, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes = [
        helper.make_node("AveragePool", ["frames"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weight"], ["logit_nobias"]),
        helper.make_node("Add", ["logit_nobias", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["polyp_probability"]),
    ]
    graph = helper.make_graph(
        nodes, "synthetic_polyp_demo",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("polyp_probability", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(weight.reshape(-1, 1), "weight"),
                     numpy_helper.from_array(numpy.array([bias], dtype=numpy.float32), "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    model.doc_string = "SYNTHETIC DEMO: trained on generated frames only; not a medical model."
    onnx.checker.check_model(model)
    onnx.save(model, path)


def png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def clip(path, n, seed):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    frames, labels = dataset(n, seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.1.1"  # Video Endoscopic Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "SYNTHETIC^DEMO", "SYNTH-1", "ES"
    ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "20260101", "120000", 1, 1
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = n
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)
    print(json.dumps({"polyp": [bool(v) for v in labels]}))


def main():
    cmd = sys.argv[1]
    if cmd == "model":
        weight, bias = train()
        export(weight, bias, HERE / "model.onnx")
        print(f"wrote {HERE / 'model.onnx'}")
    elif cmd == "frames":
        out, n, seed = pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        frames, labels = dataset(n, seed)
        for i, (f, p) in enumerate(zip(frames, labels)):
            d = out / ("polyp" if p else "normal")
            d.mkdir(parents=True, exist_ok=True)
            png(d / f"frame{i:05d}.png", f)
    elif cmd == "clip":
        clip(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))


if __name__ == "__main__":
    main()
