#!/usr/bin/env bash
# What identity, facility scoping and the audit trail cost (issue #9): the same tramy workload
# on the binary from before authentication existed (BEFORE_BIN, built from commit 2a09f34) and
# on this one (AFTER_BIN), alternating ROUNDS times in one run on one machine:
#   - C-STORE throughput: N CT instances (39 kB) by K parallel dcmtk storescu associations;
#   - QIDO-RS latency: GET /dicomweb/studies?limit=100, REPEAT times, p50 and p99;
#   - WADO-RS metadata latency: GET /dicomweb/studies/{one study of 100 instances}/metadata.
# "after" runs as a facility's clinician (an API token of facility LOCAL, a registered AE title),
# so every query carries the facility condition and every request an audit event.
#
# usage: benches/auth_cost.sh            (N=1000 K=4 ROUNDS=3 REPEAT=300)
#   BEFORE_BIN=path AFTER_BIN=path to compare other binaries. The default BEFORE_BIN is built
#   by: git worktree add /tmp/tramy-before 2a09f34 && (cd /tmp/tramy-before &&
#   CARGO_TARGET_DIR=$PWD/target/before cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}; K=${K:-4}; ROUNDS=${ROUNDS:-3}; REPEAT=${REPEAT:-300}
BEFORE_BIN=${BEFORE_BIN:-target/before/release/tramy}
AFTER_BIN=${AFTER_BIN:-target/release/tramy}
PY=${PY:-target/tmp/test-venv/bin/python}   # the test suite's venv (requests); run `cargo test` once
[ -x "$PY" ] || PY=python3
for b in "$BEFORE_BIN" "$AFTER_BIN"; do
    [ -x "$b" ] || { echo "no binary $b (see the usage above)" >&2; exit 2; }
done
command -v storescu >/dev/null || { echo "needs dcmtk's storescu (apt-get install dcmtk)" >&2; exit 2; }
ROOT=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$ROOT"' EXIT
python3 benches/make_instances.py dicom-samples/ct_small_explicit_le.dcm "$ROOT/data" "$N" "$K"
# The first study make_instances.py writes (its UIDs end in the study's number, 11 digits).
STUDY=$(python3 -c "u='1.3.6.1.4.1.5962.1.2.1.20040119072730.12322'; print(u[:-11] + '0' * 11)")

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # run NAME BIN -> prints "name store_s qido_p50 qido_p99 meta_p50 meta_p99"
    local name=$1 bin=$2 data="$ROOT/run-$1-$RANDOM" dimse http token=""
    dimse=$(port); http=$(port)
    mkdir -p "$data"
    printf '[triage]\nenabled = false\n' > "$data.toml"
    TRAMY_DATA_DIR="$data" TRAMY_DIMSE_ADDR=127.0.0.1:$dimse TRAMY_HTTP_ADDR=127.0.0.1:$http \
        RUST_LOG=warn TCP_NODELAY=1 "$bin" serve --config "$data.toml" >"$data.log" 2>&1 &
    local pid=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$http/healthz" >/dev/null && break; sleep 0.1; done
    if [ "$name" = after ]; then
        token=$(TRAMY_DATA_DIR="$data" "$bin" token create --facility LOCAL --role clinician --config "$data.toml" 2>/dev/null)
        TRAMY_DATA_DIR="$data" "$bin" ae add STORESCU --facility LOCAL --config "$data.toml" >/dev/null 2>&1
    fi
    local start end
    start=$(date +%s.%N)
    for d in "$ROOT"/data/part*; do
        TCP_NODELAY=1 storescu -aet STORESCU -aec TRAMY +sd 127.0.0.1 "$dimse" "$d" >/dev/null 2>&1 &
    done
    wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
    end=$(date +%s.%N)
    local stored
    stored=$(BENCH_TOKEN=$token "$PY" -c "
import os, requests
h = {'Accept': 'application/dicom+json'}
if os.environ.get('BENCH_TOKEN'): h['Authorization'] = 'Bearer ' + os.environ['BENCH_TOKEN']
print(len(requests.get('http://127.0.0.1:$http/dicomweb/instances?limit=100000', headers=h).json()))")
    [ "$stored" = "$N" ] || { echo "$name stored $stored of $N" >&2; tail "$data.log" >&2; exit 1; }
    local qido meta
    qido=$(BENCH_TOKEN=$token "$PY" benches/dicomweb_bench.py latency "http://127.0.0.1:$http" "/dicomweb/studies?limit=100" application/dicom+json "$REPEAT")
    meta=$(BENCH_TOKEN=$token "$PY" benches/dicomweb_bench.py latency "http://127.0.0.1:$http" "/dicomweb/studies/$STUDY/metadata" application/dicom+json "$REPEAT")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 -c "
import json, sys
q, m = json.loads('''$qido'''), json.loads('''$meta''')
print('$name', round($end - $start, 3), round(q['p50_ms'], 3), round(q['p99_ms'], 3), round(m['p50_ms'], 3), round(m['p99_ms'], 3))"
}

results=()
for r in $(seq "$ROUNDS"); do
    results+=("$(run before "$BEFORE_BIN")")
    results+=("$(run after "$AFTER_BIN")")
    echo "round $r: ${results[-2]} | ${results[-1]}" >&2
done
printf '%s\n' "${results[@]}" | python3 -c "
import statistics, sys
rows = {}
for line in sys.stdin:
    name, *v = line.split()
    rows.setdefault(name, []).append([float(x) for x in v])
cols = ['C-STORE s ($N)', 'QIDO p50 ms', 'QIDO p99 ms', 'metadata p50 ms', 'metadata p99 ms']
med = {k: [statistics.median(c) for c in zip(*v)] for k, v in rows.items()}
print('| | ' + ' | '.join(cols) + ' |')
print('|---|' + '---|' * len(cols))
for k in ('before', 'after'):
    print(f'| {k} | ' + ' | '.join(f'{x:.3f}' for x in med[k]) + ' |')
print('| after / before | ' + ' | '.join(f'{a / b:.3f}' for a, b in zip(med['after'], med['before'])) + ' |')
print(f'(medians of $ROUNDS alternating rounds; $K storescu associations; {len(rows[\"before\"])} runs each)')
"
