#!/usr/bin/env bash
# Forwarding between servers (issue #10), figures for the closing note, one run, release build,
# every server on loopback:
#   (a) forwarding throughput station -> hospital (MB/s, N instances of SIZE_KB kB each, from the
#       first instance queued to the last verified, per the station's delivery timeline) against
#       a plain STOW-RS of the same files to a fresh hospital by a sequential client in batches
#       of the sender's size (32 instances), in the same run; goal: forwarding >= 90 % of STOW-RS;
#   (b) time from C-STORE of an urgent chest X-ray at the station to its study answering QIDO-RS
#       at the hospital while a bulk backlog of BACKLOG instances is being forwarded (goal < 2 s),
#       and how much of the backlog had arrived by then;
#   (c) signing and verifying a manifest per study: criterion, benches/forward_jws.rs.
# usage: benches/forward_bench.sh   environment: N (200), SIZE_KB (300), BACKLOG (400), ROUNDS (3),
#                                   TRAMY_BIN, URGENT (0: skip (b)), JWS (0: skip (c))
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
SIZE_KB=${SIZE_KB:-300}
BACKLOG=${BACKLOG:-400}
ROUNDS=${ROUNDS:-3}
ROOT=$(mktemp -d /tmp/tramy-forward.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT

VENV=target/tmp/test-venv
[ -x "$VENV/bin/python" ] || VENV=target/bench-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q -r tests/requirements.txt
fi
PY="$VENV/bin/python"
command -v storescu >/dev/null || { echo "needs dcmtk's storescu (apt-get install dcmtk)" >&2; exit 2; }
# TRAMY_BIN: another build of tramy (e.g. a debug one for a dry run of this script).
[ -n "${TRAMY_BIN:-}" ] || cargo build --release --quiet
BIN=${TRAMY_BIN:-target/release/tramy}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

start_tramy() { # NAME [CONFIG] -> sets PID_<NAME>, URL_<NAME>, DIMSE_<NAME>, TOKEN_<NAME>
  local name=$1 config=${2:-} http dimse data=$ROOT/$1
  http=$(free_port); dimse=$(free_port); mkdir -p "$data"
  local args=(serve); [ -n "$config" ] && args+=(--config "$config")
  TRAMY_DATA_DIR="$data" TRAMY_DIMSE_ADDR="127.0.0.1:$dimse" TRAMY_HTTP_ADDR="127.0.0.1:$http" \
    TRAMY_AE_TITLE=TRAMY RUST_LOG=warn,tramy::forward=info "$BIN" "${args[@]}" >"$ROOT/$name.log" 2>&1 &
  printf -v "PID_$name" %s $!; printf -v "URL_$name" %s "http://127.0.0.1:$http"
  printf -v "DIMSE_$name" %s "$dimse"
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$http/healthz" >/dev/null || { echo "tramy $name did not start" >&2; cat "$ROOT/$name.log" >&2; exit 1; }
  printf -v "TOKEN_$name" %s "$(cat "$data/admin-token")"
}
cli() { local name=$1; shift; TRAMY_DATA_DIR="$ROOT/$name" "$BIN" "$@"; }
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# A hospital with facility FB and a node token for the station; a station forwarding to it.
hospital() { # NAME -> node token in $ROOT/NAME.token
  start_tramy "$1"
  cli "$1" facility add FB --name "Provincial hospital B" >/dev/null 2>&1
  cli "$1" token create --facility FB --role node 2>/dev/null > "$ROOT/$1.token"
}
station() { # NAME HOSPITAL RULES
  cat > "$ROOT/$1.toml" <<TOML
[[peers]]
name = "hospital"
dicomweb_url = "$(eval echo "\$URL_$2")/dicomweb"
token_file = "$ROOT/$2.token"
facility = "FB"
$3
TOML
  start_tramy "$1" "$ROOT/$1.toml"
  # Calling AE titles must be registered (issue #9); a restarted station has them already.
  cli "$1" ae add STORESCU --facility LOCAL >/dev/null 2>&1 || true
  cli "$1" ae add BENCH --facility LOCAL >/dev/null 2>&1 || true
}

"$PY" tests/clients/make_study.py "$ROOT/a" "$N" --pad-kb "$SIZE_KB" > "$ROOT/a.study"
BYTES=$(cat "$ROOT"/a/*.dcm | wc -c)
# A window that is closed now: what arrives is queued, and sent when the window opens (restart
# without it); "everything to the hub at night".
closed=$(python3 -c 'import datetime as d; n=d.datetime.now(); f=lambda h: (n+d.timedelta(hours=h)).strftime("%H:%M"); print(f"{f(2)}-{f(3)}")')
echo "== (a) forwarding vs plain STOW-RS: $N instances, $((BYTES / N / 1000)) kB each, $((BYTES / 1000000)) MB; $ROUNDS rounds"
echo "   live: from the first instance queued (storescu still sending) to the last verified;"
echo "   queued: everything queued first, from the sender's start (station log) to the last verified"
mbs() { python3 -c "print(f'{$BYTES/1e6/$1:6.1f} MB/s ({$1:.2f} s)')"; }
for round in $(seq "$ROUNDS"); do
  hospital h1; station s1 h1 $'[[forward]]\nto = "hospital"'
  TCP_NODELAY=1 storescu -aet STORESCU -aec TRAMY +sd 127.0.0.1 "$DIMSE_s1" "$ROOT/a" >/dev/null 2>&1
  live=$(BENCH_TOKEN=$TOKEN_s1 "$PY" benches/forward_bench.py span "$URL_s1" "$(cat "$ROOT/a.study")" "$N" | field seconds)
  stop "$PID_s1"; stop "$PID_h1"; rm -rf "$ROOT/s1" "$ROOT/h1"
  hospital h1; station s1 h1 "windows = [\"$closed\"]"$'\n[[forward]]\nto = "hospital"'
  TCP_NODELAY=1 storescu -aet STORESCU -aec TRAMY +sd 127.0.0.1 "$DIMSE_s1" "$ROOT/a" >/dev/null 2>&1
  stop "$PID_s1"; station s1 h1 $'[[forward]]\nto = "hospital"'
  # From the sender's start as the station logs it (start-up, models loading, does not count).
  since=$(python3 -c 'import re,sys,datetime as d
for l in open(sys.argv[1]):
    if "forwarding to peer" in l:
        print(d.datetime.fromisoformat(re.search(r"\d{4}-\d\d-\d\dT[\d:.]+", l).group(0)[:26]).replace(tzinfo=d.timezone.utc).timestamp()); break' "$ROOT/s1.log")
  BENCH_TOKEN=$TOKEN_s1 "$PY" benches/forward_bench.py span "$URL_s1" "$(cat "$ROOT/a.study")" "$N" "$since" > "$ROOT/span.json"
  queued=$(field seconds < "$ROOT/span.json"); receipt=$(field receipt_seconds < "$ROOT/span.json")
  stop "$PID_s1"; stop "$PID_h1"; rm -rf "$ROOT/s1" "$ROOT/h1"
  hospital h2
  stow=$(HOSPITAL_TOKEN=$TOKEN_h2 "$PY" benches/forward_bench.py stow "$URL_h2/dicomweb" "$ROOT/a" 32 | field seconds)
  stop "$PID_h2"; rm -rf "$ROOT/h2"
  python3 -c "print(f'round $round: forwarding live $(mbs "$live")  queued $(mbs "$queued") [receipt phase $(printf %.2f "$receipt") s]  plain STOW-RS $(mbs "$stow")  queued/STOW {$stow/$queued*100:5.1f} %')"
done
rm -rf "$ROOT/a"

[ "${URGENT:-1}" = 0 ] || {
echo "== (b) urgent chest X-ray behind a bulk backlog of $BACKLOG instances ($SIZE_KB kB each): C-STORE at the station -> QIDO-RS at the hospital"
"$PY" tests/clients/make_study.py "$ROOT/backlog" "$BACKLOG" --pad-kb "$SIZE_KB" >/dev/null
# The backlog is queued while the peer's time window is closed, then the window opens (restart
# without it) and the CR is sent while the backlog goes.
RULES=$'[[forward]]\nto = "hospital"\nmodalities = ["CT"]\npriority = "bulk"\n[[forward]]\nto = "hospital"\nmodalities = ["CR"]\npriority = "urgent"'
for round in $(seq "$ROUNDS"); do
  "$PY" tests/clients/make_study.py "$ROOT/cr$round" 1 --modality CR > "$ROOT/cr$round.study"
  hospital h3
  station s3 h3 "windows = [\"$closed\"]"$'\n'"$RULES"
  TCP_NODELAY=1 storescu -aet STORESCU -aec TRAMY +sd 127.0.0.1 "$DIMSE_s3" "$ROOT/backlog" >/dev/null 2>&1
  stop "$PID_s3"; rm -f "$ROOT/s3.log"
  station s3 h3 "$RULES"
  out=$(BENCH_TOKEN=$TOKEN_s3 HOSPITAL_TOKEN=$TOKEN_h3 "$PY" benches/forward_bench.py urgent "$DIMSE_s3" "$ROOT/cr$round"/*.dcm "$URL_h3" "$(cat "$ROOT/cr$round.study")")
  after=$(sqlite3 "$ROOT/h3/index.sqlite" 'select count(*) - 1 from instances' 2>/dev/null || echo "?")
  python3 -c "import json; o=json.loads('$out'); print(f'round $round: {o[\"seconds\"]:.3f} s to queryable (C-STORE itself {o[\"c_store_seconds\"]*1000:.0f} ms); backlog at the hospital then: $after of $BACKLOG')"
  stop "$PID_s3"; stop "$PID_h3"; rm -rf "$ROOT/s3" "$ROOT/h3"
done

}
[ "${JWS:-1}" = 0 ] && exit 0
echo "== (c) signing and verifying a manifest (criterion)"
# criterion wraps long names onto their own line: join each name with its time.
cargo bench --quiet --bench forward_jws -- --noplot 2>/dev/null |
  awk '/^manifest\// { name = $1 } /time:/ { sub(/.*time: */, ""); printf "%-28s %s\n", name, $0 }'
