"""The Slurm job templates work on a real (one-node) Slurm: scripts/slurm-up.sh starts the cluster,
jobs/init.sbatch submitted with `sbatch --wait` at 2 and 1 tasks (srun --mpi=pmix) writes stores
bitwise equal to the same `cloq init` under scripts/mpirun.sh; a second submission of a finished
job does nothing; jobs/multinode.sbatch (on one node) gives the same store; jobs/sweep.sbatch
gives, for every configuration, the store of the matching `cloq init`, and a second submission of
the finished sweep does nothing. Fails, never skips, when Slurm cannot be started or when
`cloq sweep --help` fails.
Stops the cluster at the end only if this test started it."""
import os
import subprocess
import sys
import time

import h5py
import numpy as np

from cloqtest import CLOQ, MODEL, WIKI_VALID, check, done, run, tmpdir

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SLURM_DIR = os.environ.get("CLOQ_SLURM_DIR", "/tmp/cloq-slurm")
SETTINGS = {"BITS": "3", "GROUP_SIZE": "32", "LORA_RANK": "8", "NSAMPLES": "8", "SEQLEN": "128",
            "SEED": "7", "INIT": "cloq"}


def init_args(out, bits, group, rank):
    return ["init", "--model", MODEL, "--calib", WIKI_VALID, "--out", out, "--bits", bits,
            "--group-size", group, "--rank", rank, "--init", SETTINGS["INIT"],
            "--nsamples", SETTINGS["NSAMPLES"], "--seqlen", SETTINGS["SEQLEN"], "--seed", SETTINGS["SEED"]]


def datasets(path):
    """Every dataset under /layers, read through the top-level file: name -> array. Walks the
    groups by name (not visititems) so that external links to per-block files are followed."""
    out = {}

    def walk(g, prefix):
        for k in g:
            obj = g[k]
            name = f"{prefix}/{k}"
            if isinstance(obj, h5py.Group):
                walk(obj, name)
            else:
                out[name] = obj[()]

    with h5py.File(path, "r") as f:
        walk(f["layers"], "/layers")
    return out


def same_layers(a, b, what):
    da, db = datasets(a), datasets(b)
    check(len(da) == 5 * 7 * 5, f"{what}: store has 5 blocks x 7 modules x 5 datasets", 175, len(da))
    check(sorted(da) == sorted(db), f"{what}: same dataset names", sorted(db)[:3], sorted(da)[:3])
    diff = [k for k in da if k not in db or da[k].dtype != db[k].dtype or not np.array_equal(da[k], db[k])]
    check(not diff, f"{what}: every /layers dataset bitwise equal to the mpirun store", "no differences", diff[:3])


