#!/usr/bin/env python3
"""Helper of benches/name_matching.sh: an index of Vietnamese patients, and the name searches.

  populate sqlite PATH N      bulk-insert N patients (one study each) into a fresh tramy index,
  populate postgres URL N     names in UTF-8 with their accents, the way a HIS sends them; the
                              name words are left for tramy to file at its next open (the
                              backfill of an upgraded archive)
  qido BASE_URL MODE N        REQUESTS name searches after a warm-up, one client, keep-alive;
                              MODE "exact": the standard's matching (`NGUYEN*`, `NGUYEN^VAN AN`),
                              "fuzzy": fuzzymatching=true as people type (`nguyen`,
                              `nguyen van an`, `An`); prints p50/p95/p99 per kind as JSON
                              (BENCH_TOKEN: bearer token; QIDO_LIMIT: page size, default 100)

The patients are drawn from a seeded generator (family names with NGUYEN ~38% as in the
population, middle VAN/THI, given names), so both modes search the same people.
"""
import os
import random
import subprocess
import sys
import unicodedata
import urllib.parse

# Run as a script from benches/: its neighbour's helpers are importable.
from index_scale import choose, time_queries

FAMILY = [("Nguyễn", 38), ("Trần", 11), ("Lê", 9), ("Phạm", 7), ("Hoàng", 5), ("Huỳnh", 5),
          ("Phan", 4), ("Vũ", 4), ("Võ", 3), ("Đặng", 2), ("Bùi", 2), ("Đỗ", 2), ("Hồ", 1),
          ("Ngô", 1), ("Dương", 1), ("Lý", 1)]
GIVEN = ["An", "Bình", "Cường", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hoa", "Hùng", "Hương",
         "Khánh", "Lan", "Linh", "Long", "Mai", "Minh", "Nam", "Ngọc", "Phương", "Quang", "Sơn",
         "Thảo", "Thanh", "Thu", "Trang", "Tuấn", "Việt", "Yến"]


def plain(text):
    """What an ASCII keyboard makes of a name: the accents dropped, Đ as D."""
    decomposed = unicodedata.normalize("NFD", text.replace("Đ", "D").replace("đ", "d"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def patients(n):
    rng = random.Random(1138)
    for i in range(1, n + 1):
        sex = rng.choice("MF")
        name = f"{choose(rng, FAMILY)}^{'Văn' if sex == 'M' else 'Thị'} {rng.choice(GIVEN)}"
        yield i, name, sex, f"{rng.randint(1935, 2022)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"


def rows(n):
    pts = list(patients(n))
    yield "patients", "id, patient_key, patient_id, issuer_of_patient_id, patient_name, " \
        "patient_name_norm, birth_date, sex, num_studies, num_series, num_instances", \
        ((i, f"BN{i:08d}\x01", f"BN{i:08d}", "", name, name.upper(), birth, sex, 1, 0, 0)
         for i, name, sex, birth in pts)
    yield "studies", "id, study_instance_uid, patient_fk, study_date, study_time, accession_number, " \
        "study_id, referring_physician_name, referring_physician_name_norm, study_description, " \
        "modalities_in_study, num_series, num_instances, created_at", \
        ((i, f"1.2.826.0.1.3680043.10.1138.9.{i}", i, "20240101", "101010", f"A{i:09d}", "", "", "",
          "CHEST PA", "CR", 0, 0, "2024-01-01T10:10:10Z") for i, _, _, _ in pts)
    yield "study_facilities", "study_fk, facility", ((i, "LOCAL") for i, _, _, _ in pts)


def populate_sqlite(path, n):
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    for table, cols, it in rows(n):
        marks = ", ".join("?" * len(cols.split(",")))
        with db:
            db.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", it)
    # As if filed before migration 10: tramy files the words at its next open.
    with db:
        db.execute("UPDATE patients SET name_key = NULL")
        db.execute("DELETE FROM patient_name_words")
    db.execute("ANALYZE")
    db.close()


def populate_postgres(url, n):
    for table, cols, it in rows(n):
        data = "".join("\t".join(str(v) for v in row) + "\n" for row in it)
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c",
                        f"COPY {table} ({cols}) FROM STDIN"], input=data.encode(), check=True)
    sql = ("SELECT setval(pg_get_serial_sequence('patients', 'id'), (SELECT max(id) FROM patients));"
           "SELECT setval(pg_get_serial_sequence('studies', 'id'), (SELECT max(id) FROM studies));"
           "UPDATE patients SET name_key = NULL; DELETE FROM patient_name_words;")
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def searches(mode, count, seed):
    rng = random.Random(seed)
    limit = os.environ.get("QIDO_LIMIT", "100")
    kinds = ["family", "full", "given"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        family, given = choose(rng, FAMILY), rng.choice(GIVEN)
        middle = rng.choice(["Văn", "Thị"])
        if mode == "exact":
            # The standard's matching, typed with the stored accents (it needs them).
            q = {"family": f"{family.upper()}*",
                 "full": f"{family}^{middle} {given}".upper(),
                 "given": f"*{given.upper()}"}[kind]
            extra = ""
        else:
            q = {"family": plain(family).lower(),
                 "full": f"{plain(family)} {middle} {given}".lower(),
                 "given": plain(given)}[kind]
            extra = "&fuzzymatching=true"
        yield kind, f"/studies?PatientName={urllib.parse.quote(q, safe='*^')}{extra}&limit={limit}"


def qido(base, mode, count):
    time_queries(base, searches(mode, max(60, count // 10), seed=1), searches(mode, count, seed=2))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "populate" and args[0] == "sqlite":
        populate_sqlite(args[1], int(args[2]))
    elif cmd == "populate" and args[0] == "postgres":
        populate_postgres(args[1], int(args[2]))
    elif cmd == "qido":
        qido(args[0], args[1], int(args[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
