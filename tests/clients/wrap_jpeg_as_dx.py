#!/usr/bin/env python3
"""Wraps a greyscale JPEG radiograph as a DICOM Digital X-Ray Image (For Presentation), keeping the
JPEG bitstream as it is (JPEG Baseline, encapsulated): what a film digitiser or a
"JPEG to DICOM" gateway at a commune health station sends.

    wrap_jpeg_as_dx.py IN.jpeg OUT.dcm
"""

import sys

from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, PYDICOM_IMPLEMENTATION_UID, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def main():
    source, target = sys.argv[1], sys.argv[2]
    jpeg = open(source, "rb").read()
    image = Image.open(source)
    if image.mode != "L":
        sys.exit(f"{source} is {image.mode}; only greyscale radiographs are wrapped")
    columns, rows = image.size

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "KERMANY^VAL"
    ds.PatientID = "KERMANY-" + source.rsplit("/", 1)[-1].split(".")[0]
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "DX"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "tramy test wrapper"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "AP"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ConversionType = "DF"
    ds.BurnedInAnnotation = "NO"
    ds.ImageLaterality = "U"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    # Required for FOR PRESENTATION images (PS3.3 C.8.11.3); this window shows the values as stored.
    ds.WindowCenter = 128
    ds.WindowWidth = 256
    ds.VOILUTFunction = "LINEAR"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    ds.save_as(target, enforce_file_format=True)


if __name__ == "__main__":
    main()
