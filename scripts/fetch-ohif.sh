#!/usr/bin/env bash
# Fetches the built OHIF Viewer from npm (@ohif/app, pinned: the untagged name gave another
# minor version) once into target/ohif/VERSION/ (build.rs runs it; tramy serves the viewer at
# /viewer and writes its /app-config.js itself). Later runs are offline. Prints the folder, for
# `[http] viewer_dir` when the viewer lives elsewhere.
# Usage: scripts/fetch-ohif.sh [DEST]   (default: target/ohif/$OHIF_VERSION)
set -euo pipefail
version=${OHIF_VERSION:-3.13.2}
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/target/ohif/$version}
if [ ! -f "$dest/dist/index.html" ]; then
  mkdir -p "$(dirname "$dest")"
  # Unpacked beside the destination and moved into place whole, so an interrupted fetch never
  # leaves a half viewer that later runs would take for a complete one.
  tmp=$(mktemp -d "$dest.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "@ohif/app@$version" >/dev/null && tar xzf "ohif-app-$version.tgz")
  rm -rf "$dest"
  mv "$tmp/package" "$dest"
fi
echo "$dest/dist"
