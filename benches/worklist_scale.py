"""The worklist at scale (issue #15: 10 000 studies answer in under 200 ms, p95): fills a
tramy index made by `tramy serve` with synthetic studies (benches/index_scale.py's archive) and
each study's AI findings and finished triage jobs, then times the worklist as a doctor's browser
and an API client ask for it.

    worklist_scale.py studies N             instances index_scale.py needs for about N studies
    worklist_scale.py findings INDEX SEED   findings + done jobs for every study's first instance
    worklist_scale.py time BASE COUNT       timings of the worklist routes (JSON_OUT=file: also JSON)
"""

import json
import os
import random
import sqlite3
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import index_scale  # noqa: E402  (the same synthetic archive as the index-scale bench)


def instances_for(studies):
    """The smallest instance count whose synthetic archive holds at least `studies` studies."""
    n = max(1000, studies * 41)
    while len(index_scale.archive(n)[1]) < studies:
        n = int(n * 1.05)
    return n


def add_findings(path, seed):
    """A chest model's finding on each study's first instance: ~12% flagged (a tenth of those
    emergencies), the rest routine; every job done."""
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    first = db.execute(
        "SELECT st.study_instance_uid, se.series_instance_uid, min(i.sop_instance_uid) "
        "FROM instances i JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk "
        "GROUP BY st.id").fetchall()
    now = "2026-11-30T08:00:00Z"
    findings, jobs = [], []
    for study, series, sop in first:
        p = rng.random()
        flagged = p > 0.88
        urgency = "emergency" if p > 0.988 else "urgent" if flagged else "routine"
        findings.append((study, series, sop, 0, "chest-xray-pneumonia", "1.0.0", "pneumonia", p,
                         int(flagged), urgency, "Research use only.", now))
        jobs.append((sop, "chest-xray-pneumonia", 0, "done", 1, now, "", now))
    with db:
        db.executemany(
            "INSERT INTO findings (study_instance_uid, series_instance_uid, sop_instance_uid, frame, "
            "model, model_version, label, probability, flagged, urgency, statement, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", findings)
        db.executemany(
            "INSERT INTO triage_jobs (sop_instance_uid, model, priority, state, attempts, not_before, "
            "last_error, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", jobs)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"{len(findings)} studies with findings, {sum(f[8] for f in findings)} flagged")


def time_routes(base, count):
    import requests

    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + os.environ["BENCH_TOKEN"]
    routes = {
        "api first page (100)": ("/api/v1/worklist?limit=100", "application/json"),
        "api deep page": ("/api/v1/worklist?limit=100&offset=9000", "application/json"),
        "api name search": ("/api/v1/worklist?limit=100&patient_name=NGUYEN", "application/json"),
        "ui worklist page": ("/ui/", "text/html"),
        "ui flagged only": ("/ui/?flagged=on", "text/html"),
        "ui modality filter": ("/ui/?modality=MR", "text/html"),
        "ui date range": ("/ui/?from=2021-01-01&to=2021-12-31", "text/html"),
        "ui not reviewed": ("/ui/?reviewed=no", "text/html"),
    }
    report = {}
    for name, (path, accept) in routes.items():
        times = []
        for i in range(count + 10):
            start = time.perf_counter()
            r = session.get(base + path, headers={"Accept": accept})
            body = r.content
            ms = 1000 * (time.perf_counter() - start)
            if r.status_code != 200:
                sys.exit(f"{path}: HTTP {r.status_code} {body[:200]!r}")
            if i >= 10:  # the first ten warm the caches
                times.append(ms)
        p = index_scale.percentiles(times)
        p["bytes"] = len(body)
        report[name] = p
    print(f"worklist routes, {count} requests each after 10 to warm up, one keep-alive client, "
          f"{os.cpu_count()} cores:")
    for name, v in report.items():
        print(f"  {name:<22} p50 {v['p50']:7.1f}  p95 {v['p95']:7.1f}  p99 {v['p99']:7.1f}  "
              f"max {v['max']:7.1f} ms   ({v['bytes']} bytes)")
    worst = max(v["p95"] for v in report.values())
    print(f"worst p95 {worst:.1f} ms: goal < 200 ms {'met' if worst < 200 else 'NOT met'}")
    if os.environ.get("JSON_OUT"):
        with open(os.environ["JSON_OUT"], "w") as f:
            json.dump(report, f)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "studies":
        print(instances_for(int(args[0])))
    elif cmd == "findings":
        add_findings(args[0], int(args[1]))
    elif cmd == "time":
        time_routes(args[0], int(args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
