#!/usr/bin/env python3
"""The paper's claim, end to end (issue 18): fine-tune cloq's exports with PEFT and compare the
inits after training.

    python3 bench/finetune.py stories     # stories260K: 72 runs, ~60 min on this 2-core machine
    python3 bench/finetune.py smollm2     # SmolLM2-135M: INT2/INT3 x 5 inits, 40 runs of 18 steps, ~90 min here
    python3 bench/finetune.py smollm2 --device cuda --bits 2,3 --steps 1000 --seqlen 512 --batch 16 \
        --inits zero,svd,loftq,cloq,joint --lrs 1e-4,3e-4,1e-3 --jobs 1 --eval-windows 64   # on a GPU

For each bits setting and init, one `cloq init` (stories260K) or `cloq sweep` (SmolLM2) and one
`cloq export` give DIR/base (the dequantized Q, float32, frozen) and DIR/adapter (the LoRA init,
trainable). bench/finetune_torch.py (in bench/peers/.venv) then trains only the adapters with
PEFT + AdamW + a plain torch loop, the same hyperparameters for every init, for every
learning rate of the sweep and every seed, and measures held-out perplexity before, during and
after training. The best learning rate per (bits, init) is picked on a selection set disjoint
from both the training and the reported evaluation data (mean over seeds).

Inits (rank 16 for stories260K, 64 for SmolLM2): zero (QLoRA: B = 0 on the RTN base), svd, loftq
(5 alternations), cloq (the balanced split of today's store format), cloq-old (the same product,
split as store format 3 did: re-split in bench/finetune_torch.py from the calibration Gram
matrices) and joint (issue 17's best: --quantizer comq --cloq-iters 10). The learning-rate sweep
runs with the first seed; the other seeds run at the rate it picks.

SmolLM2's defaults are the issue's grid (INT2/INT3, rank 64, zero / svd / loftq / cloq / joint)
sized so that it finishes in about 90 minutes on this 2-core machine, where one step of 8 x 128
tokens takes ~11 s per core and one evaluation of 16 x 128 tokens ~15 s: 18 steps, evaluation at
steps 0, 9 and 18, learning rates 1e-3 and 3e-3 (3e-4 lost to 1e-3 for every init at INT2 in a
25-step trial), 2 runs at once of 1 thread each: 40 runs. cloq-old is left out there (its re-split
needs the calibration Gram matrices from torch hooks). The paper's scale of training is the GPU
command above.

stories260K: calibration on 128 self-generated windows of 512 (`cloq sample --seed 1`, as
bench/joint.py), training on 1024 more (`--seed 3`), selection on 32 (`--seed 4`), evaluation on
64 held-out draws (`--seed 2`). SmolLM2-135M: bench/smollm2.py's store protocol (calibration 32 x
512 of WikiText-2 validation, group 64); training on the windows of WikiText-2 validation
(wiki.valid.tokens) but its last 16, which are the selection set; evaluation on the first windows
of WikiText-2 test (the GPTQ evaluation string).

Runs are cached under $CLOQ_BENCH_DIR/finetune/MODEL (one JSON per run): an interrupted grid
resumes. Writes MODEL's section of bench/finetune.md, bench/finetune-MODEL.png and
bench/results/finetune-MODEL.json.
"""
import argparse
import concurrent.futures as cf
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CLOQ, ROOT, WORK, cloq, sh, smollm2_gguf  # noqa: E402

