#!/usr/bin/env bash
# Objects on local disk against objects on Garage (S3-compatible, single node on loopback), in one
# run, release build, triage off (the figures are ingest's, not a model's):
#   1. C-STORE throughput: N copies of the CT sample with fresh UIDs (benches/make_instances.py),
#      K parallel dcmtk storescu associations, TCP_NODELAY (as benches/compare_orthanc.sh);
#   2. peak RSS (VmHWM, /proc/PID/status) of `tramy serve` receiving one generated multi-frame
#      instance of MB MiB (benches/make_large_instance.py) by C-STORE (dcmtk storescu) and by
#      STOW-RS (curl, one part streamed from disk), a fresh server per case. Goal: < 200 MB.
#      With the time from the first byte sent to the answer, with `[ingest]
#      upload_while_receiving` on (the default: uploaded as it arrives) and off (uploaded from
#      the staging file once whole).
# Both keep tramy's defaults: fsync of local objects on; on Garage the object is durable when
# Garage answers (Garage's own data_fsync is off by default).
#
# usage: benches/object_store_bench.sh [N=2000] [K=4] [MB=1024]    environment: SKIP_RSS=1, SKIP_THROUGHPUT=1
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
K=${2:-4}
MB=${3:-1024}
ROOT=$(mktemp -d /tmp/tramy-objbench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT
command -v storescu >/dev/null || { echo "needs dcmtk (apt-get install dcmtk)" >&2; exit 1; }
# shellcheck source=benches/garage.sh
. benches/garage.sh
cargo build --release --quiet
TRAMY=target/release/tramy
start_garage "$ROOT/garage"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hwm_mb() { awk '/^VmHWM/ {printf "%d", $2/1024}' "/proc/$1/status"; }

start_tramy() { # OBJECTS(local|garage) NAME [EXTRA_TOML] -> TPID TDIMSE TURL TDIR TTOKEN
  local objects=$1 http url=
  TDIR=$ROOT/tramy-$2; mkdir -p "$TDIR"; http=$(free_port); TDIMSE=$(free_port)
  printf '[triage]\nenabled = false\n%b' "${3:-}" > "$TDIR/tramy.toml"
  [ "$objects" = garage ] && url=s3://tramy/$2
  env ${url:+TRAMY_OBJECT_STORE_URL=$url} TRAMY_DATA_DIR="$TDIR/data" TRAMY_DIMSE_ADDR="127.0.0.1:$TDIMSE" \
    TRAMY_HTTP_ADDR="127.0.0.1:$http" RUST_LOG=warn "$TRAMY" serve --config "$TDIR/tramy.toml" \
    >"$TDIR/log" 2>&1 &
  TPID=$!; TURL="http://127.0.0.1:$http"
  for _ in $(seq 300); do curl -fs "$TURL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "$TURL/healthz" >/dev/null || { echo "tramy did not start" >&2; cat "$TDIR/log" >&2; exit 1; }
  # dcmtk's default calling AE title, registered as an admin would.
  TRAMY_DATA_DIR="$TDIR/data" "$TRAMY" ae add STORESCU --facility LOCAL >/dev/null 2>&1
  TTOKEN=$(cat "$TDIR/data/admin-token")
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
count() { # TURL TOKEN -> instances QIDO-RS lists
  curl -fs -H "Authorization: Bearer $2" -H 'Accept: application/dicom+json' "$1/dicomweb/instances?limit=100000" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

if [ -z "${SKIP_THROUGHPUT:-}" ]; then
  python3 benches/make_instances.py dicom-samples/ct_small_explicit_le.dcm "$ROOT/ct" "$N" "$K"
  echo "== C-STORE throughput: $N x CT_small (39 kB), $K parallel dcmtk storescu associations, $(nproc) cores"
  for objects in local garage; do
    start_tramy "$objects" "cstore-$objects"
    start=$(date +%s.%N); senders=()
    for d in "$ROOT"/ct/part*; do
      TCP_NODELAY=1 storescu -aec TRAMY +sd 127.0.0.1 "$TDIMSE" "$d" >/dev/null 2>"$ROOT/storescu-$(basename "$d").err" &
      senders+=($!)
    done
    wait "${senders[@]}" || true
    end=$(date +%s.%N)
    stored=$(count "$TURL" "$TTOKEN")
    python3 -c "import sys; n, s = int(sys.argv[1]), float(sys.argv[2]) - float(sys.argv[3]); print(f'{sys.argv[4]:7s} stored {n:5d} in {s:6.2f} s = {n / s:7.1f} instances/s')" \
      "$stored" "$end" "$start" "$objects"
    stop "$TPID"
  done
fi

if [ -z "${SKIP_RSS:-}" ]; then
  python3 benches/make_large_instance.py "$ROOT/big.dcm" "$MB"
  echo "== peak RSS of tramy serve receiving one $(($(stat -c %s "$ROOT/big.dcm") / 1048576)) MiB instance (goal < 200 MB)"
  for objects in local garage; do
   for upload in true false; do
    extra="[ingest]\nupload_while_receiving = $upload\n"
    start_tramy "$objects" "dimse-$objects-$upload" "$extra"
    t0=$(date +%s.%N)
    if TCP_NODELAY=1 storescu -aec TRAMY 127.0.0.1 "$TDIMSE" "$ROOT/big.dcm" 2>"$ROOT/storescu.err"; then r=stored; else r="storescu failed: $(tail -1 "$ROOT/storescu.err")"; fi
    t=$(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):6.2f}')" "$(date +%s.%N)" "$t0")
    printf '%-7s upload_while_receiving=%-5s C-STORE  peak RSS %5s MB  sent to answered %s s  (%s, %s instance(s) listed)\n' "$objects" "$upload" "$(hwm_mb "$TPID")" "$t" "$r" "$(count "$TURL" "$TTOKEN")"
    stop "$TPID"
    start_tramy "$objects" "stow-$objects-$upload" "$extra"
    t0=$(date +%s.%N)
    code=$({ printf -- '--rssbench\r\nContent-Type: application/dicom\r\n\r\n'; cat "$ROOT/big.dcm"
             printf -- '\r\n--rssbench--\r\n'; } |
           curl -sS -o "$ROOT/stow.out" -w '%{http_code}' -X POST -T - -H "Authorization: Bearer $TTOKEN" \
             -H 'Content-Type: multipart/related; type="application/dicom"; boundary=rssbench' "$TURL/dicomweb/studies")
    t=$(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):6.2f}')" "$(date +%s.%N)" "$t0")
    printf '%-7s upload_while_receiving=%-5s STOW-RS  peak RSS %5s MB  sent to answered %s s  (HTTP %s, %s instance(s) listed)\n' "$objects" "$upload" "$(hwm_mb "$TPID")" "$t" "$code" "$(count "$TURL" "$TTOKEN")"
    stop "$TPID"
   done
  done
fi
