"""Benchmark (e) on the synthetic 8-block model of (a): cloq against the peers on the same model,
machine and threads (2): PEFT's LoftQ initialization (peft + torch from PyPI, CPU) and a
straightforward PyTorch implementation of the same CLoQ pipeline (bench/peers/torch_cloq.py:
forward hooks accumulate X^T X in float64, then eigh + svd per layer). One run each, in sequence,
wall time of the whole process and peak RSS. Needs bench/peers/install.sh first.

  bench/peers/.venv/bin/python bench/peers.py
"""
import json
import os
import re
import sys

from common import ROOT, cloq, sh, synth

PY = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
model = synth("m8", "--dim", "768", "--heads", "12", "--mlp", "2048", "--layers", "8", "--vocab", "4096",
              "--max-pos", "1024", "--calib-samples", "32", "--calib-seqlen", "512", "--seed", "1")
calib = f"{model}/calib.tok"
rows = []
p = cloq(["init", "--model", model, "--calib", calib, "--calib-format", "tokens", "--nsamples", 32, "--bits", 4,
          "--group-size", 128, "--rank", 16, "--out", f"{model}/../peers.h5", "--force"], threads=2)
rss = re.search(r"peak RSS \(MiB\): rank 0 ([\d.]+)", p.stdout).group(1)
rows.append(("cloq init (C, 1 rank, 2 threads)", p.wall, float(rss)))
p = cloq(["init", "--model", model, "--calib", calib, "--calib-format", "tokens", "--nsamples", 32, "--bits", 4,
          "--group-size", 128, "--rank", 16, "--out", f"{model}/../peers2.h5", "--force"], np_=2, threads=1)
rss = max(float(x) for x in re.findall(r"rank \d+ ([\d.]+)", p.stdout.split("peak RSS")[1].splitlines()[0]))
rows.append(("cloq init (C, 2 ranks x 1 thread)", p.wall, rss))
for extra, name in (([], "PyTorch CLoQ, one Gram per module"), (["--share-grams"], "PyTorch CLoQ, one Gram per input")):
    q = sh([PY, os.path.join(ROOT, "bench", "peers", "torch_cloq.py"), "--model", model, "--calib", calib,
            "--calib-format", "tokens", "--nsamples", 32, "--bits", 4, "--group-size", 128, "--rank", 16,
            "--threads", 2] + extra)
    j = json.loads([l for l in q.stdout.splitlines() if l.startswith("{")][-1])
    rows.append((f"{name} (torch, 2 threads)", q.wall, j.get("peak_rss_mib", float("nan"))))
q = sh([PY, os.path.join(ROOT, "bench", "peers", "peft_loftq.py"), "--model", model, "--bits", 4, "--rank", 16,
        "--threads", 2])
j = json.loads([l for l in q.stdout.splitlines() if l.startswith("{")][-1])
rows.append(("PEFT LoftQ init, 4 bits, 1 iteration (data-free; torch, 2 threads)", q.wall,
             j.get("peak_rss_mib", float("nan"))))
print(f"model {model}: d 768, MLP 2048, 8 blocks; 4 bits, group 128, LoRA rank 16; calibration 32 x 512 tokens\n")
print("| tool | wall s | peak RSS MiB | relative to cloq (1 rank) |")
print("|---|---|---|---|")
for name, wall, rss in rows:
    print(f"| {name} | {wall:.1f} | {rss:.0f} | {wall / rows[0][1]:.2f} |")
