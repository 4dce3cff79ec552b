#!/usr/bin/env bash
# Installs the Debian packages cloq builds and tests with (see ../shared/STACK.md), Slurm and
# munge for the one-node cluster the job templates are tested on (scripts/slurm-up.sh), and the
# PyPI packages the cross-check tests use (numpy, h5py) and matplotlib for the quality plot. Idempotent: a second run that
# finds everything present installs nothing. Needs root (or sudo) for apt-get.
set -euo pipefail

pkgs=(
  build-essential pkg-config meson ninja-build
  openmpi-bin libopenmpi-dev
  libscalapack-openmpi-dev
  libhdf5-openmpi-dev hdf5-tools
  libopenblas-dev liblapacke-dev
  libjansson-dev libcmocka-dev libpcre2-dev
  slurm-wlm slurmctld slurmd slurm-client munge
  clang libclang-rt-14-dev
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# numpy and h5py are used only by tests that re-derive results independently and read the
# store from outside (never by the core).
if ! python3 -c "import numpy, h5py" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check numpy h5py
fi
# matplotlib draws the quality report's plot (bench/quality.py), nothing else.
if ! python3 -c "import matplotlib" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check matplotlib
fi
# tokenizers and gguf: tests/e2e/test_tokenizers.py compares cloq's tokenizers id for id with
# Hugging Face's and reads the SmolLM2 vocabulary from its GGUF file (never used by the core).
if ! python3 -c "import tokenizers, gguf" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check tokenizers gguf
fi
echo "install-deps: ok"
