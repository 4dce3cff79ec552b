#!/usr/bin/env bash
# Configures (once) and builds cloq into build/. Extra arguments go to `meson setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
# the CUDA toolkit's usual place: meson finds nvcc on PATH (-Dcuda=auto builds the CUDA backend
# when it is there; it compiles and links without a GPU)
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH
if [ ! -f build/build.ninja ]; then
  meson setup build "$@" >/dev/null
fi
ninja -C build >/dev/null || { ninja -C build | grep -v "^\[" | head -40; exit 1; }
echo "build: ok (build/cmd/cloq)"
