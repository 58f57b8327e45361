#!/usr/bin/env bash
# Install the Debian packages that libstsl's build, tests, demo and training need.
# Idempotent and quick when everything is present.  As root it installs; otherwise it prints the
# exact apt-get line to run.  STSL_DEPS_EXTRA=bench adds the benchmark report's plotting packages.
set -euo pipefail

pkgs=(
  build-essential pkg-config
  libpng-dev libjpeg62-turbo-dev libfftw3-dev
  libcunit1-dev
  libtorch-dev python3-torch python3-numpy
  libopenblas0-openmp
  dataset-fashion-mnist
  abigail-tools valgrind clang libclang-rt-14-dev
)

# Extras for `make bench` (plots, report): STSL_DEPS_EXTRA=bench
if [ "${STSL_DEPS_EXTRA:-}" = bench ]; then
  pkgs+=(python3-matplotlib python3-pil)
fi
# Extras for exporting Stable Diffusion through the user's copy of diffusers 0.19 and
# huggingface_hub 0.17 (docs/real-models.md): STSL_DEPS_EXTRA=real-models
if [ "${STSL_DEPS_EXTRA:-}" = real-models ]; then
  pkgs+=(python3-filelock python3-regex python3-importlib-metadata python3-fsspec python3-pil
         python3-tqdm python3-packaging python3-requests python3-yaml)
fi

missing=()
for p in "${pkgs[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully installed package
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "libstsl needs these Debian packages; run as root:" >&2
  echo "  apt-get update && $line" >&2
  exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps.sh: done" >&2
