#!/usr/bin/env bash
# Index-scale figures of issue #11, for each index backend (SQLite, PostgreSQL), in one run:
#   1. C-STORE ingest rate with N instances already indexed against the same with the first size
#      (default 10 000): the same ROUNDS x BATCH new CT instances (39 kB), one dcmtk storescu
#      association each round, TCP_NODELAY=1, rounds alternating between the sizes after a
#      warm-up round (goal >= 90%);
#   2. QIDO-RS study search latency at each size: a viewer's mix (PatientID, PatientName FAMILY*,
#      a 7-day StudyDate range, ModalitiesInStudy, AccessionNumber, no filter; limit=QIDO_LIMIT),
#      QIDO_REQUESTS requests after a warm-up, one client, keep-alive (goal p99 < 20 ms at 1M);
#   3. Orthanc with its PostgreSQL index plugin (Debian orthanc-postgresql, DICOMweb plugin),
#      loaded with ORTHANC_N real instances (the first ORTHANC_N of the same synthetic archive as
#      DICOM files, pushed with K_ORTHANC parallel storescu), and tramy on PostgreSQL with the same
#      first ORTHANC_N instances: the same QIDO mix against both.
# The index is filled with set-based bulk inserts (benches/index_scale.py populate: python's
# sqlite3 executemany / psql COPY) into a schema made by `tramy serve` on a fresh data folder;
# the synthetic rows' objects do not exist (nothing here reads them).
#
# usage: benches/index_scale.sh
# environment: SIZES ("10000 1000000"; the first is the baseline), BACKENDS ("sqlite postgres"),
#   ROUNDS (7), BATCH (2000), QIDO_REQUESTS (1200), QIDO_LIMIT (100), ORTHANC_N (20000; 0: skip),
#   K_ORTHANC (2), TRAMY_BIN (default: cargo build --release), BENCH_DIR (/tmp), KEEP=1 keeps
#   the folders.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"10000 1000000"}
BACKENDS=${BACKENDS-"sqlite postgres"}  # BACKENDS="" runs only the Orthanc part
ROUNDS=${ROUNDS:-7}
BATCH=${BATCH:-2000}
QIDO_REQUESTS=${QIDO_REQUESTS:-1200}
ORTHANC_N=${ORTHANC_N:-20000}
K_ORTHANC=${K_ORTHANC:-2}
ROOT=$(mktemp -d "${BENCH_DIR:-/tmp}/tramy-index-scale.XXXXXX")
chmod 755 "$ROOT"
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v storescu >/dev/null || { [ "$ORTHANC_N" -gt 0 ] && \
   [ ! -e /usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so ]; }; then
  sudo_if_needed apt-get update
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    dcmtk orthanc orthanc-dicomweb orthanc-postgresql postgresql
fi
# shellcheck source=benches/postgres.sh
. benches/postgres.sh
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
largest() { echo "$SIZES" | tr ' ' '\n' | sort -n | tail -n 1; }

psql_q() { psql -qAt "$(pg_url "$1")" -c "$2"; }

