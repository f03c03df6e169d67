#!/usr/bin/env bash
# Video decoding throughput (issue 14 item 1), one run: frames decoded per second for each video
# syntax (MPEG-2, H.264, H.265) through tramy's path (WADO-RS frames, native: the stored object
# read, the stream joined from its fragments, ffmpeg run as tramy runs it, the RGB frames
# checked and sent) against `ffmpeg` alone decoding the same elementary stream to rgb24.
# Clips: N frames of the synthetic endoscopy generator at SCALE x 64 pixels square.
# usage: benches/video_decode.sh [N=250] [SCALE=8]     TRAMY_BIN=... (default target/release/tramy,
#        else target/debug/tramy)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-250}
SCALE=${2:-8}
BIN=${TRAMY_BIN:-target/release/tramy}
[ -x "$BIN" ] || BIN=target/debug/tramy
PY=target/tmp/test-venv/bin/python
[ -x "$PY" ] || { echo "run cargo test --test video once first (it makes the Python venv)"; exit 1; }
work=$(mktemp -d /tmp/tramy-video.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[http]\naddr = "127.0.0.1:%s"\n[triage]\nenabled = false\n' "$port" > "$work/cfg.toml"
TRAMY_DATA_DIR="$work/data" TRAMY_DIMSE_ADDR=127.0.0.1:0 RUST_LOG=warn "$BIN" serve --config "$work/cfg.toml" 2>"$work/serve.log" &
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
token=$(cat "$work/data/admin-token")
now() { date +%s.%N; }
echo "binary: $BIN; clip: $N frames of $((64 * SCALE))x$((64 * SCALE)); $(nproc) cores"
printf '%-6s %14s %14s %8s\n' syntax "tramy fps" "ffmpeg fps" ratio
for codec in mpeg2 h264 h265; do
  json=$("$PY" tests/clients/make_video_clip.py "$codec" "$N" 1 "$work/$codec.dcm" --scale "$SCALE" --stream "$work/$codec.bin")
  uid() { "$PY" -c "import json,sys; print(json.loads(sys.argv[1])['$1'])" "$json"; }
  curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: multipart/related; type="application/dicom"; boundary=B' \
    --data-binary @<(printf -- '--B\r\nContent-Type: application/dicom\r\n\r\n'; cat "$work/$codec.dcm"; printf -- '\r\n--B--\r\n') \
    "http://127.0.0.1:$port/dicomweb/studies" > /dev/null
  url="http://127.0.0.1:$port/dicomweb/studies/$(uid study)/series/$(uid series)/instances/$(uid sop)/frames/$(seq -s, 1 "$N")"
  t0=$(now)
  bytes=$(curl -s -H "Authorization: Bearer $token" -H 'Accept: multipart/related; type="application/octet-stream"' "$url" | wc -c)
  t1=$(now)
  ffbytes=$(ffmpeg -hide_banner -loglevel error -i "$work/$codec.bin" -fps_mode passthrough -f rawvideo -pix_fmt rgb24 - | wc -c)
  t2=$(now)
  expected=$((N * 64 * SCALE * 64 * SCALE * 3))
  [ "$bytes" -ge "$expected" ] || { echo "$codec: tramy sent $bytes bytes, expected $expected"; curl -s -H "Authorization: Bearer $token" -H "Accept: multipart/related; type=\"application/octet-stream\"" "$url" | head -c 400; exit 1; }
  [ "$ffbytes" -eq "$expected" ] || { echo "$codec: ffmpeg wrote $ffbytes bytes, expected $expected"; exit 1; }
  awk -v c="$codec" -v n="$N" -v a="$t0" -v b="$t1" -v d="$t2" \
    'BEGIN { t = n / (b - a); f = n / (d - b); printf "%-6s %14.0f %14.0f %8.2f\n", c, t, f, t / f }'
done
