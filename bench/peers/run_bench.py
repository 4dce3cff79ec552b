#!/usr/bin/env python3
"""Benchmark (e): cloq init against its peers on one model, machine and thread count.

Runs, for each thread count in --threads (default 2 and 1), --reps times each:
  - torch_cloq.py --threads T                 (plain PyTorch CLoQ, one Gram per module)
  - torch_cloq.py --threads T --share-grams   (same, one Gram per distinct input, as cloq)
  - peft_loftq.py --threads T --bits B        (PEFT LoftQ, data-free, for each B in --loftq-bits)
  - build/cmd/cloq init, if built: 1 rank with OPENBLAS_NUM_THREADS=T, and for T=2 also
    2 MPI ranks (scripts/mpirun.sh -np 2, one BLAS thread each: cloq's default)
and prints a Markdown table of the best (minimum) of the runs: process wall time (everything, Python imports included),
the peers' stage times, and peak RSS (cloq: /usr/bin/time's maximum resident set size, i.e. the
largest single process). The calibration token file is written by make_tokens.py from
WikiText-2 validation (tok512.bin BPE), so every tool sees the same tokens.
Run with the machine otherwise idle: the 1-minute load average before each run is recorded and a
warning is printed when it exceeds 0.5.
Usage: bench/peers/.venv/bin/python bench/peers/run_bench.py [--reps 3] [--rank 16] ...
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run_json(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        sys.exit(f"run_bench: no JSON from {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return json.loads(lines[-1])


def run_timed(cmd, env):
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", tf.name] + cmd,
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f"run_bench: {' '.join(cmd)} failed\n{p.stderr[-2000:]}")
        wall, rss_kb = tf.read().split()[-2:]
    return {"time_s": {"process": float(wall)}, "peak_rss_mib": int(rss_kb) / 1024.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", default=os.environ.get("CLOQ_ASSETS",
                                                       os.path.join(ROOT, "..", "shared", "assets")))
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--loftq-bits", default="4,2")
    ap.add_argument("--json", help="also append every run as a JSON line to this file")
    a = ap.parse_args()
    model = os.path.join(a.assets, "stories260K-hf")
    py = sys.executable
    tmp = tempfile.mkdtemp(prefix="cloq-peers-")
    calib = os.path.join(tmp, "calib.tok")
    subprocess.run([py, os.path.join(HERE, "make_tokens.py"), "--text",
                    os.path.join(a.assets, "wikitext-2", "wiki.valid.tokens"), "--tokenizer",
                    os.path.join(model, "tok512.bin"), "--nsamples", str(a.nsamples),
                    "--seqlen", str(a.seqlen), "--out", calib], check=True)
    cloq = os.path.join(ROOT, "build", "cmd", "cloq")
    common = ["--bits", str(a.bits), "--group-size", str(a.group_size), "--rank", str(a.rank)]
    runs = []  # (label, threads, cmd, kind, env-extra)
    for T in [int(t) for t in a.threads.split(",")]:
        tc = [py, os.path.join(HERE, "torch_cloq.py"), "--model", model, "--calib", calib,
              "--calib-format", "tokens", "--nsamples", str(a.nsamples), "--threads", str(T)]
        runs.append(("torch_cloq (Gram per module)", T, tc + common, "json", {}))
        runs.append(("torch_cloq --share-grams", T, tc + common + ["--share-grams"], "json", {}))
        for b in a.loftq_bits.split(","):
            runs.append((f"peft_loftq bits {b}", T,
                         [py, os.path.join(HERE, "peft_loftq.py"), "--model", model,
                          "--bits", b, "--rank", str(a.rank), "--threads", str(T)], "json", {}))
        if os.access(cloq, os.X_OK):
            out = os.path.join(tmp, "cloq.h5")
            ci = [cloq, "init", "--model", model, "--calib", calib, "--calib-format", "tokens",
                  "--nsamples", str(a.nsamples), "--out", out, "--force"] + common
            runs.append((f"cloq 1 rank x {T} BLAS threads", T, ci, "time",
                         {"OPENBLAS_NUM_THREADS": str(T)}))
            if T == 2:
                runs.append(("cloq 2 ranks x 1 BLAS thread", T,
                             [os.path.join(ROOT, "scripts", "mpirun.sh"), "-np", "2"] + ci,
                             "time", {}))
    results = {}
    for rep in range(a.reps):
        for label, T, cmd, kind, extra in runs:
            env = dict(os.environ, **extra)
            load = os.getloadavg()[0]
            if load > 0.5:
                print(f"run_bench: warning: load average {load:.2f} before '{label}'",
                      file=sys.stderr)
            r = run_json(cmd, env) if kind == "json" else run_timed(cmd, env)
            r.update({"label": label, "threads": T, "rep": rep, "load1": load})
            if r.get("status", "ok") != "ok":
                print(f"run_bench: {label}: {r.get('error')}", file=sys.stderr)
            results.setdefault((label, T), []).append(r)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
            time.sleep(1)
    stages = ["import", "load", "calib", "eig", "quant", "svd_factors", "loftq",
              "loftq_init_sum", "total", "process"]
    print(f"\nstories260K, {a.nsamples} x {a.seqlen} calibration tokens, bits {a.bits}, group "
          f"{a.group_size}, rank {a.rank}; best of {a.reps} runs (s; RSS MiB)\n")
    print("| tool | threads | " + " | ".join(stages) + " | peak RSS |")
    print("|---|---|" + "---|" * len(stages) + "---|")
    for (label, T), rs in results.items():
        med = []
        for s in stages:
            v = [r["time_s"][s] for r in rs if s in r.get("time_s", {})]
            med.append(f"{min(v):.2f}" if v else "")
        rss = max(r["peak_rss_mib"] for r in rs)
        print(f"| {label} | {T} | " + " | ".join(med) + f" | {rss:.0f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
