"""Identifying test instances for tests/research_export.rs, and the identifiers they hold.

usage: research_prepare.py OUT_DIR CT_SOURCE DX_SOURCE

Writes OUT_DIR/ct.dcm (pydicom's CT_small with a patient's name, IDs, birth date, institution,
referring physician, accession, operators, private attributes and identifying sequences),
OUT_DIR/burned.dcm (the same patient's instance of a study of its own with Burned In
Annotation YES), OUT_DIR/dx.dcm (the wrapped chest DX with another patient's identity) and
prints, as JSON, every identifying value the three hold: names, IDs, UIDs (all but the
standard's own 1.2.840.10008 ones), institution, accession, station, and every date.
"""
import json
import sys

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

out, ct_source, dx_source = sys.argv[1], sys.argv[2], sys.argv[3]


def identify(ds, name, pid, issuer, birth, institution, accession):
    ds.PatientName = name
    ds.PatientID = pid
    ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = birth
    ds.PatientSex = "M"
    ds.PatientAge = "061Y"
    ds.InstitutionName = institution
    ds.InstitutionAddress = "78 Giai Phong, Dong Da, Ha Noi"
    ds.ReferringPhysicianName = "TRAN^THI BINH"
    ds.PerformingPhysicianName = "PHAM^QUOC HUNG"
    ds.OperatorsName = "VO^MINH TAM"
    ds.AccessionNumber = accession
    ds.StudyID = "STUDY9911"
    ds.StationName = "CTROOM7HN"
    ds.PatientAddress = "12 Hang Bac, Hoan Kiem"
    ds.PatientTelephoneNumbers = "0912345678"
    ds.OtherPatientNames = "NGUYEN^AN"
    request = Dataset()
    request.AccessionNumber = accession
    request.RequestedProcedureID = "RPID5566"
    request.ScheduledProcedureStepID = "SPSID7788"
    request.StudyInstanceUID = ds.StudyInstanceUID
    ds.RequestAttributesSequence = Sequence([request])
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = ds.SOPClassUID
    referenced.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = Sequence([referenced])
    block = ds.private_block(0x0071, "TRAMY TEST PRIVATE", create=True)
    block.add_new(0x01, "LO", "PRIVATE SECRET TEXT")
    block.add_new(0x02, "PN", name)


ct = pydicom.dcmread(ct_source)
identify(ct, "NGUYEN^VAN AN", "VN778899", "BVBACHMAI", "19620315",
         "Benh vien Bach Mai", "ACC20240115")
ct.save_as(f"{out}/ct.dcm")

burned = pydicom.dcmread(f"{out}/ct.dcm")
burned.StudyInstanceUID = generate_uid()
burned.SeriesInstanceUID = generate_uid()
burned.SOPInstanceUID = generate_uid()
burned.file_meta.MediaStorageSOPInstanceUID = burned.SOPInstanceUID
burned.RequestAttributesSequence[0].StudyInstanceUID = burned.StudyInstanceUID
burned.BurnedInAnnotation = "YES"
burned.save_as(f"{out}/burned.dcm")

dx = pydicom.dcmread(dx_source)
identify(dx, "LE^THI HOA", "VN112233", "BVCHORAY", "19700101",
         "Benh vien Cho Ray", "ACCDX7788")
dx.PatientSex = "F"
dx.PatientAge = "004Y"
dx.PatientBirthDate = "20211105"
dx.BurnedInAnnotation = "NO"
dx.save_as(f"{out}/dx.dcm")


def identifiers(ds):
    found = set()
    for e in list(ds.file_meta.iterall()) + list(ds.iterall()):
        if e.VR == "SQ" or e.value in (None, ""):
            continue
        values = e.value if isinstance(e.value, pydicom.multival.MultiValue) else [e.value]
        for v in values:
            v = str(v).strip()
            if e.VR == "UI" and not v.startswith("1.2.840.10008"):
                if v not in (pydicom.uid.PYDICOM_IMPLEMENTATION_UID,):
                    found.add(v)
            elif e.VR in ("DA", "DT"):
                found.add(v[:8])
            elif e.keyword in ("PatientName", "OtherPatientNames", "ReferringPhysicianName",
                               "PerformingPhysicianName", "OperatorsName"):
                found.update(p for p in str(v).replace("^", " ").split() if len(p) > 3)
                found.add(v)
            elif e.keyword in ("PatientID", "IssuerOfPatientID", "InstitutionName",
                               "InstitutionAddress", "AccessionNumber", "StudyID",
                               "StationName", "PatientAddress", "PatientTelephoneNumbers",
                               "RequestedProcedureID", "ScheduledProcedureStepID"):
                found.add(v)
    for block in ("PRIVATE SECRET TEXT", "ABCD1234", "1234ABCD", "JFK IMAGING CENTER"):
        found.add(block)
    return found


everything = set()
for name in ("ct", "burned", "dx"):
    everything |= identifiers(pydicom.dcmread(f"{out}/{name}.dcm"))
print(json.dumps(sorted(everything)))
