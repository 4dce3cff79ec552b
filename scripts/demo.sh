#!/usr/bin/env bash
# The main job on the shipped default data, from a fresh machine: installs what is missing,
# builds, then on stories260K (calibrated on WikiText-2 validation, evaluated on the whole
# WikiText-2 test split, GPTQ protocol) prints perplexity for full precision, the RTN-quantized
# model, and the quantized model + its CLoQ LoRA initialization, at 2, 3 and 4 bits.
# Environment: CLOQ_ASSETS (default ../shared/assets), NP (MPI ranks, default 2),
# BITS (default "2 3 4"), RANK (LoRA rank, default 16), GROUP (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
A=${CLOQ_ASSETS:-../shared/assets}
NP=${NP:-2}
BITS=${BITS:-"2 3 4"}
RANK=${RANK:-16}
GROUP=${GROUP:-32}
M=$A/stories260K-hf
CAL=$A/wikitext-2/wiki.valid.tokens
TEST=$A/wikitext-2/wiki.test.raw
OUT=demo-out
mkdir -p "$OUT"
run() { scripts/mpirun.sh -np "$NP" build/cmd/cloq "$@"; }
ppl() { run eval --model "$M" --data "$TEST" "$@" | tee -a "$OUT/log.txt" | tail -1 | cut -d' ' -f2; }

echo "== cloq demo: stories260K, $NP MPI ranks, RTN group $GROUP, LoRA rank $RANK"
echo "   calibration: 128 x 512 tokens of $CAL; evaluation: $TEST"
declare -A P
P[fp]=$(ppl)
for b in $BITS; do
  for init in zero cloq; do
    echo "-- init: $b bits, $init"
    run init --model "$M" --calib "$CAL" --out "$OUT/stories-$b-$init.h5" --force --bits "$b" \
      --group-size "$GROUP" --rank "$RANK" --init "$init" --nsamples 128 --seqlen 512
    P[$b$init]=$(ppl --store "$OUT/stories-$b-$init.h5")
  done
done
echo
echo "WikiText-2 test perplexity (stories260K is a TinyStories model: out of domain here)"
printf '| %-4s | %-14s | %-12s | %-18s |\n' bits "full precision" "quantized" "quantized + CLoQ"
printf '|------|----------------|--------------|--------------------|\n'
for b in $BITS; do
  printf '| %-4s | %-14s | %-12s | %-18s |\n' "$b" "${P[fp]}" "${P[${b}zero]}" "${P[${b}cloq]}"
done
echo "stores: $OUT/stories-<bits>-<init>.h5 (layout: docs/store.md)"
