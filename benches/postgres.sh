# Sourced by the benches that compare the index engines (index_scale.sh, name_matching.sh), after
# they set ROOT: a private PostgreSQL cluster under $ROOT/pg on a free loopback port (initdb
# refuses root, so it runs as the postgres account), stopped with the bench by `cleanup`, and
# the Python and tramy binaries the benches run.
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The test venv (pydicom, requests, psycopg), or a bench venv made like it.
PY=target/tmp/test-venv/bin/python
if [ ! -x "$PY" ]; then
  PY=target/bench-venv/bin/python
  [ -x "$PY" ] || { python3 -m venv target/bench-venv && target/bench-venv/bin/pip install -q -r tests/requirements.txt; }
fi
# TRAMY_BIN, or this checkout's release build.
TRAMY_BIN=${TRAMY_BIN:-}
if [ -z "$TRAMY_BIN" ]; then
  cargo build --release --quiet
  TRAMY_BIN=target/release/tramy
fi

# start_postgres LOCALE [SERVER OPTIONS] -> PGPORT
PGPORT=""
start_postgres() {
  PGPORT=$(free_port)
  local d="$ROOT/pg/data" s="$ROOT/pg/sock" locale=$1 options=${2:-}
  install -d -o postgres -g postgres "$ROOT/pg" "$d" "$s"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$d" -A trust -U postgres --no-sync -E UTF8 --locale="$locale" >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d" -l "$ROOT/pg/server.log" -w start \
    -o "-p $PGPORT -k $s -c listen_addresses=127.0.0.1 $options" >/dev/null
}
pg_url() { echo "postgres://postgres@127.0.0.1:$PGPORT/$1"; }
