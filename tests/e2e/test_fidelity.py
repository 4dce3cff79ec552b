"""Fidelity on the real stories260K model: quantizers (rtn, gptq, gptq + MagR), inits (zero, svd,
cloq, loftq), the per-layer objectives written into every store, and `cloq eval --kl`.

Checks:
  - every store holds, for every module, the calibrated objective of Q + BA and of Q alone (the
    zero init), and their ratio;
  - at every setting (quantizer x bits x rank), CLoQ's objective is <= that of zero and svd on
    every layer (it is the exact minimizer for its Q);
  - with the RTN quantizer (the paper's comparison: LoftQ re-quantizes W - L data-free) at several
    settings, CLoQ's objective is also <= LoftQ's on every layer. On a GPTQ base LoftQ's
    re-quantization uses the Gram matrix too and can beat CLoQ's fixed Q on some layers (measured
    and printed; the test asserts only that CLoQ's total over the model stays below LoftQ's at 2
    and 3 bits: at 4 bits LoftQ + GPTQ's total was measured lower);
  - GPTQ's objective with B A = 0 (its reconstruction error ||X (Q - W)^T||^2 with the damped Gram
    matrix) is never above RTN's, layer by layer;
  - MagR changes the quantized weights, and the init still sees the original W (objective of the
    zero init computed against W, not against MagR's image);
  - LoftQ with one alternation is bitwise the svd init; with three it is not;
  - `cloq eval --kl`: the printed KL equals a NumPy KL computed from the two models' dumped
    logits; ppl_fp equals the plain full-precision eval; --kl does not change the store's ppl;
    the KL grows as bits shrink;
  - bad settings are refused with one line.
"""
import os

import h5py
import numpy as np

from cloqtest import MODEL, WIKI_VALID, check, done, override, run, tmpdir, write_tokens
from storecmp import load_layers, same_layers

MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
SLACK = 1e-9  # CLoQ is the exact minimizer for its Q: only rounding may put it above another init
d = tmpdir()
COMMON = ["--model", MODEL, "--calib", WIKI_VALID, "--nsamples", 16, "--seqlen", 256,
          "--group-size", 32]


def sweep(name, init, extra, bits, ranks):
    out = os.path.join(d, name)
    p = run(["sweep"] + override(COMMON, ["--init", init, "--bits", bits, "--ranks", ranks, "--out", out, *extra]))
    check(p.returncode == 0, f"sweep {name} exits 0", 0, p.stderr.strip()[-400:])
    return out, p


def objectives(path):
    with h5py.File(path, "r") as f:
        return {(b, m): (f[f"layers/{b}/{m}"].attrs["objective"], f[f"layers/{b}/{m}"].attrs["objective_zero"],
                         f[f"layers/{b}/{m}"].attrs["objective_ratio"])
                for b in range(5) for m in MODULES}


SETTINGS = {  # name: (quantizer flags, bits list, ranks list)
    "rtn": ([], "2,3", "8,16"),
    "rtn-row": (["--group-size", -1], "4", "8"),
    "gptq-act": (["--quantizer", "gptq", "--act-order"], "2,4", "8,16"),
    "gptq-magr": (["--quantizer", "gptq", "--magr"], "3", "16"),
}
stores = {}
for sname, (flags, bits, ranks) in SETTINGS.items():
    for init in ("zero", "svd", "cloq", "loftq"):
        extra = flags + (["--loftq-iters", 3] if init == "loftq" else [])
        out, p = sweep(f"{sname}-{init}", init, extra, bits, ranks)
        if init == "cloq":
            check("objective " in p.stdout and "layer/zero-init ratio mean" in p.stdout,
                  f"{sname}: the init prints its objective summary", "summary line", p.stdout[-300:])
        stores[(sname, init)] = out

