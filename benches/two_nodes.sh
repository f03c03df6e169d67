#!/usr/bin/env bash
# Two tramy nodes against one, on one PostgreSQL index and one object store (a local folder both
# nodes name by URL), in one run, release build, triage off: N copies of the CT sample with fresh
# UIDs (benches/make_instances.py), K parallel dcmtk storescu associations, all to the one node,
# then split between the two. Each round starts on a new database and folder. The gain needs the
# cores for it: on a 2-core machine both nodes and PostgreSQL share the same two.
#
# usage: benches/two_nodes.sh [N=4000] [K=8]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4000}
K=${2:-8}
ROOT=$(mktemp -d /tmp/tramy-twonodes.XXXXXX)
chmod 755 "$ROOT"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT
command -v storescu >/dev/null || { echo "needs dcmtk (apt-get install dcmtk)" >&2; exit 1; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "needs PostgreSQL (apt-get install postgresql)" >&2; exit 1; }
cargo build --release --quiet
TRAMY=target/release/tramy

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# PostgreSQL tuned as its docs suggest for a dedicated server of this size; durable commits kept.
PGDATA=$ROOT/pg; mkdir -p "$PGDATA"; [ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
as_pg "$PGBIN/initdb" -A trust -U postgres -E UTF8 --locale=C -D "$PGDATA" >/dev/null
PGPORT=$(free_port)
as_pg "$PGBIN/postgres" -D "$PGDATA" -p "$PGPORT" -k "$PGDATA" -c listen_addresses=127.0.0.1 \
  -c shared_buffers=512MB -c max_connections=200 >"$ROOT/pg.log" 2>&1 &
for _ in $(seq 100); do psql -h 127.0.0.1 -p "$PGPORT" -U postgres -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done

start_node() { # NAME INDEX_URL OBJECTS_DIR -> NPID NDIMSE NDIR
  NDIR=$ROOT/$1; mkdir -p "$NDIR/data"; local http; http=$(free_port); NDIMSE=$(free_port)
  printf '[triage]\nenabled = false\n' >"$NDIR/tramy.toml"
  [ -n "${FIRST_DIR:-}" ] && cp -a "$FIRST_DIR/data/keys" "$FIRST_DIR/data/admin-token" "$NDIR/data/"
  TRAMY_INDEX_URL=$2 TRAMY_OBJECT_STORE_URL=file://$3 TRAMY_DATA_DIR="$NDIR/data" \
    TRAMY_DIMSE_ADDR="127.0.0.1:$NDIMSE" TRAMY_HTTP_ADDR="127.0.0.1:$http" RUST_LOG=warn \
    "$TRAMY" serve --no-triage --config "$NDIR/tramy.toml" >"$NDIR/log" 2>&1 &
  NPID=$!
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
}

python3 benches/make_instances.py dicom-samples/ct_small_explicit_le.dcm "$ROOT/ct" "$N" "$K"
echo "== C-STORE throughput, $N x CT_small (39 kB), $K parallel storescu associations, $(nproc) cores, PostgreSQL index"
for nodes in 1 2; do
  db=bench_$nodes; psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "create database $db" >/dev/null
  url="postgres://postgres@127.0.0.1:$PGPORT/$db"; objects=$ROOT/objects-$nodes
  FIRST_DIR= start_node "n$nodes-a" "$url" "$objects"; pids=($NPID); ports=($NDIMSE)
  TRAMY_INDEX_URL=$url TRAMY_DATA_DIR="$ROOT/n$nodes-a/data" "$TRAMY" ae add STORESCU --facility LOCAL >/dev/null
  if [ "$nodes" = 2 ]; then
    FIRST_DIR=$ROOT/n$nodes-a start_node "n$nodes-b" "$url" "$objects"; pids+=($NPID); ports+=($NDIMSE)
  fi
  start=$(date +%s.%N); senders=(); i=0
  for d in "$ROOT"/ct/part*; do
    port=${ports[$((i % nodes))]}; i=$((i + 1))
    TCP_NODELAY=1 storescu -aec TRAMY +sd 127.0.0.1 "$port" "$d" >/dev/null 2>"$ROOT/storescu-$i.err" &
    senders+=($!)
  done
  wait "${senders[@]}" || true
  end=$(date +%s.%N)
  stored=$(psql -h 127.0.0.1 -p "$PGPORT" -U postgres -d "$db" -tAc 'select count(*) from instances')
  python3 -c "import sys; n, s = int(sys.argv[1]), float(sys.argv[2]) - float(sys.argv[3]); print(f'{sys.argv[4]} node(s): stored {n:5d} in {s:6.2f} s = {n / s:7.1f} instances/s')" \
    "$stored" "$end" "$start" "$nodes"
  for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
done
