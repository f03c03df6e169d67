#!/usr/bin/env python3
"""Helper of benches/index_scale.sh: a synthetic archive index, the same on every backend.

  populate sqlite PATH N        bulk-insert the first N synthetic instances (with their patients,
  populate postgres URL N       studies, series, study_facilities rows) into a fresh tramy index
  dicom N OUT_DIR K             the same first N instances as real DICOM files (MR sample as the
                                template, every indexed attribute set), in K folders, for Orthanc
  batches OUT_DIR ROUNDS COUNT  ROUNDS folders of COUNT new CT instances (CT sample, fresh UIDs;
                                100 a study, 10 a series) to time C-STORE with
  qido BASE_URL N REQUESTS      the study-search mix a viewer makes, one client, keep-alive,
                                after a warm-up; prints p50/p95/p99 per query kind as JSON
                                (BENCH_TOKEN: bearer token; QIDO_LIMIT: page size, default 100)

The archive is drawn from a seeded generator, patient by patient, so the first M instances are
the same whatever N is: a smaller size is a prefix of a larger one, and Orthanc's files hold the
same patients, studies and series as tramy's rows. Patients have 1-6 studies (Vietnamese names,
NGUYEN ~38% as in the population), studies one modality with a realistic number of series and
images (CR/DX 1-2 images, CT 2-4 series of 10-60, MR 3-6 series of 10-30, ...), dates over
2015-2026, accession numbers, referring physicians; the counters num_* agree with the rows;
metadata_json is a real instance's (the MR sample's, as tramy wrote it) with this instance's
values. The objects of these rows do not exist: nothing here reads them.
"""
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = "1.2.826.0.1.3680043.10.1138"
FAMILY = [("NGUYEN", 38), ("TRAN", 11), ("LE", 9), ("PHAM", 7), ("HOANG", 5), ("HUYNH", 5),
          ("PHAN", 4), ("VU", 4), ("VO", 3), ("DANG", 2), ("BUI", 2), ("DO", 2), ("HO", 1),
          ("NGO", 1), ("DUONG", 1), ("LY", 1)]
GIVEN = ["AN", "BINH", "CUONG", "DUNG", "GIANG", "HA", "HAI", "HANH", "HOA", "HUNG", "HUONG",
         "KHANH", "LAN", "LINH", "LONG", "MAI", "MINH", "NAM", "NGOC", "PHUONG", "QUANG", "SON",
         "THAO", "THANH", "THU", "TRANG", "TUAN", "VIET", "YEN"]
