"""Reads back a research set for tests/research_export.rs.

usage: research_check.py SET_DIR IDENTIFIERS_JSON

Walks every element value of every DICOM file under SET_DIR (the File Meta group and the data
set, sequences recursed, every value of multi-valued ones) and the text of labels.csv,
manifest.json and README.txt, and prints JSON: the identifying values found (with where), the
private attributes left, each instance's de-identification marks, and the labels' rows.
"""
import csv
import json
import os
import re
import sys

import pydicom

root, identifiers = sys.argv[1], json.load(open(sys.argv[2]))
leaks, private, instances = [], [], []


def values(e):
    if e.VR == "SQ" or e.value is None:
        return []
    if isinstance(e.value, (bytes, bytearray)):
        # Binary values (pixel data among them) are not text: only short ones could hold any.
        return [e.value.decode("latin-1")] if len(e.value) < 1024 else []
    vs = e.value if isinstance(e.value, pydicom.multival.MultiValue) else [e.value]
    return [str(v) for v in vs]


def check_text(text, where):
    folded = text.upper()
    for ident in identifiers:
        if not ident:
            continue
        # A name's word is found as a word ("TRAN" is not in "transfer"); anything else anywhere.
        pattern = re.escape(ident.upper())
        if ident.isalpha():
            pattern = r"(?<![A-Z])" + pattern + r"(?![A-Z])"
        if re.search(pattern, folded):
            leaks.append({"where": where, "value": ident})


for dirpath, _, files in os.walk(root):
    for name in sorted(files):
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)
        if name.endswith(".dcm"):
            ds = pydicom.dcmread(path)
            for e in list(ds.file_meta.iterall()) + list(ds.iterall()):
                if e.tag.group % 2 == 1:
                    private.append(f"{rel} {e.tag}")
                for v in values(e):
                    check_text(v, f"{rel} {e.tag} {e.keyword}")
            check_text(rel, f"path {rel}")
            codes = [(c.CodeValue, c.CodingSchemeDesignator)
                     for c in ds.get("DeidentificationMethodCodeSequence", [])]
            instances.append({
                "path": rel,
                "modality": ds.get("Modality", ""),
                "study": ds.StudyInstanceUID,
                "series": ds.SeriesInstanceUID,
                "sop": ds.SOPInstanceUID,
                "meta_sop": ds.file_meta.MediaStorageSOPInstanceUID,
                "transfer_syntax": ds.file_meta.TransferSyntaxUID,
                "patient_id": ds.get("PatientID", ""),
                "patient_name": str(ds.get("PatientName", "")),
                "identity_removed": ds.get("PatientIdentityRemoved", ""),
                "method": list(ds.get("DeidentificationMethod", [])) if ds.get("DeidentificationMethod") else [],
                "codes": codes,
                "longitudinal": ds.get("LongitudinalTemporalInformationModified", ""),
                "study_date": ds.get("StudyDate", ""),
            })
        else:
            with open(path, encoding="utf-8") as f:
                check_text(f.read(), rel)

rows = []
labels = os.path.join(root, "labels.csv")
if os.path.exists(labels):
    with open(labels, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
manifest = {}
if os.path.exists(os.path.join(root, "manifest.json")):
    manifest = json.load(open(os.path.join(root, "manifest.json")))
print(json.dumps({"leaks": leaks, "private": private, "instances": instances,
                  "labels": rows, "manifest": manifest}))
