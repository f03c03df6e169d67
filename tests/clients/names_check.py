#!/usr/bin/env python3
"""Vietnamese names for tests/names.rs (issue #12): writes patients in the character sets a
Vietnamese site meets, and asks tramy for them with pynetdicom's C-FIND.

  names_check.py make OUT      writes the data sets into OUT; prints {label: StudyInstanceUID}
  names_check.py find PORT CHARSET NAME [--fuzzy]
                               a Study Root C-FIND for PatientName=NAME, the identifier in
                               CHARSET ("" for none); prints [{study, name, charset}]
"""
import copy
import json
import os
import sys

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "..", "dicom-samples", "ct_small_explicit_le.dcm")

# label: (SpecificCharacterSet or None, PatientName, PatientID, birth date, sex, Other Patient IDs)
PATIENTS = {
    # A HIS in UTF-8, with the national citizen ID as an other ID.
    "utf8": ("ISO_IR 192", "Nguyễn^Văn An", "VN001", "19800101", "M", ["079080001234"]),
    # A modality with an ASCII keyboard, Latin-1 declared.
    "latin1": ("ISO_IR 100", "NGUYEN^VAN AN", "LAT002", "19800101", "M", []),
    # An accented Latin-1 name (the bytes on the wire are Latin-1, not UTF-8).
    "latin1_accented": ("ISO_IR 100", "Müller^José", "LAT003", "19700505", "M", []),
    # No Specific Character Set at all: the default repertoire.
    "ascii": (None, "TRAN^THI BINH", "ASC004", "19900202", "F", []),
    # Provisional patients (no ID): a commune station typing the name in one component, the
    # same name with another birth date, and one known only by the national ID.
    "provisional_match": ("ISO_IR 192", "NGUYEN VAN AN", "", "19800101", "M", []),
    "provisional_other_birth": ("ISO_IR 192", "Nguyễn^Văn An", "", "19810101", "M", []),
    "provisional_national_id": ("ISO_IR 192", "Nguyễn^A", "", "", "", ["079080001234"]),
}


def make(out):
    os.makedirs(out, exist_ok=True)
    template = dcmread(TEMPLATE)
    studies = {}
    for label, (charset, name, pid, birth, sex, others) in PATIENTS.items():
        ds = copy.deepcopy(template)
        for keyword in ("SpecificCharacterSet", "OtherPatientIDs", "IssuerOfPatientID"):
            if keyword in ds:
                delattr(ds, keyword)
        if charset:
            ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.PatientID = pid
        ds.PatientBirthDate = birth
        ds.PatientSex = sex
        if others:
            item = Dataset()
            item.PatientID = others[0]
            item.TypeOfPatientID = "TEXT"
            ds.OtherPatientIDsSequence = [item]
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(os.path.join(out, f"{label}.dcm"), enforce_file_format=True)
        studies[label] = ds.StudyInstanceUID
    # The Latin-1 file must really hold Latin-1 bytes: "Müller" is 0xFC there.
    with open(os.path.join(out, "latin1_accented.dcm"), "rb") as f:
        assert b"M\xfcller^Jos\xe9" in f.read()
    print(json.dumps(studies))


def find(port, charset, name):
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", int(port), ae_title="TRAMY")
    if not assoc.is_established:
        sys.exit("association refused")
    query = Dataset()
    if charset:
        query.SpecificCharacterSet = charset
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = name
    query.StudyInstanceUID = ""
    found = []
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if status is None:
            sys.exit("no response")
        if status.Status in (0xFF00, 0xFF01) and identifier is not None:
            found.append({
                "study": identifier.StudyInstanceUID,
                "name": str(identifier.PatientName),
                "charset": identifier.get("SpecificCharacterSet", ""),
            })
        elif status.Status != 0x0000:
            sys.exit(f"C-FIND failed: 0x{status.Status:04X}")
    assoc.release()
    print(json.dumps(found, ensure_ascii=False))


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "find":
        find(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
