#!/usr/bin/env python3
"""dicomweb-client driven checks for tramy's integration tests. Each subcommand prints one JSON
document: {"ok": bool, "details": ...}.

  store      BASE FILE...            STOW-RS every file in one request
  search     BASE FILE...            QIDO-RS at every level, several query forms
  retrieve   BASE FILE...            WADO-RS instance (as stored): data set bytes identical
  metadata   BASE FILE...            WADO-RS metadata: values match the files
  frames     BASE FILE...            WADO-RS frame 1: bytes match the file's frame 1
"""
import email.parser
import email.policy
import json
import struct
import sys

import pydicom
import requests
import tramy_auth  # noqa: F401  (sends TRAMY_TOKEN)
from dicomweb_client.api import DICOMwebClient


def dataset_bytes(path):
    raw = open(path, "rb").read()
    group_len = struct.unpack("<I", raw[140:144])[0]
    return raw[144 + group_len:]


def multipart_parts(response):
    """Splits a multipart/related response into its part payloads."""
    head = f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    return [part.get_payload(decode=True) for part in msg.iter_parts()], [part.get_content_type() for part in msg.iter_parts()]


def uids(ds):
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def cmd_store(base, files):
    client = DICOMwebClient(base)
    datasets = [pydicom.dcmread(f) for f in files]
    result = client.store_instances(datasets)
    referenced = [str(i.ReferencedSOPInstanceUID) for i in result.get("ReferencedSOPSequence", [])]
    failed = [str(i.ReferencedSOPInstanceUID) for i in result.get("FailedSOPSequence", [])]
    expected = sorted(str(d.SOPInstanceUID) for d in datasets)
    urls = [str(i.RetrieveURL) for i in result.get("ReferencedSOPSequence", [])]
    ok = sorted(referenced) == expected and not failed and all(u.startswith(base) for u in urls)
    return ok, {"referenced": referenced, "failed": failed, "urls": urls}


def cmd_search(base, files):
    client = DICOMwebClient(base)
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    studies = sorted({d.StudyInstanceUID for d in datasets})
    problems = []

    def expect(name, got, want):
        if got != want:
            problems.append(f"{name}: got {got}, want {want}")

    found = client.search_for_studies()
    expect("all studies", sorted(s["0020000D"]["Value"][0] for s in found), studies)
    for s in found:
        for tag in ["00080020", "00080050", "00080056", "00080061", "00100010", "00100020", "0020000D", "00201206", "00201208", "00081190"]:
            if tag not in s:
                problems.append(f"study result lacks required attribute {tag}")
    expect("limit", len(client.search_for_studies(limit=2)), min(2, len(studies)))
    expect("offset", len(client.search_for_studies(offset=1)), len(studies) - 1)
    mr = [d for d in datasets if d.Modality == "MR"]
    if mr:
        study = mr[0].StudyInstanceUID
        expect("wildcard name", len(client.search_for_studies(search_filters={"PatientName": "Compressed*MR1"})), 1)
        expect("fuzzy name", len(client.search_for_studies(search_filters={"PatientName": "compressedsamples"}, fuzzymatching=True)) >= 1, True)
        expect("modality list", len(client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})), 1)
        expect("date range", len(client.search_for_studies(search_filters={"StudyDate": "19000101-20991231"})) >= 1, True)
        expect("date range none", len(client.search_for_studies(search_filters={"StudyDate": "20990101-"})), 0)
        series = client.search_for_series(study)
        expect("series in study", len(series), len({d.SeriesInstanceUID for d in mr}))
        instances = client.search_for_instances(study)
        expect("instances in study", len(instances), len(mr))
        one = client.search_for_instances(study, mr[0].SeriesInstanceUID, fields=["ImageType"])
        expect("instances in series", len(one), 1)
        for tag in ["00080016", "00080018", "00080056", "00200013", "00280010", "00280011", "00280100", "00081190"]:
            if one and tag not in one[0]:
                problems.append(f"instance result lacks required attribute {tag}")
        if one and "00080008" not in one[0]:
            problems.append("includefield=ImageType was not returned from metadata")
        expect("all series", len(client.search_for_series()), len({d.SeriesInstanceUID for d in datasets}))
        expect("all instances", len(client.search_for_instances()), len(datasets))
    return not problems, problems


def cmd_retrieve(base, files):
    problems = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        st, se, sop = uids(ds)
        url = f"{base}/studies/{st}/series/{se}/instances/{sop}"
        r = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        if r.status_code != 200:
            problems.append(f"{f}: HTTP {r.status_code}")
            continue
        parts, _ = multipart_parts(r)
        raw = parts[0]
        group_len = struct.unpack("<I", raw[140:144])[0]
        if raw[144 + group_len:] != dataset_bytes(f):
            problems.append(f"{f}: data set bytes differ")
        # and through dicomweb-client itself
        client = DICOMwebClient(base)
        got = client.retrieve_instance(st, se, sop)
        if got.SOPInstanceUID != sop:
            problems.append(f"{f}: dicomweb-client got another instance")
    return not problems, problems


