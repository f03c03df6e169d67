#!/usr/bin/env bash
# Fetches the real adult PA chest CR "RG1" (1955x1841, MONOCHROME1, Explicit VR Little Endian)
# from the PyPI package pydicom-data 1.0.0 and checks its SHA-256. Writes dicom-samples/fetched/.
# Needs python3 with pip; uses nothing but PyPI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/fetched"
file="$out/chest_cr_rg1_explicit_le.dcm"
want=3561020824868615a93a51078671b3ff73bb2578c966f76def99b4d982897e75
if [ -f "$file" ] && echo "$want  $file" | sha256sum -c --status; then
  echo "$file is present and verified"; exit 0
fi
mkdir -p "$out"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: pydicom-data==1.0.0 -d "$tmp"
python3 - "$tmp" "$file" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/pydicom_data-1.0.0-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as f:
    f.write(z.read("data_store/data/RG1_UNCI.dcm"))
PY
if ! echo "$want  $file" | sha256sum -c --status; then
  echo "SHA-256 of $file does not match $want: refusing to use it" >&2
  rm -f "$file"; exit 1
fi
echo "fetched and verified $file"
