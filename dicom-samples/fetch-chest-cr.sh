#!/usr/bin/env bash
# Fetches two real CR radiographs from the PyPI package pydicom-data 1.0.0 and checks their
# SHA-256. Writes dicom-samples/fetched/:
#   chest_cr_rg1_explicit_le.dcm  RG1_UNCI: adult PA chest (1955x1841, MONOCHROME1, Explicit VR LE)
#   tibia_cr_rg3_explicit_le.dcm  RG3_UNCI: a tibia, BodyPartExamined EXTREMITY (1760x1760,
#                                 MONOCHROME1, Explicit VR LE): a CR that is not a chest
# Needs python3 with pip; uses nothing but PyPI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/fetched"
# file in fetched/, member of the wheel, SHA-256
files=(
  "chest_cr_rg1_explicit_le.dcm RG1_UNCI.dcm 3561020824868615a93a51078671b3ff73bb2578c966f76def99b4d982897e75"
  "tibia_cr_rg3_explicit_le.dcm RG3_UNCI.dcm 9ef0260919de89774da90336ad16c03a5be899a8bb663bbaea52b6d0769bec78"
)
verified() { [ -f "$out/$1" ] && echo "$2  $out/$1" | sha256sum -c --status; }
mkdir -p "$out"
# Tests run this in parallel: one at a time, and each file appears whole (renamed into place)
# or not at all, so nobody checks a half-written one.
exec 9>"$out/.fetch.lock"
flock 9
missing=0
for entry in "${files[@]}"; do
  read -r name _ want <<<"$entry"
  if verified "$name" "$want"; then echo "$out/$name is present and verified"; else missing=1; fi
done
[ "$missing" = 0 ] && exit 0
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: pydicom-data==1.0.0 -d "$tmp"
for entry in "${files[@]}"; do
  read -r name member want <<<"$entry"
  verified "$name" "$want" && continue
  partial="$out/.$name.partial"
  python3 - "$tmp" "$member" "$partial" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/pydicom_data-1.0.0-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[3], "wb") as f:
    f.write(z.read("data_store/data/" + sys.argv[2]))
PY
  if ! echo "$want  $partial" | sha256sum -c --status; then
    echo "SHA-256 of $member from pydicom-data does not match $want: refusing to use it" >&2
    rm -f "$partial"; exit 1
  fi
  mv -f "$partial" "$out/$name"
  echo "fetched and verified $out/$name"
done