def sbatch(script, env_vars, sbatch_args, log, d):
    """sbatch --wait; returns (exit status, log text)."""
    env = dict(os.environ, SLURM_CONF=os.path.join(SLURM_DIR, "slurm.conf"), CLOQ=CLOQ, MODEL=MODEL,
               CALIB=WIKI_VALID)
    env.update(env_vars)
    cmd = ["sbatch", "--wait", "--quiet", f"--chdir={d}", f"--output={log}", "--time=10"] + sbatch_args \
        + [os.path.join(ROOT, "jobs", script)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    text = open(log).read() if os.path.exists(log) else ""
    if p.returncode != 0:
        print(f"--- {' '.join(cmd)}: rc {p.returncode}\n{p.stderr}{text}")
    return p.returncode, text


t0 = time.monotonic()
up = subprocess.run(["bash", os.path.join(ROOT, "scripts", "slurm-up.sh")], capture_output=True, text=True,
                    timeout=120, env=dict(os.environ, CLOQ_SLURM_DIR=SLURM_DIR))
print(up.stdout.strip())
if up.returncode != 0:
    print(f"FAIL Slurm could not be started by scripts/slurm-up.sh (rc {up.returncode}); the templates in jobs/ "
          f"are untested. It needs root (or password-less sudo) and the packages of scripts/install-deps.sh.\n"
          f"{up.stderr.strip()}")
    sys.exit(1)
started_here = not up.stdout.startswith("slurm-up: already up")
print(f"slurm up in {time.monotonic() - t0:.1f} s")

d = tmpdir()
try:
    # Reference: the same init under mpirun.
    ref = os.path.join(d, "mpirun.h5")
    p = run(init_args(ref, SETTINGS["BITS"], SETTINGS["GROUP_SIZE"], SETTINGS["LORA_RANK"]), 2)
    check(p.returncode == 0, "mpirun -np 2: init exits 0", 0, f"{p.returncode}: {p.stderr.strip()}")

    for ntasks in (2, 1):
        out = os.path.join(d, f"slurm-{ntasks}.h5")
        log = os.path.join(d, f"init-{ntasks}.out")
        rc, text = sbatch("init.sbatch", dict(SETTINGS, OUT=out), [f"--ntasks={ntasks}", "--cpus-per-task=1"], log, d)
        check(rc == 0, f"init.sbatch ntasks={ntasks}: sbatch --wait exits 0", 0, rc)
        blocks = [l for l in text.splitlines() if l.startswith("block ")]
        check(len(blocks) == 5, f"init.sbatch ntasks={ntasks}: rank 0 prints one line per block", 5, len(blocks))
        # One MPI world of ntasks ranks, not ntasks singletons (what a wrong --mpi gives).
        nranks = None
        if os.path.exists(out):
            with h5py.File(out, "r") as f:
                nranks = int(f.attrs["nranks"])
        check(nranks == ntasks, f"init.sbatch ntasks={ntasks}: store made by one {ntasks}-rank run (srun --mpi=pmix)",
              ntasks, nranks)
        check(os.path.exists(out) and not os.path.exists(out + ".partial.d"),
              f"init.sbatch ntasks={ntasks}: store complete, no .partial", "store, no .partial",
              sorted(os.listdir(d)))
        if rc == 0 and os.path.exists(out) and os.path.exists(ref):
            same_layers(out, ref, f"init.sbatch ntasks={ntasks}")

    # Submitting a finished job again: nothing to do, exit 0, store untouched.
    out = os.path.join(d, "slurm-2.h5")
    mtime = os.path.getmtime(out) if os.path.exists(out) else None
    rc, text = sbatch("init.sbatch", dict(SETTINGS, OUT=out), ["--ntasks=2"], os.path.join(d, "again.out"), d)
    check(rc == 0 and "already complete" in text and mtime is not None and os.path.getmtime(out) == mtime,
          "init.sbatch again on a finished store: exits 0, says so, leaves it", "rc 0, 'already complete'",
          f"rc {rc}: {text.strip()[-200:]}")

    # The multi-node template, on the one node there is.
    out = os.path.join(d, "multinode.h5")
    rc, text = sbatch("multinode.sbatch", dict(SETTINGS, OUT=out),
                      ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"], os.path.join(d, "multinode.out"), d)
    check(rc == 0, "multinode.sbatch (1 node x 2 tasks): sbatch --wait exits 0", 0, rc)
    if rc == 0 and os.path.exists(ref):
        same_layers(out, ref, "multinode.sbatch")

    # The sweep template. `cloq sweep` exists: a failing --help is a failure, not a reason to skip.
    h = subprocess.run([CLOQ, "sweep", "--help"], capture_output=True, text=True)
    check(h.returncode == 0, "cloq sweep --help exits 0 (jobs/sweep.sbatch runs it)", 0,
          f"{h.returncode}: {(h.stderr or h.stdout).strip().splitlines()[-1:]}")
    outdir = os.path.join(d, "sweep")
    os.makedirs(outdir)
    bits_list, ranks_list = ["2", "3"], ["4", "8"]
    rc, text = sbatch("sweep.sbatch", dict(SETTINGS, OUT=outdir, BITS=",".join(bits_list),
                                           LORA_RANKS=",".join(ranks_list)),
                      ["--ntasks=2", "--cpus-per-task=1"], os.path.join(d, "sweep.out"), d)
    check(rc == 0, "sweep.sbatch (bits 2,3 x ranks 4,8, 2 tasks): sbatch --wait exits 0", 0, rc)
    for b in bits_list:
        for r in ranks_list:
            got = os.path.join(outdir, f"b{b}-r{r}.h5")
            want = os.path.join(d, f"init-b{b}-r{r}.h5")
            p = run(init_args(want, b, SETTINGS["GROUP_SIZE"], r), 2)
            ok = rc == 0 and p.returncode == 0 and os.path.exists(got)
            check(ok, f"sweep b{b}-r{r}: store written, matching init runs", "both stores",
                  f"sweep rc {rc}, init rc {p.returncode}: {p.stderr.strip()}, {sorted(os.listdir(outdir))}")
            if ok:
                same_layers(got, want, f"sweep b{b}-r{r}")
    rc, text = sbatch("sweep.sbatch", dict(SETTINGS, OUT=outdir, BITS=",".join(bits_list),
                                           LORA_RANKS=",".join(ranks_list)),
                      ["--ntasks=2"], os.path.join(d, "sweep-again.out"), d)
    check(rc == 0 and "nothing to do" in text, "sweep.sbatch again on a finished sweep: exits 0, says so",
          "rc 0, 'nothing to do'", f"rc {rc}: {text.strip()[-200:]}")
finally:
    if started_here:
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "slurm-down.sh")],
                       env=dict(os.environ, CLOQ_SLURM_DIR=SLURM_DIR))
print(f"slurm test: {time.monotonic() - t0:.1f} s")
done()
