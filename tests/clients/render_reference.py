"""Reference renderings of pydicom's test files that hold pixel data, for tests/render_all.rs.

For every such file under pydicom's test_files folder, reads it with pydicom + pylibjpeg, takes
frame 1 (and the last frame of a multi-frame image), and makes the 8-bit image a viewer shows:
greyscale through the Modality LUT (PS3.3 C.11.1, Rescale Slope/Intercept) then a linear VOI
window (PS3.3 C.11.2.1.2.1) over the central 80% of the frame's values, inverted for
MONOCHROME1; colour as RGB (YBR converted by pydicom, palette colour through its LUT).

Usage: render_reference.py OUT_DIR. Prints one JSON object per file: the file, its UIDs and
transfer syntax, the window, and the raw reference samples written to OUT_DIR; or the reason
pydicom could not decode it.
"""

import glob
import json
import os
import sys

import numpy
import pydicom
import pydicom.data
import pydicom.uid
from pydicom.pixels import apply_color_lut, apply_modality_lut

LOSSY = {
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
}


def window_of(values):
    """Centre and width of a linear window over the central 80% of `values`."""
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    lo, hi = lo + 0.1 * span, hi - 0.1 * span
    width = hi - lo + 1.0
    return lo + width / 2.0, width


def linear_voi(values, center, width):
    """PS3.3 C.11.2.1.2.1 to 0..255."""
    low = center - 0.5 - (width - 1.0) / 2.0
    high = center - 0.5 + (width - 1.0) / 2.0
    y = ((values - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    y = numpy.where(values <= low, 0.0, numpy.where(values > high, 255.0, y))
    return numpy.clip(numpy.round(y), 0, 255).astype(numpy.uint8)


def grey(ds, frame, window):
    values = apply_modality_lut(frame, ds).astype(numpy.float64)
    center, width = window if window else window_of(values)
    image = linear_voi(values, center, width)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        image = 255 - image
    return image, (center, width)


def colour(ds, frame):
    if str(ds.PhotometricInterpretation).strip() == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        rgb = numpy.round(rgb.astype(numpy.float64) / ((1 << bits) - 1) * 255.0)
        return rgb.astype(numpy.uint8)
    if rgb_bits(ds) > 8:
        scale = (1 << rgb_bits(ds)) - 1
        return numpy.round(frame.astype(numpy.float64) / scale * 255.0).astype(numpy.uint8)
    return frame.astype(numpy.uint8)


def rgb_bits(ds):
    return int(ds.BitsStored)


def with_uids(ds, path, out_dir, index):
    """A few files lack the UIDs every stored instance needs (PS3.3 C.7.1-C.7.3, C.12.1): a copy
    gets them, generated from the file's name, with its pixel data untouched."""
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
               if k not in ds]
    if not missing:
        return path
    name = os.path.basename(path)
    for keyword in missing:
        if keyword == "SOPClassUID":
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
        else:
            setattr(ds, keyword, pydicom.uid.generate_uid(entropy_srcs=[name, keyword]))
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    copy = os.path.join(out_dir, f"{index}.dcm")
    ds.save_as(copy)
    return copy


def reference(path, out_dir, index):
    ds = pydicom.dcmread(path)
    stored = with_uids(ds, path, out_dir, index)
    ts = str(ds.file_meta.TransferSyntaxUID)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    array = ds.pixel_array
    wanted = [1, frames] if frames > 1 else [1]
    entry = {
        "file": stored,
        "ts": ts,
        "lossy": ts in LOSSY,
        "study": str(ds.StudyInstanceUID),
        "series": str(ds.SeriesInstanceUID),
        "sop": str(ds.SOPInstanceUID),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "photometric": str(ds.PhotometricInterpretation).strip(),
        "frames": [],
    }
    is_colour = int(ds.SamplesPerPixel) == 3 or entry["photometric"] == "PALETTE COLOR"
    entry["mode"] = "RGB" if is_colour else "L"
    window = None
    for number in wanted:
        frame = array[number - 1] if frames > 1 else array
        if is_colour:
            image = colour(ds, frame)
        else:
            image, window = grey(ds, frame, window)
        ref = os.path.join(out_dir, f"{index}-{number}.raw")
        image.astype(numpy.uint8).tofile(ref)
        entry["frames"].append({"number": number, "reference": ref})
    entry["window"] = None if is_colour else list(window)
    return entry


def main():
    out_dir = sys.argv[1]
    folder = os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm"))
    for index, path in enumerate(sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True))):
        if os.path.isdir(path):
            continue
        try:
            header = pydicom.dcmread(path, force=True)
        except Exception:
            continue
        if "PixelData" not in header:
            continue
        name = os.path.relpath(path, folder)
        try:
            entry = reference(path, out_dir, index)
        except Exception as error:  # pydicom itself cannot decode it
            entry = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:300]}
        entry.setdefault("file", path)
        entry["name"] = name
        print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
