#!/usr/bin/env python3
"""Writes a study of N instances for forwarding tests: fresh copies of dicom-samples' CT (or of
--template), one Study Instance UID, each with its own SOP Instance UID, as Part 10 files in OUT.

  make_study.py OUT N [--modality CR] [--patient-id ID] [--issuer ISSUER]
  (--patient-id '' writes a patient without an ID) [--pad-kb K]

--pad-kb adds K kB of private data per instance (to make a backlog of a given size).
Prints the Study Instance UID.
"""
import argparse
import copy
import os

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "dicom-samples", "ct_small_explicit_le.dcm")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("n", type=int)
    p.add_argument("--template", default=DEFAULT)
    p.add_argument("--modality")
    p.add_argument("--patient-id")
    p.add_argument("--issuer")
    p.add_argument("--pad-kb", type=int, default=0)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    template = dcmread(a.template)
    study = generate_uid()
    series = generate_uid()
    for i in range(a.n):
        ds = copy.deepcopy(template)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.InstanceNumber = i + 1
        if a.modality:
            ds.Modality = a.modality
        if a.patient_id is not None:
            ds.PatientID = a.patient_id
        if a.issuer is not None:
            ds.IssuerOfPatientID = a.issuer
        elif "IssuerOfPatientID" in ds:
            del ds.IssuerOfPatientID
        if a.pad_kb:
            block = ds.private_block(0x0009, "TRAMY TEST PADDING", create=True)
            block.add_new(0x01, "OB", os.urandom(a.pad_kb * 1024))
        ds.save_as(os.path.join(a.out, f"{i:05d}.dcm"), enforce_file_format=True)
    print(study)


if __name__ == "__main__":
    main()
