#!/usr/bin/env bash
# Perplexity at init on stories260K: full precision, then bits 2/3/4 x LoRA rank 8/16 x init
# zero/svd/cloq, RTN with group 32. Calibration: 128 windows of 512 tokens drawn (seed 0) from
# WikiText-2 *validation* (wiki.valid.tokens, tokenized with tok512.bin). Evaluation: the whole
# WikiText-2 *test* split (wiki.test.raw), GPTQ protocol (BOS + whole text, non-overlapping
# windows of 512). Writes a Markdown table to stdout. Usage: bench/stories_table.sh [NP]
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${1:-2}
A=${CLOQ_ASSETS:-../shared/assets}
M=$A/stories260K-hf
CAL=$A/wikitext-2/wiki.valid.tokens
TEST=$A/wikitext-2/wiki.test.raw
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
run() { scripts/mpirun.sh -np "$NP" build/cmd/cloq "$@"; }
ppl() { run eval --model "$M" --data "$TEST" "$@" | tail -1 | cut -d' ' -f2; }

fp=$(ppl)
echo "| bits | rank | zero (RTN only) | svd | cloq |"
echo "|---|---|---|---|---|"
for bits in 2 3 4; do
  run init --model "$M" --calib "$CAL" --out "$OUT/z$bits.h5" --bits "$bits" --group-size 32 \
    --rank 8 --init zero --nsamples 128 --seqlen 512 >/dev/null
  pz=$(ppl --store "$OUT/z$bits.h5")
  for rank in 8 16; do
    row="| $bits | $rank | $pz"
    for init in svd cloq; do
      s="$OUT/$init-$bits-$rank.h5"
      run init --model "$M" --calib "$CAL" --out "$s" --bits "$bits" --group-size 32 \
        --rank "$rank" --init "$init" --nsamples 128 --seqlen 512 >/dev/null
      row="$row | $(ppl --store "$s")"
    done
    echo "$row |"
  done
done
echo
echo "full precision: $fp"
