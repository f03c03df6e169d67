#!/usr/bin/env bash
# Integrity figures, one run:
#   1. the cost of read-time SHA-256 verification on WADO-RS throughput: the same client (curl,
#      K parallel requests, one instance per request, transfer-syntax=* so nothing is converted)
#      fetches every instance of the same data folder from tramy as of BASELINE (before read
#      verification) and from this checkout, alternating A/B/A/B, ~0.5 MB and ~10 MB instances;
#   2. `tramy verify` throughput (MB/s) over the same archive, no rate limit.
# usage: benches/integrity_bench.sh [K=4]    environment: BASELINE (git rev, default 893620e),
#        SMALL_N (default 400), LARGE_N (default 40), ROUNDS (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
K=${1:-4}
BASELINE=${BASELINE:-893620e}
SMALL_N=${SMALL_N:-400}
LARGE_N=${LARGE_N:-40}
ROUNDS=${ROUNDS:-3}
ROOT=$(mktemp -d /tmp/tramy-integrity.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT

VENV=target/bench-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q -r tests/requirements.txt
fi
PY="$VENV/bin/python"
cargo build --release --quiet
# The baseline builds in its own worktree and target folder, seeded with this checkout's
# dependencies so only tramy itself compiles.
BASE_SRC=target/bench-baseline/src BASE_TARGET=target/bench-baseline/target
if [ ! -x "$BASE_TARGET/release/tramy" ] || [ "$(cat target/bench-baseline/rev 2>/dev/null)" != "$BASELINE" ]; then
  rm -rf "$BASE_SRC"; git worktree prune
  git worktree add --detach "$BASE_SRC" "$BASELINE" >/dev/null
  mkdir -p "$BASE_TARGET"; [ -d "$BASE_TARGET/release" ] || cp -a target/release "$BASE_TARGET/release"
  (cd "$BASE_SRC" && TRAMY_SKIP_MODEL_SETUP=1 TRAMY_SKIP_ONNXRUNTIME_FETCH=1 CARGO_TARGET_DIR="$PWD/../target" cargo build --release --quiet)
  echo "$BASELINE" > target/bench-baseline/rev
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
printf '[triage]\nenabled = false\n' > "$ROOT/tramy.toml"
start_tramy() { # BINARY DATA_DIR -> sets TPID, TURL
  local http dimse
  http=$(free_port); dimse=$(free_port)
  TRAMY_DATA_DIR="$2" TRAMY_DIMSE_ADDR="127.0.0.1:$dimse" TRAMY_HTTP_ADDR="127.0.0.1:$http" \
    RUST_LOG=warn "$1" serve --config "$ROOT/tramy.toml" >>"$ROOT/tramy.log" 2>&1 &
  TPID=$!; TURL="http://127.0.0.1:$http"
  for _ in $(seq 100); do curl -fs "$TURL/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "tramy did not start" >&2; cat "$ROOT/tramy.log" >&2; exit 1
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# One retrieval per instance, as a curl config; prints MB/s and the number of 200s.
wado_curl() { # BASE_URL CFG BYTES
  sed "s|@URL@|$1|" "$2" > "$2.run"
  local start end ok
  start=$(date +%s.%N)
  ok=$(curl -s --no-progress-meter -Z --parallel-max "$K" -K "$2.run" 2>/dev/null | grep -c '^200$' || true)
  end=$(date +%s.%N)
  python3 -c "print('%.1f %s' % ($3 / 1e6 / ($end - $start), '$ok'))"
}

DATA="$ROOT/data"
for spec in "0.5 $SMALL_N" "10 $LARGE_N"; do
  set -- $spec
  "$PY" benches/dicomweb_bench.py make "$ROOT/in-$1" "$1" "$2"
done
start_tramy target/release/tramy "$DATA"
for spec in "0.5" "10"; do "$PY" benches/dicomweb_bench.py stow "$TURL/dicomweb/studies" "$ROOT/in-$spec" "$K" >/dev/null; done
# Per size: the retrieve URLs (from QIDO) and the bytes they return.
for spec in "0.5" "10"; do
  study=$("$PY" -c "import pydicom,glob; print(pydicom.dcmread(sorted(glob.glob('$ROOT/in-$spec/*.dcm'))[0]).StudyInstanceUID)")
  curl -fs "$TURL/dicomweb/studies/$study/instances?limit=100000" -H 'Accept: application/dicom+json' | python3 -c "
import json, sys
for i in json.load(sys.stdin):
    se, sop = i['0020000E']['Value'][0], i['00080018']['Value'][0]
    print('url = \"@URL@/dicomweb/studies/$study/series/%s/instances/%s\"' % (se, sop))
    print('header = \"Accept: multipart/related; type=\\\\\"application/dicom\\\\\"; transfer-syntax=*\"')
    print('output = \"/dev/null\"')
    print('write-out = \"%{http_code}\\\\n\"')
" > "$ROOT/wado-$spec.cfg"
  du -cb "$ROOT"/in-"$spec"/*.dcm | tail -1 | cut -f1 > "$ROOT/bytes-$spec"
done
stop "$TPID"

echo "== WADO-RS retrieve throughput, curl with $K parallel requests, transfer-syntax=* (MB/s of instances)"
for spec in "0.5" "10"; do
  bytes=$(cat "$ROOT/bytes-$spec")
  declare -a A=() B=()
  for _ in $(seq "$ROUNDS"); do
    for which in baseline current; do
      bin=target/release/tramy; [ "$which" = baseline ] && bin="$BASE_TARGET/release/tramy"
      start_tramy "$bin" "$DATA"
      wado_curl "$TURL" "$ROOT/wado-$spec.cfg" "$bytes" >/dev/null # warm the page cache
      read -r mbs ok <<<"$(wado_curl "$TURL" "$ROOT/wado-$spec.cfg" "$bytes")"
      stop "$TPID"
      if [ "$which" = baseline ]; then A+=("$mbs"); else B+=("$mbs"); fi
    done
  done
  python3 -c "
import statistics as s
a=[$(IFS=,; echo "${A[*]}")]; b=[$(IFS=,; echo "${B[*]}")]
ma, mb = s.median(a), s.median(b)
print(f'{\"$spec\":>4} MB instances: before {ma:7.1f} MB/s  with verification {mb:7.1f} MB/s  cost {100*(ma-mb)/ma:5.1f}%   (runs: {a} vs {b})')"
  unset A B
done

echo "== tramy verify over the same archive (no rate limit)"
TRAMY_DATA_DIR="$DATA" target/release/tramy verify --config "$ROOT/tramy.toml" | head -1
