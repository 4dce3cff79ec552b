#!/usr/bin/env python3
"""Writes a calibration token file (one sample per line, space-separated ids: the format
`cloq init --calib-format tokens` and torch_cloq.py read), so that cloq and the peers calibrate on
exactly the same tokens.

  text:   --text FILE --tokenizer tok512.bin: the llama2.c BPE of the whole text (BOS + text, as
          cloq tokenizes), then --nsamples windows of --seqlen tokens at start positions drawn
          uniformly with numpy's RandomState(--seed) (GPTQ's sampling; cloq's own text sampling
          uses another generator, so its windows differ: use this file for both tools).
  random: --random --vocab V: ids uniform in [3, V) (no tokenizer needed).

Standard library + numpy only (and tests/e2e/cloqtest.py's tokenizer reader and BPE). The BPE is llama2.c's (greedy best-score merges, byte fallback
<0xXX> = 3 + byte, a space prefixed to the text); it is applied chunk by chunk, each chunk
starting at a space, which gives the same result as on the whole text when no vocabulary piece
holds a space after its first byte (checked; true of tok512.bin).
"""
import argparse
import os
import sys

import numpy as np

# the llama2.c tokenizer reader and BPE of the tests (an independent reference of io/tokenizer.c)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "e2e"))
from cloqtest import bpe_merge, load_tok  # noqa: E402


def encode(text, pieces, scores):
    if any(b" " in p[1:] for p in pieces):
        sys.exit("make_tokens: a vocabulary piece holds an inner space; chunked BPE would be wrong")
    lut = {p: i for i, p in enumerate(pieces)}
    b = (" " + text).encode("utf-8") if text else b""
    out, memo, start = [1], {}, 0
    while start < len(b):
        end = b.find(b" ", start + 1)
        end = len(b) if end < 0 else end
        chunk = b[start:end]
        if chunk not in memo:
            memo[chunk] = bpe_merge(chunk, pieces, scores, lut)
        out.extend(memo[chunk])
        start = end
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--text")
    ap.add_argument("--tokenizer")
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rs = np.random.RandomState(a.seed)
    if a.random:
        seqs = rs.randint(3, a.vocab, size=(a.nsamples, a.seqlen))
    else:
        if not (a.text and a.tokenizer):
            sys.exit("make_tokens: give --text and --tokenizer, or --random")
        pieces, scores = load_tok(a.tokenizer)
        with open(a.text, encoding="utf-8") as f:
            ids = np.array(encode(f.read(), pieces, scores), dtype=np.int64)
        if len(ids) < a.seqlen + 1:
            sys.exit(f"make_tokens: text has {len(ids)} tokens, fewer than --seqlen + 1")
        starts = rs.randint(0, len(ids) - a.seqlen, size=a.nsamples)
        seqs = [ids[s:s + a.seqlen] for s in starts]
        print(f"make_tokens: {len(ids)} tokens in the text", file=sys.stderr)
    with open(a.out, "w") as f:
        for s in seqs:
            f.write(" ".join(str(int(i)) for i in s) + "\n")
    print(f"make_tokens: wrote {len(seqs)} x {a.seqlen} tokens to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
