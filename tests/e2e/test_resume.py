"""Resume after a crash or a preemption. A rank is killed with SIGKILL (as `kill -9` would) at
several points: mid-stream, in the middle of writing a block file, right after committing one;
in full-precision and in sequential propagation; and the whole job is sent SIGTERM (Slurm's
preemption), from outside and from inside. Each time, re-running the same command (also with
another rank count) must give a store bitwise equal to an uninterrupted run, a stop must leave no
complete-looking store, and a resume with other settings is refused, as is one whose calibration
file or model files changed content under the same path (the settings record content digests)."""
import os
import signal
import subprocess
import time

from cloqtest import CLOQ, MODEL, MPIRUN, WIKI_VALID, check, done, model_copy, override, poke_float, run, tmpdir
from storecmp import load_layers, same_layers

COMMON = ["--calib", WIKI_VALID, "--bits", "3", "--group-size", "32", "--rank", "8",
          "--nsamples", "8", "--seqlen", "128", "--seed", "3"]

d = tmpdir()


def init(out, np_=0, extra=(), env=None):
    return run(["init", "--model", MODEL, "--out", out] + override(COMMON, list(extra)), np_, env=env)


refs = {}
for prop in ("full", "sequential"):
    ref = os.path.join(d, f"ref-{prop}.h5")
    p = init(ref, extra=["--propagate", prop])
    check(p.returncode == 0, f"uninterrupted {prop} run", 0, p.stderr.strip()[:300])
    refs[prop] = load_layers(ref)

# (name, kill point, ranks of the killed run, ranks of the resume, propagation)
CASES = [
    ("rank 1 killed mid-stream", "sample:3:1", 2, 2, "full"),
    ("rank 0 killed while writing block 1", "write:1:0", 2, 2, "full"),
    ("rank 1 killed after committing block 2, resumed at 2 ranks", "block:2:1", 3, 2, "full"),
    ("rank 2 killed after committing block 3, resumed as a plain process", "block:3:2", 3, 0, "full"),
    ("sequential: rank 0 killed after committing block 1", "block:1:0", 2, 2, "sequential"),
    ("sequential: rank 1 killed while writing block 3", "write:3:1", 2, 3, "sequential"),
]
for i, (name, point, np_kill, np_resume, prop) in enumerate(CASES):
    out = os.path.join(d, f"case{i}.h5")
    extra = ["--propagate", prop]
    p = init(out, np_kill, extra, env={"CLOQ_DEBUG_KILL": point})
    check(p.returncode != 0, f"{name}: the killed job fails", "non-zero", p.returncode)
    check(not os.path.exists(out) and os.path.isdir(out + ".partial.d"),
          f"{name}: no complete-looking store, a work folder to resume from", "work folder only",
          sorted(os.listdir(d)))
    p = init(out, np_resume, extra)
    check(p.returncode == 0, f"{name}: the re-run succeeds", 0, p.stderr.strip()[:300])
    if point.startswith(("block", "write")):
        check("resuming" in p.stdout, f"{name}: the re-run resumes from complete blocks", "resuming",
              p.stdout[:300])
    check(same_layers(load_layers(out), refs[prop]), f"{name}: store equal to the uninterrupted run",
          "bitwise equal", "differs")
    check(not os.path.exists(out + ".partial.d"), f"{name}: work folder renamed into the store",
          "absent", "present")

# SIGTERM from inside, on every rank at once (what Slurm does on preemption), mid-stream
out = os.path.join(d, "term.h5")
p = init(out, 2, env={"CLOQ_DEBUG_KILL": "sample:2:-1:term"})
check(p.returncode == 143, "SIGTERM mid-stream: exit status 128 + 15", 143,
      f"{p.returncode} {p.stderr.strip()[:200]}")
check("stopped by signal 15" in p.stderr and not os.path.exists(out), "SIGTERM: one line, no store",
      "stopped by signal 15", p.stderr.strip()[:300])
p = init(out, 2)
check(p.returncode == 0 and same_layers(load_layers(out), refs["full"]), "SIGTERM: resumed store equal",
      "equal", p.stderr.strip()[:200])

# SIGTERM while a rank is inside a long computation that cannot poll (simulated by a stall in the
# middle of writing block 3): the watchdog ends the process after the grace period (here 2 s)
out = os.path.join(d, "stall.h5")
t0 = time.time()
p = init(out, 2, env={"CLOQ_DEBUG_KILL": "write:3:1:termstall", "CLOQ_STOP_GRACE": "2"})
took = time.time() - t0
check(p.returncode != 0 and took < 60 and "grace period" in p.stderr and not os.path.exists(out),
      "SIGTERM during a stall: the watchdog stops the job after the grace period", "stopped, no store",
      f"rc {p.returncode}, {took:.1f} s, {p.stderr.strip()[:200]}")
p = init(out, 2)
check(p.returncode == 0 and "resuming" in p.stdout and same_layers(load_layers(out), refs["full"]),
      "SIGTERM during a stall: resumed store equal", "equal", p.stderr.strip()[:200])

# SIGTERM from outside, to every rank, while the stream runs: stops within 30 s, then resumes
out = os.path.join(d, "term2.h5")
long = ["--calib", WIKI_VALID, "--bits", "3", "--group-size", "32", "--rank", "8", "--nsamples", "1000",
        "--seqlen", "256", "--seed", "3"]
