"""Benchmark (i), issue 14: the projection form against the previous binary (the eig(H) + SVD
form), side by side in one run. The previous commit is built by this script into its own folder
(`git archive` of --prev, meson -Dcuda=disabled, `ninja cmd/cloq`, or driver/cloq before the move) under CLOQ_BENCH_DIR.

  python3 bench/proj.py [--prev REF] [--parts a,b,c,d,e,f]

Parts (each prints a Markdown table; the outputs of the runs go to bench/results/proj-*.txt, the
figures to bench/results/proj.json, updated part by part):
  a  one synthetic block, d 2048, MLP 5632, 16 heads, 1 x 2048 tokens, rank 64, 1 OpenBLAS thread:
     stages old and new, and NumPy's eigh of a 2048 x 2048 matrix on the same core, same run
  b  one Llama-2-13B-shaped block (`cloq synth --like llama2-13b --layers 1`), 1 x 2048 tokens,
     rank 64, 2 threads: stages and peak RSS, old and new (the old one takes ~14 min here)
  c  the PyTorch CLoQ peer (bench/peers/torch_cloq.py, needs bench/peers/install.sh) on the
     8-block d-768 model of bench/peers.py, 2 threads, against cloq old and new at 1 rank
  d  the 3 bits x 4 ranks sweep of bench/sweep.py (d 512, MLP 1376, 8 blocks), old and new; for the
     new binary also one configuration and 12 separate runs (and their stores against the sweep's)
  e  the 8-block d-768 model, 2 ranks x 1 thread against 1 rank x 1 thread, old and new
  f  --dry-run plans of 13B-shaped models (1, 4 and 40 blocks) with the new binary; the 1-block
     plan is set against part b's measured peak RSS
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

from common import CLOQ, MPIRUN, ROOT, WORK, sh, synth

RESULTS = os.path.join(ROOT, "bench", "results")
STAGE = re.compile(r"block (\d+)/\d+ \(rank (\d+)\): forward\+gram ([\d.]+) s, (?:eig|factor) ([\d.]+) s, "
                   r"quant ([\d.]+) s, init ([\d.]+) s, write ([\d.]+) s")
KEYS = ["forward+gram", "eig / factor", "quant", "init", "write"]


def build_prev(ref):
    sha = sh(["git", "-C", ROOT, "rev-parse", "--short", ref]).stdout.strip()
    d = os.path.join(WORK, f"prev-{sha}")
    # the binary is build/cmd/cloq since the commands moved to cmd/ (build/driver/cloq before)
    exes = [os.path.join(d, "build", sub, "cloq") for sub in ("cmd", "driver")]
    if not any(os.path.exists(e) for e in exes):
        os.makedirs(d, exist_ok=True)
        subprocess.run(f"git -C {ROOT} archive {sha} | tar -x -C {d}", shell=True, check=True)
        sh(["meson", "setup", os.path.join(d, "build"), d, "-Dcuda=disabled", "-Dtests=false"])
        sub = "cmd" if os.path.isdir(os.path.join(d, "cmd")) else "driver"
        sh(["ninja", "-C", os.path.join(d, "build"), f"{sub}/cloq"])
    return sha, next(e for e in exes if os.path.exists(e))


def run(exe, args, np_=1, threads=1, tag=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    cmd = ([exe] if np_ == 1 else [MPIRUN, "-n", str(np_), exe]) + [str(a) for a in args]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    if tag:
        with open(os.path.join(RESULTS, f"proj-{tag}.txt"), "w") as f:
            f.write(f"$ OPENBLAS_NUM_THREADS={threads} {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    st = dict.fromkeys(KEYS, 0.0)
    for m in STAGE.finditer(p.stdout):
        for k, v in zip(KEYS, m.groups()[2:]):
            st[k] += float(v)
    m = re.search(r"calibration pass: ([\d.]+) s", p.stdout)
    st["calibration pass"] = float(m.group(1)) if m else 0.0
    st["wall"] = wall
    m = re.search(r"peak RSS \(MiB\): (.*)", p.stdout)
    st["rss"] = m.group(1) if m else ""
    st["rss_max"] = max((float(x) for x in re.findall(r"rank \d+ ([\d.]+)", st["rss"])), default=0.0)
    st["stdout"] = p.stdout
    return st


def numpy_eigh(n, threads, reps=3):
    code = (f"import numpy as np, time\nrng = np.random.default_rng(0)\nx = rng.standard_normal(({2 * n}, {n}))\n"
            f"a = x.T @ x\nbest = 1e9\nfor _ in range({reps}):\n    t = time.time(); np.linalg.eigh(a); "
            f"best = min(best, time.time() - t)\nprint(best)")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                check=True).stdout)


def init_args(model, nsamples, rank, out, extra=()):
    return ["init", "--model", model, "--calib", f"{model}/calib.tok", "--calib-format", "tokens",
            "--nsamples", nsamples, "--rank", rank, "--out", out, "--force", *extra]


def stage_table(old, new, label_old, label_new):
    print(f"| stage | {label_old} s | {label_new} s | old / new |")
    print("|---|---|---|---|")
    for k in KEYS + ["wall"]:
        o, n = old[k], new[k]
        print(f"| {k} | {o:.2f} | {n:.2f} | {o / n:.1f}x |" if n > 0 else f"| {k} | {o:.2f} | {n:.2f} | - |")


def part_a(prev):
    model = synth("blk2048", "--dim", 2048, "--heads", 16, "--mlp", 5632, "--layers", 1, "--vocab", 4096,
                  "--max-pos", 2048, "--calib-samples", 1, "--calib-seqlen", 2048, "--seed", 3)
    eigh = numpy_eigh(2048, 1)
    old = run(prev, init_args(model, 1, 64, f"{WORK}/a-old.h5"), threads=1, tag="a-old")
    new = run(CLOQ, init_args(model, 1, 64, f"{WORK}/a-new.h5"), threads=1, tag="a-new")
    eigh2 = numpy_eigh(2048, 1)
    e = min(eigh, eigh2)
    print(f"### (a) one block d 2048, MLP 5632, 1 x 2048 tokens, rank 64, 1 thread\n")
    stage_table(old, new, "previous", "projection")
    print(f"\nNumPy eigh(2048), same core, best of 3 before and after: {eigh:.2f} s / {eigh2:.2f} s. "
          f"Total: previous {old['wall'] / e:.1f}x eigh, projection **{new['wall'] / e:.1f}x** eigh "
          f"(target <= 10x). Peak RSS: previous {old['rss']}, projection {new['rss']}.\n")
    return {"old": old, "new": new, "eigh": [eigh, eigh2]}


def part_b(prev):
    model = synth("l13b-1", "--like", "llama2-13b", "--layers", 1, "--calib-samples", 1, "--calib-seqlen", 2048)
    new = run(CLOQ, init_args(model, 1, 64, f"{WORK}/b-new.h5"), threads=2, tag="b-new")
    plan = run(CLOQ, init_args(model, 1, 64, f"{WORK}/b-plan.h5", ["--dry-run"]), threads=2)
    old = run(prev, init_args(model, 1, 64, f"{WORK}/b-old.h5"), threads=2, tag="b-old")
    print(f"### (b) one Llama-2-13B-shaped block, 1 x 2048 tokens, rank 64, 2 threads\n")
    stage_table(old, new, "previous", "projection")
    pm = re.search(r"peak memory ~([\d.]+) GiB", plan["stdout"]).group(1)
    print(f"\nProjection total **{new['wall']:.1f} s** (target <= 90 s), previous {old['wall']:.1f} s: "
          f"{old['wall'] / new['wall']:.1f}x. Peak RSS: previous {old['rss']}, projection {new['rss']} "
          f"(plan {pm} GiB).\n")
    return {"old": old, "new": new, "plan_gib": float(pm)}


def part_c(prev):
    py = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
    if not os.path.exists(py):
        sys.exit("part c needs bench/peers/install.sh first")
    model = synth("m8", "--dim", "768", "--heads", "12", "--mlp", "2048", "--layers", "8", "--vocab", "4096",
                  "--max-pos", "1024", "--calib-samples", "32", "--calib-seqlen", "512", "--seed", "1")
    common = ["--bits", 4, "--group-size", 128]
    rows = []
    for exe, name in ((CLOQ, "cloq init, projection (1 rank, 2 threads)"), (prev, "cloq init, previous (1 rank, 2 threads)")):
        st = run(exe, init_args(model, 32, 16, f"{WORK}/c.h5", common), threads=2, tag="c-" + name.split(",")[1].split()[0])
        rows.append((name, st["wall"], st["rss_max"], st))
    for extra, name in (([], "PyTorch CLoQ, one Gram per module"), (["--share-grams"], "PyTorch CLoQ, one Gram per input")):
        t0 = time.time()
        q = sh([py, os.path.join(ROOT, "bench", "peers", "torch_cloq.py"), "--model", model, "--calib",
                f"{model}/calib.tok", "--calib-format", "tokens", "--nsamples", 32, "--bits", 4, "--group-size",
                128, "--rank", 16, "--threads", 2] + extra)
        j = json.loads([l for l in q.stdout.splitlines() if l.startswith("{")][-1])
        rows.append((f"{name} (torch, 2 threads)", time.time() - t0, j.get("peak_rss_mib", float("nan")), j))
    print("### (c) the PyTorch CLoQ peer, 8-block d-768 model, 32 x 512 tokens, INT4 g128, rank 16, 2 threads\n")
    print("| tool | wall s | peak RSS MiB | peer / cloq (projection) |")
    print("|---|---|---|---|")
    for name, wall, rss, _ in rows:
        print(f"| {name} | {wall:.1f} | {rss:.0f} | {wall / rows[0][1]:.2f} |")
    new = rows[0][3]
    print(f"\ncloq (projection) stages: calibration pass {new['calibration pass']:.1f} s, "
          f"factor {new['eig / factor']:.2f} s, quant {new['quant']:.2f} s, init {new['init']:.2f} s; "
          f"previous: calibration pass {rows[1][3]['calibration pass']:.1f} s, eig {rows[1][3]['eig / factor']:.2f} s, "
          f"quant {rows[1][3]['quant']:.2f} s, init {rows[1][3]['init']:.2f} s; the peers' stages (s): "
          + "; ".join(f"{r[0].split(' (')[0]}: " + ", ".join(f"{k} {v:.2f}" for k, v in r[3]["time_s"].items())
                      for r in rows[2:]) + "\n")
    return {"rows": [(r[0], r[1], r[2]) for r in rows]}


def part_d(prev):
    model = synth("m8s", "--dim", "512", "--heads", "8", "--mlp", "1376", "--layers", "8", "--vocab", "4096",
                  "--max-pos", "1024", "--calib-samples", "16", "--calib-seqlen", "256", "--seed", "2")
    base = ["--model", model, "--calib", f"{model}/calib.tok", "--calib-format", "tokens", "--nsamples", 16,
            "--group-size", 128, "--force"]
    sw = ["sweep", "--bits", "2,3,4", "--ranks", "8,16,32,64"]
    old = run(prev, sw + ["--out", f"{WORK}/d-old"] + base, threads=2, tag="d-old")
    new = run(CLOQ, sw + ["--out", f"{WORK}/d-new"] + base, threads=2, tag="d-new")
    singles, same = [], True
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    from storecmp import load_layers, same_layers
    for b in (2, 3, 4):
        for r in (8, 16, 32, 64):
            one = f"{WORK}/d-one-b{b}-r{r}.h5"
            singles.append(run(CLOQ, ["init", "--out", one, "--bits", b, "--rank", r] + base, threads=2)["wall"])
            same &= same_layers(load_layers(one), load_layers(f"{WORK}/d-new/b{b}-r{r}.h5"))
    one = sum(singles) / len(singles)
    wl = [l for l in new["stdout"].splitlines() if l.startswith("work:")][0]
    print("### (d) a 3 bits x 4 ranks sweep, d 512, MLP 1376, 8 blocks, 16 x 256 tokens, 1 rank, 2 threads\n")
    print("| run | wall s | relative to one configuration (projection) |")
    print("|---|---|---|")
    print(f"| previous binary: `cloq sweep --bits 2,3,4 --ranks 8,16,32,64` | {old['wall']:.1f} | {old['wall'] / one:.2f} |")
    print(f"| projection: `cloq sweep`, same flags | {new['wall']:.1f} | {new['wall'] / one:.2f} |")
    print(f"| projection: one configuration (`cloq init`, mean of 12) | {one:.1f} | 1.00 |")
    print(f"| projection: 12 separate `cloq init` runs | {sum(singles):.1f} | {sum(singles) / one:.2f} |")
    print(f"\nSweep: previous / projection **{old['wall'] / new['wall']:.1f}x** (target >= 3x); projection sweep vs "
          f"12 runs {sum(singles) / new['wall']:.1f}x; its 12 stores bitwise equal to the 12 runs': {same}. {wl}\n")
    return {"old": old["wall"], "new": new["wall"], "one": one, "twelve": sum(singles), "same": same}


def part_e(prev):
    model = synth("m8", "--dim", "768", "--heads", "12", "--mlp", "2048", "--layers", "8", "--vocab", "4096",
                  "--max-pos", "1024", "--calib-samples", "32", "--calib-seqlen", "512", "--seed", "1")
    args = init_args(model, 32, 16, f"{WORK}/e.h5", ["--bits", 4, "--group-size", 128])
    res = {}
    for exe, lab in ((prev, "previous"), (CLOQ, "projection")):
        for np_ in (1, 2):
            res[(lab, np_)] = run(exe, args, np_=np_, threads=1, tag=f"e-{lab}-{np_}")
    print("### (e) 8 blocks (d 768, MLP 2048), 32 x 512 tokens, INT4 g128, rank 16: 2 ranks x 1 thread vs 1 x 1\n")
    print("| binary | ranks x threads | wall s | calibration pass s | init phase s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for (lab, np_), st in res.items():
        print(f"| {lab} | {np_} x 1 | {st['wall']:.1f} | {st['calibration pass']:.1f} | "
              f"{st['wall'] - st['calibration pass']:.1f} | {st['rss']} |")
    for lab in ("previous", "projection"):
        print(f"\n{lab}: 2 ranks vs 1 rank **{res[(lab, 1)]['wall'] / res[(lab, 2)]['wall']:.2f}x**", end="")
    print(" (target >= 1.8x)\n")
    return {f"{k[0]}-{k[1]}": v["wall"] for k, v in res.items()}


def part_f(prev):
    out = {}
    print("### (f) plans of 13B-shaped models (new binary, --dry-run), RTN INT4 g128, rank 64, 1 x 2048 tokens\n")
    print("| model | ranks | mode | planned peak memory per rank |")
    print("|---|---|---|---|")
    for layers in (1, 4, 40):
        model = synth(f"l13b-{layers}", "--like", "llama2-13b", "--layers", layers, "--calib-samples", 1,
                      "--calib-seqlen", 2048) if layers != 40 else synth("l13b-40", "--like", "llama2-13b",
                                                                         "--calib-samples", 1, "--calib-seqlen", 2048)
        for np_ in ((1,) if layers == 1 else (1, 2, 4)):
            for prop in ("full", "sequential"):
                if layers == 1 and prop == "sequential":
                    continue
                st = run(CLOQ, init_args(model, 1, 64, f"{WORK}/f.h5", ["--propagate", prop, "--dry-run"]), np_=np_)
                mem = ", ".join(f"r{r} {g} GiB" for r, g in
                                re.findall(r"rank (\d+): blocks .*? peak memory ~([\d.]+) GiB", st["stdout"]))
                out[f"{layers}-{np_}-{prop}"] = mem
                print(f"| 13B-shaped, {layers} block(s) | {np_} | CLoQ, {prop} | {mem} |")
    print()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prev", default="1301f92", help="the commit before the projection form")
    ap.add_argument("--parts", default="a,b,c,d,e,f")
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    sha, prev = build_prev(a.prev)
    head = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).stdout.strip()
    print(f"previous binary: {sha} ({prev}); projection: {CLOQ} (HEAD {head}, plus the working tree)\n", flush=True)
    res = {}
    for p in a.parts.split(","):
        res[p] = globals()[f"part_{p}"](prev)
        sys.stdout.flush()
    for v in res.values():  # stdout of runs is in bench/results/proj-*.txt
        for k in list(v) if isinstance(v, dict) else []:
            if isinstance(v[k], dict):
                v[k].pop("stdout", None)
    path = os.path.join(RESULTS, "proj.json")  # parts run separately accumulate
    old = json.load(open(path)) if os.path.exists(path) else {}
    old.update(res)
    with open(path, "w") as f:
        json.dump(old, f, indent=1, default=str)


if __name__ == "__main__":
    main()