ASSETS = os.environ.get("CLOQ_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
VENV_PY = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
TORCH = os.path.join(ROOT, "bench", "finetune_torch.py")
INITS = {"zero": ["--init", "zero"], "svd": ["--init", "svd"], "loftq": ["--init", "loftq"],
         "cloq": [], "cloq-old": [], "joint": ["--quantizer", "comq", "--cloq-iters", "10"]}
PRESETS = {
    "stories": dict(bits=[2, 3], rank=16, group=32, inits=list(INITS), lrs=[3e-4, 1e-3, 3e-3, 1e-2], seeds=[0, 1, 2],
                    steps=200, batch=8, seqlen=256, eval_every=50, jobs=2, threads=1, np=1),
    "smollm2": dict(bits=[2, 3], rank=64, group=64, inits=["zero", "svd", "loftq", "cloq", "joint"],
                    lrs=[1e-3, 3e-3], seeds=[0, 1, 2], steps=18, batch=8, seqlen=128, eval_every=9, jobs=2,
                    threads=1, np=2,
                    eval_windows=16),
}
DAMP = 0.01  # cloq init's default --damp


def tokens_npy(tok, npy, seqlen=None):
    """A cloq token file (one sequence per line) as an N x T int32 .npy: its lines as they are, or
    with seqlen, the one line cut into consecutive windows of seqlen (the tail dropped)."""
    if os.path.exists(npy):
        return npy
    rows = [np.array(l.split(), np.int32) for l in open(tok) if l.strip()]
    if seqlen:
        ids = np.concatenate(rows)
        n = len(ids) // seqlen
        arr = ids[:n * seqlen].reshape(n, seqlen)
    else:
        arr = np.stack(rows)
    np.save(npy + ".tmp.npy", arr)
    os.replace(npy + ".tmp.npy", npy)
    return npy


def cloq_ppl(args, np_=1):
    p = cloq(["eval", *args], np_, threads=1, env={"CLOQ_DEVICE": "cpu"})
    return float(re.search(r"ppl ([\d.]+)", p.stdout).group(1))


def prepare_stories(a, work):
    model = os.path.join(ASSETS, "stories260K-hf")
    env = {"OPENBLAS_NUM_THREADS": "1", "CLOQ_DEVICE": "cpu"}
    data = {}
    for name, n, seed in (("calib", 128, 1), ("train", 1024, 3), ("select", 32, 4), ("eval", 64, 2)):
        tok = os.path.join(work, f"{name}.tok")
        if not os.path.exists(tok):
            sh([CLOQ, "sample", "--model", model, "--n", n, "--length", 512, "--seed", seed,
                "--temperature", 1.0, "--out", tok], env)
        data[name] = (tok, tokens_npy(tok, os.path.join(work, f"{name}.npy")))
    # training windows of seqlen cut from the 512-token draws (whole draws at 512)
    data["train"] = (None, tokens_npy(data["train"][0], os.path.join(work, f"train-{a.seqlen}.npy"), a.seqlen))
    exports, meta = {}, {"fp_eval": cloq_ppl(["--model", model, "--data", data["eval"][0], "--data-format", "tokens"])}
    for b in a.bits:
        for init in a.inits:
            src = "cloq" if init == "cloq-old" else init
            ex = os.path.join(work, f"b{b}-{src}")
            if not os.path.exists(os.path.join(ex, "cloq_export.json")):
                t = time.time()
                sh([CLOQ, "init", "--model", model, "--calib", data["calib"][0], "--calib-format", "tokens",
                    "--nsamples", 128, "--group-size", a.group, "--bits", b, "--rank", a.rank, *INITS[src],
                    "--out", ex + ".h5", "--force", "--export", ex], env)
                meta[f"init_s/b{b}-{src}"] = time.time() - t
            meta[f"cloq_eval/b{b}-{src}"] = cloq_ppl(["--model", model, "--store", ex + ".h5", "--data", data["eval"][0],
                                                      "--data-format", "tokens"])
            exports[(b, init)] = ex
    extra = {"old_split": {"calib": data["calib"][1], "model": model, "damp": DAMP}}
    return data, exports, meta, extra


def prepare_smollm2(a, work):
    gguf = smollm2_gguf()
    wiki = os.path.join(ASSETS, "wikitext-2")
    env = {"OPENBLAS_NUM_THREADS": "1", "CLOQ_DEVICE": "cpu"}
    data = {}
    for name, txt in (("valid", "wiki.valid.tokens"), ("test", "wikitext-2-raw-v1.test.eval_string.txt")):
        tok = os.path.join(work, f"{name}.tok")
        if not os.path.exists(tok):
            sh([CLOQ, "tokenize", "--model", gguf, "--text", os.path.join(wiki, txt), "--whole", "--out", tok], env)
        data[name] = (tok, tokens_npy(tok, os.path.join(work, f"{name}-{a.seqlen}.npy"), a.seqlen))
    valid = np.load(data["valid"][1])
    test = np.load(data["test"][1])
    for name, arr in (("train", valid[:-16]), ("select", valid[-16:]), ("eval", test[:a.eval_windows])):
        npy = os.path.join(work, f"{name}-{a.seqlen}-{a.eval_windows}.npy")
        if not os.path.exists(npy):
            np.save(npy, arr)
        data[name] = (None, npy)
    fpdir = os.path.join(work, "fp")
    if not os.path.exists(os.path.join(fpdir, "cloq_export.json")):
        sh([CLOQ, "export", "--model", gguf, "--out", fpdir, "--format", "safetensors", "--force"], env)
    meta = {}
    calib = os.path.join(wiki, "wiki.valid.tokens")
    base = ["--model", gguf, "--calib", calib, "--nsamples", 32, "--seqlen", 512, "--seed", 0,
            "--group-size", a.group]
    exports = {}
    for init in a.inits:
        src = "cloq" if init == "cloq-old" else init
        out = os.path.join(work, f"sweep-{src}")
        if not all(os.path.exists(os.path.join(out, f"b{b}-r{a.rank}.h5")) for b in a.bits):
            p = cloq(["sweep", *base, *INITS[src], "--bits", ",".join(map(str, a.bits)), "--ranks", a.rank,
                      "--out", out], a.np, env=env)
            meta[f"sweep_s/{src}"] = p.wall
            print(f"sweep {src}: {p.wall:.0f} s", flush=True)
        for b in a.bits:
            ex = os.path.join(work, f"b{b}-{src}")
            if not os.path.exists(os.path.join(ex, "cloq_export.json")):
                sh([CLOQ, "export", "--store", os.path.join(out, f"b{b}-r{a.rank}.h5"), "--out", ex, "--force"], env)
            exports[(b, init)] = ex
    fpm = os.path.join(fpdir, "base")
    extra = {"old_split": {"calib": data["select"][1], "model": fpm, "damp": DAMP}, "fp": fpm}
    return data, exports, meta, extra


def fp_ppl(model_dir, npy, threads):
    """Full-precision perplexity of the evaluation set, in torch (SmolLM2: the converted model)."""
    code = ("import sys,json,numpy as np,torch,transformers; sys.path.insert(0, %r); import finetune_torch as f; "
            "torch.set_num_threads(%d); m = transformers.AutoModelForCausalLM.from_pretrained(%r, dtype=torch.float32); "
            "print(f.ppl(m, torch.from_numpy(np.load(%r).astype(np.int64))))"
            % (os.path.dirname(TORCH), threads, model_dir, npy))
    p = subprocess.run([VENV_PY, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1",
                                TRANSFORMERS_VERBOSITY="error"))
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    return float(p.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=list(PRESETS))
    ap.add_argument("--device", default="cpu")
    for k, v in PRESETS["stories"].items():
        typ = type(v[0]) if isinstance(v, list) else type(v)
        ap.add_argument("--" + k.replace("_", "-"), type=(lambda s, typ=typ: [typ(x) for x in s.split(",")])
                        if isinstance(v, list) else typ, default=None)
    ap.add_argument("--eval-windows", type=int, default=None)
    ap.add_argument("--work", default=None)
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--prepare-only", action="store_true", help="stores, exports and data only")
    a = ap.parse_args()
    for k, v in PRESETS[a.model].items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    if a.model == "stories":
        a.eval_windows = 0
    work = a.work or os.path.join(WORK, "finetune", a.model)
    os.makedirs(os.path.join(work, "runs"), exist_ok=True)
    if not os.path.exists(VENV_PY):
        sh(["bash", os.path.join(ROOT, "bench", "peers", "install.sh")])
    t_prep = time.time()
    data, exports, meta, extra = (prepare_stories if a.model == "stories" else prepare_smollm2)(a, work)
    meta_path = os.path.join(work, "meta.json")
    old = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    old.update(meta)
    meta = old
    if "fp_eval" not in meta:
        meta["fp_eval"] = fp_ppl(extra["fp"], data["eval"][1], a.threads * a.jobs)
    meta["prepare_s_last"] = time.time() - t_prep
    json.dump(meta, open(meta_path, "w"), indent=1, sort_keys=True)
    if a.prepare_only:
        return
    tag = f"s{a.steps}-b{a.batch}-t{a.seqlen}-{a.device.split(':')[0]}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    if a.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""

    def job(b, init, lr, seed):
        key = f"b{b}-{init}-lr{lr:g}-seed{seed}-{tag}"
        args = {"export": exports[(b, init)], "train": data["train"][1], "eval": {"eval": data["eval"][1]},
                "final_eval": {"select": data["select"][1]}, "lr": lr, "steps": a.steps, "batch": a.batch,
                "seed": seed, "eval_every": a.eval_every, "threads": a.threads, "device": a.device,
                "out": os.path.join(work, "runs", key + ".json")}
        if init == "cloq-old":
            args["old_split"] = extra["old_split"]
        return key, args

    def one(j):
        key, args = j
        if not os.path.exists(args["out"]):
            p = subprocess.run([VENV_PY, TORCH, json.dumps(args)], capture_output=True, text=True, env=env)
            if p.returncode:
                raise SystemExit(f"{key} failed:\n{p.stderr[-3000:]}")
            r = json.load(open(args["out"]))
            print(f"{key}: {r['curve']['evals']['eval'][0][1]:.3f} -> {r['curve']['evals']['eval'][-1][1]:.3f} "
                  f"({r['s']:.0f} s)", flush=True)
        return key, json.load(open(args["out"]))

    def go(jobs):
        print(f"{len(jobs)} runs, {sum(not os.path.exists(j[1]['out']) for j in jobs)} to do", flush=True)
        with cf.ThreadPoolExecutor(a.jobs) as ex:
            return dict(ex.map(one, jobs))

    # phase 1: the learning-rate sweep with the first seed; phase 2: the other seeds at the best
    runs = go([job(b, i, lr, a.seeds[0]) for b in a.bits for i in a.inits for lr in a.lrs])
    best = {(b, i): min(a.lrs, key=lambda lr: runs[job(b, i, lr, a.seeds[0])[0]]["curve"]["evals"]["select"][-1][1])
            for b in a.bits for i in a.inits}
    runs.update(go([job(b, i, best[b, i], s) for b in a.bits for i in a.inits for s in a.seeds[1:]]))
    if not a.no_report:
        report(a, runs, meta, tag, best)


def summarize(a, runs, tag, best):
    """{(bits, init): {"lr": best, "sweep": {lr: seed 0's eval ppl after}, stats over the seeds at
    the best lr: before, after (per seed), curves}}."""
    out = {}
    for b in a.bits:
        for init in a.inits:
            lr = best[b, init]
            rs = [runs[f"b{b}-{init}-lr{lr:g}-seed{s}-{tag}"] for s in a.seeds]
            ev = [r["curve"]["evals"]["eval"] for r in rs]
            out[(b, init)] = {
                "lr": lr,
                "sweep": {x: runs[f"b{b}-{init}-lr{x:g}-seed{a.seeds[0]}-{tag}"]["curve"]["evals"]["eval"][-1][1]
                          for x in a.lrs},
                "sweep_select": {x: runs[f"b{b}-{init}-lr{x:g}-seed{a.seeds[0]}-{tag}"]["curve"]["evals"]["select"][-1][1]
                                 for x in a.lrs},
                "before": ev[0][0][1],
                "after": [e[-1][1] for e in ev],
                "steps": [s for s, _ in ev[0]],
                "eval_curve": [statistics.mean(e[i][1] for e in ev) for i in range(len(ev[0]))],
                "eval_lo": [min(e[i][1] for e in ev) for i in range(len(ev[0]))],
                "eval_hi": [max(e[i][1] for e in ev) for i in range(len(ev[0]))],
                "loss": np.mean([r["curve"]["loss"] for r in rs], axis=0).tolist(),
                "s": statistics.mean(r["s"] for r in rs),
                "device": rs[0].get("device", "cpu"),
                "old_split_q0_norms": rs[0].get("old_split_q0_norms"),
            }
    return out


def report(a, runs, meta, tag, best):
    S = summarize(a, runs, tag, best)
    fp = meta["fp_eval"]
    name = {"stories": "stories260K", "smollm2": "SmolLM2-135M"}[a.model]
    begin, end = f"<!-- finetune-{a.model}:begin -->", f"<!-- finetune-{a.model}:end -->"
    dev = sorted({v["device"] for v in S.values()})
    cmd = f"python3 bench/finetune.py {a.model}" + ("" if a.device == "cpu" else f" --device {a.device}")
    for k in ("steps", "batch", "seqlen", "lrs", "seeds"):
        if getattr(a, k) != PRESETS[a.model][k]:
            v = getattr(a, k)
            cmd += f" --{k} " + (",".join(f"{x:g}" for x in v) if isinstance(v, list) else str(v))
    o = [begin, f"## {name}", "",
         f"Command: `{cmd}` (ran on: {', '.join(dev)}; raw numbers in `bench/results/finetune-{a.model}.json`, "
         f"plot `bench/finetune-{a.model}.png`). INT{'/INT'.join(map(str, a.bits))}, group {a.group}, "
         f"rank {a.rank}, lora_alpha = rank. Training: {a.steps} steps of {a.batch} x {a.seqlen} tokens, "
         f"AdamW (0.9, 0.999, weight decay 0), 5% linear warm-up then cosine to 0, gradient norm clipped at 1, "
         f"learning rates {', '.join(f'{x:g}' for x in a.lrs)} swept with seed {a.seeds[0]} (the best per init and "
         f"bits picked on the selection set), then seeds {', '.join(map(str, a.seeds[1:]))} (data order) at "
         f"that rate; 'after' is over all {len(a.seeds)} seeds at the best rate, the 'lr X' columns are seed "
         f"{a.seeds[0]}'s. Full precision: eval ppl "
         f"**{fp:.3f}**.", ""]
    for b in a.bits:
        o += [f"### INT{b}", "",
              "| init | best lr | eval ppl before | after: mean | min | max | x fp after | "
              + " | ".join(f"after, lr {lr:g}" for lr in a.lrs) + " | s / run |",
              "|---|---|---|---|---|---|---|" + "---|" * len(a.lrs) + "---|"]
        for init in a.inits:
            v = S[(b, init)]
            w = v
            o.append(f"| {init} | {v['lr']:g} | {w['before']:.3f} | **{statistics.mean(w['after']):.3f}** | "
                     f"{min(w['after']):.3f} | {max(w['after']):.3f} | {statistics.mean(w['after']) / fp:.2f} | "
                     + " | ".join(f"{v['sweep'][lr]:.3f}" for lr in a.lrs)
                     + f" | {w['s']:.0f} |")
        o.append("")
        o += verdict(a, S, b)
    if "cloq-old" in a.inits:
        n = S[(a.bits[0], "cloq-old")]["old_split_q0_norms"]
        if n:
            o += [f"The old split's block 0 q_proj factors, as re-split: |A| = {n[0]:.3g}, |B| = {n[1]:.3g} "
                  "(the balanced split's are equal).", ""]
    o.append(end)
    md = os.path.join(ROOT, "bench", "finetune.md")
    text = open(md).read() if os.path.exists(md) else HEADER
    if begin in text:  # in place: the hand-written conclusions around the sections stay
        text = text[:text.index(begin)] + "\n".join(o) + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(o) + "\n"
    open(md, "w").write(text)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    json.dump({"meta": meta, "summary": {f"b{b}-{i}": v for (b, i), v in S.items()}},
              open(os.path.join(ROOT, "bench", "results", f"finetune-{a.model}.json"), "w"), indent=1)
    plot(a, S, fp, name)
    print(f"wrote {md} ({a.model} section) and bench/finetune-{a.model}.png")


def verdict(a, S, b):
    """Sentences: the ordering after training with the seeds' spread, and how much of the gap at
    step 0 survives (in mean NLL, log ppl, against cloq)."""
    import math

    def best(init):
        v = S[(b, init)]
        return v
    lines = []
    order = sorted(a.inits, key=lambda i: statistics.mean(best(i)["after"]))
    lines.append(f"Ordering after training (mean over seeds, best first): {' < '.join(order)}. "
                 f"Before: {' < '.join(sorted(a.inits, key=lambda i: best(i)['before']))}.")
    pairs = [(x, y) for x, y in (("cloq", "loftq"), ("loftq", "zero")) if x in a.inits and y in a.inits]
    claims = []
    for x, y in pairs:
        bx, by = best(x)["after"], best(y)["after"]
        if max(bx) < min(by):
            claims.append(f"{x} < {y} holds for every seed (max {max(bx):.3f} < min {min(by):.3f})")
        elif statistics.mean(bx) < statistics.mean(by):
            claims.append(f"{x} < {y} holds on the mean ({statistics.mean(bx):.3f} < {statistics.mean(by):.3f}) "
                          f"but the seeds overlap ({x} max {max(bx):.3f}, {y} min {min(by):.3f})")
        else:
            claims.append(f"**{x} < {y} does not hold** ({statistics.mean(bx):.3f} against {statistics.mean(by):.3f})")
    if claims:
        lines.append("The paper's ordering cloq < loftq < zero: " + "; ".join(claims) + ".")
    if "cloq" not in a.inits:
        return [x for l in lines for x in (l, "")]
    if "joint" in a.inits:
        j = statistics.mean(best("joint")["after"])
        c = statistics.mean(best("cloq")["after"])
        lines.append(f"The joint init (comq + 10 alternations) ends at {j:.3f} against cloq's {c:.3f} "
                     f"({'better' if j < c else 'worse'}; it started at {best('joint')['before']:.3f} against "
                     f"{best('cloq')['before']:.3f}).")
    if "cloq-old" in a.inits:
        lines.append(f"The old split of the same product ends at {statistics.mean(best('cloq-old')['after']):.3f} "
                     f"(min {min(best('cloq-old')['after']):.3f}, max {max(best('cloq-old')['after']):.3f}) "
                     f"against the balanced split's {statistics.mean(best('cloq')['after']):.3f}.")
    surv = []
    for i in a.inits:
        if i in ("cloq", "cloq-old"):
            continue
        g0 = math.log(best(i)["before"]) - math.log(best("cloq")["before"])
        g1 = math.log(statistics.mean(best(i)["after"])) - math.log(statistics.mean(best("cloq")["after"]))
        surv.append(f"{i} {g0:+.3f} -> {g1:+.3f}" + (f" ({100 * g1 / g0:.0f}%)" if abs(g0) > 1e-9 else ""))
    lines.append("Gap to cloq in log perplexity, before -> after training (the share that survives): "
                 + "; ".join(surv) + ".")
    return [x for l in lines for x in (l, "")]


def plot(a, S, fp, name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(len(a.bits), 2, figsize=(13, 4.5 * len(a.bits)), squeeze=False)
    for i, b in enumerate(a.bits):
        for init in a.inits:
            v = S[(b, init)]
            w = v
            k = max(1, a.steps // 30)
            loss = np.convolve(w["loss"], np.ones(k) / k, mode="valid")
            ax[i][0].plot(np.arange(len(loss)) + k, loss, label=f"{init} (lr {v['lr']:g})", lw=1)
            ax[i][1].plot(w["steps"], w["eval_curve"], marker="o", ms=2, label=init, lw=1)
            ax[i][1].fill_between(w["steps"], w["eval_lo"], w["eval_hi"], alpha=0.15)
        ax[i][0].set_title(f"{name} INT{b} r{a.rank}: training loss (mean of seeds, moving average {k})")
        ax[i][1].set_title(f"INT{b}: held-out eval ppl (mean, min-max of seeds); fp {fp:.2f}")
        ax[i][1].axhline(fp, color="k", lw=0.8, ls=":")
        ax[i][1].set_yscale("log")
        for x in ax[i]:
            x.set_xlabel("step")
            x.grid(alpha=0.3)
            x.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "bench", f"finetune-{a.model}.png"), dpi=100)


HEADER = """# Fine-tuning cloq's exports (issue 18)

Generated by `bench/finetune.py` (one section per model; see its docstring for the protocol).
The base is the dequantized Q, frozen; only the LoRA adapters train, as QLoRA/LoftQ/CLoQ users
train. Every init gets the same data, steps, schedule and learning rates; the best learning rate
per init is picked on a selection set that is neither trained on nor reported.
"""


if __name__ == "__main__":
    main()
