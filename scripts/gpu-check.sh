#!/usr/bin/env bash
# The GPU checks of the CUDA backend (DEVELOPERS.md, "Checking on a GPU"), in two steps, because
# the GPU machine is bare (no Open MPI, HDF5 or OpenBLAS, no network) while this one builds:
#
#   bash scripts/gpu-check.sh prepare   # here: build/ with -Dcuda=enabled, and .gpu-carry/:
#                                       # the binaries, a wrapper that sets up their libraries,
#                                       # the runtime .debs they need (unpacked there under
#                                       # /opt/cloqdeps, never into /), and the small assets
#   bash scripts/gpu-check.sh run [--bench]   # on the GPU machine, from the repository root
#
# `run` prints and returns non-zero on any failure; it runs
#   1. tests/gpu/cuda_check (each dispatched operation, CUDA vs CPU, random inputs, --large
#      adds Llama-7B shapes with timings),
#   2. tests/e2e/test_device.py (cloq init/eval with --device cuda vs cpu on stories260K and a
#      synthetic GQA model, tolerances in its docstring and docs/cuda.md),
#   3. with --bench: bench/gpu7b.py (Llama-2-7B-shaped synthetic model, 4 blocks, 128 x 2048
#      tokens: every stage against the GPU's measured GEMM rate, total extrapolated to 32
#      blocks), writing $OUT/gpu7b.json and $OUT/gpu7b.md when OUT is set.
# With the device tool: run `prepare` here, then
#   run(command="bash scripts/gpu-check.sh run --bench", carry=[".gpu-carry"])
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry

prepare() {
  export PATH=/usr/local/cuda/bin:$PATH
  bash scripts/build.sh
  meson configure build -Dcuda=enabled >/dev/null # fails here if nvcc is missing
  ninja -C build cmd/cloq tests/cuda_check bench/cloq-gemm-rate >/dev/null
  rm -rf "$CARRY"
  mkdir -p "$CARRY/bin" "$CARRY/debs" "$CARRY/assets"
  cp build/cmd/cloq build/tests/cuda_check build/bench/cloq-gemm-rate "$CARRY/bin/"
  # the packages owning every library the binaries and Open MPI's plugins load, except the C and
  # C++ runtimes (the GPU machine's own are newer) and CUDA's (there already, matching its driver)
  local objs=("$CARRY"/bin/*)
  objs+=(/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3/*.so /usr/lib/x86_64-linux-gnu/pmix2/lib/pmix/*.so)
  local libs
  libs=$(for o in "${objs[@]}"; do ldd "$o" 2>/dev/null | awk '$3 ~ /^\// {print $3}'; done | sort -u)
  local pkgs
  pkgs=$( (for l in $libs; do dpkg -S "$(readlink -f "$l")" 2>/dev/null || dpkg -S "$l" 2>/dev/null || true; done
           echo "openmpi-bin: x"; echo "openmpi-common: x"; echo "libopenmpi3: x") |
         cut -d: -f1 | sort -u |
         grep -vE '^(libc6|libgcc-s1|libstdc\+\+6|libcuda|cuda-|libcublas|libcusolver|libcudart|libnvjitlink)' || true)
  (cd "$CARRY/debs" && apt-get download $pkgs >/dev/null)
  for f in stories260K-hf wikitext-2/wiki.test.raw; do
    mkdir -p "$CARRY/assets/$(dirname "$f")"
    cp -r "${CLOQ_ASSETS:-../shared/assets}/$f" "$CARRY/assets/$f"
  done
  # the wrapper: cloq with the unpacked libraries and a relocated Open MPI
  cat >"$CARRY/cloq" <<'EOF'
#!/usr/bin/env bash
P=${CLOQ_DEPS:-/opt/cloqdeps}
L=$P/usr/lib/x86_64-linux-gnu
# Debian's Open MPI spreads over /usr/lib/.../openmpi, /usr/share/openmpi and /etc/openmpi: name
# each relocated directory (OPAL_PREFIX alone would look for everything under one prefix)
export OPAL_PREFIX=$L/openmpi OPAL_EXEC_PREFIX=$L/openmpi OPAL_BINDIR=$P/usr/bin OPAL_LIBDIR=$L/openmpi/lib
export OPAL_PKGLIBDIR=$L/openmpi/lib/openmpi3 OPAL_DATADIR=$P/usr/share OPAL_DATAROOTDIR=$P/usr/share
export OPAL_PKGDATADIR=$P/usr/share/openmpi OPAL_SYSCONFDIR=$P/etc/openmpi PATH=$P/usr/bin:$PATH
export PMIX_PREFIX=$L/pmix2 PMIX_INSTALL_PREFIX=$L/pmix2 PMIX_MCA_mca_base_component_path=$L/pmix2/lib/pmix
export LD_LIBRARY_PATH=$P/usr/lib/x86_64-linux-gnu:$P/usr/lib/x86_64-linux-gnu/openblas-pthread:$P/usr/lib/x86_64-linux-gnu/hdf5/openmpi/lib:$P/usr/lib/x86_64-linux-gnu/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMPI_MCA_plm=isolated OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec "$(dirname "$(readlink -f "$0")")/bin/$(basename "${CLOQ_WRAP_TOOL:-cloq}")" "$@"
EOF
  chmod +x "$CARRY/cloq"
  du -sh "$CARRY" | awk '{print "prepared " $2 ": " $1 " (the device tool carries at most 64 MiB)"}'
}

run_checks() {
  local bench=0
  [ "${1:-}" = "--bench" ] && bench=1
  [ -x "$CARRY/cloq" ] || { echo "gpu-check: run 'bash scripts/gpu-check.sh prepare' first (on the build machine)" >&2; exit 1; }
  mkdir -p /opt/cloqdeps
  for f in "$CARRY"/debs/*.deb; do dpkg -x "$f" /opt/cloqdeps; done
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  local fail=0
  CLOQ_WRAP_TOOL=cuda_check "$CARRY/cloq" ${CLOQ_CHECK_ARGS:---large} || fail=1
  CLOQ_BIN=$PWD/$CARRY/cloq CLOQ_ASSETS=$PWD/$CARRY/assets PYTHONPATH=tests/e2e PYTHONUNBUFFERED=1 \
    python3 tests/e2e/test_device.py || fail=1
  if [ $bench = 1 ]; then
    python3 bench/gpu7b.py --cloq "$PWD/$CARRY/cloq" --gemm-rate "env CLOQ_WRAP_TOOL=cloq-gemm-rate $PWD/$CARRY/cloq" \
      --work /tmp/gpu7b --out "${OUT:-bench/results}" || fail=1
  fi
  [ $fail = 0 ] && echo "gpu-check: all passed" || echo "gpu-check: FAILED"
  return $fail
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run_checks "$@" ;;
  *) echo "usage: bash scripts/gpu-check.sh prepare | run [--bench]" >&2; exit 2 ;;
esac
