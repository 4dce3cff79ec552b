"""Benchmark (a): per stage, time and achieved GFLOP/s of a `cloq init` at one rank on a
synthetic 8-block model, against this machine's own GEMM / SYRK / dpotrf / dtrmm / dsyevr rates
at the same sizes measured in the same run (cloq-bench-kernels), and the fraction of wall time
inside the stages' kernels. Prints a Markdown table.

  python3 bench/stages.py [threads]     (default: 2 = all cores of this machine)
"""
import re
import sys

from common import KERNELS, cloq, config, sh, stages, synth

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
model = synth("m8", "--dim", "768", "--heads", "12", "--mlp", "2048", "--layers", "8", "--vocab", "4096",
              "--max-pos", "1024", "--calib-samples", "32", "--calib-seqlen", "512", "--seed", "1")
cfg = config(model)
d, H, L, T, N, r = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], 512, 32, 16
tok = T * N

k = sh([KERNELS, T, d, H, 64], env={"OPENBLAS_NUM_THREADS": str(threads)}).stdout
rate = {}
for line in k.splitlines():
    name, rest = line.split(None, 1)
    g = float(re.search(r"([\d.]+) GFLOP/s", rest).group(1))
    rate.setdefault(name, []).append(g)

p = cloq(["init", "--model", model, "--calib", f"{model}/calib.tok", "--calib-format", "tokens",
          "--nsamples", N, "--bits", 4, "--group-size", 128, "--rank", r, "--out", f"{model}/../a.h5",
          "--force"], threads=threads)
st = stages(p.stdout)

params = 4 * d * d + 3 * d * H
fwd = L * tok * (2 * params + 2 * T / 2 * d * 2)           # linears + causal attention (QK^T, PV)
gram = L * tok * (3 * d * (d + 1) + H * (H + 1))           # dsyrk t n (n + 1) per input
factor = L * (3 * d ** 3 + H ** 3) / 3                     # dpotrf of each input's Hd
init = 0                                                   # per module (docs/math.md): F = E C,
for o, i in ((d, d),) * 4 + ((H, d),) * 2 + ((d, H),):     # G or K, dsyevr's reduction, F P
    s_, l_ = min(o, i), max(o, i)
    init += o * i * i + s_ * s_ * l_ + 4 / 3 * s_ ** 3 + (2 * o * i * 64 if o > i else 0)
init *= L
rows = [
    ("forward + Gram (calibration pass)", st["calibration pass"], fwd + gram,
     f"sgemm {rate['sgemm'][0]:.0f} / dsyrk {rate['dsyrk'][0]:.0f}-{rate['dsyrk'][1]:.0f}"),
    ("factor (dpotrf, 3 x n=%d + n=%d per block)" % (d, H), st["factor"], factor,
     f"dpotrf {rate['dpotrf'][0]:.0f}-{rate['dpotrf'][1]:.0f}"),
    ("init (dtrmm, dsyrk, dsyevr top 64, split)", st["init"], init,
     f"dtrmm {rate['dtrmm'][0]:.0f}-{rate['dtrmm'][1]:.0f} / dsyevr {rate['dsyevr'][0]:.0f}"),
    ("quant (RTN)", st["quant"], 0, ""),
    ("write (block files, fsync)", st["write"], 0, ""),
]
wall = st["total"]
print(f"model {model}: d {d}, mlp {H}, {L} blocks; {N} x {T} tokens; {threads} OpenBLAS thread(s), 1 rank\n")
print("| stage | seconds | GFLOP | achieved GFLOP/s | this machine's kernel GFLOP/s (same run) |")
print("|---|---|---|---|---|")
inside = 0.0
for name, sec, fl, ref in rows:
    inside += sec
    g = f"{fl / sec * 1e-9:.1f}" if fl and sec else "-"
    print(f"| {name} | {sec:.2f} | {fl * 1e-9:.0f} | {g} | {ref} |")
print(f"| **wall (whole run)** | {wall:.2f} | | | |")
print(f"\nfraction of wall time inside the stages above: {inside / wall:.1%}; peak RSS {st['rss']}")
