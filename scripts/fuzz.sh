#!/usr/bin/env bash
# Fuzzes one of cloq's readers with libFuzzer for a bounded time: builds build-fuzz/ with clang
# (-fsanitize=fuzzer-no-link plus ASan and UBSan everywhere, leak checks on), writes the target's
# seed files (tests/fuzz/make_seeds.py) and runs it on its own corpus. Exit status non-zero on any
# crash, sanitizer report, leak or timeout; the reproducer is left in build-fuzz/fuzz/TARGET/
# (crash-*, leak-*, timeout-*, oom-*).
# Usage: bash scripts/fuzz.sh [TARGET] [SECONDS]   (default fuzz_gguf, $CLOQ_FUZZ_SECONDS or 60)
#        bash scripts/fuzz.sh SECONDS              (fuzz_gguf, as before)
# Targets (tests/fuzz/): fuzz_gguf, fuzz_safetensors, fuzz_config, fuzz_tokenizer, fuzz_tokens.
# Per target under build-fuzz/fuzz/TARGET/: corpus/ (kept between runs), seeds/, fuzz.log. To see
# what a target does with one input: CLOQ_FUZZ_VERBOSE=1 build-fuzz/tests/fuzz/TARGET FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
target=fuzz_gguf
if [ $# -gt 0 ] && [[ ! $1 =~ ^[0-9]+$ ]]; then target=$1; shift; fi
secs=${1:-${CLOQ_FUZZ_SECONDS:-60}}
case $target in
  fuzz_gguf | fuzz_safetensors | fuzz_config | fuzz_tokens) max_len=16384 ;;
  fuzz_tokenizer) max_len=65536 ;; # the seed tokenizer.json files are 5-16 KB
  *) echo "fuzz.sh: unknown target $target (fuzz_gguf, fuzz_safetensors, fuzz_config," \
       "fuzz_tokenizer, fuzz_tokens)" >&2; exit 2 ;;
esac
b=build-fuzz
if [ ! -f $b/build.ninja ]; then
  CC=clang meson setup $b -Dfuzz=true -Dtests=false -Dcuda=disabled -Dbuildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link >/dev/null
fi
ninja -C $b tests/fuzz/$target >/dev/null
w=$b/fuzz/$target
mkdir -p $w/corpus
if [ $target = fuzz_gguf ] && [ -d $b/fuzz-corpus ] && [ -z "$(ls -A $w/corpus)" ]; then
  mv $b/fuzz-corpus/* $w/corpus/ 2>/dev/null || true # the corpus of the single-target script
  rmdir $b/fuzz-corpus 2>/dev/null || true
fi
rm -rf $w/seeds $w/cloq-fuzz-* # scratch folders are left behind when a run stops on a crash
python3 tests/fuzz/make_seeds.py $w/seeds $target
cd $w
set +e
# TMPDIR: the scratch folder of the targets that write each input to a file (fuzz_util.h)
TMPDIR=$PWD UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ../../tests/fuzz/$target \
  -max_total_time="$secs" -max_len=$max_len -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  corpus seeds >fuzz.log 2>&1
rc=$?
set -e
grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' fuzz.log | tail -40
grep -E '^#[0-9]+[[:space:]]+DONE' fuzz.log || true # executions and coverage at the end
echo "$target: exit status $rc after up to $secs s (log: $w/fuzz.log)"
exit $rc
