#!/usr/bin/env bash
# Peak RSS of tramy through the whole issue #7 attack set on one server (benches/attack_set.py:
# idle and dripping DIMSE sockets, 1050 half-sent HTTP requests, a 1 GiB never-ending DIMSE data
# set, three parallel 512 MiB STOW-RS parts, QIDO includefield=all over N instances, a 2000-frame
# list), with the worst C-ECHO and /healthz latency seen meanwhile. Run with triage off and with
# the default models loaded. Goal: peak under 500 MB.
# usage: benches/attack_rss.sh [N=22000]    (needs the test venv: run `cargo test` once; dcmtk)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-22000}
cargo build --release --quiet
BIN=target/release/tramy
PY=target/tmp/test-venv/bin/python
work=$(mktemp -d /tmp/tramy-attack.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
"$PY" benches/make_mr_instances.py "$N" "$work/files"
printf '[ingest]\nfsync = false\n[triage]\nenabled = false\n' > "$work/import.toml"
TRAMY_DATA_DIR="$work/data" "$BIN" import --config "$work/import.toml" "$work/files" >/dev/null
rm -rf "$work/files"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for triage in false true; do
  printf '[triage]\nenabled = %s\n' "$triage" > "$work/serve.toml"
  http=$(free_port); dimse=$(free_port)
  TRAMY_DATA_DIR="$work/data" TRAMY_DIMSE_ADDR="127.0.0.1:$dimse" TRAMY_HTTP_ADDR="127.0.0.1:$http" RUST_LOG=warn \
    "$BIN" serve --config "$work/serve.toml" 2>"$work/serve-$triage.log" &
  pid=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$http/healthz" >/dev/null && break; sleep 0.1; done
  # The attacker's and the prober's (dcmtk echoscu) calling AE titles, registered as an
  # administrator would: an unknown one is refused before any of the attack reaches ingest.
  for ae in ATTACKER ECHOSCU; do TRAMY_DATA_DIR="$work/data" "$BIN" ae add "$ae" --facility LOCAL >/dev/null 2>&1 || true; done
  export TRAMY_TOKEN; TRAMY_TOKEN=$(cat "$work/data/admin-token")
  read -r study series sop < <(curl -s -H "Authorization: Bearer $TRAMY_TOKEN" "http://127.0.0.1:$http/dicomweb/instances?limit=1" | python3 -c "
import json, sys; i = json.load(sys.stdin)[0]
print(i['0020000D']['Value'][0], i['0020000E']['Value'][0], i['00080018']['Value'][0])")
  echo "== triage enabled = $triage"
  "$PY" benches/attack_set.py "$pid" "$dimse" "$http" "$study" "$series" "$sop"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "server log, warnings and errors by kind:"
  sed -E 's/^[^ ]+ +//; s/peer=[^ ]+ //; s/(key|sop_instance_uid)=[^ ]+ //' "$work/serve-$triage.log" | { grep -E "WARN|ERROR" || true; } | sort | uniq -c | sort -rn | head -8
done