# --- tramy on a data folder (and a database on PostgreSQL) -----------------------------------
# start_tramy NAME BACKEND -> sets TPID, TURL, TDIMSE, TOKEN
start_tramy() {
  local name=$1 backend=$2 http dimse
  http=$(free_port); dimse=$(free_port)
  local env=(TRAMY_DATA_DIR="$ROOT/$name" TRAMY_DIMSE_ADDR="127.0.0.1:$dimse"
             TRAMY_HTTP_ADDR="127.0.0.1:$http" TRAMY_AE_TITLE=TRAMY RUST_LOG=warn)
  [ "$backend" = postgres ] && env+=(TRAMY_INDEX_URL="$(pg_url "$name")")
  env "${env[@]}" "$TRAMY_BIN" serve --no-triage >>"$ROOT/$name.log" 2>&1 &
  TPID=$!; TURL="http://127.0.0.1:$http"; TDIMSE=$dimse
  for _ in $(seq 600); do curl -fs "$TURL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "$TURL/healthz" >/dev/null || { echo "tramy $name did not start" >&2; cat "$ROOT/$name.log" >&2; exit 1; }
  TOKEN=$(cat "$ROOT/$name/admin-token")
}
tramy_cli() { # NAME BACKEND ARGS...
  local name=$1 backend=$2; shift 2
  if [ "$backend" = postgres ]; then
    TRAMY_DATA_DIR="$ROOT/$name" TRAMY_INDEX_URL="$(pg_url "$name")" "$TRAMY_BIN" "$@"
  else
    TRAMY_DATA_DIR="$ROOT/$name" "$TRAMY_BIN" "$@"
  fi
}
count_instances() { # NAME BACKEND
  if [ "$2" = postgres ]; then psql_q "$1" "SELECT count(*) FROM instances"
  else python3 -c "import sqlite3; print(sqlite3.connect('$ROOT/$1/index.sqlite').execute('select count(*) from instances').fetchone()[0])"; fi
}
# An index of N synthetic instances: schema by tramy itself, rows by bulk insert.
make_index() { # NAME BACKEND N
  local name=$1 backend=$2 n=$3 start
  [ "$backend" = postgres ] && psql_q postgres "CREATE DATABASE $name"
  start_tramy "$name" "$backend"; stop "$TPID"
  tramy_cli "$name" "$backend" ae add STORESCU --facility LOCAL >/dev/null 2>&1
  start=$(date +%s.%N)
  if [ "$backend" = postgres ]; then "$PY" benches/index_scale.py populate postgres "$(pg_url "$name")" "$n"
  else "$PY" benches/index_scale.py populate sqlite "$ROOT/$name/index.sqlite" "$n"; fi
  local bytes
  if [ "$backend" = postgres ]; then bytes=$(psql_q "$name" "SELECT pg_database_size('$name')")
  else bytes=$(stat -c %s "$ROOT/$name/index.sqlite"); fi
  printf '  %-8s %8d instances indexed in %6.1f s (index %d MB)\n' "$backend" "$(count_instances "$name" "$backend")" \
    "$(python3 -c "import time; print(time.time() - $start)")" "$((bytes / 1000000))"
}
push() { # PORT DIR -> seconds
  local start end
  start=$(date +%s.%N)
  TCP_NODELAY=1 storescu -aec TRAMY +sd 127.0.0.1 "$1" "$2" >/dev/null 2>&1 || { echo "storescu failed" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 -c "print($end - $start)"
}
qido_line() { # LABEL JSON
  python3 - "$1" "$2" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
a = r.pop("all")
print(f"  {label:<34} all {a['n']:5d} req: p50 {a['p50']:7.2f}  p95 {a['p95']:7.2f}  p99 {a['p99']:7.2f} ms")
for k, v in r.items():
    print(f"    {k:<18} p50 {v['p50']:7.2f}  p95 {v['p95']:7.2f}  p99 {v['p99']:7.2f} ms  (mean {v['mean_results']} studies)")
PY
}

echo "== set-up: $(nproc) cores, sizes: $SIZES, backends: $BACKENDS"
"$PY" benches/index_scale.py batches "$ROOT/batches" "$((ROUNDS + 1))" "$BATCH"
# tramy opens up to 33 connections per node; Orthanc a few more.
if [[ " $BACKENDS " == *" postgres "* ]] || [ "$ORTHANC_N" -gt 0 ]; then
  start_postgres C "-c max_connections=200 -c shared_buffers=512MB"
fi
for size in $SIZES; do echo "  archive of $size: $("$PY" benches/index_scale.py shape "$size")"; done

for backend in $BACKENDS; do
  echo "== $backend: populating"
  for size in $SIZES; do make_index "${backend}_$size" "$backend" "$size"; done
  declare -A PID URL PORT SECS=()
  for size in $SIZES; do
    start_tramy "${backend}_$size" "$backend"
    PID[$size]=$TPID; URL[$size]=$TURL; PORT[$size]=$TDIMSE
  done
  echo "== $backend: C-STORE of $ROUNDS x $BATCH new CT instances, one storescu association a round"
  # A first round to each, not counted: the servers' caches and connections warm, as in service.
  for size in $SIZES; do push "${PORT[$size]}" "$ROOT/batches/round$ROUNDS" >/dev/null; done
  for r in $(seq 0 $((ROUNDS - 1))); do
    for size in $SIZES; do
      s=$(push "${PORT[$size]}" "$ROOT/batches/round$r")
      SECS[$size]="${SECS[$size]:-} $s"
      printf '  round %d  %8d indexed: %6.1f instances/s\n' "$r" "$size" "$(python3 -c "print($BATCH / $s)")"
    done
  done
  base=${SIZES%% *}
  for size in $SIZES; do
    want=$((size + (ROUNDS + 1) * BATCH)); got=$(count_instances "${backend}_$size" "$backend")
    [ "$got" -eq "$want" ] || { echo "${backend}_$size holds $got instances, not $want" >&2; exit 1; }
    python3 - "$backend" "$size" "$base" "$BATCH" "${SECS[$size]}" "${SECS[$base]}" <<'PY'
import statistics, sys
backend, size, base, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rate = [batch / float(s) for s in sys.argv[5].split()]
base_rate = [batch / float(s) for s in sys.argv[6].split()]
m, b = statistics.median(rate), statistics.median(base_rate)
# Each round pushes to every size back to back: the ratio within a round cancels most of the
# drift of a shared machine's load between rounds.
paired = statistics.median(r / q for r, q in zip(rate, base_rate))
print(f"  {backend:<8} {size:>8} indexed: median {m:6.1f} instances/s (rounds {', '.join(f'{x:.0f}' for x in rate)})"
      f" = {100 * m / b:5.1f}% of the rate at {base}; median of per-round ratios {100 * paired:5.1f}%")
PY
  done
  echo "== $backend: QIDO-RS study search, $QIDO_REQUESTS requests, one client, keep-alive"
  for size in $SIZES; do
    R=$(BENCH_TOKEN=$(cat "$ROOT/${backend}_$size/admin-token") "$PY" benches/index_scale.py qido "${URL[$size]}/dicomweb" "$size" "$QIDO_REQUESTS")
    qido_line "tramy $backend, $size indexed" "$R"
  done
  for size in $SIZES; do stop "${PID[$size]}"; done
  unset PID URL PORT SECS
  # Free the disk before the next backend (a million rows is several GB).
  for size in $SIZES; do
    [ "$backend" = postgres ] && psql_q postgres "DROP DATABASE ${backend}_$size"
    rm -rf "${ROOT:?}/${backend}_$size"
  done
done

[ "$ORTHANC_N" -gt 0 ] || exit 0
echo "== Orthanc (PostgreSQL index plugin, DICOMweb plugin) and tramy (PostgreSQL), $ORTHANC_N instances"
"$PY" benches/index_scale.py dicom "$ORTHANC_N" "$ROOT/orthanc-files" "$K_ORTHANC"
psql_q postgres "CREATE DATABASE orthanc"
OHTTP=$(free_port); ODIMSE=$(free_port); mkdir -p "$ROOT/orthanc"
cat > "$ROOT/orthanc/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$ROOT/orthanc/storage", "IndexDirectory": "$ROOT/orthanc/storage",
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
              "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"],
  "HttpPort": $OHTTP, "DicomPort": $ODIMSE, "DicomAet": "ORTHANC", "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomAlwaysAllowStore": true, "DicomCheckCalledAet": false,
  "UnknownSopClassAccepted": true,
  "PostgreSQL": { "EnableIndex": true, "EnableStorage": false, "Host": "127.0.0.1", "Port": $PGPORT,
                  "Database": "orthanc", "Username": "postgres", "Password": "", "Lock": false },
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
TCP_NODELAY=1 Orthanc "$ROOT/orthanc/orthanc.json" >"$ROOT/orthanc/log" 2>&1 &
OPID=$!
for _ in $(seq 300); do curl -fs "127.0.0.1:$OHTTP/system" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "127.0.0.1:$OHTTP/system" >/dev/null || { echo "Orthanc did not start" >&2; tail "$ROOT/orthanc/log" >&2; exit 1; }
start=$(date +%s.%N)
for d in "$ROOT"/orthanc-files/part*; do
  TCP_NODELAY=1 storescu -aec ORTHANC +sd 127.0.0.1 "$ODIMSE" "$d" >/dev/null 2>&1 &
