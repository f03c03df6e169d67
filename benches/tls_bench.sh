#!/usr/bin/env bash
# The cost of TLS on tramy's listeners, one run: the same clients against the same release
# build with plain listeners and with TLS on both (an ECDSA P-256 certificate from a throwaway
# CA), alternating plain/TLS ROUNDS times, medians printed:
#   1. C-ECHO associations per second (dcmtk echoscu, one new connection + handshake each);
#   2. C-STORE of N small CT instances (39 KB) in one association (dcmtk storescu), instances/s;
#   3. C-STORE of LARGE_N 10 MB instances in one association, MB/s;
#   4. WADO-RS of those 10 MB instances, one curl on one keep-alive connection, MB/s.
# usage: benches/tls_bench.sh [N=400] [LARGE_N=20]    environment: ROUNDS (default 3),
#        VENV (a Python with pydicom and numpy; default target/bench-venv, made on first use),
#        FSYNC (default false), ECHOES (default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-400}
LARGE_N=${2:-20}
ROUNDS=${ROUNDS:-3}
ECHOES=${ECHOES:-50}
ROOT=$(mktemp -d /tmp/tramy-tls.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT

VENV=${VENV:-target/bench-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q -r tests/requirements.txt
fi
PY="$VENV/bin/python"
cargo build --release --quiet
BIN=target/release/tramy
# dcmtk sets TCP_NODELAY only when told; else Nagle + delayed ACK add ~40 ms per message.
export TCP_NODELAY=1

# A throwaway CA and a server certificate for localhost / 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$ROOT/ca-key.pem" -out "$ROOT/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$ROOT/key.pem" -out "$ROOT/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$ROOT/ext.cnf"
openssl x509 -req -in "$ROOT/server.csr" -CA "$ROOT/ca.pem" -CAkey "$ROOT/ca-key.pem" \
  -CAcreateserial -days 2 -extfile "$ROOT/ext.cnf" -out "$ROOT/cert.pem" 2>/dev/null

# fsync off (FSYNC=true to keep it): the network path is measured, not this disk's flushes.
printf '[triage]\nenabled = false\n[ingest]\nfsync = %s\n' "${FSYNC:-false}" > "$ROOT/plain.toml"
{ cat "$ROOT/plain.toml"
  for s in http dimse; do
    printf '[%s]\ntls_certificate = "%s"\ntls_private_key = "%s"\n' "$s" "$ROOT/cert.pem" "$ROOT/key.pem"
  done; } > "$ROOT/tls.toml"

python3 benches/make_instances.py dicom-samples/ct_small_explicit_le.dcm "$ROOT/small" "$N" 1
"$PY" benches/dicomweb_bench.py make "$ROOT/large" 10 "$LARGE_N"
LARGE_BYTES=$(du -cb "$ROOT"/large/*.dcm | tail -1 | cut -f1)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_tramy() { # MODE -> sets TPID, HTTP, DIMSE, DATA, TOKEN
  local http dimse
  http=$(free_port); dimse=$(free_port); DATA="$ROOT/data-$1"; rm -rf "$DATA"
  TRAMY_DATA_DIR="$DATA" TRAMY_DIMSE_ADDR="127.0.0.1:$dimse" TRAMY_HTTP_ADDR="127.0.0.1:$http" \
    RUST_LOG=warn "$BIN" serve --config "$ROOT/$1.toml" >>"$ROOT/tramy.log" 2>&1 &
  TPID=$!; HTTP=$http; DIMSE=$dimse
  for _ in $(seq 200); do
    curl -fs --cacert "$ROOT/ca.pem" "$(scheme "$1")://localhost:$HTTP/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  TRAMY_DATA_DIR="$DATA" "$BIN" ae add BENCH --facility LOCAL --config "$ROOT/$1.toml" >/dev/null
  TOKEN=$(cat "$DATA/admin-token")
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
scheme() { [ "$1" = tls ] && echo https || echo http; }
dcmtk_tls() { [ "$1" = tls ] && echo "+tla +cf $ROOT/ca.pem" || true; }
seconds() { python3 -c "import time; print(time.time())"; }
rate() { python3 -c "print('%.1f' % ($1 / ($3 - $2)))"; }

run_mode() { # MODE -> prints "echo/s small-inst/s large-MB/s wado-MB/s"
  local mode=$1 t0 t1 echo_rate small_rate large_rate wado_rate
  start_tramy "$mode"
  # shellcheck disable=SC2046
  set -- $(dcmtk_tls "$mode")
  t0=$(seconds)
  for _ in $(seq "$ECHOES"); do echoscu "$@" -aet BENCH -aec TRAMY 127.0.0.1 "$DIMSE" >&2; done
  t1=$(seconds); echo_rate=$(rate "$ECHOES" "$t0" "$t1")
  t0=$(seconds); storescu "$@" -aet BENCH -aec TRAMY +sd +r 127.0.0.1 "$DIMSE" "$ROOT/small" >&2; t1=$(seconds)
  small_rate=$(rate "$N" "$t0" "$t1")
  t0=$(seconds); storescu "$@" -aet BENCH -aec TRAMY +sd +r 127.0.0.1 "$DIMSE" "$ROOT/large" >&2; t1=$(seconds)
  large_rate=$(rate "$LARGE_BYTES / 1e6" "$t0" "$t1")
  # One curl, one keep-alive connection, every large instance in turn.
  local study cfg="$ROOT/wado-$mode.cfg" base
  base="$(scheme "$mode")://localhost:$HTTP/dicomweb"
  study=$("$PY" -c "import pydicom,glob; print(pydicom.dcmread(sorted(glob.glob('$ROOT/large/*.dcm'))[0]).StudyInstanceUID)")
  curl -fs --cacert "$ROOT/ca.pem" -H "Authorization: Bearer $TOKEN" -H 'Accept: application/dicom+json' \
    "$base/studies/$study/instances?limit=100000" | python3 -c "
import json, sys
for i in json.load(sys.stdin):
    se, sop = i['0020000E']['Value'][0], i['00080018']['Value'][0]
    print('url = \"$base/studies/$study/series/%s/instances/%s\"' % (se, sop))
    print('output = \"/dev/null\"')
" > "$cfg"
  curl -fs --cacert "$ROOT/ca.pem" -H "Authorization: Bearer $TOKEN" \
    -H 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*' -K "$cfg" # warm
  t0=$(seconds)
  curl -fs --cacert "$ROOT/ca.pem" -H "Authorization: Bearer $TOKEN" \
    -H 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*' -K "$cfg"
  t1=$(seconds); wado_rate=$(rate "$LARGE_BYTES / 1e6" "$t0" "$t1")
  stop "$TPID"
  echo "$echo_rate $small_rate $large_rate $wado_rate"
}

declare -a PLAIN=() TLS=()
for _ in $(seq "$ROUNDS"); do
  PLAIN+=("$(run_mode plain)")
  TLS+=("$(run_mode tls)")
done
python3 - "$ROUNDS" "${PLAIN[@]}" "${TLS[@]}" <<'EOF'
import statistics, sys
rounds = int(sys.argv[1])
rows = [list(map(float, r.split())) for r in sys.argv[2:]]
plain, tls = rows[:rounds], rows[rounds:]
names = ["C-ECHO associations/s (new connection each)", "C-STORE 39 KB instances/s (one association)",
         "C-STORE 10 MB instances, MB/s", "WADO-RS 10 MB instances, MB/s (one connection)"]
for i, name in enumerate(names):
    p = statistics.median(r[i] for r in plain)
    t = statistics.median(r[i] for r in tls)
    print(f"{name:46} plain {p:8.1f}   TLS {t:8.1f}   cost {100 * (p - t) / p:5.1f}%   "
          f"(runs: {[r[i] for r in plain]} vs {[r[i] for r in tls]})")
EOF
