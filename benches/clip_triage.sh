#!/usr/bin/env bash
# Per-study video triage (issue 14 item 4): the time from the C-STORE response of a 2-minute
# H.264 Video Endoscopic clip to its clip finding being queryable over the API, with the shipped
# synthetic endoscopy demo (frames sampled at its [clip] rate, 5 per second, at most 64 spread
# over the clip, each cropped to the field of view, scored, smoothed), and the same clip's
# decoding alone (`ffmpeg` to rgb24, all frames) in the same run for scale.
# usage: benches/clip_triage.sh [SECONDS=120] [SCALE=8] [ROUNDS=3]
#        TRAMY_BIN=... (default: builds and runs target/release/tramy)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_LONG=${1:-120}
SCALE=${2:-8}
ROUNDS=${3:-3}
FRAMES=$((SECONDS_LONG * 25))
# The release build of this checkout, unless TRAMY_BIN names another binary.
[ -n "${TRAMY_BIN:-}" ] || cargo build --release --quiet
BIN=${TRAMY_BIN:-target/release/tramy}
PY=target/tmp/test-venv/bin/python
[ -x "$PY" ] || { echo "run cargo test --test video once first (it makes the Python venv)"; exit 1; }
command -v ffmpeg >/dev/null || { echo "needs Debian's ffmpeg"; exit 1; }
work=$(mktemp -d /tmp/tramy-clip.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(free_port); dimse=$(free_port)
printf '[triage]\nmax_wait_ms = 0\n' > "$work/cfg.toml"
TRAMY_DATA_DIR="$work/data" TRAMY_DIMSE_ADDR="127.0.0.1:$dimse" TRAMY_HTTP_ADDR="127.0.0.1:$http" RUST_LOG=warn \
  "$BIN" serve --config "$work/cfg.toml" 2>"$work/serve.log" &
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$http/healthz" >/dev/null && break; sleep 0.1; done
TRAMY_DATA_DIR="$work/data" "$BIN" ae add BENCH --facility LOCAL >/dev/null 2>&1
token=$(cat "$work/data/admin-token")
echo "binary: $BIN; clip: $FRAMES frames (${SECONDS_LONG} s at 25 fps) of $((64 * SCALE))x$((64 * SCALE)) H.264; $(nproc) cores"
for round in $(seq "$ROUNDS"); do
  json=$("$PY" tests/clients/make_video_clip.py h264 "$FRAMES" "$round" "$work/clip$round.dcm" --scale "$SCALE" --stream "$work/clip$round.bin")
  study=$("$PY" -c "import json,sys; print(json.loads(sys.argv[1])['study'])" "$json")
  start=$(date +%s.%N)
  ffmpeg -v error -f h264 -i "$work/clip$round.bin" -f rawvideo -pix_fmt rgb24 - | wc -c >/dev/null
  decode=$(echo "$(date +%s.%N) - $start" | bc)
  TRAMY_TOKEN=$token "$PY" - "$dimse" "$http" "$work/clip$round.dcm" "$study" "$decode" <<'PY'
import json, os, sys, time, urllib.request
import pydicom
from pynetdicom import AE
port, http, path, study, decode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
ds = pydicom.dcmread(path)
ae = AE(ae_title="BENCH")
ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
assoc = ae.associate("127.0.0.1", port, ae_title="TRAMY")
status = assoc.send_c_store(ds)
acked = time.perf_counter()
assoc.release()
assert status.Status == 0, status
request = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1/studies/{study}/findings",
                                 headers={"Authorization": f"Bearer {os.environ['TRAMY_TOKEN']}"})
while True:
    found = json.load(urllib.request.urlopen(request))
    clip = [f for f in found if f["frame"] == 0]
    if clip:
        took = time.perf_counter() - acked
        break
    if time.perf_counter() - acked > 600:
        raise SystemExit("no clip finding within 600 s")
    time.sleep(0.05)
frames = sorted(f["frame"] for f in found if f["frame"] > 0)
print(f"C-STORE response -> clip finding {took:6.2f} s ({len(frames)} frames scored, "
      f"fired on {len(clip[0]['fired_frames'])}); ffmpeg decoding all frames alone {decode:5.2f} s")
PY
done
