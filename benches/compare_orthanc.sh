#!/usr/bin/env bash
# DIMSE ingest throughput, tramy against Orthanc (Debian package), measured in one run:
# the same N instances, the same client (dcmtk storescu), K parallel associations, both servers on
# loopback with their embedded SQLite index, both with TCP_NODELAY, both syncing storage to disk
# (Orthanc's default SyncStorageArea=true; tramy's default ingest.fsync=true).
#
# usage: benches/compare_orthanc.sh [N=2000] [K=4]
# TRAMY_BIN=path runs that tramy binary instead of building target/release/tramy (a before/after
# comparison in one session). PERF_OUT=file records tramy's CPU profile (perf record with DWARF call graphs, Debian
# linux-perf) during its push and prints where its time went. BENCH_DIR=folder puts both servers'
# storage on that file system (default /tmp), e.g. a freshly made ext4 with its journal: file
# creation on a file system that has seen many deletions costs far more (ext4 scans for recently
# deleted inodes), and an archive that rarely deletes does not pay that.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
K=${2:-4}
ROOT=$(mktemp -d "${BENCH_DIR:-/tmp}/tramy-vs-orthanc.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need Orthanc || ! need storescu; then
  sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_if_needed apt-get update
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends orthanc dcmtk
fi
TRAMY_BIN=${TRAMY_BIN:-}
if [ -z "$TRAMY_BIN" ]; then
  cargo build --release --quiet
  TRAMY_BIN=target/release/tramy
fi

echo "preparing $N instances in $K folders…"
python3 benches/make_instances.py dicom-samples/ct_small_explicit_le.dcm "$ROOT/data" "$N" "$K"

cpu_seconds() { # PID -> user+system CPU seconds the process has used
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

push() { # AE PORT -> seconds
  local ae=$1 port=$2 start end
  start=$(date +%s.%N)
  for d in "$ROOT"/data/part*; do
    TCP_NODELAY=1 storescu -aec "$ae" +sd 127.0.0.1 "$port" "$d" >/dev/null 2>&1 &
  done
  wait $(jobs -p | tail -n "$K")
  end=$(date +%s.%N)
  python3 -c "print($end - $start)"
}

# --- Orthanc -------------------------------------------------------------------------------------
OPORT=$(free_port); OHTTP=$(free_port)
mkdir -p "$ROOT/orthanc"
cat > "$ROOT/orthanc/orthanc.json" <<JSON
{ "Name": "peer", "StorageDirectory": "$ROOT/orthanc/db", "IndexDirectory": "$ROOT/orthanc/db",
  "HttpPort": $OHTTP, "DicomPort": $OPORT, "DicomAet": "ORTHANC", "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomAlwaysAllowStore": true, "DicomCheckCalledAet": false,
  "UnknownSopClassAccepted": true, "Plugins": [] }
JSON
TCP_NODELAY=1 Orthanc "$ROOT/orthanc/orthanc.json" >"$ROOT/orthanc/log" 2>&1 &
OPID=$!
for _ in $(seq 100); do curl -fs "127.0.0.1:$OHTTP/system" >/dev/null 2>&1 && break; sleep 0.2; done
OSECS=$(push ORTHANC "$OPORT")
OCPU=$(cpu_seconds "$OPID")
OCOUNT=$(curl -fs "127.0.0.1:$OHTTP/statistics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["CountInstances"])')
kill "$OPID"; wait "$OPID" 2>/dev/null || true

# --- tramy ---------------------------------------------------------------------------------------
TPORT=$(free_port); THTTP=$(free_port)
TRAMY_DATA_DIR="$ROOT/tramy" TRAMY_DIMSE_ADDR="127.0.0.1:$TPORT" TRAMY_HTTP_ADDR="127.0.0.1:$THTTP" \
  RUST_LOG=warn "$TRAMY_BIN" serve >"$ROOT/tramy.log" 2>&1 &
TPID=$!
for _ in $(seq 100); do curl -fs "127.0.0.1:$THTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
# dcmtk's default calling AE title, registered as an administrator would (tramy refuses unknown
# calling AE titles; Orthanc's DicomAlwaysAllowStore is its equivalent).
TRAMY_DATA_DIR="$ROOT/tramy" "$TRAMY_BIN" ae add STORESCU --facility LOCAL >/dev/null 2>&1
if [ -n "${PERF_OUT:-}" ]; then
  perf record -q -F 999 --call-graph dwarf,16384 -p "$TPID" -o "$PERF_OUT" 2>/dev/null &
  PERF_PID=$!
  sleep 0.5
fi
TSECS=$(push TRAMY "$TPORT")
if [ -n "${PERF_OUT:-}" ]; then
  kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
fi
TCPU=$(cpu_seconds "$TPID")
TCOUNT=$(python3 -c "import sqlite3; print(sqlite3.connect('$ROOT/tramy/index.sqlite').execute('select count(*) from instances').fetchone()[0])")
kill "$TPID"; wait "$TPID" 2>/dev/null || true

python3 - "$N" "$K" "$OSECS" "$OCOUNT" "$TSECS" "$TCOUNT" "$OCPU" "$TCPU" "$(nproc)" <<'PY'
import sys
n, k = int(sys.argv[1]), int(sys.argv[2])
osecs, ocount, tsecs, tcount = float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
ocpu, tcpu, cores = float(sys.argv[7]), float(sys.argv[8]), int(sys.argv[9])
print(f"instances: {n} x CT_small (39 kB), {k} parallel dcmtk storescu associations, TCP_NODELAY=1, {cores} cores")
print(f"orthanc  stored {ocount:5d} in {osecs:6.2f} s = {ocount/osecs:7.1f} instances/s, server CPU {1000*ocpu/max(ocount,1):.2f} ms/instance")
print(f"tramy    stored {tcount:5d} in {tsecs:6.2f} s = {tcount/tsecs:7.1f} instances/s, server CPU {1000*tcpu/max(tcount,1):.2f} ms/instance")
print(f"ratio tramy/orthanc: throughput {(tcount/tsecs)/(ocount/osecs):.2f}x, CPU per instance {ocpu/max(tcpu,1e-9):.2f}x less")
if ocount != n or tcount != n:
    sys.exit("a server did not store every instance")
PY
if [ -n "${PERF_OUT:-}" ]; then
  echo "tramy's CPU by function (inclusive, >= 5%):"
  perf report -i "$PERF_OUT" --children --sort sym -g none --percent-limit 5 --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | grep -v 'tokio::\|std::\|core::\|do_syscall\|entry_SYSCALL' | head -25
fi