# 1. objectives present, consistent, and CLoQ never above the other inits
for sname, (flags, bits, ranks) in SETTINGS.items():
    for b_ in bits.split(","):
        for r_ in ranks.split(","):
            f = f"b{b_}-r{r_}.h5"
            obj = {init: objectives(os.path.join(stores[(sname, init)], f))
                   for init in ("zero", "svd", "cloq", "loftq")}
            finite = all(np.isfinite(v).all() and v[1] > 0 for o in obj.values() for v in o.values())
            check(finite, f"{sname} {f}: every layer's objectives are finite and positive", True, finite)
            ratio_ok = all(abs(v[2] - v[0] / v[1]) <= 1e-12 * abs(v[2]) for o in obj.values() for v in o.values())
            check(ratio_ok, f"{sname} {f}: objective_ratio = objective / objective_zero", True, ratio_ok)
            z = obj["zero"]
            check(all(z[k][0] == z[k][1] for k in z), f"{sname} {f}: zero init's objective is its Q's", True, False)
            same_q = all(obj[i][k][1] == z[k][1] for i in ("svd", "cloq") for k in z)
            check(same_q, f"{sname} {f}: zero, svd and cloq share one Q (same objective_zero)", True, same_q)
            for other in ("zero", "svd", "loftq"):
                bad = [k for k in z if obj["cloq"][k][0] > obj[other][k][0] * (1 + SLACK)]
                worst = max(obj["cloq"][k][0] / obj[other][k][0] for k in z)
                if other == "loftq" and sname.startswith("gptq"):
                    tc, tl = sum(v[0] for v in obj["cloq"].values()), sum(v[0] for v in obj["loftq"].values())
                    print(f"note {sname} {f}: LoftQ with GPTQ re-quantization below CLoQ on {len(bad)} of 35 "
                          f"layers (largest CLoQ/LoftQ {worst:.4f}); totals CLoQ {tc:.6g}, LoftQ {tl:.6g}")
                    if int(b_) <= 3:  # the paper's regime; at 4 bits LoftQ + GPTQ measured lower
                        check(tc <= tl, f"{sname} {f}: CLoQ's total objective <= LoftQ's", "<=", (tc, tl))
                    continue
                check(not bad, f"{sname} {f}: CLoQ objective <= {other} on all 35 layers "
                      f"(largest ratio {worst:.4f})", "no layer above", bad[:3])

# 2. GPTQ's reconstruction error never above RTN's (same bits, group size, Gram matrix)
for bits in (2,):
    f = f"b{bits}-r8.h5"
    rtn = objectives(os.path.join(stores[("rtn", "zero")], f))
    gq = objectives(os.path.join(stores[("gptq-act", "zero")], f))
    bad = [k for k in rtn if gq[k][1] > rtn[k][1]]
    mean = np.mean([gq[k][1] / rtn[k][1] for k in rtn])
    check(not bad, f"{bits}-bit: GPTQ (act-order) error <= RTN's on every layer (mean ratio {mean:.3f})",
          "no layer above", bad[:3])
# gptq without act-order at 3 bits (the MagR setting's plain twin)
out_g3, _ = sweep("gptq3-zero", "zero", ["--quantizer", "gptq"], "3", "16")
out_r3, _ = sweep("rtn3-zero", "zero", [], "3", "16")
g3 = objectives(os.path.join(out_g3, "b3-r16.h5"))
r3 = objectives(os.path.join(out_r3, "b3-r16.h5"))
bad = [k for k in r3 if g3[k][1] > r3[k][1]]
check(not bad, "3-bit: GPTQ error <= RTN's on every layer (mean ratio "
      f"{np.mean([g3[k][1] / r3[k][1] for k in r3]):.3f})", "no layer above", bad[:3])

# 3. MagR: other codes than plain GPTQ; its objective_zero is measured against the original W
mg = load_layers(os.path.join(stores[("gptq-magr", "zero")], "b3-r16.h5"))
pg = load_layers(os.path.join(out_g3, "b3-r16.h5"))
ndiff = sum(int((mg[k] != pg[k]).sum()) for k in mg if k[2] == "codes")
check(ndiff > 0, f"MagR changes the GPTQ codes ({ndiff} codes differ)", "> 0", ndiff)
mo = objectives(os.path.join(stores[("gptq-magr", "zero")], "b3-r16.h5"))
rel = np.mean([abs(mo[k][1] - g3[k][1]) / g3[k][1] for k in g3])
check(rel < 1.0, f"MagR + GPTQ error is of the order of GPTQ's (mean relative difference {rel:.3f})",
      "< 1", rel)

# 4. LoftQ: T = 1 is the svd init, bitwise; T = 3 differs
l1, _ = sweep("rtn-loftq1", "loftq", ["--loftq-iters", 1], "2,3", "8,16")
for f in ("b2-r8.h5", "b3-r16.h5"):
    a, b = load_layers(os.path.join(l1, f)), load_layers(os.path.join(stores[("rtn", "svd")], f))
    check(same_layers(a, b), f"loftq --loftq-iters 1 equals svd bitwise ({f})", True, False)
a = load_layers(os.path.join(stores[("rtn", "loftq")], "b2-r8.h5"))
b = load_layers(os.path.join(stores[("rtn", "svd")], "b2-r8.h5"))
ndiff = sum(int((a[k] != b[k]).sum()) for k in a if k[2] == "codes")
check(ndiff > 0, f"loftq with 3 alternations re-quantizes W - L ({ndiff} codes differ from svd's)", "> 0", ndiff)
with h5py.File(os.path.join(stores[("rtn", "loftq")], "b2-r8.h5"), "r") as f:
    init_attr = f.attrs["init"].decode() if isinstance(f.attrs["init"], bytes) else str(f.attrs["init"])
    check(init_attr == "loftq" and int(f.attrs["loftq_iters"]) == 3, "store records init loftq, 3 iterations",
          ("loftq", 3), (init_attr, f.attrs["loftq_iters"]))