env = dict(os.environ, OPENBLAS_NUM_THREADS="1")


def start_streaming(out):
    """A 2-rank init under the launcher, returned at the first progress line of its stream (10% of
    the samples: well before the end)."""
    proc = subprocess.Popen([MPIRUN, "-np", "2", CLOQ, "init", "--model", MODEL, "--out", out] + long,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("stream:"):
            break
    return proc, time.time()


proc, t0 = start_streaming(out)
pids = subprocess.run(["pgrep", "-f", f"{CLOQ} init --model {MODEL} --out {out}"], capture_output=True,
                      text=True).stdout.split()
for pid in pids:
    if int(pid) != proc.pid:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
outs, errs = proc.communicate(timeout=120)
took = time.time() - t0
check(proc.returncode != 0 and took < 30, "external SIGTERM: the job stops within 30 s",
      "< 30 s, non-zero", f"{took:.1f} s, rc {proc.returncode}, {len(pids)} processes signalled")
check(not os.path.exists(out), "external SIGTERM: no complete-looking store", "absent", "present")
p = run(["init", "--model", MODEL, "--out", out] + long, 2)
check(p.returncode == 0, "external SIGTERM: the re-run succeeds", 0, p.stderr.strip()[:200])

# SIGTERM to the launcher (scripts/mpirun.sh, as a user's kill or timeout would): mpirun alone would
# exit 1 whatever the ranks return; the launcher passes the signal on and exits 128 + 15
out = os.path.join(d, "term3.h5")
proc, t0 = start_streaming(out)
proc.send_signal(signal.SIGTERM)
outs, errs = proc.communicate(timeout=120)
took = time.time() - t0
check(proc.returncode == 143 and took < 30, "SIGTERM to the launcher: exit status 143 within 30 s",
      "143, < 30 s", f"rc {proc.returncode}, {took:.1f} s, {errs.strip()[-200:]}")
check(not os.path.exists(out), "SIGTERM to the launcher: no complete-looking store", "absent", "present")
p = run(["init", "--model", MODEL, "--out", out] + long, 2)
p1 = run(["init", "--model", MODEL, "--out", out + ".ref"] + long, 2)
check(p.returncode == 0 and p1.returncode == 0 and same_layers(load_layers(out), load_layers(out + ".ref"))
      and same_layers(load_layers(os.path.join(d, "term2.h5")), load_layers(out + ".ref")),
      "external SIGTERM (to the ranks, to the launcher): the re-runs equal an uninterrupted run", "equal",
      p.stderr.strip()[:200])

# a resume with other settings is refused, naming the first difference
out = os.path.join(d, "other.h5")
init(out, 2, env={"CLOQ_DEBUG_KILL": "block:0:0"})
p = run(["init", "--model", MODEL, "--out", out] + override(COMMON, ["--damp", "0.1"]), 2)
errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
check(p.returncode == 1 and len(errs) == 1 and "cannot resume" in errs[0] and "--damp 0.01, this run 0.1" in errs[0],
      "resume with another --damp is refused", "one line naming --damp", p.stderr.strip()[:300])
p = run(["init", "--model", MODEL, "--out", out] + override(COMMON, ["--damp", "0.1", "--force"]), 2)
check(p.returncode == 0 and "resuming" not in p.stdout, "--force starts over", 0, p.stderr.strip()[:200])

# same paths, other content: a resume is refused naming what changed; restored, it resumes equal
calib = os.path.join(d, "calib.txt")
text = open(WIKI_VALID, encoding="utf-8").read()
open(calib, "w", encoding="utf-8").write(text)
m = model_copy(d, "digest-model")
args = ["init", "--model", m, "--out", os.path.join(d, "digest.h5"), "--calib", calib] + COMMON[2:]
ref = os.path.join(d, "digest-ref.h5")
p = run(["init", "--model", m, "--out", ref, "--calib", calib] + COMMON[2:], 2)
check(p.returncode == 0, "digest case: uninterrupted run", 0, p.stderr.strip()[:200])
p = run(args, 2, env={"CLOQ_DEBUG_KILL": "block:1:0"})
check(p.returncode != 0, "digest case: the killed job fails", "non-zero", p.returncode)
open(calib, "w", encoding="utf-8").write(text.replace(" the ", " a  ", 40))
p = run(args, 2)
errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
check(p.returncode == 1 and len(errs) == 1 and "cannot resume" in errs[0] and "calibration data" in errs[0],
      "resume after the calibration file changed (same path) is refused", "one line naming the calibration data",
      p.stderr.strip()[:300])
open(calib, "w", encoding="utf-8").write(text)
st = os.path.join(m, "model.safetensors")
orig = open(st, "rb").read()
poke_float(m, "model.layers.4.mlp.down_proj.weight", 5, 0.125)
p = run(args, 2)
errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
check(p.returncode == 1 and len(errs) == 1 and "cannot resume" in errs[0] and "model content" in errs[0],
      "resume after a model weight changed (same path) is refused", "one line naming the model content",
      p.stderr.strip()[:300])
open(st, "wb").write(orig)
p = run(args, 2)
check(p.returncode == 0 and "resuming" in p.stdout and same_layers(load_layers(args[4]), load_layers(ref)),
      "restored, the run resumes and equals the uninterrupted one", "equal", p.stderr.strip()[:300])
done()
