"""The store validates what it writes and what it reads, in one place (io/cloq_store.c), for init,
resume, eval and export alike:
  - a resume verifies every block file it finds: a truncated or emptied one is computed again
    (a warning names it) and the store equals an uninterrupted run bitwise; nothing incomplete is
    ever published;
  - eval and export refuse a store whose block file holds another block, whose codes exceed the
    bits, or whose factors are not finite, and name a damaged block file as damaged, not missing;
  - nothing non-finite is written: an all-zero weight (Q exact, objective 0 / 0) records an
    objective ratio of 1;
  - one run per output: a second run on the same --out, with or without --force, is refused at once
    (the work folder is flock'ed) and the first run's store is complete and equal to a lone run's;
  - a full disk (a small tmpfs: the test mounts one, as root, and fails if it cannot) ends init in
    one error line naming it, at 1 and 2 ranks, with no crash and no .tmp file: when even the
    settings cannot be written nothing is left; later, the complete blocks stay for a resume."""
import os
import shutil
import subprocess
import time

import h5py
import numpy as np

from cloqtest import CLOQ, MODEL, override, WIKI_VALID, check, done, model_copy, run, tmpdir, write_tokens, zero_tensor
from storecmp import load_layers, same_layers

COMMON = ["--calib", WIKI_VALID, "--bits", "2", "--group-size", "32", "--rank", "8", "--nsamples", "8",
          "--seqlen", "128", "--seed", "7"]
d = tmpdir()


def init(out, model=MODEL, extra=(), env=None):
    return run(["init", "--model", model, "--out", out] + override(COMMON, list(extra)), 0, env=env)


ref = os.path.join(d, "ref.h5")
p = init(ref)
check(p.returncode == 0, "uninterrupted run", 0, p.stderr.strip()[:300])
want = load_layers(ref)

# ---- resume verifies the block files it finds ------------------------------------------------------
out = os.path.join(d, "resumed.h5")
p = init(out, env={"CLOQ_DEBUG_KILL": "block:3:0"})
work = out + ".partial.d"
check(p.returncode != 0 and os.path.exists(os.path.join(work, "block_00003.h5")),
      "a run killed after committing block 3 leaves blocks 0-3", "blocks 0-3", sorted(os.listdir(work)))
