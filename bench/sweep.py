"""Benchmark (c): a 3 bits x 4 ranks sweep (`cloq sweep`, 12 stores) against one configuration
(`cloq init`) and against 12 separate `cloq init` runs, on a synthetic 8-block model, 1 rank,
2 threads. Checks that the sweep's stores equal the separate runs' (bitwise). Markdown table.

  python3 bench/sweep.py
"""
import os
import sys

import h5py
import numpy as np

from common import WORK, cloq, synth

model = synth("m8s", "--dim", "512", "--heads", "8", "--mlp", "1376", "--layers", "8", "--vocab", "4096",
              "--max-pos", "1024", "--calib-samples", "16", "--calib-seqlen", "256", "--seed", "2")
BITS, RANKS = [2, 3, 4], [8, 16, 32, 64]
base = ["--model", model, "--calib", f"{model}/calib.tok", "--calib-format", "tokens", "--nsamples", 16,
        "--group-size", 128, "--force"]
out = os.path.join(WORK, "sweep")
p = cloq(["sweep", "--out", out, "--bits", ",".join(map(str, BITS)), "--ranks", ",".join(map(str, RANKS))] + base,
         threads=2)
t_sweep = p.wall
work = [l for l in p.stdout.splitlines() if l.startswith("work:")][0]
t_runs, same = [], True
for b in BITS:
    for r in RANKS:
        one = os.path.join(WORK, f"one-b{b}-r{r}.h5")
        q = cloq(["init", "--out", one, "--bits", b, "--rank", r] + base, threads=2)
        t_runs.append(q.wall)
        with h5py.File(one) as f, h5py.File(os.path.join(out, f"b{b}-r{r}.h5")) as g:
            for blk in f["layers"]:
                for m in f["layers"][blk]:
                    for ds in f["layers"][blk][m]:
                        same &= np.array_equal(f["layers"][blk][m][ds][()], g["layers"][blk][m][ds][()])
print(f"model {model}: d 512, mlp 1376, 8 blocks, 16 x 256 tokens; 1 rank, 2 threads")
print(f"sweep: {work}\n")
print("| run | wall s | relative to one configuration |")
print("|---|---|---|")
one = sum(t_runs) / len(t_runs)
print(f"| one configuration (`cloq init`, mean of the 12) | {one:.1f} | 1.00 |")
print(f"| 12 separate `cloq init` runs | {sum(t_runs):.1f} | {sum(t_runs) / one:.2f} |")
print(f"| `cloq sweep --bits 2,3,4 --ranks 8,16,32,64` | {t_sweep:.1f} | {t_sweep / one:.2f} |")
print(f"\nsweep vs 12 runs: {sum(t_runs) / t_sweep:.1f}x faster; stores bitwise equal: {same}")
sys.exit(0 if same else 1)
