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
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -f "$ROOT/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$ROOT/pg/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  [ -n "${KEEP:-}" ] || rm -rf "$ROOT"
}
trap cleanup EXIT

PY=target/tmp/test-venv/bin/python
if [ ! -x "$PY" ]; then
  PY=target/bench-venv/bin/python
  [ -x "$PY" ] || { python3 -m venv target/bench-venv && target/bench-venv/bin/pip install -q -r tests/requirements.txt; }
fi
TRAMY_BIN=${TRAMY_BIN:-}
if [ -z "$TRAMY_BIN" ]; then
  cargo build --release --quiet
  TRAMY_BIN=target/release/tramy
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

PGPORT=""
start_postgres() {
  PGPORT=$(free_port)
  local d="$ROOT/pg/data" s="$ROOT/pg/sock"
  install -d -o postgres -g postgres "$ROOT/pg" "$d" "$s"
  # The database's own collation, not C: the words' column brings its "C" collation itself.
  runuser -u postgres -- "$PG_BIN/initdb" -D "$d" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d" -l "$ROOT/pg/server.log" -w start \
    -o "-p $PGPORT -k $s -c listen_addresses=127.0.0.1 -c max_connections=100" >/dev/null
}
pg_url() { echo "postgres://postgres@127.0.0.1:$PGPORT/$1"; }

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
[[ " $BACKENDS " == *" postgres "* ]] && start_postgres
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