# modality: weight, (min, max) series, (min, max) images a series, SOP class, rows, descriptions
MODALITIES = {
    "CR": (30, (1, 1), (1, 2), "1.2.840.10008.5.1.4.1.1.1", 2048, ["CHEST PA", "CHEST AP", "KNEE", "SPINE L"]),
    "DX": (10, (1, 2), (1, 1), "1.2.840.10008.5.1.4.1.1.1.1", 2500, ["CHEST PA LAT", "HAND", "PELVIS"]),
    "MG": (5, (1, 2), (2, 2), "1.2.840.10008.5.1.4.1.1.1.2", 3328, ["SCREENING MAMMO", "DIAGNOSTIC MAMMO"]),
    "US": (15, (1, 1), (3, 15), "1.2.840.10008.5.1.4.1.1.6.1", 600, ["ABDOMEN", "THYROID", "OBSTETRIC"]),
    "CT": (25, (2, 4), (10, 60), "1.2.840.10008.5.1.4.1.1.2", 512, ["CT HEAD W/O", "CT CHEST", "CT ABDOMEN W/WO"]),
    "MR": (15, (3, 6), (10, 30), "1.2.840.10008.5.1.4.1.1.4", 256, ["MR BRAIN", "MR LUMBAR SPINE", "MR KNEE"]),
}
PHYSICIANS = ["TRAN^VAN MINH", "LE^THI HOA", "PHAM^QUANG HUNG", "NGUYEN^THI LAN", "", "VO^VAN SON"]
MR_METADATA = r"""{"00080008":{"vr":"CS","Value":["DERIVED","SECONDARY","OTHER"]},"00080012":{"vr":"DA","Value":["20040826"]},"00080013":{"vr":"TM","Value":["185434"]},"00080014":{"vr":"UI","Value":["1.3.6.1.4.1.5962.3"]},"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.4"]},"00080018":{"vr":"UI","Value":["1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457"]},"00080020":{"vr":"DA","Value":["20040826"]},"00080021":{"vr":"DA"},"00080022":{"vr":"DA"},"00080030":{"vr":"TM","Value":["185059"]},"00080031":{"vr":"TM"},"00080032":{"vr":"TM"},"00080050":{"vr":"SH"},"00080060":{"vr":"CS","Value":["MR"]},"00080070":{"vr":"LO","Value":["TOSHIBA_MEC"]},"00080080":{"vr":"LO","Value":["TOSHIBA"]},"00080090":{"vr":"PN"},"00080201":{"vr":"SH","Value":["-0400"]},"00081010":{"vr":"SH","Value":["000000000"]},"00081060":{"vr":"PN","Value":[{"Alphabetic":"----"}]},"00081070":{"vr":"PN","Value":[{"Alphabetic":"----"}]},"00081090":{"vr":"LO","Value":["MRT50H1"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"CompressedSamples^MR1"}]},"00100020":{"vr":"LO","Value":["4MR1"]},"00100030":{"vr":"DA"},"00100040":{"vr":"CS","Value":["F"]},"00101020":{"vr":"DS"},"00101030":{"vr":"DS","Value":[80.0]},"00180010":{"vr":"LO"},"00180020":{"vr":"CS","Value":["SE"]},"00180021":{"vr":"CS","Value":["NONE"]},"00180022":{"vr":"CS"},"00180023":{"vr":"CS","Value":["3D"]},"00180050":{"vr":"DS","Value":[0.8]},"00180080":{"vr":"DS","Value":[4000.0]},"00180081":{"vr":"DS","Value":[240.0]},"00180083":{"vr":"DS","Value":[1.0]},"00180084":{"vr":"DS","Value":[63.924339]},"00180085":{"vr":"SH","Value":["H"]},"00180086":{"vr":"IS","Value":[1]},"00180091":{"vr":"IS"},"00181000":{"vr":"LO","Value":["-0000200"]},"00181020":{"vr":"LO","Value":["V3.51*P25"]},"00181314":{"vr":"DS","Value":[90]},"00185100":{"vr":"CS","Value":["HFS"]},"0020000D":{"vr":"UI","Value":["1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"]},"0020000E":{"vr":"UI","Value":["1.3.6.1.4.1.5962.1.3.4.1.20040826185059.5457"]},"00200010":{"vr":"SH","Value":["4MR1"]},"00200011":{"vr":"IS","Value":[1]},"00200012":{"vr":"IS","Value":[0]},"00200013":{"vr":"IS","Value":[1]},"00200032":{"vr":"DS","Value":[-83.9063,-91.2,6.6406]},"00200037":{"vr":"DS","Value":[1.0,0.0,0.0,0.0,1.0,0.0]},"00200052":{"vr":"UI","Value":["1.3.6.1.4.1.5962.1.4.4.1.20040826185059.5457"]},"00200060":{"vr":"CS"},"00201040":{"vr":"LO"},"00201041":{"vr":"DS","Value":[0.0]},"00204000":{"vr":"LT","Value":["Uncompressed"]},"00280002":{"vr":"US","Value":[1]},"00280004":{"vr":"CS","Value":["MONOCHROME2"]},"00280010":{"vr":"US","Value":[64]},"00280011":{"vr":"US","Value":[64]},"00280030":{"vr":"DS","Value":[0.3125,0.3125]},"00280100":{"vr":"US","Value":[16]},"00280101":{"vr":"US","Value":[16]},"00280102":{"vr":"US","Value":[15]},"00280103":{"vr":"US","Value":[1]},"00280106":{"vr":"SS","Value":[0]},"00280107":{"vr":"SS","Value":[4000]},"00281050":{"vr":"DS","Value":[600]},"00281051":{"vr":"DS","Value":[1600]},"7FE00010":{"vr":"OW","BulkDataURI":"tramy-instance:/bulkdata/7FE00010"}}"""


def choose(rng, weighted):
    return rng.choices([k for k, _ in weighted], [w for _, w in weighted])[0]


def day(ordinal):
    from datetime import date

    return date.fromordinal(ordinal).strftime("%Y%m%d")