def cmd_metadata(base, files):
    client = DICOMwebClient(base)
    problems = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        st, se, sop = uids(ds)
        meta = client.retrieve_instance_metadata(st, se, sop)
        got = pydicom.Dataset.from_json(meta)
        for keyword in ["SOPInstanceUID", "SOPClassUID", "PatientName", "Modality", "Rows", "Columns"]:
            if keyword in ds and str(getattr(got, keyword, None)) != str(getattr(ds, keyword)):
                problems.append(f"{f}: {keyword} {getattr(got, keyword, None)!r} != {getattr(ds, keyword)!r}")
    study_meta = client.retrieve_study_metadata(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    if not study_meta:
        problems.append("study metadata empty")
    return not problems, problems


def cmd_frames(base, files):
    problems = []
    for f in files:
        ds = pydicom.dcmread(f)
        if "PixelData" not in ds:
            continue
        st, se, sop = uids(ds)
        url = f"{base}/studies/{st}/series/{se}/instances/{sop}/frames/1"
        ts = ds.file_meta.TransferSyntaxUID
        if ts.is_compressed:
            from pydicom.encaps import generate_fragmented_frames
            nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
            expected = b"".join(next(generate_fragmented_frames(ds.PixelData, number_of_frames=nframes)))
            accept = "multipart/related; type=*/*"
        else:
            frame_len = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
            raw = ds.PixelData[:frame_len]
            if not ts.is_little_endian and ds.BitsAllocated == 16:
                raw = b"".join(raw[i + 1:i + 2] + raw[i:i + 1] for i in range(0, len(raw), 2))
            expected = raw
            accept = 'multipart/related; type="application/octet-stream"'
        r = requests.get(url, headers={"Accept": accept})
        if r.status_code != 200:
            problems.append(f"{f}: HTTP {r.status_code} {r.headers.get('Warning')}")
            continue
        parts, _ = multipart_parts(r)
        if parts[0] != expected:
            problems.append(f"{f}: frame 1 differs ({len(parts[0])} vs {len(expected)} bytes)")
        if not ts.is_compressed:
            client = DICOMwebClient(base)
            frames = client.retrieve_instance_frames(st, se, sop, frame_numbers=[1])
            if frames[0] != expected:
                problems.append(f"{f}: dicomweb-client frame differs")
        elif ts in ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70"):
            # Lossless compressed frames asked for as octet-stream come back decoded, and equal
            # the frame of the uncompressed twin among the samples.
            r = requests.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
            twins = [pydicom.dcmread(g) for g in files if g != f]
            twins = [d for d in twins if d.StudyInstanceUID == ds.StudyInstanceUID and not d.file_meta.TransferSyntaxUID.is_compressed
                     and d.file_meta.TransferSyntaxUID.is_little_endian and (d.Rows, d.Columns) == (ds.Rows, ds.Columns)]
            if r.status_code != 200:
                problems.append(f"{f}: decoded frame gave HTTP {r.status_code} {r.headers.get('Warning')}")
            elif twins:
                frame_len = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
                if multipart_parts(r)[0][0] != twins[0].PixelData[:frame_len]:
                    problems.append(f"{f}: decoded frame differs from the uncompressed twin")
    return not problems, problems


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def renderable(ds):
    # Every sample with pixels renders (12-bit JPEG included); reports have no pixels.
    return "PixelData" in ds


def cmd_rendered(base, files):
    client = DICOMwebClient(base)
    problems = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        st, se, sop = uids(ds)
        inst = f"{base}/studies/{st}/series/{se}/instances/{sop}"
        if not renderable(pydicom.dcmread(f)):
            r = requests.get(f"{inst}/rendered", headers={"Accept": "image/jpeg"})
            if r.status_code != 406:
                problems.append(f"{f}: rendering without decodable pixels gave {r.status_code}, want 406")
            continue
        jpeg = client.retrieve_instance_rendered(st, se, sop, media_types=("image/jpeg",))
        if jpeg[:3] != b"\xff\xd8\xff":
            problems.append(f"{f}: rendered instance is not a JPEG")
        r = requests.get(f"{inst}/rendered", headers={"Accept": "image/png"})
        if r.status_code != 200 or png_size(r.content) != (ds.Columns, ds.Rows):
            problems.append(f"{f}: PNG rendering {r.status_code} has size {png_size(r.content) if r.ok else None}, want {(ds.Columns, ds.Rows)}")
        r = requests.get(f"{inst}/rendered", params={"viewport": "32,32", "window": "100,50"}, headers={"Accept": "image/png"})
        if r.status_code != 200 or max(png_size(r.content)) != 32:
            problems.append(f"{f}: viewport=32,32 gave {r.status_code} {png_size(r.content) if r.ok else r.text}")
        frame = client.retrieve_instance_frames_rendered(st, se, sop, frame_numbers=[1], media_types=("image/jpeg",))
        if frame[:3] != b"\xff\xd8\xff":
            problems.append(f"{f}: rendered frame is not a JPEG")
        for level_url in [inst, f"{base}/studies/{st}/series/{se}", f"{base}/studies/{st}"]:
            r = requests.get(f"{level_url}/thumbnail", headers={"Accept": "image/png"})
            if r.status_code != 200 or max(png_size(r.content)) > 128:
                problems.append(f"{f}: thumbnail of {level_url} gave {r.status_code}")
        # WADO-URI: the instance as stored, and rendered
        params = {"requestType": "WADO", "studyUID": st, "seriesUID": se, "objectUID": sop}
        r = requests.get(f"{base.rsplit('/dicomweb', 1)[0]}/wado", params=dict(params, contentType="application/dicom"))
        if r.status_code != 200 or r.content[144 + struct.unpack("<I", r.content[140:144])[0]:] != dataset_bytes(f):
            problems.append(f"{f}: WADO-URI application/dicom gave {r.status_code} or other bytes")
        r = requests.get(f"{base.rsplit('/dicomweb', 1)[0]}/wado", params=dict(params, contentType="image/jpeg", rows=64))
        if r.status_code != 200 or r.content[:3] != b"\xff\xd8\xff":
            problems.append(f"{f}: WADO-URI image/jpeg gave {r.status_code}")
    return not problems, problems


def cmd_bulkdata(base, files):
    """Metadata names Pixel Data by BulkDataURI; fetching that URI gives the pixel bytes."""
    client = DICOMwebClient(base)
    problems = []
    checked = 0
    for f in files:
        ds = pydicom.dcmread(f)
        if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
            continue
        st, se, sop = uids(ds)
        meta = client.retrieve_instance_metadata(st, se, sop)
        uri = meta.get("7FE00010", {}).get("BulkDataURI")
        if not uri or not uri.startswith(f"{base}/studies/{st}/series/{se}/instances/{sop}/bulkdata/"):
            problems.append(f"{f}: Pixel Data has no usable BulkDataURI: {meta.get('7FE00010')}")
            continue
        expected = ds.PixelData
        if not ds.file_meta.TransferSyntaxUID.is_little_endian and ds.BitsAllocated == 16:
            expected = b"".join(expected[i + 1:i + 2] + expected[i:i + 1] for i in range(0, len(expected), 2))
        got = client.retrieve_bulkdata(uri)
        checked += 1
        if got[0][: len(expected)] != expected:
            problems.append(f"{f}: bulk data differs from the pixel data")
        found = client.search_for_instances(st, se, fields=["all"])
        if not found or "00280010" not in found[0] or found[0].get("7FE00010", {}).get("BulkDataURI") != uri:
            problems.append(f"{f}: includefield=all lacks the stored metadata or its BulkDataURI")
    if checked == 0:
        problems.append("no sample with native pixel data")
    return not problems, problems


LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"}


def cmd_transcode(base, files):
    """The default transfer syntax of WADO-RS is Explicit VR Little Endian: compressed instances
    with a decoder come back decoded. For lossless ones the pixel values must equal those of the
    uncompressed copy of the same image among the samples."""
    import numpy
    problems = []
    datasets = [pydicom.dcmread(f) for f in files]
    native = [d for d in datasets if not d.file_meta.TransferSyntaxUID.is_compressed and "PixelData" in d]
    checked = 0
    for f, original in zip(files, datasets):
        if not renderable(original) or not original.file_meta.TransferSyntaxUID.is_compressed:
            continue
        st, se, sop = uids(original)
        r = requests.get(f"{base}/studies/{st}/series/{se}/instances/{sop}", headers={"Accept": 'multipart/related; type="application/dicom"'})
        if r.status_code != 200:
            problems.append(f"{f}: HTTP {r.status_code} {r.text[:200]}")
            continue
        parts, _ = multipart_parts(r)
        got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(parts[0]))
        if got.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.1":
            problems.append(f"{f}: came back as {got.file_meta.TransferSyntaxUID}")
            continue
        if original.file_meta.TransferSyntaxUID in LOSSY:
            continue
        twins = [d for d in native if d.StudyInstanceUID == original.StudyInstanceUID and (d.Rows, d.Columns) == (original.Rows, original.Columns)]
        if twins:
            checked += 1
            if not numpy.array_equal(got.pixel_array, twins[0].pixel_array):
                problems.append(f"{f}: decoded pixel values differ from the uncompressed copy")
    if checked == 0:
        problems.append("no lossless compressed sample had an uncompressed twin to compare with")
    return not problems, problems


def main():
    cmd, base, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    try:
        ok, details = {"store": cmd_store, "search": cmd_search, "retrieve": cmd_retrieve,
                       "metadata": cmd_metadata, "frames": cmd_frames,
                       "rendered": cmd_rendered, "transcode": cmd_transcode,
                       "bulkdata": cmd_bulkdata}[cmd](base, files)
    except Exception as e:  # report, do not hide: the Rust test prints this
        import traceback
        ok, details = False, traceback.format_exc()
    print(json.dumps({"ok": ok, "details": details}))


if __name__ == "__main__":
    main()
