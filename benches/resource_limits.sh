#!/usr/bin/env bash
# Per-request cost and connection bounds, measured on a running tramy:
#  - peak RSS of `instances?limit=100000000&includefield=all` over N indexed instances, with the
#    default caps and with the caps raised so that every row is streamed;
#  - /healthz and C-ECHO latency with 1050 half-sent HTTP requests open, the server started
#    under a soft open-file limit of 1024 (it raises its own to the hard limit).
# Usage: benches/resource_limits.sh [N]   (default 22000; needs the test venv: run `cargo test` once)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-22000}
BIN=${TRAMY_BIN:-target/release/tramy}
[ -x "$BIN" ] || cargo build --release
PY=target/tmp/test-venv/bin/python
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

"$PY" benches/make_mr_instances.py "$N" "$work/files"
printf '[ingest]\nfsync = false\n[triage]\nenabled = false\n' > "$work/base.toml"
TRAMY_DATA_DIR="$work/data" "$BIN" import --config "$work/base.toml" "$work/files" > /dev/null

port=18951
qido_rss() { # $1: extra [http] settings, $2: label
  printf '[ingest]\nfsync = false\n[triage]\nenabled = false\n[http]\naddr = "127.0.0.1:%s"\n%b' "$port" "$1" > "$work/cfg.toml"
  TRAMY_DATA_DIR="$work/data" TRAMY_DIMSE_ADDR=127.0.0.1:0 RUST_LOG=warn "$BIN" serve --config "$work/cfg.toml" 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  local before; before=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  local t0; t0=$(date +%s.%N)
  curl -s -o "$work/body.json" "http://127.0.0.1:$port/dicomweb/instances?limit=100000000&includefield=all" -H 'Accept: application/dicom+json'
  local t1; t1=$(date +%s.%N)
  local peak; peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  local rows; rows=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$work/body.json")
  printf '%s: %s results, %s MB of JSON in %.2f s; peak RSS %s MB -> %s MB (+%s MB)\n' "$2" "$rows" \
    $(( $(stat -c %s "$work/body.json") / 1000000 )) "$(echo "$t1 - $t0" | bc)" \
    $((before / 1024)) $((peak / 1024)) $(((peak - before) / 1024))
  kill $pid; wait $pid 2>/dev/null || true
}
qido_rss "" "QIDO includefield=all, default caps"
qido_rss "max_query_results = 1000000\nmax_query_results_all_fields = 1000000\n" "QIDO includefield=all, every row streamed"

printf '[ingest]\nfsync = false\n[triage]\nenabled = false\n[http]\naddr = "127.0.0.1:%s"\n' "$port" > "$work/cfg.toml"
(ulimit -Sn 1024; TRAMY_DATA_DIR="$work/d2" TRAMY_DIMSE_ADDR=127.0.0.1:18952 RUST_LOG=info exec "$BIN" serve --config "$work/cfg.toml" 2> "$work/serve.log") &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
"$PY" - "$port" <<'PY'
import socket, subprocess, sys, time
port = int(sys.argv[1])
held = []
for _ in range(1050):
    s = socket.socket(); s.bind(("127.0.0.2", 0)); s.connect(("127.0.0.1", port))
    s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"); held.append(s)
t = time.time()
code = subprocess.run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                       f"http://127.0.0.1:{port}/healthz"], capture_output=True, text=True).stdout
print(f"/healthz with 1050 half-sent requests open: {code} in {time.time() - t:.3f} s")
t = time.time()
rc = subprocess.run(["echoscu", "-aec", "TRAMY", "127.0.0.1", "18952"], capture_output=True).returncode
print(f"C-ECHO with 1050 half-sent requests open: rc {rc} in {time.time() - t:.3f} s")
PY
echo "'Too many open files' in the log: $(grep -c 'Too many open files' "$work/serve.log" || true)"
