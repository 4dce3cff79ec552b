"""Sweeps, sequential propagation and the ScaLAPACK path, end to end on stories260K.
- `cloq sweep` writes one store per (bits, rank), each bitwise equal to `cloq init` of that
  configuration (every rank is a truncation of one basis solved at the largest rank rounded up to
  64), with one calibration pass, one Cholesky factorization per block input and one quantization
  + one partial eigensolve per module and bits setting for the whole sweep.
- --propagate sequential gives bitwise equal stores at 1, 2, 3 and 4 ranks, and differs from
  full-precision propagation after block 0 (and only there).
- --dist-threshold 1 (every decomposition on ScaLAPACK) at 2, 3 and 4 ranks, in both modes,
  matches the LAPACK path: codes, scales and zeros equal, LoRA products within float32 rounding.
- on a synthetic model whose layers are wider than 64 (so the basis is solved at 64, not at the
  layer's smaller side): a sweep over ranks 8 and 16 equals init at 8 and 16 bitwise, a sweep
  whose largest rank is 80 (solved at 96) matches init at 8 to PRODUCT_REL_TOL; ScaLAPACK with
  blocks of 128 (more eigenvectors asked of pdsyevr than used) and the svd and LoftQ inits on
  ScaLAPACK match LAPACK.
- --dry-run prints the plan of every rank and writes nothing."""
import os
import re

import numpy as np

from cloqtest import MODEL, WIKI_VALID, check, done, run, tmpdir
from storecmp import load_layers, products, same_layers

# float32 factors of products that agree to ~1e-12 in float64 (ScaLAPACK vs LAPACK)
PRODUCT_REL_TOL = 1e-5

COMMON = ["--calib", WIKI_VALID, "--group-size", "32", "--nsamples", "8", "--seqlen", "128", "--seed", "5"]
d = tmpdir()


def init(out, bits, rank, np_=0, extra=()):
    return run(["init", "--model", MODEL, "--out", out, "--bits", bits, "--rank", rank] + COMMON + list(extra),
               np_)


# ---- sweeps -------------------------------------------------------------------------------------
for init_kind, bits, ranks in (("cloq", [2, 3], [4, 8]), ("svd", [4], [2, 8])):
    sd = os.path.join(d, f"sweep-{init_kind}")
    p = run(["sweep", "--model", MODEL, "--out", sd, "--init", init_kind, "--bits", ",".join(map(str, bits)),
             "--ranks", ",".join(map(str, ranks))] + COMMON, 2)
    check(p.returncode == 0, f"sweep {init_kind} at 2 ranks", 0, p.stderr.strip()[:300])
    m = re.search(r"work: (\d+) calibration pass\(es\), (\d+) factorizations, (\d+) partial eigensolves, "
                  r"(\d+) quantizations", p.stdout)
    # every init streams the calibration once and factors each H: the stored per-layer objectives
    # need them
    want = (1, 5 * 4, 5 * 7 * len(bits), 5 * 7 * len(bits))
    got = tuple(int(x) for x in m.groups()) if m else None
    check(got == want, f"sweep {init_kind}: one pass, one factor per input, one RTN + solve per module and bits",
          want, got)
    for b in bits:
        for r in ranks:
            one = os.path.join(d, f"one-{init_kind}-{b}-{r}.h5")
            q = init(one, b, r, extra=["--init", init_kind])
            check(q.returncode == 0 and same_layers(load_layers(one), load_layers(os.path.join(sd, f"b{b}-r{r}.h5"))),
                  f"sweep {init_kind} b{b} r{r} equals cloq init", "bitwise equal", q.stderr.strip()[:200])

