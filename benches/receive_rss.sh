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
python3 benches/make_large_instance.py "$ROOT/big.dcm" "$MB"
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
