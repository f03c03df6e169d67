#!/usr/bin/env bash
# The worklist of 10 000 studies (issue #15: under 200 ms server time, p95): an index of STUDIES
# synthetic studies (benches/index_scale.py's archive, bulk-inserted into a schema made by
# `tramy serve`), each with a chest model's finding on its first instance (~12% flagged) and its
# triage job done, then COUNT requests per route from one keep-alive client on loopback (so the
# time is the server's plus a loopback round trip): the API's first page, a deep page, a name
# search, the web UI's worklist page and its flagged-only filter, signed in as the superadmin (who
# sees every study: the widest worklist).
#
# usage: benches/worklist_scale.sh [STUDIES=10000] [COUNT=200]
# TRAMY_BIN=path uses that binary instead of building target/release/tramy.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${1:-10000}
COUNT=${2:-200}
PY=target/tmp/test-venv/bin/python   # the test suite's venv (requests); run `cargo test` once
[ -x "$PY" ] || { echo "run cargo test once first (it makes $PY)" >&2; exit 1; }
if [ -z "${TRAMY_BIN:-}" ]; then cargo build --release --quiet; TRAMY_BIN=target/release/tramy; fi
ROOT=$(mktemp -d "${BENCH_DIR:-/tmp}/tramy-worklist.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_tramy() {
  HTTP=$(free_port)
  TRAMY_DATA_DIR="$ROOT/data" TRAMY_HTTP_ADDR="127.0.0.1:$HTTP" TRAMY_DIMSE_ADDR="127.0.0.1:$(free_port)" \
    RUST_LOG=warn "$TRAMY_BIN" serve --no-triage >>"$ROOT/tramy.log" 2>&1 &
  TPID=$!
  for _ in $(seq 600); do curl -fs "127.0.0.1:$HTTP/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  cat "$ROOT/tramy.log" >&2; exit 1
}

start_tramy; kill "$TPID"; wait "$TPID" 2>/dev/null || true   # the schema, by tramy itself
N=$("$PY" benches/worklist_scale.py studies "$STUDIES")
start=$(date +%s.%N)
"$PY" benches/index_scale.py populate sqlite "$ROOT/data/index.sqlite" "$N"
"$PY" benches/worklist_scale.py findings "$ROOT/data/index.sqlite" 7
"$PY" -c "import sqlite3; c=sqlite3.connect('$ROOT/data/index.sqlite'); print(c.execute('select count(*) from studies').fetchone()[0], 'studies,', c.execute('select count(*) from instances').fetchone()[0], 'instances indexed in', round($(date +%s.%N) - $start, 1), 's')"
start_tramy
BENCH_TOKEN=$(cat "$ROOT/data/admin-token") "$PY" benches/worklist_scale.py time "http://127.0.0.1:$HTTP" "$COUNT"
