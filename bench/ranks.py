"""Benchmark (b): `cloq init` on the synthetic 8-block model at 1 rank (2 OpenBLAS threads) and at
2 ranks (1 thread each: the same 2 cores), full-precision propagation. Prints a Markdown table.

  python3 bench/ranks.py
"""
from common import cloq, stages, synth

model = synth("m8", "--dim", "768", "--heads", "12", "--mlp", "2048", "--layers", "8", "--vocab", "4096",
              "--max-pos", "1024", "--calib-samples", "32", "--calib-seqlen", "512", "--seed", "1")
args = ["init", "--model", model, "--calib", f"{model}/calib.tok", "--calib-format", "tokens", "--nsamples", 32,
        "--bits", 4, "--group-size", 128, "--rank", 16, "--force"]
print("| ranks x threads | wall s | calibration pass s | init phase s | peak RSS (MiB) |")
print("|---|---|---|---|---|")
res = {}
for np_, th in ((1, 2), (2, 1)):
    p = cloq(args + ["--out", f"{model}/../ranks{np_}.h5"], np_=np_, threads=th)
    st = stages(p.stdout)
    res[np_] = st
    print(f"| {np_} x {th} | {st['total']:.1f} | {st['calibration pass']:.1f} | "
          f"{st['total'] - st['calibration pass']:.1f} | {st['rss']} |")
print(f"\nspeed-up 2 ranks vs 1: {res[1]['total'] / res[2]['total']:.2f}x (same run, same 2 cores)")
