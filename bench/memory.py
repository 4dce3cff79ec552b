"""Benchmark (d): memory on a Llama-2-13B-shaped synthetic model (d 5120, 40 heads, MLP 13824),
2048 calibration tokens. Measured peak RSS per rank at 4 blocks, and the plan's prediction
(`--dry-run`) at 4 and 40 blocks, for full-precision and sequential propagation.
The measured runs use --init zero (RTN + the calibration forward, no Gram matrices or
decompositions): a CLoQ run of one 13B block takes ~15 min on this 2-core machine (the eig of
the 13824 x 13824 down_proj Gram matrix alone ~6 min), so CLoQ's own figures are the plan's.

  python3 bench/memory.py
"""
import re

from common import cloq, synth

m4 = synth("l13b-4", "--like", "llama2-13b", "--layers", "4", "--calib-samples", "1", "--calib-seqlen", "2048")
m40 = synth("l13b-40", "--like", "llama2-13b", "--calib-samples", "1", "--calib-seqlen", "2048")


def args(model, extra):
    return ["init", "--model", model, "--calib", f"{model}/calib.tok", "--calib-format", "tokens", "--nsamples", 1,
            "--bits", 4, "--group-size", 128, "--rank", 64, "--out", f"{model}/../mem.h5", "--force"] + extra


print("| model | ranks | mode | peak memory per rank |")
print("|---|---|---|---|")
for model, nb, np_, weights in ((m4, 4, 1, "resident"), (m4, 4, 2, "resident"), (m4, 4, 2, "lazy"),
                                (m40, 40, 2, "lazy")):
    p = cloq(args(model, ["--init", "zero", "--weights", weights]), np_=np_, threads=2 // np_)
    rss = re.search(r"peak RSS \(MiB\): (.*)", p.stdout).group(1)
    print(f"| 13B-shaped, {nb} blocks | {np_} | measured, --init zero, --weights {weights}, {p.wall:.0f} s | {rss} |",
          flush=True)
for model, nb in ((m4, 4), (m40, 40)):
    for np_ in (1, 2, 4):
        for prop in ("full", "sequential"):
            p = cloq(args(model, ["--propagate", prop, "--dry-run"]), np_=np_, threads=1)
            mem = ", ".join(f"r{r} {g} GiB" for r, g in re.findall(r"rank (\d+): blocks .*? peak memory ~([\d.]+) GiB",
                                                                    p.stdout))
            print(f"| 13B-shaped, {nb} blocks | {np_} | planned (--dry-run), CLoQ, {prop} | {mem} |")
