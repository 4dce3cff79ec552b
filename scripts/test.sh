#!/usr/bin/env bash
# The whole test suite from a clean checkout: installs what is missing, builds, and runs every
# test twice: in the release build (build/), then in an AddressSanitizer + UndefinedBehavior-
# Sanitizer build (build-asan/, leak checking on). Unit tests of each module, end-to-end runs at
# 1, 2, 3 and more ranks against independent goldens; the Slurm job templates on a one-node
# cluster (suite 'slurm', release pass only); libFuzzer on the GGUF reader for 60 s and on the
# safetensors, config.json, tokenizer.json and token-file readers for 30 s each (suite 'fuzz',
# release pass only, its own clang + ASan/UBSan build); GPTQModel loading a GPTQ export and PEFT
# fine-tuning from the exports (suite 'peers', release pass only). Ends with the line `N passed, N failed`;
# exit status 0 only if all passed. Set CLOQ_SKIP_ASAN=1 to run the release build only.
# The release build compiles and links the CUDA backend when nvcc is present (-Dcuda=auto); the
# tests run on the CPU (CLOQ_DEVICE=cpu; tests/e2e/test_device.py checks auto, cuda and cpu, and
# compares CUDA with the CPU where a GPU is usable). The sanitizer build is CPU-only
# (-Dcuda=disabled: nvcc's host objects are not instrumented).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
export CLOQ_DEVICE=cpu
logs=(build/meson-logs/testlog.json)
set +e
meson test -C build --print-errorlogs --num-processes 2 "$@"
rc=$?
set -e
if [ "${CLOQ_SKIP_ASAN:-0}" != 1 ]; then
  if [ ! -f build-asan/build.ninja ]; then
    meson setup build-asan -Db_sanitize=address,undefined -Dbuildtype=debugoptimized \
      -Db_lundef=false -Dcuda=disabled >/dev/null
  fi
  ninja -C build-asan >/dev/null
  # Open MPI keeps allocations until exit in plugins it would unload (dlclose) before LSan
  # looks: keep them loaded and unwind fully so tests/lsan.supp can name them. Our own
  # leaks are still reported.
  export OMPI_MCA_mca_base_component_disable_dlclose=1
  export ASAN_OPTIONS=fast_unwind_on_malloc=0:detect_leaks=1
  export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0:fast_unwind_on_malloc=0
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  set +e
  # The Slurm suite tests job templates, not our code: once, in the release pass, is enough. The
  # fuzz suite builds its own sanitized clang build (build-fuzz/): once as well. The peers suite
  # runs another project's loader (GPTQModel) on an export: once.
  meson test -C build-asan --print-errorlogs --num-processes 2 --no-suite slurm --no-suite fuzz \
    --no-suite peers "$@"
  rc2=$?
  set -e
  [ $rc -ne 0 ] || rc=$rc2
  logs+=(build-asan/meson-logs/testlog.json)
fi
python3 - "${logs[@]}" <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit $rc
