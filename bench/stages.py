"""Benchmark (a): per stage, time and achieved GFLOP/s of a `cloq init` at one rank on a
synthetic 8-block model, against this machine's own GEMM / SYRK / dsyevd / dgesdd rates at the
same sizes measured in the same run (cloq-bench-kernels), and the fraction of wall time inside
the stages' kernels. Prints a Markdown table.

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

k = sh([KERNELS, T, d, H, r], env={"OPENBLAS_NUM_THREADS": str(threads)}).stdout
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
eig = L * 4.7 * (3 * d ** 3 + H ** 3)                      # dsyevd, as cloq-bench-kernels counts
svd = L * (4 * (4 * d * d * d + 22 * d ** 3) + 3 * (4 * H * d * d + 22 * d ** 3))  # dgesdd M
svd += L * 7 * 4 * d * d * max(d, H)                       # M = R E^T and A: two dgemm per module
rows = [
    ("forward + Gram (calibration pass)", st["calibration pass"], fwd + gram,
     f"sgemm {rate['sgemm'][0]:.0f} / dsyrk {rate['dsyrk'][0]:.0f}-{rate['dsyrk'][1]:.0f}"),
    ("eig (dsyevd, 3 x n=%d + n=%d per block)" % (d, H), st["eig"], eig,
     f"dsyevd {rate['dsyevd'][0]:.0f}-{rate['dsyevd'][1]:.0f}"),
    ("init (M = R E^T, dgesdd, factors)", st["init"], svd, f"dgesdd {rate['dgesdd'][0]:.0f}-{rate['dgesdd'][1]:.0f}"),
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