# extending a sweep keeps the complete stores and computes only the new configurations
sd = os.path.join(d, "sweep-cloq")
p = run(["sweep", "--model", MODEL, "--out", sd, "--bits", "2,3", "--ranks", "4,8,12"] + COMMON, 2)
one = os.path.join(d, "one-cloq-3-12.h5")
q = init(one, 3, 12)
check(p.returncode == 0 and p.stdout.count("keeping ") == 4 and q.returncode == 0
      and same_layers(load_layers(one), load_layers(os.path.join(sd, "b3-r12.h5"))),
      "an extended sweep keeps the 4 complete stores and adds the new rank", "4 kept, b3-r12 equal",
      p.stdout[-400:] + p.stderr[-300:])
p = run(["sweep", "--model", MODEL, "--out", os.path.join(d, "seq"), "--bits", "2", "--ranks", "4",
         "--propagate", "sequential"] + COMMON)
check(p.returncode == 1 and "not available for sweeps" in p.stderr, "sweep refuses sequential propagation",
      "one error line", p.stderr.strip()[:200])

# ---- sequential propagation -----------------------------------------------------------------------
seq = {}
for np_ in (0, 2, 3, 4):
    out = os.path.join(d, f"seq-{np_}.h5")
    p = init(out, 3, 8, np_, ["--propagate", "sequential"])
    check(p.returncode == 0, f"sequential at {max(np_, 1)} rank(s)", 0, p.stderr.strip()[:300])
    seq[np_] = load_layers(out)
for np_ in (2, 3, 4):
    check(same_layers(seq[0], seq[np_]), f"sequential: {np_} ranks equal 1 rank", "bitwise equal", "differs")
full = os.path.join(d, "full.h5")
init(full, 3, 8)
fl = load_layers(full)
changed = sorted({b for (b, m, ds) in fl if ds == "lora_A" and not np.array_equal(fl[(b, m, ds)], seq[0][(b, m, ds)])})
check(changed == [1, 2, 3, 4], "sequential differs from full propagation in blocks 1.. (block 0 sees the same inputs)",
      [1, 2, 3, 4], changed)

# ---- ScaLAPACK ----------------------------------------------------------------------------------
def compare(ref, got, what):
    keys_q = [k for k in ref if k[2] in ("codes", "scales", "zeros")]
    check(all(np.array_equal(ref[k], got[k]) for k in keys_q), f"{what}: codes, scales, zeros equal", "equal", "differ")
    pr, pg = products(ref), products(got)
    worst = max(np.linalg.norm(pg[k] - pr[k]) / np.linalg.norm(pr[k]) for k in pr)
    check(worst < PRODUCT_REL_TOL, f"{what}: LoRA products within {PRODUCT_REL_TOL} (worst {worst:.2e})",
          f"< {PRODUCT_REL_TOL}", worst)


for prop, ref in (("full", fl), ("sequential", seq[0])):
    for np_ in (2, 3, 4):
        out = os.path.join(d, f"dist-{prop}-{np_}.h5")
        p = init(out, 3, 8, np_, ["--propagate", prop, "--dist-threshold", "1", "--dist-block", "16"])
        check(p.returncode == 0, f"ScaLAPACK {prop} at {np_} ranks", 0, p.stderr.strip()[:300])
        if p.returncode == 0:
            compare(ref, load_layers(out), f"ScaLAPACK {prop} at {np_} ranks vs LAPACK")

# ---- a model wider than the rounding of the solve rank (64) ----------------------------------------
syn = os.path.join(d, "wide")
p = run(["synth", "--out", syn, "--dim", 96, "--layers", 2, "--heads", 4, "--mlp", 160, "--vocab", 256,
         "--max-pos", 256, "--calib-samples", 6, "--calib-seqlen", 128, "--seed", 4], timeout=120)
check(p.returncode == 0, "synth: a 2-block d-96 model", 0, p.stderr.strip()[:200])
WIDE = ["--model", syn, "--calib", os.path.join(syn, "calib.tok"), "--calib-format", "tokens", "--nsamples", 6,
        "--group-size", 32, "--bits", 3]


def wide(out, rank, np_=0, extra=()):
    return run(["init", "--out", out, "--rank", rank] + WIDE + list(extra), np_)


