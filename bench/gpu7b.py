"""The CUDA backend on a Llama-2-7B-shaped synthetic model (d 4096, MLP 11008, 32 heads, vocab
32000; --blocks of its 32, default 4) with 128 x 2048 calibration tokens: each stage of
`cloq init --device cuda` against the GPU's own GEMM rate measured in the same run, and the
total extrapolated to 32 blocks. Needs a GPU; run through scripts/gpu-check.sh (DEVELOPERS.md).

  python3 bench/gpu7b.py --cloq build-gpu/cmd/cloq --gemm-rate build-gpu/bench/cloq-gemm-rate

Nominal flop counts (stated, not measured):
  forward  per block: 2 T P + 4 S t^2 d   (P = 4 d^2 + 3 d h linear weights of the MHA block,
                                           T = S t tokens, the full t x t score matrices)
  gram     per block: T (3 d^2 + h^2)     (dsyrk: n^2 multiply-adds per token and input)
  factor   per block: n^3 / 3 per input   (Cholesky of Hd; n = d, d, d, h)
  init     per module: o i^2 (F = E C) + s^2 l (G or K) + 4/3 s^3 (tridiagonal reduction of the
                       top-r eigensolve) + 2 o i r (input side: F P), s = min(o, i), l = max(o, i)
The forward runs in float32 (compared with sgemm), the Gram matrices, factors and solves in
float64 (compared with dgemm). The tridiagonal reduction is memory-bound (half of it is
matrix-vector products), so init cannot reach the GEMM rate. quant has no GEMM-shaped core (init
also includes the balanced split and the input side's QR, which run on the CPU).
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time


def sh(cmd, **kw):
    print("+", " ".join(cmd) if isinstance(cmd, list) else cmd, flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cloq", default="build-gpu/cmd/cloq")
    ap.add_argument("--gemm-rate", default="build-gpu/bench/cloq-gemm-rate")
    ap.add_argument("--work", default="/tmp/gpu7b")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--bits", default="4")
    ap.add_argument("--rank", default="64")
    ap.add_argument("--quantizer", default="rtn")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    model = os.path.join(a.work, "model")
    t0 = time.time()
    if not os.path.exists(os.path.join(model, "calib.tok")):
        sh([a.cloq, "synth", "--like", "llama2-7b", "--layers", str(a.blocks), "--out", model, "--force",
            "--calib-samples", str(a.samples), "--calib-seqlen", str(a.seqlen)])
    synth_s = time.time() - t0
    rate = sh(shlex.split(a.gemm_rate) + ["--device", "cuda", "--n", "8192", "--reps", "20"]).stdout
    sgemm = float(re.search(r"sgemm_tflops (\S+)", rate).group(1))
    dgemm = float(re.search(r"dgemm_tflops (\S+)", rate).group(1))
    device = re.search(r"device (.*)", rate).group(1)
    store = os.path.join(a.work, "s.h5")
    p = sh([a.cloq, "init", "--model", model, "--calib", os.path.join(model, "calib.tok"),
            "--calib-format", "tokens", "--nsamples", str(a.samples), "--seqlen", str(a.seqlen),
            "--bits", a.bits, "--rank", a.rank, "--quantizer", a.quantizer, "--device", "cuda",
            "--out", store, "--force"])
    out = p.stdout
    print(out)
    calib = float(re.search(r"calibration pass: (\S+) s", out).group(1))
    total = float(re.search(r"wrote \S+ in (\S+) s", out).group(1))
    blocks = []
    for m in re.finditer(r"block \d+/\d+ \(rank \d+\): forward\+gram (\S+) s, (?:eig|factor) (\S+) s, "
                         r"quant (\S+) s, init (\S+) s, write (\S+) s", out):
        blocks.append([float(x) for x in m.groups()])
    nb = len(blocks)
    d, h, S, t = 4096, 11008, a.samples, a.seqlen
    T = S * t
    P = 4 * d * d + 3 * d * h
    f_fwd = 2 * T * P + 4 * S * t * t * d
    f_gram = T * (3 * d * d + h * h)
    f_factor = (3 * d ** 3 + h ** 3) / 3
    r = int(a.rank)
    f_init = 0
    for o, i in ((d, d),) * 4 + ((h, d),) * 2 + ((d, h),):
        sm, lg = min(o, i), max(o, i)
        f_init += o * i * i + sm * sm * lg + 4 / 3 * sm ** 3 + (2 * o * i * r if o > i else 0)
    mean = [sum(b[i] for b in blocks) / nb for i in range(5)]
    ideal_fg = f_fwd / (sgemm * 1e12) + f_gram / (dgemm * 1e12)
    ideal_factor = f_factor / (dgemm * 1e12)
    ideal_init = f_init / (dgemm * 1e12)
    per_block_rest = mean[1] + mean[2] + mean[3] + mean[4]
    extrap = calib / nb * 32 + per_block_rest * 32
    res = {"device": device, "sgemm_tflops": sgemm, "dgemm_tflops": dgemm, "blocks": nb, "samples": S,
           "seqlen": t, "bits": a.bits, "rank": a.rank, "quantizer": a.quantizer,
           "calibration_pass_s": calib, "total_s": total, "per_block_s": dict(zip(
               ["forward+gram", "factor", "quant", "init", "write"], mean)),
           "ideal_forward_gram_s": ideal_fg, "ideal_factor_s": ideal_factor, "ideal_init_s": ideal_init,
           "extrapolated_32_blocks_s": extrap, "synth_s": synth_s}
    rows = [
        ("forward + Gram (per block)", mean[0], f"{f_fwd / 1e12:.0f} TF fp32 + {f_gram / 1e12:.0f} TF fp64",
         f"{ideal_fg:.2f}", f"{ideal_fg / mean[0]:.0%}" if mean[0] else "-"),
        ("Cholesky factors (per block)", mean[1], f"{f_factor / 1e12:.2f} TF fp64", f"{ideal_factor:.3f}",
         f"{ideal_factor / mean[1]:.0%}" if mean[1] else "-"),
        ("quantization (per block)", mean[2], "-", "-", "-"),
        ("LoRA init: top-r solves (GPU), splits and QR (CPU) (per block)", mean[3],
         f"{f_init / 1e12:.2f} TF fp64", f"{ideal_init:.3f}", f"{ideal_init / mean[3]:.0%}" if mean[3] else "-"),
        ("store writes (per block)", mean[4], "-", "-", "-"),
    ]
    md = [f"Device: {device}; measured in the same run: sgemm {sgemm:.1f} TFLOP/s (float32, no TF32), "
          f"dgemm {dgemm:.1f} TFLOP/s (8192^3).", "",
          f"`cloq init --device cuda`, {nb} blocks, {S} x {t} tokens, {a.quantizer} INT{a.bits}, rank {a.rank}:", "",
          "| stage | seconds | nominal work | seconds at the GEMM rate | fraction of GEMM rate |",
          "|---|---|---|---|---|"]
    md += [f"| {r[0]} | {r[1]:.3f} | {r[2]} | {r[3]} | {r[4]} |" for r in rows]
    md += ["", f"Calibration pass (all {nb} blocks, streamed): {calib:.1f} s; whole run: {total:.1f} s. "
           f"Extrapolated to 32 blocks (calibration pass x 32/{nb} + 32 x the per-block init stages): "
           f"**{extrap:.0f} s**."]
    text = "\n".join(md)
    print(text)
    with open(os.path.join(a.out, "gpu7b.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(a.out, "gpu7b.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
