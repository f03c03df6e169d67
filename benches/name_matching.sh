#!/usr/bin/env bash
# Name matching of issue #12: QIDO-RS study search by patient name at N patients (default
# 100 000, one study each, Vietnamese names in UTF-8 with their accents), for each index backend:
#   before: the standard's matching, as a search had to be typed before (`NGUYỄN*`, the whole
#           name `NGUYỄN^VĂN AN`, a given name as `*AN`);
#   after:  fuzzymatching=true, accent- and case-insensitive per word, as people type
#           (`nguyen`, `nguyen van an`, `An`), answered from the patient_name_words index;
# the same people searched in both, QIDO_REQUESTS requests each after a warm-up, one client,
# keep-alive, limit=QIDO_LIMIT (goal: after's p99 within 10% of before's). Also the time the
# first start takes to file the name words of N patients indexed without them (the upgrade's
# backfill, store/names.rs).
#
# usage: benches/name_matching.sh
# environment: PATIENTS (100000), BACKENDS ("sqlite postgres"), QIDO_REQUESTS (600),
#   QIDO_LIMIT (100), TRAMY_BIN (default: cargo build --release), BENCH_DIR (/tmp), KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PATIENTS=${PATIENTS:-100000}
BACKENDS=${BACKENDS-"sqlite postgres"}
QIDO_REQUESTS=${QIDO_REQUESTS:-600}
ROOT=$(mktemp -d "${BENCH_DIR:-/tmp}/tramy-names.XXXXXX")
chmod 755 "$ROOT"
# shellcheck source=benches/postgres.sh
. benches/postgres.sh

# start_tramy NAME BACKEND -> TPID, TURL, TOKEN, STARTED_IN (seconds until /healthz answered)
start_tramy() {
  local name=$1 backend=$2 http dimse start
  http=$(free_port); dimse=$(free_port)
  local env=(TRAMY_DATA_DIR="$ROOT/$name" TRAMY_DIMSE_ADDR="127.0.0.1:$dimse"
             TRAMY_HTTP_ADDR="127.0.0.1:$http" RUST_LOG=warn)
  [ "$backend" = postgres ] && env+=(TRAMY_INDEX_URL="$(pg_url "$name")")
  start=$(date +%s.%N)
  env "${env[@]}" "$TRAMY_BIN" serve --no-triage >>"$ROOT/$name.log" 2>&1 &
  TPID=$!; TURL="http://127.0.0.1:$http"
  for _ in $(seq 6000); do curl -fs "$TURL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "$TURL/healthz" >/dev/null || { echo "tramy $name did not start" >&2; cat "$ROOT/$name.log" >&2; exit 1; }
  TOKEN=$(cat "$ROOT/$name/admin-token")
  STARTED_IN=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
}
qido_line() { # LABEL JSON
  python3 - "$1" "$2" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
a = r.pop("all")
print(f"  {label:<30} all {a['n']:4d} req: p50 {a['p50']:7.2f}  p95 {a['p95']:7.2f}  p99 {a['p99']:7.2f} ms")
for k, v in r.items():
    print(f"    {k:<8} p50 {v['p50']:7.2f}  p95 {v['p95']:7.2f}  p99 {v['p99']:7.2f} ms  (mean {v['mean_results']} studies)")
PY
}

echo "== $(nproc) cores, $PATIENTS patients, backends: $BACKENDS"
# The database's own collation, not C: the words' column brings its "C" collation itself.
[[ " $BACKENDS " == *" postgres "* ]] && start_postgres C.UTF-8 "-c max_connections=100"
for backend in $BACKENDS; do
  name="names_$backend"
  [ "$backend" = postgres ] && psql -qAt "$(pg_url postgres)" -c "CREATE DATABASE $name"
  start_tramy "$name" "$backend"; stop "$TPID"
  if [ "$backend" = postgres ]; then "$PY" benches/name_matching.py populate postgres "$(pg_url "$name")" "$PATIENTS"
  else "$PY" benches/name_matching.py populate sqlite "$ROOT/$name/index.sqlite" "$PATIENTS"; fi
  start_tramy "$name" "$backend"
  echo "  $backend: the first start filed the name words of $PATIENTS patients and answered in $STARTED_IN s"
  [ "$backend" = postgres ] && psql -qAt "$(pg_url "$name")" -c "VACUUM (ANALYZE) patients, studies, patient_name_words" >/dev/null
  [ "$backend" = sqlite ] && { stop "$TPID"; python3 -c "import sqlite3; sqlite3.connect('$ROOT/$name/index.sqlite').execute('ANALYZE')"; start_tramy "$name" "$backend"; }
  for mode in exact fuzzy; do
    R=$(BENCH_TOKEN=$TOKEN "$PY" benches/name_matching.py qido "$TURL/dicomweb" "$mode" "$QIDO_REQUESTS")
    label="before (standard)"; [ "$mode" = fuzzy ] && label="after (fuzzy, folded words)"
    qido_line "$backend $label" "$R"
  done
  stop "$TPID"
done