# 5. eval --kl against NumPy on dumped logits, and its consistency with plain evals
seq = os.path.join(d, "one.tokens")
write_tokens(seq, [[1, 45, 300, 79]])  # 3 predicting positions: exactly the 3 dumped ones
fp_dump, q_dump = os.path.join(d, "fp.txt"), os.path.join(d, "q.txt")
st2 = os.path.join(stores[("rtn", "zero")], "b2-r8.h5")
p_fp = run(["eval", "--model", MODEL, "--data", seq, "--data-format", "tokens", "--dump-logits", fp_dump])
p_q = run(["eval", "--model", MODEL, "--store", st2, "--data", seq, "--data-format", "tokens",
           "--dump-logits", q_dump])
check(p_fp.returncode == 0 and p_q.returncode == 0, "evals with --dump-logits exit 0", 0, p_q.stderr.strip())
p_kl = run(["eval", "--model", MODEL, "--store", st2, "--data", seq, "--data-format", "tokens", "--kl"])
check(p_kl.returncode == 0, "eval --kl exits 0", 0, p_kl.stderr.strip())


def val(proc, key):
    for line in proc.stdout.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[1])
    return None


A, B = np.loadtxt(fp_dump), np.loadtxt(q_dump)
la = A - A.max(1, keepdims=True)
la -= np.log(np.exp(la).sum(1, keepdims=True))
lb = B - B.max(1, keepdims=True)
lb -= np.log(np.exp(lb).sum(1, keepdims=True))
kl_np = float(np.mean((np.exp(la) * (la - lb)).sum(1)))
kl = val(p_kl, "kl")
check(kl is not None and abs(kl - kl_np) <= 1e-5 * kl_np + 1e-9,
      f"eval --kl = NumPy KL from the dumped logits ({kl} vs {kl_np:.8f})", kl_np, kl)

data = ["--data", os.path.join(os.path.dirname(WIKI_VALID), "wiki.test.raw"), "--seqlen", 256, "--limit", 8]
plain_fp = run(["eval", "--model", MODEL, *data])
plain_q = run(["eval", "--model", MODEL, "--store", st2, *data])
with_kl = run(["eval", "--model", MODEL, "--store", st2, *data, "--kl"])
check(val(with_kl, "ppl_fp") == val(plain_fp, "ppl"), "ppl_fp of --kl = plain full-precision ppl",
      val(plain_fp, "ppl"), val(with_kl, "ppl_fp"))
check(val(with_kl, "ppl") == val(plain_q, "ppl"), "--kl leaves the store's ppl unchanged",
      val(plain_q, "ppl"), val(with_kl, "ppl"))
with_kl2 = run(["eval", "--model", MODEL, "--store", st2, *data, "--kl"], np_=2)
check(val(with_kl2, "kl") == val(with_kl, "kl"), "eval --kl at 2 ranks prints the same KL",
      val(with_kl, "kl"), val(with_kl2, "kl"))
st3 = os.path.join(stores[("rtn", "zero")], "b3-r16.h5")
kl3 = val(run(["eval", "--model", MODEL, "--store", st3, *data, "--kl"]), "kl")
kl2 = val(with_kl, "kl")
check(kl2 is not None and kl3 is not None and 0 < kl3 < kl2, f"KL: 3-bit {kl3} < 2-bit {kl2}", "0 < kl3 < kl2",
      (kl3, kl2))
stc = os.path.join(stores[("rtn", "cloq")], "b2-r8.h5")
klc = val(run(["eval", "--model", MODEL, "--store", stc, *data, "--kl"]), "kl")
check(klc is not None and klc < kl2, f"KL: 2-bit CLoQ {klc} < 2-bit zero init {kl2}", "<", klc)

# 6. bad settings: one line, exit 1
bad = {
    "--kl without --store": ["eval", "--model", MODEL, "--data", seq, "--data-format", "tokens", "--kl"],
    "--act-order with rtn": ["init", *COMMON, "--out", os.path.join(d, "x.h5"), "--act-order"],
    "negative --magr-alpha": ["init", *COMMON, "--out", os.path.join(d, "x.h5"), "--magr", "--magr-alpha", "-1"],
    "--loftq-iters 0": ["init", *COMMON, "--out", os.path.join(d, "x.h5"), "--init", "loftq", "--loftq-iters", "0"],
    "unknown quantizer": ["init", *COMMON, "--out", os.path.join(d, "x.h5"), "--quantizer", "awq"],
}
for what, args in bad.items():
    p = run(args)
    lines = p.stderr.strip().splitlines()
    check(p.returncode == 1 and len(lines) == 1 and lines[0].startswith("cloq: error:"),
          f"{what}: one error line, exit 1", "rc 1, one line", (p.returncode, p.stderr.strip()))
check(not os.path.exists(os.path.join(d, "x.h5")), "no store left by refused settings", False, True)
done()
