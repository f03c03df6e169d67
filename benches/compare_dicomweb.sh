#!/usr/bin/env bash
# DICOMweb figures, tramy against Orthanc with its DICOMweb plugin (Debian packages), one run:
#   1. STOW-RS throughput (MB/s) for ~0.5 MB and ~10 MB instances, same client (curl, K parallel
#      requests, one instance per request), both servers on loopback, embedded SQLite, both
#      flushing storage to disk before answering (their defaults);
#   2. WADO-RS study metadata latency for a 1000-instance study (p50/p99);
#   3. QIDO-RS study search latency (p50/p99) with QIDO_N instances indexed (default 100000).
# usage: benches/compare_dicomweb.sh [K=4]      environment: QIDO_N, SMALL_N, LARGE_N
set -euo pipefail
cd "$(dirname "$0")/.."
K=${1:-4}
QIDO_N=${QIDO_N:-100000}
SMALL_N=${SMALL_N:-200}
LARGE_N=${LARGE_N:-30}
ROOT=$(mktemp -d /tmp/tramy-dicomweb.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v Orthanc >/dev/null || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
  sudo_if_needed apt-get update
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends orthanc orthanc-dicomweb
fi
VENV=target/bench-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q -r tests/requirements.txt
fi
PY="$VENV/bin/python"
cargo build --release --quiet
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

start_orthanc() { # DIR -> sets OPID, OURL
  local dir=$1 http dimse
  http=$(free_port); dimse=$(free_port); mkdir -p "$dir"
  cat > "$dir/orthanc.json" <<JSON
{ "Name": "peer", "StorageDirectory": "$dir/db", "IndexDirectory": "$dir/db",
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"], "HttpPort": $http, "DicomPort": $dimse,
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
  TCP_NODELAY=1 Orthanc "$dir/orthanc.json" >"$dir/log" 2>&1 &
  OPID=$!; OURL="http://127.0.0.1:$http"
  for _ in $(seq 150); do curl -fs "$OURL/system" >/dev/null 2>&1 && return; sleep 0.2; done
  echo "Orthanc did not start:" >&2; tail -5 "$dir/log" >&2; exit 1
}
start_tramy() { # DIR -> sets TPID, TURL, and BENCH_TOKEN (tramy's admin token, sent by
  # dicomweb_bench.py and the curl config; Orthanc, without authentication, ignores it)
  local dir=$1 http dimse
  http=$(free_port); dimse=$(free_port)
  TRAMY_DATA_DIR="$dir" TRAMY_DIMSE_ADDR="127.0.0.1:$dimse" TRAMY_HTTP_ADDR="127.0.0.1:$http" \
    RUST_LOG=warn target/release/tramy serve >"$ROOT/tramy-$(basename "$dir").log" 2>&1 &
  TPID=$!; TURL="http://127.0.0.1:$http"
  for _ in $(seq 100); do curl -fs "$TURL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "$TURL/healthz" >/dev/null 2>&1 || { echo "tramy did not start" >&2; exit 1; }
  export BENCH_TOKEN; BENCH_TOKEN=$(cat "$dir/admin-token")
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

echo "== STOW-RS throughput, curl with $K parallel requests, one instance per request"
stow_curl() { # URL DIR -> MB/s and how many answered 200
  local url=$1 dir=$2 start end bytes ok
  sed "s|@URL@|$url|; s|@TOKEN@|${BENCH_TOKEN:-}|" "$dir/curl.cfg" > "$dir/run.cfg"
  start=$(date +%s.%N)
  ok=$(curl -s --no-progress-meter -Z --parallel-max "$K" -K "$dir/run.cfg" 2>/dev/null | grep -c '^200$' || true)
  end=$(date +%s.%N)
  bytes=$(cat "$dir"/*.dcm | wc -c)
  python3 -c "print('%.1f %s' % ($bytes / 1e6 / ($end - $start), '$ok'))"
}
for spec in "0.5 $SMALL_N" "10 $LARGE_N"; do
  set -- $spec; size=$1; n=$2
  "$PY" benches/dicomweb_bench.py make "$ROOT/stow-$size" "$size" "$n"
  "$PY" benches/dicomweb_bench.py bodies "$ROOT/stow-$size"
  start_orthanc "$ROOT/orthanc-$size"
  read -r OMB OOK <<<"$(stow_curl "$OURL/dicom-web/studies" "$ROOT/stow-$size")"; stop "$OPID"
  start_tramy "$ROOT/tramy-$size"
  read -r TMB TOK <<<"$(stow_curl "$TURL/dicomweb/studies" "$ROOT/stow-$size")"; stop "$TPID"
  python3 -c "print(f'{$size:>4} MB x $n: orthanc {$OMB:7.1f} MB/s ($OOK ok)   tramy {$TMB:7.1f} MB/s ($TOK ok)   ratio {$TMB/$OMB:.2f}x')"
  rm -rf "$ROOT/stow-$size" "$ROOT/orthanc-$size" "$ROOT/tramy-$size"
done

echo "== WADO-RS study metadata, 1000-instance study"
"$PY" benches/dicomweb_bench.py make "$ROOT/meta" 0.02 1000
STUDY=$("$PY" -c "import pydicom,glob; print(pydicom.dcmread(sorted(glob.glob('$ROOT/meta/*.dcm'))[0]).StudyInstanceUID)")
start_tramy "$ROOT/tramy-meta"
"$PY" benches/dicomweb_bench.py stow "$TURL/dicomweb/studies" "$ROOT/meta" "$K" >/dev/null
T=$("$PY" benches/dicomweb_bench.py latency "$TURL/dicomweb" "/studies/$STUDY/metadata" application/dicom+json 30); stop "$TPID"
start_orthanc "$ROOT/orthanc-meta"
"$PY" benches/dicomweb_bench.py stow "$OURL/dicom-web/studies" "$ROOT/meta" "$K" >/dev/null
O=$("$PY" benches/dicomweb_bench.py latency "$OURL/dicom-web" "/studies/$STUDY/metadata" application/dicom+json 10); stop "$OPID"
echo "tramy   p50 $(echo "$T" | field p50_ms | cut -c1-6) ms  p99 $(echo "$T" | field p99_ms | cut -c1-6) ms"
echo "orthanc p50 $(echo "$O" | field p50_ms | cut -c1-6) ms  p99 $(echo "$O" | field p99_ms | cut -c1-6) ms"
rm -rf "$ROOT/meta" "$ROOT/tramy-meta" "$ROOT/orthanc-meta"

echo "== QIDO-RS study search with $QIDO_N instances indexed (tramy)"
python3 benches/make_instances.py dicom-samples/ct_small_explicit_le.dcm "$ROOT/qido" "$QIDO_N" 1
TRAMY_DATA_DIR="$ROOT/tramy-qido" target/release/tramy import --parallel 4 "$ROOT/qido" >/dev/null 2>&1
rm -rf "$ROOT/qido"
start_tramy "$ROOT/tramy-qido"
for q in "/studies?limit=100" "/studies?PatientName=compressed*&StudyDate=20000101-20301231&limit=100" "/studies?StudyInstanceUID=1.3.6.1.4.1.5962.1.2.1.20040119072730.00000000042" "/studies?fuzzymatching=true&PatientName=samples&limit=25&offset=500"; do
  R=$("$PY" benches/dicomweb_bench.py latency "$TURL/dicomweb" "$q" application/dicom+json 100)
  echo "p50 $(echo "$R" | field p50_ms | cut -c1-6) ms  p99 $(echo "$R" | field p99_ms | cut -c1-6) ms  $q"
done
stop "$TPID"
