#!/usr/bin/env bash
# Triage figures on CPU, one run:
#   1. end-to-end throughput (decode + preprocess + infer) of `tramy eval` against a Python
#      pipeline doing the same work (pydicom, Pillow, onnxruntime), same model, same files;
#   2. time-to-flag: from the C-STORE response to the finding being queryable over the API.
# Model: DenseNet-121 from the `onnx` wheel's test data (real architecture, dummy weights: a speed
# test, never a finding). Data: N copies of the real 1955x1841 chest CR from pydicom-data.
# usage: benches/triage_bench.sh [N=40]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-40}
ROOT=$(mktemp -d /tmp/tramy-triage.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT
VENV=target/bench-venv
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q -r tests/requirements.txt pillow
PY="$VENV/bin/python"
cargo build --release --quiet
dicom-samples/fetch-chest-cr.sh >/dev/null
CR=dicom-samples/fetched/chest_cr_rg1_explicit_le.dcm

mkdir -p "$ROOT/models/densenet" "$ROOT/data/class0"
cp "$("$PY" -c 'import onnx, os; print(os.path.dirname(onnx.__file__))')/backend/test/data/light/light_densenet121.onnx" "$ROOT/models/densenet/model.onnx"
cat > "$ROOT/models/densenet/model.toml" <<TOML
name = "densenet121-speed-test"
version = "onnx-test-data"
task = "binary"
file = "model.onnx"
[routing]
modalities = ["CR", "DX"]
[input]
name = "data_0"
layout = "NCHW"
height = 224
width = 224
channels = 3
[preprocess]
window = { source = "full-range" }
scale = 0.00392156862745098
offset = 0.0
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
[[labels]]
name = "class0"
output = "fc6_1"
index = 0
threshold = 0.5
urgency = "routine"
activation = "softmax"
[provenance]
source = "onnx wheel, backend/test/data/light/light_densenet121.onnx"
licence = "Apache-2.0"
training_data = "none: dummy weights"
intended_use = "speed testing only"
validation = "none"
statement = "SPEED TEST MODEL with dummy weights; no clinical meaning."
TOML
for i in $(seq "$N"); do cp "$CR" "$ROOT/data/class0/cr$i.dcm"; done

echo "== end-to-end throughput, $N x chest CR 1955x1841 -> DenseNet-121 224x224, CPU"
target/release/tramy eval --model "$ROOT/models/densenet" --data "$ROOT/data" --out "$ROOT/eval.json" >/dev/null
T=$(python3 -c "import json; r=json.load(open('$ROOT/eval.json'))[0]; print(r['throughput_per_s'], r['latency_p50_ms'], r['latency_p95_ms'])")
P=$("$PY" benches/triage_bench.py python-pipeline "$ROOT/models/densenet/model.onnx" "$ROOT/data")
python3 - "$T" "$P" <<'PYX'
import json, sys
t = [float(x) for x in sys.argv[1].split()]; p = json.loads(sys.argv[2])
print(f"tramy   {t[0]:6.1f} images/s  p50 {t[1]:6.1f} ms  p95 {t[2]:6.1f} ms")
print(f"python  {p['throughput_per_s']:6.1f} images/s  p50 {p['latency_p50_ms']:6.1f} ms  p95 {p['latency_p95_ms']:6.1f} ms")
print(f"ratio tramy/python: {t[0] / p['throughput_per_s']:.2f}x")
PYX

echo "== time to flag (C-STORE response -> finding queryable), CPU"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIMSE=$(free_port); HTTP=$(free_port)
printf '[triage]\nmodels_dir = "%s"\nmax_wait_ms = 0\n' "$ROOT/models" > "$ROOT/tramy.toml"
TRAMY_DATA_DIR="$ROOT/data-dir" TRAMY_DIMSE_ADDR="127.0.0.1:$DIMSE" TRAMY_HTTP_ADDR="127.0.0.1:$HTTP" RUST_LOG=warn \
  target/release/tramy serve --config "$ROOT/tramy.toml" >"$ROOT/serve.log" 2>&1 &
for _ in $(seq 100); do curl -fs "127.0.0.1:$HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
"$PY" benches/triage_bench.py time-to-flag "$DIMSE" "$HTTP" "$CR" 10
