#!/usr/bin/env python3
"""Writes N copies of the MR sample with fresh SOP Instance UIDs, 100 a series, into OUT_DIR:
an archive of many small instances for the QIDO-RS benchmarks.

usage: make_mr_instances.py N OUT_DIR     (needs pydicom: the test venv has it)
"""
import os
import sys

import pydicom
from pydicom.uid import generate_uid

n, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(out)
src = pydicom.dcmread("dicom-samples/mr_small_explicit_le.dcm")
series = [generate_uid() for _ in range(n // 100 + 1)]
for i in range(n):
    src.SOPInstanceUID = generate_uid()
    src.file_meta.MediaStorageSOPInstanceUID = src.SOPInstanceUID
    src.SeriesInstanceUID = series[i // 100]
    src.save_as(f"{out}/{i:06d}.dcm")
