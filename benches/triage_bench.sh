#!/usr/bin/env bash
# Triage figures, one run:
#   1. end-to-end throughput (decode + preprocess + infer) of `tramy eval` against a Python
#      pipeline doing the same work (pydicom, Pillow, onnxruntime), same model, same files;
#   2. model-only ONNX Runtime throughput on ready tensors (batch 1 and 16): the ceiling;
#   3. time-to-flag: from the C-STORE response to the finding being queryable over the API (CPU).
# Model: the chest X-ray pneumonia model (Xception, 150x150, converted by build.rs). Data: N copies
# of the real 1955x1841 chest CR from pydicom-data.
# usage: benches/triage_bench.sh [N=40]        DEVICE=cuda for the GPU figures (see README: the
#        onnxruntime-gpu library through ORT_DYLIB_PATH, and the same wheel for the Python side)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-40}
DEVICE=${DEVICE:-cpu}
ROOT=$(mktemp -d /tmp/tramy-triage.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT
VENV=target/bench-venv-$DEVICE
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q -r tests/requirements.txt
PY="$VENV/bin/python"
if [ "$DEVICE" = cuda ]; then
  # One onnxruntime for both sides: the GPU wheel, its CUDA and cuDNN from pip (README: GPU).
  "$VENV/bin/pip" uninstall -q -y onnxruntime
  "$VENV/bin/pip" install -q "onnxruntime-gpu[cuda,cudnn]==1.31.1"
  SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  export ORT_DYLIB_PATH="$SITE/onnxruntime/capi/libonnxruntime.so.1.31.1"
  export LD_LIBRARY_PATH="$(find "$SITE/nvidia" -maxdepth 3 -type d -name lib | paste -sd:):${LD_LIBRARY_PATH:-}"
fi
cargo build --release --quiet
dicom-samples/fetch-chest-cr.sh >/dev/null
CR=dicom-samples/fetched/chest_cr_rg1_explicit_le.dcm
MODEL=models/chest-xray-pneumonia
[ -f "$MODEL/model.onnx" ] || { echo "$MODEL/model.onnx is missing: run cargo build with access to PyPI" >&2; exit 1; }
mkdir -p "$ROOT/models" "$ROOT/data/pneumonia"
cp -r "$MODEL" "$ROOT/models/"
for i in $(seq "$N"); do cp "$CR" "$ROOT/data/pneumonia/cr$i.dcm"; done

echo "== end-to-end throughput, $N x chest CR 1955x1841 -> Xception 150x150, $DEVICE"
target/release/tramy eval --device "$DEVICE" --model "$MODEL" --data "$ROOT/data" --out "$ROOT/eval.json" >/dev/null
T=$(python3 -c "import json; r=json.load(open('$ROOT/eval.json'))[0]; print(r['throughput_per_s'], r['latency_p50_ms'], r['latency_p95_ms'])")
P=$("$PY" benches/triage_bench.py python-pipeline "$MODEL" "$ROOT/data" "$DEVICE")
python3 - "$T" "$P" <<'PYX'
import json, sys
t = [float(x) for x in sys.argv[1].split()]; p = json.loads(sys.argv[2])
print(f"tramy   {t[0]:6.1f} images/s  p50 {t[1]:6.1f} ms  p95 {t[2]:6.1f} ms")
print(f"python  {p['throughput_per_s']:6.1f} images/s  p50 {p['latency_p50_ms']:6.1f} ms  p95 {p['latency_p95_ms']:6.1f} ms")
print(f"ratio tramy/python: {t[0] / p['throughput_per_s']:.2f}x")
PYX

echo "== model only (ONNX Runtime on ready tensors, no decoding), $DEVICE"
for B in 1 16; do
  "$PY" benches/triage_bench.py model-only "$MODEL" "$((N > 64 ? N : 64))" "$B" "$DEVICE"
done
echo "(end-to-end / model-only at batch 1 is the share of time spent on the model)"

# With the chest anatomy gate (the shipped set-up: the lung segmentation U-Net at 512x512 runs
# before the pneumonia model), then without it (the pneumonia manifest routed on
# BodyPartExamined CHEST instead), same binary: the gate's share of the time to flag.
GATE=models/chest-lung-segmentation
[ -f "$GATE/model.onnx" ] || { echo "$GATE/model.onnx is missing: run cargo build with access to PyPI" >&2; exit 1; }
cp -r "$GATE" "$ROOT/models/"
mkdir -p "$ROOT/ungated/chest-xray-pneumonia"
sed -e 's/^anatomy = "chest"$/body_parts = ["CHEST"]/' -e "s|^file = \"model.onnx\"|file = \"$PWD/$MODEL/model.onnx\"|" \
  "$MODEL/model.toml" > "$ROOT/ungated/chest-xray-pneumonia/model.toml"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
time_to_flag() { # $1 label, $2 models dir
  local data="$ROOT/serve-$1" dimse http pid
  dimse=$(free_port); http=$(free_port)
  printf '[triage]\nmodels_dir = "%s"\nmax_wait_ms = 0\ndevice = "%s"\n' "$2" "$DEVICE" > "$ROOT/$1.toml"
  TRAMY_DATA_DIR="$data" TRAMY_DIMSE_ADDR="127.0.0.1:$dimse" TRAMY_HTTP_ADDR="127.0.0.1:$http" RUST_LOG=warn \
    target/release/tramy serve --config "$ROOT/$1.toml" >"$ROOT/$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do curl -fs "127.0.0.1:$http/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  # The bench's calling AE title, registered as an administrator would (authentication is on).
  TRAMY_DATA_DIR="$data" target/release/tramy ae add BENCH --facility LOCAL >/dev/null 2>&1
  printf '%-28s ' "$1"
  TRAMY_TOKEN=$(cat "$data/admin-token") "$PY" benches/triage_bench.py time-to-flag "$dimse" "$http" "$CR" 10
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
echo "== time to flag (C-STORE response -> finding queryable), $DEVICE"
time_to_flag with-chest-gate "$ROOT/models"
time_to_flag without-gate "$ROOT/ungated"
