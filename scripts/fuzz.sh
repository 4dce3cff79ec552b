#!/usr/bin/env bash
# Fuzzes the GGUF reader (tests/fuzz/fuzz_gguf.c) with libFuzzer for a bounded time: builds
# build-fuzz/ with clang (-fsanitize=fuzzer-no-link plus ASan and UBSan everywhere, leak checks
# on), writes the seed files (tests/fuzz/make_seeds.py) and runs. Exit status non-zero on any
# crash, sanitizer report, leak or timeout; the reproducer is left in build-fuzz/ (crash-*).
# Usage: bash scripts/fuzz.sh [SECONDS]      (default $CLOQ_FUZZ_SECONDS or 60)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-${CLOQ_FUZZ_SECONDS:-60}}
b=build-fuzz
if [ ! -f $b/build.ninja ]; then
  CC=clang meson setup $b -Dfuzz=true -Dtests=false -Dcuda=disabled -Dbuildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link >/dev/null
fi
ninja -C $b tests/fuzz/fuzz_gguf >/dev/null
mkdir -p $b/fuzz-corpus
python3 tests/fuzz/make_seeds.py $b/fuzz-seeds
cd $b
set +e
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ./tests/fuzz/fuzz_gguf -max_total_time="$secs" \
  -max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 fuzz-corpus fuzz-seeds \
  >fuzz.log 2>&1
rc=$?
set -e
grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' fuzz.log | tail -40
echo "fuzz_gguf: exit status $rc after up to $secs s (log: $b/fuzz.log)"
exit $rc