b1 = os.path.join(work, "block_00001.h5")
with open(b1, "r+b") as f:  # truncated: the first half of the file
    f.truncate(os.path.getsize(b1) // 2)
open(os.path.join(work, "block_00002.h5"), "wb").close()  # emptied
p = init(out)
warns = [l for l in p.stderr.splitlines() if "will be computed again" in l]
check(p.returncode == 0 and len(warns) == 2 and "block 1" in warns[0] + warns[1] and "block 2" in warns[0] + warns[1],
      "resume: the truncated and the emptied block files are named and computed again", "2 warnings",
      p.stderr.strip()[:500])
check(p.returncode == 0 and same_layers(load_layers(out), want), "resume after damage equals an uninterrupted run",
      "bitwise equal", "differs")

# a block file of this run swapped for another block's: not counted, computed again
out2 = os.path.join(d, "swapped.h5")
p = init(out2, env={"CLOQ_DEBUG_KILL": "block:2:0"})
w2 = out2 + ".partial.d"
shutil.copyfile(os.path.join(w2, "block_00000.h5"), os.path.join(w2, "block_00002.h5"))
p = init(out2)
check(p.returncode == 0 and "holds block 0, not block 2" in p.stderr and same_layers(load_layers(out2), want),
      "resume: a block file holding another block is computed again", "warning + equal store", p.stderr.strip()[:400])

# ---- eval and export refuse what they cannot trust ------------------------------------------------
story = os.path.join(d, "story.tokens")
write_tokens(story, [list(range(1, 60))])
EVAL = ["--data", story, "--data-format", "tokens"]


def damaged_copy(name):
    """A store of its own to damage (a copied top file would still link the original's blocks)."""
    dst = os.path.join(d, name + ".h5")
    p = init(dst)
    check(p.returncode == 0, f"store for the {name} case", 0, p.stderr.strip()[:200])
    return dst


def expect_refused(name, store, words):
    for cmd in (["eval", "--model", MODEL, "--store", store] + EVAL,
                ["export", "--store", store, "--out", os.path.join(d, "x-" + name)]):
        p = run(cmd, 0, timeout=120)
        errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
        text = errs[0] if errs else p.stderr.strip()[:300]
        check(p.returncode != 0 and len(errs) == 1 and all(w in text for w in words),
              f"{cmd[0]} refuses a store with {name}: {text}", words, p.stderr.strip()[:300])


s = damaged_copy("swapblk")
shutil.copyfile(os.path.join(s + ".d", "block_00001.h5"), os.path.join(s + ".d", "block_00004.h5"))
expect_refused("a block file holding another block", s, ["block 4", "holds block 1"])

s = damaged_copy("code")
with h5py.File(os.path.join(s + ".d", "block_00002.h5"), "r+") as f:
    c = f["mlp.up_proj/codes"]
    v = c[()]
    v[3, 5] = 200
    c[...] = v
expect_refused("a code beyond the bits", s, ["block 2 mlp.up_proj", "code 200", "exceeds 2 bits"])

s = damaged_copy("nanfactor")
with h5py.File(os.path.join(s + ".d", "block_00000.h5"), "r+") as f:
    a = f["self_attn.v_proj/lora_A"]
    v = a[()]
    v[1, 2] = np.nan
    a[...] = v
expect_refused("a NaN LoRA factor", s, ["block 0 self_attn.v_proj", "lora_A"])

s = damaged_copy("trunc")
p3 = os.path.join(s + ".d", "block_00003.h5")
with open(p3, "r+b") as f:
    f.truncate(os.path.getsize(p3) // 3)
expect_refused("a truncated block file", s, ["block 3", "damaged"])

# a store renamed (or copied) with its folder reads by its present name; without its folder the
# error names the folder it needs, not the one it was written as
s = damaged_copy("before-rename")
ev0 = run(["eval", "--model", MODEL, "--store", s] + EVAL)
moved = os.path.join(d, "after-rename.h5")
os.rename(s, moved)
os.rename(s + ".d", moved + ".d")
ev1 = run(["eval", "--model", MODEL, "--store", moved] + EVAL)
check(ev0.returncode == 0 and ev1.returncode == 0 and ev0.stdout.splitlines()[-1] == ev1.stdout.splitlines()[-1],
      "a store renamed with its folder evaluates to the same ppl", ev0.stdout.strip()[-40:],
      (ev1.stdout.strip()[-40:], ev1.stderr.strip()[:300]))
alone = os.path.join(d, "renamed-alone.h5")
shutil.copyfile(moved, alone)
for cmd in (["eval", "--model", MODEL, "--store", alone] + EVAL,
            ["export", "--store", alone, "--out", os.path.join(d, "x-alone")]):
    p = run(cmd)
    errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
    check(p.returncode != 0 and len(errs) == 1 and "renamed-alone.h5.d" in errs[0] and "before-rename" not in errs[0],
          f"{cmd[0]}: a top file without its folder names the folder it needs", "renamed-alone.h5.d",
          p.stderr.strip()[:300])

# ---- nothing non-finite is written ---------------------------------------------------------------
# export: lora_B x rank / lora_alpha must fit in float32
xo = os.path.join(d, "tiny-alpha")
p = run(["export", "--store", ref, "--out", xo, "--lora-alpha", "1e-40"], 0, timeout=120)
errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
check(p.returncode != 0 and len(errs) == 1 and "does not fit in float32" in errs[0]
      and not os.path.exists(os.path.join(xo, "adapter", "adapter_model.safetensors")),
      "export with a tiny --lora-alpha refuses to write an infinite lora_B", "one error line, no adapter",
      p.stderr.strip()[:300])

m = model_copy(d, "zero-q")
zero_tensor(m, "model.layers.1.self_attn.q_proj.weight")
zs = os.path.join(d, "zero.h5")
p = init(zs, model=m)
check(p.returncode == 0, "init of a model with an all-zero q_proj", 0, p.stderr.strip()[:300])
if p.returncode == 0:
    with h5py.File(zs) as f:
        g = f["layers/1/self_attn.q_proj"]
        vals = [g.attrs[k] for k in ("objective", "objective_zero", "objective_ratio")]
        finite = all(np.isfinite(f[f"layers/{b}/{mod}"].attrs[k]) for b in f["layers"] for mod in f[f"layers/{b}"]
                     for k in ("objective", "objective_zero", "objective_ratio"))
    check(vals == [0.0, 0.0, 1.0] and finite, "an exact Q records objective 0, 0 and ratio 1; every attribute finite",
          [0.0, 0.0, 1.0], vals)

# two runs on one --out: the second is refused before any work, whether it would resume or --force
slow = ["--calib", WIKI_VALID, "--nsamples", "128", "--seqlen", "512", "--bits", "2", "--group-size", "32",
        "--rank", "4", "--quantizer", "gptq", "--init", "loftq", "--loftq-iters", "100", "--propagate", "sequential"]
for force in ([], ["--force"]):
    cc = os.path.join(d, "concurrent.h5")
    for x in (cc, cc + ".d"):
        shutil.rmtree(x, ignore_errors=True) if os.path.isdir(x) else (os.path.exists(x) and os.remove(x))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", CLOQ_DEVICE="cpu")
    first = subprocess.Popen([CLOQ, "init", "--model", MODEL, "--out", cc] + slow, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not os.path.exists(os.path.join(cc + ".partial.d", "settings.h5")) and time.time() - t0 < 60:
        time.sleep(0.05)
    t1 = time.time()
    second = run(["init", "--model", MODEL, "--out", cc] + slow + force, 0)
    took = time.time() - t1
    running = first.poll() is None
    err = second.stderr.strip()
    check(running and second.returncode != 0 and "another cloq run is writing" in err and len(err.splitlines()) == 1,
          f"a second run on the same --out {' '.join(force)} is refused while the first runs ({took:.1f} s)",
          "one line: another cloq run is writing", err[:300])
    out1, err1 = first.communicate(timeout=600)
    check(first.returncode == 0 and os.path.exists(cc), f"the first run completes {' '.join(force)}", 0, err1[-300:])
    ev = run(["eval", "--model", MODEL, "--store", cc, "--data", WIKI_VALID, "--limit", "2", "--seqlen", "64"])
    check(ev.returncode == 0, "its store evaluates", 0, ev.stderr.strip()[:300])

# ---- a full disk ----------------------------------------------------------------------------------
import subprocess as sp
calib_small = os.path.join(d, "small.tokens")
write_tokens(calib_small, [list(range(3, 67)), list(range(100, 164))])
mnt = os.path.join(d, "full")
os.makedirs(mnt)
SMALL = ["--calib", calib_small, "--calib-format", "tokens", "--bits", "4", "--group-size", "32", "--rank", "4"]
try:
    for size, stage in (("40k", "settings"), ("300k", "blocks")):
        for np_ in (0, 2):
            r = sp.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt], capture_output=True, text=True)
            check(r.returncode == 0, f"mount a {size} tmpfs (needs root)", 0, r.stderr.strip())
            if r.returncode:
                break
            try:
                out = os.path.join(mnt, "o.h5")
                p = run(["init", "--model", MODEL, "--out", out] + SMALL, np_)
                errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
                left = sorted(os.path.relpath(os.path.join(r_, f), mnt) for r_, _, fs in os.walk(mnt) for f in fs)
                check(p.returncode == 1 and len(errs) == 1 and "file system is full" in errs[0]
                      and "Segmentation" not in p.stderr and "signal" not in p.stderr,
                      f"disk full at the {stage} (np={np_}): one error line, exit 1: {errs[:1]}",
                      "file system is full", p.stderr.strip()[-400:])
                tmp = [f for f in left if f.endswith(".tmp")]
                check(not tmp and not os.path.exists(out), f"disk full at the {stage} (np={np_}): no .tmp, no store",
                      "none", left)
                if stage == "settings":
                    check(not os.listdir(mnt), f"disk full at the settings (np={np_}): nothing left", [],
                          os.listdir(mnt))
                else:
                    # one writer fills the disk block by block (at least one fits); two ranks reserve
                    # at once and may both fail first: every block left is complete either way
                    blocks = [f for f in left if f.startswith("o.h5.partial.d/block_")]
                    whole = all(h5py.File(os.path.join(mnt, f), "r").attrs["complete"] == 1 for f in blocks)
                    check((len(blocks) >= 1 or np_ > 1) and whole and "o.h5.partial.d/settings.h5" in left,
                          f"disk full at the blocks (np={np_}): {len(blocks)} complete block(s) kept for a resume",
                          ">= 1 complete" if np_ == 0 else "complete ones only", left)
            finally:
                sp.run(["umount", mnt])
finally:
    sp.run(["umount", mnt], capture_output=True)
done()
