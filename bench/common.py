"""Helpers for the benchmark scripts: run cloq, parse its progress lines, read a model's shape."""
import json
import os
import re
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOQ = os.environ.get("CLOQ_BIN", os.path.join(ROOT, "build", "cmd", "cloq"))
KERNELS = os.path.join(ROOT, "build", "bench", "cloq-bench-kernels")
MPIRUN = os.path.join(ROOT, "scripts", "mpirun.sh")
WORK = os.environ.get("CLOQ_BENCH_DIR", "/tmp/cloq-bench")


def sh(cmd, env=None, check=True):
    e = dict(os.environ)
    e.update(env or {})
    t0 = time.time()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=e)
    if check and p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    p.wall = time.time() - t0
    return p


def cloq(args, np_=1, threads=None, env=None, check=True):
    e = dict(env or {})
    if threads:
        e["OPENBLAS_NUM_THREADS"] = str(threads)
    cmd = ([CLOQ] if np_ == 1 else [MPIRUN, "-n", str(np_), CLOQ]) + list(args)
    return sh(cmd, e, check)


def smollm2_gguf():
    """The SmolLM2-135M GGUF file, fetched once by scripts/fetch-smollm2.sh (it prints the path)."""
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch-smollm2.sh")], capture_output=True,
                       text=True, check=True)
    return p.stdout.strip().splitlines()[-1]


def synth(name, *flags):
    """A synthetic model under WORK (generated once)."""
    d = os.path.join(WORK, name)
    if not os.path.exists(os.path.join(d, "config.json")):
        sh([CLOQ, "synth", "--out", d, "--force", *flags])
    return d


def config(model):
    with open(os.path.join(model, "config.json")) as f:
        return json.load(f)


# "factor" since the projection form (issue 14); binaries before it printed "eig" there (the
# eigendecomposition of H), which stages() reads into the same key
BLOCK = re.compile(r"block (\d+)/\d+ \(rank (\d+)\): forward\+gram ([\d.]+) s, (?:eig|factor) ([\d.]+) s, "
                   r"quant ([\d.]+) s, init ([\d.]+) s, write ([\d.]+) s")


def stages(out):
    """Sum of the per-block stage seconds printed by rank 0, and the calibration pass."""
    tot = {"forward+gram": 0.0, "factor": 0.0, "quant": 0.0, "init": 0.0, "write": 0.0}
    for m in BLOCK.finditer(out):
        for k, v in zip(tot, m.groups()[2:]):
            tot[k] += float(v)
    m = re.search(r"calibration pass: ([\d.]+) s", out)
    tot["calibration pass"] = float(m.group(1)) if m else 0.0
    m = re.search(r"wrote .* in ([\d.]+) s", out)
    tot["total"] = float(m.group(1)) if m else 0.0
    m = re.search(r"peak RSS \(MiB\): (.*)", out)
    tot["rss"] = m.group(1) if m else ""
    return tot


def write_section(md, begin, end, lines):
    """Replaces the text between the markers begin and end of md (lines, which hold both markers) in
    place, or appends it when md has no such section, so that a re-run keeps the file's order."""
    old = open(md).read() if os.path.exists(md) else ""
    new = "\n".join(lines)
    if begin in old:
        old = old[:old.index(begin)] + new + old[old.index(end) + len(end):]
    else:
        old = old.rstrip("\n") + "\n\n" + new + "\n"
    open(md, "w").write(old)
