#!/usr/bin/env python3
"""Quality report: perplexity and KL divergence at init on stories260K over the whole grid
    bits 2/3/4 x rank 8/16/32 x quantizer rtn/gptq/gptq+magr x init zero/svd/loftq/cloq
    x propagation full/sequential x calibration WikiText-2 validation / self-generated text,
evaluated on WikiText-2 test and on held-out self-generated text (perplexity and KL from the
full-precision model on the same tokens).

    python3 bench/quality.py [--jobs 2] [--eval-windows 64]

writes bench/quality.md, bench/quality.png and bench/results/quality.json. Runs are cached in
the work folder (CLOQ_BENCH_DIR, default /tmp/cloq-bench/quality): re-running resumes.
Full propagation uses one `cloq sweep` per (calibration, quantizer, init, bits list); sequential
propagation one `cloq init` per configuration.
"""
import argparse
import concurrent.futures as cf
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CLOQ, ROOT, WORK, sh  # noqa: E402

ASSETS = os.environ.get("CLOQ_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
MODEL = os.path.join(ASSETS, "stories260K-hf")
WIKI_VALID = os.path.join(ASSETS, "wikitext-2", "wiki.valid.tokens")
WIKI_TEST = os.path.join(ASSETS, "wikitext-2", "wiki.test.raw")
BITS, RANKS = (2, 3, 4), (8, 16, 32)
QUANT = {"rtn": [], "gptq": ["--quantizer", "gptq"], "gptq+magr": ["--quantizer", "gptq", "--magr"]}
INITS = ("zero", "svd", "loftq", "cloq")
PROPS = ("full", "sequential")
CALIBS = ("wiki", "self")
GROUP, SEQLEN = 32, 512


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, help="processes at once (1 OpenBLAS thread each)")
    ap.add_argument("--nsamples", type=int, default=128, help="calibration windows of 512 tokens")
    ap.add_argument("--eval-windows", type=int, default=64,
                    help="WikiText-2 test windows of 512 tokens evaluated (0: all 1,580)")
    ap.add_argument("--eval-seqs", type=int, default=64, help="held-out self-generated sequences")
    ap.add_argument("--work", default=os.path.join(WORK, "quality"))
    ap.add_argument("--plot-only", action="store_true",
                    help="redraw bench/quality.png from bench/results/quality.json and joint.json, run nothing")
    a = ap.parse_args()
    if a.plot_only:
        cache = json.load(open(os.path.join(ROOT, "bench", "results", "quality.json")))
        plot_cache(cache)
        print("wrote bench/quality.png")
        return
    os.makedirs(a.work, exist_ok=True)
    env = {"OPENBLAS_NUM_THREADS": "1"}
    t_start = time.time()

    # self-generated data: calibration and held-out evaluation from different seeds
    calib_self = os.path.join(a.work, "self-calib.tok")
    eval_self = os.path.join(a.work, "self-eval.tok")
    for path, n, seed in ((calib_self, a.nsamples, 1), (eval_self, a.eval_seqs, 2)):
        if not os.path.exists(path):
            sh([CLOQ, "sample", "--model", MODEL, "--n", n, "--length", SEQLEN, "--seed", seed,
                "--temperature", 1.0, "--out", path], env)
    calib = {"wiki": ["--calib", WIKI_VALID, "--nsamples", a.nsamples, "--seqlen", SEQLEN],
             "self": ["--calib", calib_self, "--calib-format", "tokens", "--nsamples", a.nsamples]}
    evals = {"wiki": ["--data", WIKI_TEST, "--seqlen", SEQLEN] + (["--limit", a.eval_windows] if a.eval_windows else []),
             "self": ["--data", eval_self, "--data-format", "tokens"]}

    cache_path = os.path.join(a.work, "results.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}

    def save():
        tmp = cache_path + ".tmp"
        json.dump(cache, open(tmp, "w"), indent=1, sort_keys=True)
        os.replace(tmp, cache_path)

    def store_path(c, q, i, p, b, r):
        return os.path.join(a.work, "stores", f"{c}-{q}-{i}-{p}", f"b{b}-r{r}.h5")

    # 1. inits
    tasks = []
    for c in CALIBS:
        for q in QUANT:
            for i in INITS:
                base = ["--model", MODEL, *calib[c], "--group-size", GROUP, "--init", i, *QUANT[q]]
                folder = os.path.join(a.work, "stores", f"{c}-{q}-{i}-full")
                if not all(os.path.exists(store_path(c, q, i, "full", b, r)) for b in BITS for r in RANKS):
                    tasks.append(["sweep", *base, "--bits", ",".join(map(str, BITS)),
                                  "--ranks", ",".join(map(str, RANKS)), "--out", folder])
                for b in BITS:
                    for r in RANKS:
                        out = store_path(c, q, i, "sequential", b, r)
                        if not os.path.exists(out):
                            os.makedirs(os.path.dirname(out), exist_ok=True)
                            tasks.append(["init", *base, "--propagate", "sequential", "--bits", b,
                                          "--rank", r, "--out", out, "--force"])
    print(f"quality: {len(tasks)} init runs to do", flush=True)
    t0 = time.time()
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        for k, _ in enumerate(ex.map(lambda t: sh([CLOQ, *t], env), tasks)):
            if (k + 1) % 20 == 0 or k + 1 == len(tasks):
                print(f"  inits {k + 1}/{len(tasks)}, {time.time() - t0:.0f} s", flush=True)
    t_init = time.time() - t0

    # 2. evaluations (full precision once per set; every store with --kl)
    def parse(out):
        v = {}
        for line in out.splitlines():
            m = re.match(r"^(ppl|ppl_fp|kl) (\S+)$", line)
            if m:
                v[m.group(1)] = float(m.group(2))
        return v

    def ev(key_args):
        key, args = key_args
        return key, parse(sh([CLOQ, "eval", "--model", MODEL, *args], env).stdout)

    jobs = []
    for e in evals:
        if f"fp|{e}" not in cache:
            jobs.append((f"fp|{e}", evals[e]))
    for c in CALIBS:
        for q in QUANT:
            for i in INITS:
                for p in PROPS:
                    for b in BITS:
                        for r in RANKS:
                            for e in evals:
                                key = f"{c}|{q}|{i}|{p}|{b}|{r}|{e}"
                                if key not in cache:
                                    jobs.append((key, ["--store", store_path(c, q, i, p, b, r), *evals[e], "--kl"]))
    print(f"quality: {len(jobs)} evaluations to do", flush=True)
    t0 = time.time()
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        for k, (key, v) in enumerate(ex.map(ev, jobs)):
            cache[key] = v
            if (k + 1) % 50 == 0 or k + 1 == len(jobs):
                save()
                print(f"  evals {k + 1}/{len(jobs)}, {time.time() - t0:.0f} s", flush=True)
    save()
    t_eval = time.time() - t0
    report(cache, a, t_init, t_eval, time.time() - t_start)


def accessors(cache):
    """(full precision ppl per evaluation set, get(calib, quant, init, prop, bits, rank, eval[, key]))."""
    fp = {e: cache[f"fp|{e}"]["ppl"] for e in ("wiki", "self")}

    def get(c, q, i, p, b, r, e, k="ppl"):
        return cache[f"{c}|{q}|{i}|{p}|{b}|{r}|{e}"][k]

    return fp, get


def report(cache, a, t_init, t_eval, t_all):
    fp, get = accessors(cache)
    configs = [(c, q, i, p) for c in CALIBS for q in QUANT for i in INITS for p in PROPS]
    out = []
    w = out.append
    w("# Quality at init: stories260K\n")
    w("Generated by `python3 bench/quality.py` (this file, `bench/quality.png` and the raw numbers "
      "in `bench/results/quality.json`).\n")
    w("## Setup\n")
    w(f"- Model: stories260K (5 blocks, d 64), all 35 linear layers quantized, group size {GROUP}, "
      "asymmetric, damp 0.01, LoftQ 5 alternations, MagR alpha 1e-4 (per group), 200 steps.")
    w(f"- Calibration: {a.nsamples} windows of {SEQLEN} tokens, either from WikiText-2 validation "
      "(`wiki.valid.tokens`, seed 0) or self-generated (`cloq sample --seed 1 --temperature 1`).")
    w(f"- Evaluation: WikiText-2 test (`wiki.test.raw`, GPTQ protocol, the first "
      f"{a.eval_windows or 'all'} windows of {SEQLEN} tokens) and {a.eval_seqs} held-out "
      f"self-generated sequences of {SEQLEN} tokens (`cloq sample --seed 2`). Perplexity and the "
      "mean KL(full precision || quantized) per predicted token (`cloq eval --kl`).")
    w(f"- Full precision: perplexity **{fp['wiki']:.2f}** (WikiText-2 test) and **{fp['self']:.3f}** "
      "(self-generated).")
    w(f"- Wall time: inits {t_init:.0f} s, evaluations {t_eval:.0f} s, total {t_all:.0f} s with "
      f"{a.jobs} processes of 1 thread on this 2-core machine.\n")

    w("## Best configuration per bit-width\n")
    w("Chosen by WikiText-2 test perplexity (and, separately, by KL on held-out self-generated text).\n")
    w("| bits | rank | best by wiki ppl | wiki ppl | x full precision | wiki KL | best by self KL | self ppl | x fp | self KL |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    best = {}
    for b in BITS:
        for r in RANKS:
            cw = min(configs, key=lambda k: get(*k, b, r, "wiki"))
            cs = min(configs, key=lambda k: get(*k, b, r, "self", "kl"))
            best[(b, r)] = (cw, cs)
            w(f"| {b} | {r} | {' / '.join(cw)} | {get(*cw, b, r, 'wiki'):.2f} | "
              f"{get(*cw, b, r, 'wiki') / fp['wiki']:.2f} | {get(*cw, b, r, 'wiki', 'kl'):.4f} | "
              f"{' / '.join(cs)} | {get(*cs, b, r, 'self'):.3f} | {get(*cs, b, r, 'self') / fp['self']:.2f} | "
              f"{get(*cs, b, r, 'self', 'kl'):.4f} |")
    w("\n(configuration = calibration / quantizer / init / propagation)\n")

    # how often each init wins, and the INT2 rank-16 aim
    w("## Which init wins\n")
    w("For each (calibration, quantizer, propagation, bits, rank), the init with the lowest WikiText-2 "
      "perplexity and the one with the lowest KL on self-generated text:\n")
    w("| init | wins (wiki ppl) | wins (self KL) |")
    w("|---|---|---|")
    wins = {i: [0, 0] for i in INITS}
    ncell = 0
    for c in CALIBS:
        for q in QUANT:
            for p in PROPS:
                for b in BITS:
                    for r in RANKS:
                        ncell += 1
                        wins[min(INITS, key=lambda i: get(c, q, i, p, b, r, "wiki"))][0] += 1
                        wins[min(INITS, key=lambda i: get(c, q, i, p, b, r, "self", "kl"))][1] += 1
    for i in INITS:
        w(f"| {i} | {wins[i][0]} of {ncell} | {wins[i][1]} of {ncell} |")
    cw = best[(2, 16)][0]
    ratio = get(*cw, 2, 16, "wiki") / fp["wiki"]
    w(f"\n**Aim (INT2, rank 16, perplexity within 2x of full precision):** best is {' / '.join(cw)} at "
      f"{get(*cw, 2, 16, 'wiki'):.2f} = {ratio:.2f}x full precision on WikiText-2 test: "
      f"{'met' if ratio <= 2 else 'not met'}.\n")

    w("## All configurations\n")
    w("Perplexity on WikiText-2 test / KL on it / perplexity on self-generated held-out text / KL on it, "
      "at ranks 8, 16, 32.\n")
    for b in BITS:
        w(f"### {b} bits\n")
        w("| calib | quantizer | init | propagation | " + " | ".join(
            f"r{r} wiki ppl | r{r} wiki KL | r{r} self ppl | r{r} self KL" for r in RANKS) + " |")
        w("|---|---|---|---|" + "---|" * (4 * len(RANKS)))
        for k in configs:
            cells = []
            for r in RANKS:
                cells += [f"{get(*k, b, r, 'wiki'):.2f}", f"{get(*k, b, r, 'wiki', 'kl'):.4f}",
                          f"{get(*k, b, r, 'self'):.3f}", f"{get(*k, b, r, 'self', 'kl'):.4f}"]
            w("| " + " | ".join(k) + " | " + " | ".join(cells) + " |")
        w("")
    md = os.path.join(ROOT, "bench", "quality.md")
    # keep the sections that bench/smollm2.py and bench/joint.py maintain in the same file
    old = open(md).read() if os.path.exists(md) else ""
    marks = [old.index(m) for m in ("<!-- smollm2:begin -->", "<!-- joint:begin -->",
                                    "<!-- smollm2-joint:begin -->") if m in old]
    keep = old[min(marks):] if marks else ""
    open(md, "w").write("\n".join(out) + "\n" + ("\n" + keep if keep else ""))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    json.dump(cache, open(os.path.join(ROOT, "bench", "results", "quality.json"), "w"), indent=1, sort_keys=True)
    plot_cache(cache)
    print(f"wrote {md} and bench/quality.png")


# issue 17's rows (bench/joint.py: self-generated calibration, its own evaluation of full
# precision), drawn in the plot's third row as perplexity / full precision on held-out text
JOINT_ROWS = {("rtn", "cloq1"): ("tab:red", ":"), ("comq", "cloq1"): ("tab:purple", "-"),
              ("comq", "cloq3"): ("tab:green", "-"), ("comq", "cloq10"): ("k", "-"),
              ("gptq", "cloq10"): ("tab:brown", "--"), ("rtn", "quailora"): ("tab:cyan", ":")}


def plot_cache(cache):
    fp, get = accessors(cache)
    path = os.path.join(ROOT, "bench", "results", "joint.json")
    plot(fp, get, json.load(open(path)) if os.path.exists(path) else None)


def plot(fp, get, joint=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = 3 if joint else 2
    fig, ax = plt.subplots(rows, 3, figsize=(13, 3.75 * rows + 0.5), sharex=True)
    colors = {"zero": "tab:gray", "svd": "tab:blue", "loftq": "tab:orange", "cloq": "tab:red"}
    styles = {"rtn": ":", "gptq": "--", "gptq+magr": "-"}
    for j, b in enumerate(BITS):
        for i in INITS:
            for q in QUANT:
                # best over calibration source and propagation, for each rank
                y = [min(get(c, q, i, p, b, r, "wiki") for c in CALIBS for p in PROPS) for r in RANKS]
                k = [min(get(c, q, i, p, b, r, "self", "kl") for c in CALIBS for p in PROPS) for r in RANKS]
                lab = f"{i} / {q}" if j == 0 else None
                ax[0, j].plot(RANKS, y, styles[q], color=colors[i], marker="o", ms=3, label=lab)
                ax[1, j].plot(RANKS, k, styles[q], color=colors[i], marker="o", ms=3)
        ax[0, j].axhline(fp["wiki"], color="k", lw=0.8)
        ax[0, j].axhline(2 * fp["wiki"], color="k", lw=0.8, ls="--")
        ax[0, j].set_title(f"{b} bits")
        ax[0, j].set_yscale("log")
        ax[1, j].set_yscale("log")
        ax[1, j].set_xlabel("LoRA rank")
        ax[1, j].set_xticks(RANKS)
        if not joint:
            continue
        if b not in (2, 3):  # issue 17's grid is INT2/INT3
            ax[2, j].text(0.5, 0.5, "not in issue 17's grid (INT2/INT3)", ha="center", va="center",
                          transform=ax[2, j].transAxes, fontsize=9)
            ax[2, j].set_yticks([])
            ax[2, j].set_xlabel("LoRA rank")
            continue
        for (q, t), (color, ls) in JOINT_ROWS.items():
            for p, mk in (("full", "o"), ("sequential", "s")):
                k = f"{q}/{t}/{p}/b{b}"
                if not all(f"{k}/r{r}" in joint for r in RANKS):
                    continue
                y = [joint[f"{k}/r{r}"]["self"] / joint["fp/self"] for r in RANKS]
                lab = f"issue 17: {q} / {t} / {p}" if j == 0 else None
                ax[2, j].plot(RANKS, y, ls, color=color, marker=mk, ms=3, lw=1 if p == "full" else 0.6, label=lab)
        ax[2, j].axhline(2, color="k", lw=0.8, ls="--")
        ax[2, j].set_yscale("log")
        ax[2, j].set_xlabel("LoRA rank")
    ax[0, 0].set_ylabel("WikiText-2 test perplexity\n(solid: fp, dashed: 2x fp)")
    ax[1, 0].set_ylabel("KL(fp || quantized), self-generated")
    if joint:
        ax[2, 0].set_ylabel("bench/joint.py: held-out self-gen.\nppl / fp (dashed: 2x)")
    fig.legend(loc="lower center", ncol=5, fontsize=7)
    fig.suptitle("stories260K at init: rows 1-2 best over calibration source and propagation (bench/quality.py); "
                 "row 3 issue 17's configurations (bench/joint.py)" if joint else
                 "stories260K at init: best over calibration source and propagation", fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if joint else 0.07, 1, 0.97))
    fig.savefig(os.path.join(ROOT, "bench", "quality.png"), dpi=110)


if __name__ == "__main__":
    main()