done
wait $(jobs -p | grep -vx "$OPID") 2>/dev/null || true
end=$(date +%s.%N)
OCOUNT=$(curl -fs "127.0.0.1:$OHTTP/statistics" | field '["CountInstances"]')
python3 -c "print(f'  Orthanc stored $OCOUNT of $ORTHANC_N in {$end - $start:.0f} s = {$OCOUNT / ($end - $start):.0f} instances/s ($K_ORTHANC parallel storescu)')"
[ "$OCOUNT" -eq "$ORTHANC_N" ] || { echo "Orthanc did not store every instance" >&2; exit 1; }
rm -rf "$ROOT/orthanc-files"
make_index "postgres_orthanc" postgres "$ORTHANC_N"
start_tramy "postgres_orthanc" postgres
R=$(BENCH_TOKEN=$TOKEN "$PY" benches/index_scale.py qido "$TURL/dicomweb" "$ORTHANC_N" "$QIDO_REQUESTS")
qido_line "tramy postgres, $ORTHANC_N indexed" "$R"
stop "$TPID"
R=$("$PY" benches/index_scale.py qido "http://127.0.0.1:$OHTTP/dicom-web" "$ORTHANC_N" "$QIDO_REQUESTS")
qido_line "orthanc postgres, $ORTHANC_N indexed" "$R"
stop "$OPID"