sw = os.path.join(d, "wide-sweep")
p = run(["sweep", "--out", sw, "--ranks", "8,16"] + WIDE, 2)
check(p.returncode == 0, "wide sweep, ranks 8 and 16", 0, p.stderr.strip()[:300])
wl = {}
for r in (8, 16):
    one = os.path.join(d, f"wide-{r}.h5")
    q = wide(one, r)
    wl[r] = load_layers(one)
    check(q.returncode == 0 and same_layers(wl[r], load_layers(os.path.join(sw, f"b3-r{r}.h5"))),
          f"wide: sweep r{r} (solved at 64 < 96) equals init bitwise", "bitwise equal", q.stderr.strip()[:200])
sw80 = os.path.join(d, "wide-sweep80")
p = run(["sweep", "--out", sw80, "--ranks", "8,80"] + WIDE, 2)
if p.returncode == 0:
    compare(wl[8], load_layers(os.path.join(sw80, "b3-r8.h5")), "wide: r8 of a sweep solved at 96 vs init r8")
else:
    check(False, "wide sweep, ranks 8 and 80", 0, p.stderr.strip()[:300])
for init_kind in ("cloq", "svd", "loftq"):
    extra = ["--init", init_kind] + (["--loftq-iters", 2] if init_kind == "loftq" else [])
    ref = os.path.join(d, f"wide-ref-{init_kind}.h5")
    q = wide(ref, 8, 0, extra)
    for np_, nb in ((2, 128), (3, 16)):
        out = os.path.join(d, f"wide-dist-{init_kind}-{np_}.h5")
        p = wide(out, 8, np_, extra + ["--dist-threshold", 1, "--dist-block", nb])
        check(q.returncode == 0 and p.returncode == 0, f"wide {init_kind}: ScaLAPACK at {np_} ranks, blocks of {nb}",
              0, (q.stderr + p.stderr).strip()[:300])
        if q.returncode == 0 and p.returncode == 0:
            compare(load_layers(ref), load_layers(out), f"wide {init_kind}: ScaLAPACK ({np_} ranks, nb {nb}) vs LAPACK")

# ---- lazy weights (one block's linears in memory at a time): the same stores ----------------------
for np_ in (0, 3):
    lz = os.path.join(d, f"lazy-{np_}.h5")
    p = init(lz, 3, 8, np_, ["--weights", "lazy"])
    check(p.returncode == 0 and same_layers(load_layers(lz), fl), f"--weights lazy at {max(np_, 1)} rank(s) equals resident",
          "bitwise equal", p.stderr.strip()[:200])
p = init(os.path.join(d, "lazyseq.h5"), 3, 8, 0, ["--weights", "lazy", "--propagate", "sequential"])
check(p.returncode == 1 and "--weights lazy needs --propagate full" in p.stderr, "lazy weights refuse sequential",
      "one error line", p.stderr.strip()[:200])

# ---- the plan -----------------------------------------------------------------------------------
out = os.path.join(d, "dry.h5")
p = init(out, 4, 16, 3, ["--dry-run"])
lines = [l for l in p.stdout.splitlines() if l.startswith("rank ")]
check(p.returncode == 0 and len([l for l in lines if "peak memory" in l]) == 3
      and len([l for l in lines if "flops" in l]) == 3, "--dry-run: blocks, memory and flops for each of 3 ranks",
      "3 + 3 lines", p.stdout[-600:])
check(not os.path.exists(out) and not os.path.exists(out + ".partial.d"), "--dry-run writes nothing", "nothing",
      os.listdir(d))
p = init(os.path.join(d, "rss.h5"), 4, 16, 2)
check(p.returncode == 0 and re.search(r"peak RSS \(MiB\): rank 0 [\d.]+, rank 1 [\d.]+", p.stdout) is not None,
      "the end of a run reports the peak RSS of every rank", "peak RSS line", p.stdout[-300:])
done()
