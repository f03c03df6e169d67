#!/usr/bin/env python3
"""Rebuilds this folder's sample files from the test files shipped in the PyPI `pydicom` wheel.

The MR_small variants in pydicom share one Series and SOP Instance UID; each copy here gets its
own Series and SOP Instance UID by replacing the UID text with one of the same length, so every
byte outside those two UIDs is the original's. Usage: python prepare-from-pydicom.py
"""
import hashlib
import pathlib

import pydicom

SOURCE = pathlib.Path(pydicom.__file__).parent / "data" / "test_files"
HERE = pathlib.Path(__file__).resolve().parent

MR_SERIES = b"1.3.6.1.4.1.5962.1.3.4.1.20040826185059.5457"
MR_SOP = b"1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457"

# (source file, sample name, digit that replaces the series/instance component, or None to copy)
SAMPLES = [
    ("CT_small.dcm", "ct_small_explicit_le.dcm", None),
    ("MR_small.dcm", "mr_small_explicit_le.dcm", None),
    ("MR_small_implicit.dcm", "mr_small_implicit_le.dcm", b"2"),
    ("MR_small_bigendian.dcm", "mr_small_explicit_be.dcm", b"3"),
    ("MR_small_RLE.dcm", "mr_small_rle.dcm", b"4"),
    ("MR_small_jp2klossless.dcm", "mr_small_j2k_lossless.dcm", b"5"),
    ("JPGExtended.dcm", "nm_jpeg_extended.dcm", None),
    ("examples_ybr_color.dcm", "us_multiframe_jpeg.dcm", None),
    ("test-SR.dcm", "sr_comprehensive.dcm", None),
]


def main() -> None:
    for source, name, digit in SAMPLES:
        data = (SOURCE / source).read_bytes()
        if digit is not None:
            series = MR_SERIES.replace(b".4.1.2004", b".4." + digit + b".2004")
            sop = MR_SOP.replace(b".4.1.1.2004", b".4.1." + digit + b".2004")
            assert len(series) == len(MR_SERIES) and len(sop) == len(MR_SOP)
            assert data.count(MR_SOP) >= 2, f"{source}: SOP Instance UID not found in meta and data set"
            data = data.replace(MR_SERIES, series).replace(MR_SOP, sop)
        (HERE / name).write_bytes(data)
        print(f"{name}  {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
