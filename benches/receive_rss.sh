#!/usr/bin/env bash
# Peak RSS (VmHWM, /proc/PID/status) of a server while it receives one large instance:
#   1. over DIMSE, dcmtk storescu (one C-STORE);
#   2. over STOW-RS, curl (one part, streamed from disk with chunked transfer encoding);
# for tramy (fresh server per case, triage off so the figure is the reception's, not a model's)
# and, when it is installed or installable, Orthanc from Debian with its DICOMweb plugin.
# The instance is a generated multi-frame 8-bit secondary capture (MB 1 MiB frames).
# usage: benches/receive_rss.sh [MB=1024]     environment: PROFILE=release|debug, NO_ORTHANC=1
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-1024}
PROFILE=${PROFILE:-release}
ROOT=$(mktemp -d /tmp/tramy-rss.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT

command -v storescu >/dev/null || { echo "needs dcmtk (apt-get install dcmtk)" >&2; exit 1; }
if [ "$PROFILE" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
TRAMY=target/$PROFILE/tramy
ORTHANC=0
if [ -z "${NO_ORTHANC:-}" ]; then
  if ! command -v Orthanc >/dev/null || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
    sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    { sudo_if_needed apt-get update -qq &&
      sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        orthanc orthanc-dicomweb; } >/dev/null 2>&1 || echo "(Orthanc could not be installed: skipped)"
  fi
  command -v Orthanc >/dev/null && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] && ORTHANC=1
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hwm_mb() { awk '/^VmHWM/ {printf "%d", $2/1024}' "/proc/$1/status"; }
rss_mb() { awk '/^VmRSS/ {printf "%d", $2/1024}' "/proc/$1/status"; }

# The instance: Part 10 header and elements, then MB frames, written without holding them.
python3 - "$ROOT/big.dcm" "$MB" <<'PY'
import struct, sys
path, frames = sys.argv[1], int(sys.argv[2])
SC, TS = "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.1.2.1"
SOP = "1.2.826.0.1.3680043.10.1452.88.1.1.1"
def el(g, e, vr, v):
    if isinstance(v, str): v = v.encode()
    if len(v) % 2: v += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH", g, e) + vr + struct.pack("<H", len(v)) + v
meta_body = (struct.pack("<HH", 2, 1) + b"OB\0\0" + struct.pack("<I", 2) + b"\0\1"
             + el(2, 2, b"UI", SC) + el(2, 3, b"UI", SOP) + el(2, 0x10, b"UI", TS)
             + el(2, 0x12, b"UI", "1.2.826.0.1.3680043.10.1452.1"))
us = lambda v: struct.pack("<H", v)
ds = (el(8, 0x16, b"UI", SC) + el(8, 0x18, b"UI", SOP) + el(8, 0x60, b"CS", "OT")
      + el(0x10, 0x20, b"LO", "RSSBENCH") + el(0x20, 0xD, b"UI", "1.2.826.0.1.3680043.10.1452.88.1")
      + el(0x20, 0xE, b"UI", "1.2.826.0.1.3680043.10.1452.88.1.1") + el(0x28, 2, b"US", us(1))
      + el(0x28, 4, b"CS", "MONOCHROME2") + el(0x28, 8, b"IS", str(frames))
      + el(0x28, 0x10, b"US", us(1024)) + el(0x28, 0x11, b"US", us(1024))
      + el(0x28, 0x100, b"US", us(8)) + el(0x28, 0x101, b"US", us(8)) + el(0x28, 0x102, b"US", us(7))
      + el(0x28, 0x103, b"US", us(0)) + struct.pack("<HH", 0x7FE0, 0x10) + b"OB\0\0"
      + struct.pack("<I", frames * 1024 * 1024))
frame = bytes((i * 2654435761 >> 24) & 0xFF for i in range(1024 * 1024))
with open(path, "wb") as f:
    f.write(b"\0" * 128 + b"DICM" + el(2, 0, b"UL", struct.pack("<I", len(meta_body))) + meta_body + ds)
    for _ in range(frames):
        f.write(frame)
PY
SIZE=$(stat -c %s "$ROOT/big.dcm")
echo "== peak RSS while receiving one $((SIZE / 1048576)) MiB instance ($PROFILE build)"

stow() { # URL [TOKEN]: POST big.dcm as one multipart/related part, streamed
  { printf -- '--rssbench\r\nContent-Type: application/dicom\r\n\r\n'; cat "$ROOT/big.dcm"
    printf -- '\r\n--rssbench--\r\n'; } |
    curl -sS -o "$ROOT/stow.out" -w '%{http_code}' -X POST -T - ${2:+-H "Authorization: Bearer $2"} \
      -H 'Content-Type: multipart/related; type="application/dicom"; boundary=rssbench' "$1"
}
report() { # SERVER CASE PID RESULT
  printf '%-8s %-8s peak RSS %5s MB   after %5s MB   (%s)\n' "$1" "$2" "$(hwm_mb "$3")" "$(rss_mb "$3")" "$4"
}

start_tramy() { # -> TPID, TDIMSE, TURL, TTOKEN
  local dir=$ROOT/tramy-$1 http
  mkdir -p "$dir"; http=$(free_port); TDIMSE=$(free_port)
  printf '[triage]\nenabled = false\n' > "$dir/tramy.toml"
  TRAMY_DATA_DIR="$dir/data" TRAMY_DIMSE_ADDR="127.0.0.1:$TDIMSE" TRAMY_HTTP_ADDR="127.0.0.1:$http" \
    RUST_LOG=warn "$TRAMY" serve --config "$dir/tramy.toml" >"$dir/log" 2>&1 &
  TPID=$!; TURL="http://127.0.0.1:$http"
  for _ in $(seq 200); do curl -fs "$TURL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "$TURL/healthz" >/dev/null 2>&1 || { echo "tramy did not start" >&2; cat "$dir/log" >&2; exit 1; }
  # dcmtk's default calling AE title, registered as an administrator would; the superadmin token.
  TRAMY_DATA_DIR="$dir/data" "$TRAMY" ae add STORESCU --facility LOCAL >/dev/null 2>&1
  TTOKEN=$(cat "$dir/data/admin-token")
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

start_tramy dimse
echo "tramy idle: $(rss_mb "$TPID") MB"
if TCP_NODELAY=1 storescu -aec TRAMY 127.0.0.1 "$TDIMSE" "$ROOT/big.dcm" 2>"$ROOT/storescu.err"; then r=stored; else r="storescu failed: $(tail -1 "$ROOT/storescu.err")"; fi
report tramy DIMSE "$TPID" "$r"; stop "$TPID"
start_tramy stow
report tramy STOW-RS "$TPID" "HTTP $(stow "$TURL/dicomweb/studies" "$TTOKEN")"; stop "$TPID"

if [ "$ORTHANC" = 1 ]; then
  for case in DIMSE STOW-RS; do
    dir=$ROOT/orthanc-$case; mkdir -p "$dir"; http=$(free_port); dimse=$(free_port)
    cat > "$dir/orthanc.json" <<JSON
{ "Name": "peer", "StorageDirectory": "$dir/db", "IndexDirectory": "$dir/db",
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"], "HttpPort": $http, "DicomPort": $dimse,
  "DicomAet": "ORTHANC", "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomAlwaysAllowStore": true, "DicomCheckCalledAet": false, "UnknownSopClassAccepted": true,
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
    TCP_NODELAY=1 Orthanc "$dir/orthanc.json" >"$dir/log" 2>&1 &
    OPID=$!
    for _ in $(seq 150); do curl -fs "http://127.0.0.1:$http/system" >/dev/null 2>&1 && break; sleep 0.2; done
    if [ "$case" = DIMSE ]; then
      if TCP_NODELAY=1 storescu -aec ORTHANC 127.0.0.1 "$dimse" "$ROOT/big.dcm" 2>"$ROOT/storescu.err"; then r=stored; else r="storescu failed"; fi
    else
      r="HTTP $(stow "http://127.0.0.1:$http/dicom-web/studies")"
    fi
    report Orthanc "$case" "$OPID" "$r"; stop "$OPID"
  done
fi