def archive(n):
    """The first n instances' patients, studies and series (counts only; instances are expanded
    from series). Each level is a dict; ids are 1-based and dense, as a fresh index's are."""
    from datetime import date

    rng = random.Random(1138)
    first, last = date(2015, 1, 1).toordinal(), date(2026, 11, 29).toordinal()
    births = date(1935, 1, 1).toordinal(), date(2022, 12, 31).toordinal()
    mods = [(m, v[0]) for m, v in MODALITIES.items()]
    patients, studies, series = [], [], []
    total = 0
    while total < n:
        sex = rng.choice("MF")
        p = {"id": len(patients) + 1, "sex": sex, "birth": day(rng.randint(*births)),
             "name": f"{choose(rng, FAMILY)}^{'VAN' if sex == 'M' else 'THI'} {rng.choice(GIVEN)}",
             "studies": 0, "series": 0, "instances": 0}
        p["pid"] = f"BN{p['id'] * 7919 % 100_000_000:08d}"
        patients.append(p)
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4, 6])):
            if total >= n:
                break
            m = choose(rng, mods)
            _, nseries, nimages, sop_class, rows, descriptions = MODALITIES[m]
            sid = len(studies) + 1
            t = f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
            s = {"id": sid, "patient": p, "modality": m, "date": day(rng.randint(first, last)),
                 "time": t, "accession": f"A{sid * 104729 % 1_000_000_000:09d}",
                 "desc": rng.choice(descriptions), "physician": rng.choice(PHYSICIANS),
                 "uid": f"{ROOT}.1.{sid}.{rng.randint(10**9, 10**10 - 1)}",
                 "series": 0, "instances": 0, "sop_class": sop_class, "rows": rows}
            studies.append(s)
            p["studies"] += 1
            for number in range(1, rng.randint(*nseries) + 1):
                if total >= n:
                    break
                count = min(rng.randint(*nimages), n - total)
                total += count
                se = {"id": len(series) + 1, "study": s, "number": number, "count": count,
                      "first": total - count + 1}
                se["uid"] = f"{s['uid']}.{number}"
                series.append(se)
                s["series"] += 1
                s["instances"] += count
                p["series"] += 1
                p["instances"] += count
    return patients, studies, series


def metadata_template():
    """The MR sample's metadata as tramy stores it, its indexed values made %-placeholders."""
    d = json.loads(MR_METADATA)
    text = {"00080016": "sop_class", "00080018": "sop", "00080020": "date", "00080012": "date",
            "00080021": "date", "00080030": "time", "00080050": "accession", "00080060": "modality",
            "0008103E": "series_desc", "00081030": "study_desc", "00100010": "name",
            "00100020": "pid", "00100030": "birth", "00100040": "sex", "0020000D": "study_uid",
            "0020000E": "series_uid", "00200010": "study_id"}
    vrs = {"0008103E": "LO", "00081030": "LO"}
    for tag, key in text.items():
        value = {"Alphabetic": f"@@{key}@@"} if tag == "00100010" else f"@@{key}@@"
        d[tag] = {"vr": d.get(tag, {}).get("vr", vrs.get(tag)), "Value": [value]}
    for tag, key in {"00200011": "series_number", "00200013": "number", "00280010": "rows",
                     "00280011": "rows"}.items():
        d[tag]["Value"] = [f"@@{key}@@"]
    out = json.dumps(d, separators=(",", ":"), sort_keys=True).replace("%", "%%")
    for key in set(text.values()):
        out = out.replace(f"@@{key}@@", f"%({key})s")
    for key in ("series_number", "number", "rows"):
        out = out.replace(f'"@@{key}@@"', f"%({key})d")
    assert "\\" not in out and "@@" not in out
    return out


def instance_values(se):
    """Per instance of series `se`: (row id, SOP Instance UID, values for the template)."""
    s, p = se["study"], se["study"]["patient"]
    base = {"sop_class": MODALITIES[s["modality"]][3], "date": s["date"], "time": s["time"],
            "accession": s["accession"], "modality": s["modality"],
            "series_desc": f"{s['desc']} {se['number']}", "study_desc": s["desc"],
            "name": p["name"], "pid": p["pid"], "birth": p["birth"], "sex": p["sex"],
            "study_uid": s["uid"], "series_uid": se["uid"], "study_id": s["accession"][-6:],
            "series_number": se["number"], "rows": s["rows"]}
    for k in range(se["count"]):
        v = dict(base, number=k + 1, sop=f"{se['uid']}.{k + 1}")
        yield se["first"] + k, v


def stamp(date, time_, minutes=0):
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T{time_[:2]}:{(int(time_[2:4]) + minutes) % 60:02d}:{time_[4:6]}.000Z"


COLUMNS = {
    "patients": "id, patient_key, patient_id, issuer_of_patient_id, patient_name, patient_name_norm, "
                "birth_date, sex, num_studies, num_series, num_instances",
    "studies": "id, study_instance_uid, patient_fk, study_date, study_time, accession_number, study_id, "
               "referring_physician_name, referring_physician_name_norm, study_description, "
               "modalities_in_study, num_series, num_instances, created_at",
    "series": "id, series_instance_uid, study_fk, modality, series_number, series_description, "
              "body_part_examined, series_date, series_time, num_instances",
    "instances": "id, sop_instance_uid, series_fk, sop_class_uid, instance_number, rows, columns, "
                 "number_of_frames, transfer_syntax_uid, object_key, size_bytes, sha256, received_at, "
                 "source, source_address, metadata_json, facility",
    "study_facilities": "study_fk, facility",
}


