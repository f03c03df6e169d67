#!/usr/bin/env python3
"""Makes a Video Endoscopic Image Storage clip for the tests and benchmarks of video decoding.

usage: make_video_clip.py CODEC FRAMES SEED OUT.dcm [--scale K] [--stream OUT.bin]
  CODEC   mpeg2 (MPEG-2 MP@ML, 1.2.840.10008.1.2.4.100), h264 (H.264 High Profile Level 4.1,
          .102) or h265 (HEVC Main Profile Level 5.1, .107)
  FRAMES  how many frames; SEED the generator's seed
  --scale each synthetic 64x64 frame enlarged K times (nearest), default 4 (256x256)
  --corrupt random|truncate  wraps a damaged stream: random bytes in its place, or its first half
  --stream also writes the elementary stream as encoded, for comparison with ffmpeg's decoding

Frames come from the synthetic endoscopy demo's generator (models/endoscopy-synthetic-demo/
build.py, `frame()`: no real endoscopy video may be shipped), are encoded by Debian's ffmpeg and
wrapped with pydicom as PS3.5 8.2.5-8.2.8 say: the whole stream in the one frame's fragments
(split into several fragments here, so tramy must join them), an empty Basic Offset Table.
Prints {"sop": ..., "study": ..., "series": ..., "frames": N, "rows": R, "columns": C} as JSON.
"""
import argparse
import importlib.util
import json
import pathlib
import subprocess

import numpy
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

ROOT = pathlib.Path(__file__).resolve().parents[2]
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"

# codec: (transfer syntax, ffmpeg encoder arguments, elementary stream muxer)
CODECS = {
    "mpeg2": ("1.2.840.10008.1.2.4.100", ["-c:v", "mpeg2video", "-profile:v", "4", "-level:v", "8", "-q:v", "3"], "mpeg2video"),
    "h264": ("1.2.840.10008.1.2.4.102", ["-c:v", "libx264", "-profile:v", "high", "-level:v", "4.1", "-preset", "fast"], "h264"),
    "h265": ("1.2.840.10008.1.2.4.107", ["-c:v", "libx265", "-profile:v", "main", "-x265-params", "log-level=error:level-idc=51"], "hevc"),
}
FPS = 25


def generator():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "models/endoscopy-synthetic-demo/build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def frames(n, seed, scale):
    demo = generator()
    rng = numpy.random.default_rng(seed)
    # A polyp in the middle third of the clip, as a real withdrawal would show one for a while.
    out = [demo.frame(rng, n // 3 <= i < 2 * n // 3) for i in range(n)]
    return numpy.stack([f.repeat(scale, axis=0).repeat(scale, axis=1) for f in out])


def encode(raw, codec):
    n, rows, columns, _ = raw.shape
    _, args, muxer = CODECS[codec]
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{columns}x{rows}", "-r", str(FPS), "-i", "-", *args, "-pix_fmt", "yuv420p",
               "-f", muxer, "-"]
    return subprocess.run(command, input=raw.tobytes(), stdout=subprocess.PIPE, check=True).stdout


def wrap(stream, codec, n, rows, columns):
    ts = CODECS[codec][0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VIDEO_ENDOSCOPIC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = VIDEO_ENDOSCOPIC, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "SYNTHETIC^VIDEO", "SYNTH-VIDEO", "", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "ES", 1, 1
    ds.Manufacturer = "tramy test clip"
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20260101", "120000", "20260101120000"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = {"mpeg2": "ISO_13818_2", "h264": "ISO_14496_10", "h265": "ISO_23008_2"}[codec]
    ds.PatientOrientation = ""
    ds.AcquisitionContextSequence = []
    colon = pydicom.Dataset()
    colon.CodeValue, colon.CodingSchemeDesignator, colon.CodeMeaning = "71854001", "SCT", "Colon"
    ds.AnatomicRegionSequence = [colon]
    # Cine and Multi-frame modules (PS3.3 C.7.6.5, C.7.6.6): frame time drives the frame pointer.
    ds.NumberOfFrames = n
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1063)
    ds.FrameTime = 1000.0 / FPS
    ds.CineRate = FPS
    ds.RecommendedDisplayFrameRate = FPS
    # Image Pixel: what PS3.5 8.2.5-8.2.8 require of these syntaxes.
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_PARTIAL_420", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    # The one frame item's fragments together are the stream (PS3.5 A.4); several fragments here.
    ds.PixelData = encapsulate([stream], fragments_per_frame=3, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("codec", choices=sorted(CODECS))
    parser.add_argument("frames", type=int)
    parser.add_argument("seed", type=int)
    parser.add_argument("out")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--stream")
    parser.add_argument("--corrupt", choices=["random", "truncate"])
    a = parser.parse_args()
    raw = frames(a.frames, a.seed, a.scale)
    stream = encode(raw, a.codec)
    if a.corrupt == "random":
        stream = numpy.random.default_rng(a.seed).integers(0, 256, len(stream), dtype=numpy.uint8).tobytes()
    elif a.corrupt == "truncate":
        stream = stream[: len(stream) // 2]
    if a.stream:
        pathlib.Path(a.stream).write_bytes(stream)
    n, rows, columns, _ = raw.shape
    ds = wrap(stream, a.codec, n, rows, columns)
    ds.save_as(a.out, enforce_file_format=True)
    print(json.dumps({"sop": ds.SOPInstanceUID, "study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID,
                      "transfer_syntax": CODECS[a.codec][0], "frames": n, "rows": rows, "columns": columns}))


if __name__ == "__main__":
    main()
