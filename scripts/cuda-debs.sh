#!/usr/bin/env bash
# Download the Debian packages (.deb files, not installed) that scripts/check-cuda.sh unpacks on a
# GPU machine that has no package registry: libpng, libjpeg-turbo, FFTW (single precision), CUnit,
# zlib, each with its -dev package (headers, link symlinks).  About 5 MB.
#
#   bash scripts/cuda-debs.sh [DIR]        (default build/cuda-debs; `make cuda-debs`)
#
# DIR is under the ignored build/ folder: the run that starts check-cuda.sh on the GPU machine
# carries it (docs/cuda.md, "How to run").  Needs apt's package lists (scripts/deps.sh updates them).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build/cuda-debs}
pkgs=(
  libpng16-16 libpng-dev
  libjpeg62-turbo libjpeg62-turbo-dev
  libfftw3-single3 libfftw3-dev
  libcunit1 libcunit1-dev
  zlib1g zlib1g-dev
)
mkdir -p "$dir"
rm -f "$dir"/*.deb
# apt's sandbox user cannot write into a root-owned folder; download there as the caller
(cd "$dir" && apt-get download -o APT::Sandbox::User=root "${pkgs[@]}" >/dev/null)
# plain file names ("1%3a2.1.5" epochs -> "1-2.1.5"): the files travel to the GPU machine
for f in "$dir"/*%3a*.deb; do [ -e "$f" ] && mv "$f" "${f//%3a/-}"; done
n=$(ls "$dir"/*.deb | wc -l)
if [ "$n" -ne ${#pkgs[@]} ]; then
  echo "cuda-debs: expected ${#pkgs[@]} .deb files in $dir, found $n" >&2
  exit 1
fi
echo "cuda-debs: $n packages, $(du -sh "$dir" | cut -f1), in $dir"