def rows(n):
    """(table, iterator of row tuples) in foreign-key order."""
    patients, studies, series = archive(n)
    yield "patients", ((p["id"], p["pid"] + "\x01", p["pid"], "", p["name"], p["name"].upper(),
                        p["birth"], p["sex"], p["studies"], p["series"], p["instances"]) for p in patients)
    yield "studies", ((s["id"], s["uid"], s["patient"]["id"], s["date"], s["time"], s["accession"],
                       s["accession"][-6:], s["physician"], s["physician"].upper(), s["desc"],
                       s["modality"], s["series"], s["instances"], stamp(s["date"], s["time"], 5))
                      for s in studies)
    yield "series", ((se["id"], se["uid"], se["study"]["id"], se["study"]["modality"], se["number"],
                      f"{se['study']['desc']} {se['number']}", "", se["study"]["date"],
                      se["study"]["time"], se["count"]) for se in series)
    template = metadata_template()

    def instances():
        for se in series:
            s = se["study"]
            received = stamp(s["date"], s["time"], 2)
            source = f"{s['modality']}01"
            for row_id, v in instance_values(se):
                key = f"studies/{s['uid']}/series/{se['uid']}/instances/{v['sop']}.dcm"
                yield (row_id, v["sop"], se["id"], v["sop_class"], v["number"], s["rows"], s["rows"],
                       None, "1.2.840.10008.1.2.1", key, 250_000 + row_id % 300_000,
                       hashlib.sha256(v["sop"].encode()).hexdigest(), received, source,
                       "10.0.1.17:40112", template % v, "LOCAL")

    yield "instances", instances()
    yield "study_facilities", ((s["id"], "LOCAL") for s in studies)


def populate_sqlite(path, n):
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    for table, it in rows(n):
        cols = COLUMNS[table]
        marks = ", ".join("?" * len(cols.split(",")))
        with db:
            db.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", it)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def copy_field(v):
    if v is None:
        return "\\N"
    v = str(v)
    if "\\" in v or "\t" in v or "\n" in v:
        v = v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return v


def populate_postgres(url, n):
    for table, it in rows(n):
        psql = subprocess.Popen(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c",
                                 f"COPY {table} ({COLUMNS[table]}) FROM STDIN"],
                                stdin=subprocess.PIPE)
        buf = []
        for row in it:
            buf.append("\t".join(map(copy_field, row)))
            if len(buf) >= 5000:
                psql.stdin.write(("\n".join(buf) + "\n").encode())
                buf.clear()
        if buf:
            psql.stdin.write(("\n".join(buf) + "\n").encode())
        psql.stdin.close()
        if psql.wait() != 0:
            sys.exit(f"COPY {table} failed")
    # Rows came with their ids: move the identity sequences past them, and give the planner its
    # statistics now rather than when autovacuum gets to it in the middle of a measurement.
    sql = "".join(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}));"
                  for t in ("patients", "studies", "series", "instances"))
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["psql", "-q", url, "-c",
                    "VACUUM (ANALYZE) patients, studies, series, instances, study_facilities"],
                   check=True)


def write_dicom(n, out, k):
    """The first n instances as files: the MR sample with every indexed attribute of its row."""
    import pydicom

    ds = pydicom.dcmread(os.path.join(os.path.dirname(__file__), "..", "dicom-samples",
                                      "mr_small_explicit_le.dcm"))
    for d in range(k):
        os.makedirs(f"{out}/part{d}", exist_ok=True)
    _, _, series = archive(n)
    for se in series:
        s = se["study"]
        for row_id, v in instance_values(se):
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = v["sop_class"]
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = v["sop"]
            ds.StudyInstanceUID, ds.SeriesInstanceUID = v["study_uid"], v["series_uid"]
            ds.PatientName, ds.PatientID = v["name"], v["pid"]
            ds.PatientBirthDate, ds.PatientSex = v["birth"], v["sex"]
            ds.StudyDate = ds.ContentDate = ds.SeriesDate = v["date"]
            ds.StudyTime, ds.AccessionNumber, ds.Modality = v["time"], v["accession"], v["modality"]
            ds.StudyDescription, ds.SeriesDescription = v["study_desc"], v["series_desc"]
            ds.ReferringPhysicianName, ds.StudyID = s["physician"], v["study_id"]
            ds.SeriesNumber, ds.InstanceNumber = v["series_number"], v["number"]
            ds.save_as(f"{out}/part{row_id % k}/{row_id:07d}.dcm")


def write_batches(out, rounds, count):
    """rounds folders of count CT-sample copies, UIDs replaced in place (same length)."""
    data = open(os.path.join(os.path.dirname(__file__), "..", "dicom-samples",
                             "ct_small_explicit_le.dcm"), "rb").read()
    study = b"1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    series = b"1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    sop = b"1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"

    def renumber(uid, i):
        return uid[: len(uid) - 11] + str(i).zfill(11).encode()

    for r in range(rounds):
        os.makedirs(f"{out}/round{r}", exist_ok=True)
        for j in range(count):
            i = r * count + j
            copy = (data.replace(sop, renumber(sop, i)).replace(series, renumber(series, i // 10))
                    .replace(study, renumber(study, i // 100)))
            with open(f"{out}/round{r}/ct{i:07d}.dcm", "wb") as f:
                f.write(copy)


def query_mix(n, count, seed):
    """count study searches over the first n instances: what a viewer's study list sends."""
    import datetime

    patients, studies, _ = archive(n)
    rng = random.Random(seed)
    limit = os.environ.get("QIDO_LIMIT", "100")
    first = datetime.date(2015, 1, 1).toordinal()
    last = datetime.date(2026, 11, 29).toordinal()
    mods = [(m, v[0]) for m, v in MODALITIES.items()]
    kinds = ["PatientID", "PatientName", "StudyDate", "ModalitiesInStudy", "AccessionNumber", "none"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        if kind == "PatientID":
            q = f"PatientID={rng.choice(patients)['pid']}"
        elif kind == "PatientName":
            q = f"PatientName={choose(rng, FAMILY)}*"  # '*' sent as is: Orthanc does not decode %2A
        elif kind == "StudyDate":
            d = rng.randint(first, last - 7)
            q = f"StudyDate={day(d)}-{day(d + 7)}"
        elif kind == "ModalitiesInStudy":
            q = f"ModalitiesInStudy={choose(rng, mods)}"
        elif kind == "AccessionNumber":
            q = f"AccessionNumber={rng.choice(studies)['accession']}"
        else:
            q = ""
        yield kind, f"/studies?{q}{'&' if q else ''}limit={limit}"


def percentiles(ms):
    ms = sorted(ms)
    cut = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"n": len(ms), "p50": round(cut[49], 2), "p95": round(cut[94], 2), "p99": round(cut[98], 2),
            "max": round(ms[-1], 2)}


def time_queries(base, warmup, timed):
    """GETs each (kind, path) of `warmup` untimed, then of `timed` timed, one keep-alive client
    (with BENCH_TOKEN as bearer token when set); prints each kind's latency percentiles and mean
    result count, and all kinds' together, as JSON."""
    import requests

    session = requests.Session()
    headers = {"Accept": "application/dicom+json"}
    if os.environ.get("BENCH_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["BENCH_TOKEN"]
    session.headers.update(headers)

    def get(path):
        start = time.perf_counter()
        r = session.get(base + path)
        body = r.content
        ms = 1000 * (time.perf_counter() - start)
        if r.status_code not in (200, 204):
            sys.exit(f"{path}: HTTP {r.status_code} {body[:200]!r}")
        return ms, len(json.loads(body)) if body.strip() else 0

    for _, path in warmup:
        get(path)
    times, results = {}, {}
    for kind, path in timed:
        ms, found = get(path)
        times.setdefault(kind, []).append(ms)
        results.setdefault(kind, []).append(found)
    report = {k: dict(percentiles(v), mean_results=round(statistics.mean(results[k]), 1))
              for k, v in times.items()}
    report["all"] = percentiles([t for v in times.values() for t in v])
    print(json.dumps(report))


def qido(base, n, count):
    time_queries(base, query_mix(n, max(100, count // 10), seed=1), query_mix(n, count, seed=2))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "populate" and args[0] == "sqlite":
        populate_sqlite(args[1], int(args[2]))
    elif cmd == "populate" and args[0] == "postgres":
        populate_postgres(args[1], int(args[2]))
    elif cmd == "dicom":
        write_dicom(int(args[0]), args[1], int(args[2]))
    elif cmd == "batches":
        write_batches(args[0], int(args[1]), int(args[2]))
    elif cmd == "qido":
        qido(args[0], int(args[1]), int(args[2]))
    elif cmd == "shape":
        patients, studies, series = archive(int(args[0]))
        print(f"{len(patients)} patients, {len(studies)} studies, {len(series)} series")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
