"""Beyond the closed form (issue 17), on the real stories260K model: CLoQ's joint alternation
(--cloq-iters), the COMQ quantizer, QuAILoRA, and rank allocation under a budget (--rank-budget),
each checked against what it promises.

  1. --cloq-iters T: per module, the chosen iterate's objective at the largest rank is the lowest
     of the T recorded (iter_objectives, iter_chosen), the first recorded is T = 1's objective
     bitwise, so T = 3 is never above T = 1 on any layer (rtn, gptq and comq bases); a sweep's
     smaller rank records the same iterates' objectives at its own rank and keeps the lowest, so
     it is never above T = 1 there either; T = 1 is bitwise the default store; the zero-init
     objective is T = 1's (quant(W)).
  2. COMQ: its Q's objective (objective_zero) is never above its starting quantizer's on any layer
     (from RTN, and from GPTQ with --comq-init gptq).
  3. QuAILoRA: per module, the recorded objectives decrease monotonically from the svd init's,
     and end between CLoQ's exact optimum and the svd init's.
  4. --rank-budget: every module records its rank (1..--rank), its factors are zero beyond it, the
     parameters stay within the budget, each module's objective equals the uniform store's at its
     rank, and the total (raw or relative, as weighted) is no worse than uniform ranks spending
     the same parameters. The PEFT export writes rank_pattern/alpha_pattern, and PeftModel loads
     it and reproduces `cloq eval --store`'s perplexity (bench/peers/.venv).
  5. Bad settings: one error line each.
"""
import json
import os
import subprocess

import h5py
import numpy as np

from cloqtest import MODEL, check, done, override, ppl_of, run, tmpdir

MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
L = 5
SLACK = 1e-12  # relative: rounding of objectives computed by different formulas
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_PY = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
d = tmpdir()
calib, data = os.path.join(d, "calib.tok"), os.path.join(d, "eval.tok")
for path, seed, n in ((calib, 1, 16), (data, 2, 32)):
    p = run(["sample", "--model", MODEL, "--n", n, "--length", 256, "--seed", seed, "--out", path])
    check(p.returncode == 0, f"sample {os.path.basename(path)}", 0, p.stderr.strip())
COMMON = ["--model", MODEL, "--calib", calib, "--calib-format", "tokens", "--nsamples", 16,
          "--group-size", 32]


def init(name, extra, cmd="init"):
    out = os.path.join(d, name)
    p_ = run([cmd] + override(COMMON, ["--out", out, *extra]))
    check(p_.returncode == 0, f"{cmd} {name} {' '.join(map(str, extra))}", 0, p_.stderr.strip()[-500:])
    return out, p_


def attrs(path):
    with h5py.File(path, "r") as f:
        return {(b, m): dict(f[f"layers/{b}/{m}"].attrs) for b in range(L) for m in MODULES}


def arrays(path, keys=("codes", "scales", "zeros", "lora_A", "lora_B")):
    with h5py.File(path, "r") as f:
        return {(b, m, k): f[f"layers/{b}/{m}/{k}"][()] for b in range(L) for m in MODULES for k in keys}


def imbalance(arr, keys):
    """The worst max|B^T B - A A^T| / max|A|^2 over modules keys: 0 for a balanced split."""
    return max(float(np.abs((arr[(b, m, 'lora_B')].T.astype(np.float64) @ arr[(b, m, 'lora_B')] -
                             arr[(b, m, 'lora_A')].astype(np.float64) @ arr[(b, m, 'lora_A')].T)).max() /
                     max(np.abs(arr[(b, m, 'lora_A')]).max() ** 2, 1e-30)) for b, m in keys)


# ---- 1. the joint alternation --------------------------------------------------------------------
for qname, qflags in (("rtn", []), ("gptq", ["--quantizer", "gptq"]), ("comq", ["--quantizer", "comq"])):
    s1, _ = init(f"{qname}-t1", ["--bits", "2", "--ranks", "8,16", *qflags], cmd="sweep")
    s3, _ = init(f"{qname}-t3", ["--bits", "2", "--ranks", "8,16", "--cloq-iters", 3, *qflags], cmd="sweep")
    a1, a3 = attrs(os.path.join(s1, "b2-r16.h5")), attrs(os.path.join(s3, "b2-r16.h5"))
    a3s = attrs(os.path.join(s3, "b2-r8.h5"))
    rec = all(len(v["iter_objectives"]) == 3 and 1 <= v["iter_chosen"] <= 3 for v in a3.values())
    check(rec, f"{qname}: every module records 3 iterates and the chosen one", True, rec)
    low = all(v["objective"] == v["iter_objectives"][v["iter_chosen"] - 1] ==
              min(v["iter_objectives"]) for v in a3.values())
    check(low, f"{qname}: the kept iterate is the lowest at the largest rank (rank 16)", True, low)
    first = all(a3[k]["iter_objectives"][0] == a1[k]["objective"] for k in a1)
    check(first, f"{qname}: the first iterate is T = 1's closed form (bitwise)", True, first)
    worse = [k for k in a1 if a3[k]["objective"] > a1[k]["objective"] * (1 + SLACK)]
    t1, t3 = sum(v["objective"] for v in a1.values()), sum(v["objective"] for v in a3.values())
    nbetter = sum(a3[k]["objective"] < a1[k]["objective"] for k in a1)
    check(not worse, f"{qname}: T = 3 never above T = 1 on any layer at rank 16 (better on {nbetter} "
          f"of 35; total {t3:.6g} vs {t1:.6g})", "none above", worse[:3])
    same0 = all(a3[k]["objective_zero"] == a1[k]["objective_zero"] for k in a1)
    check(same0, f"{qname}: objective_zero is quant(W)'s in both", True, same0)
    # the sweep's smaller rank keeps the best of the same iterates at its own rank
    a1s = attrs(os.path.join(s1, "b2-r8.h5"))
    own = all(len(v["iter_objectives"]) == 3 and v["objective"] == v["iter_objectives"][v["iter_chosen"] - 1] ==
              min(v["iter_objectives"]) for v in a3s.values())
    check(own, f"{qname}: rank 8 of the sweep keeps the lowest of the 3 iterates at rank 8", True, own)
    first8 = all(a3s[k]["iter_objectives"][0] == a1s[k]["objective"] for k in a1s)
    check(first8, f"{qname}: rank 8's first iterate is T = 1's rank-8 closed form (bitwise)", True, first8)
    worse8 = [k for k in a1s if a3s[k]["objective"] > a1s[k]["objective"] * (1 + SLACK)]
    nother = sum(a3s[k]["iter_chosen"] != a3[k]["iter_chosen"] for k in a3)
    check(not worse8, f"{qname}: T = 3 never above T = 1 on any layer at the sweep's rank 8 ({nother} of 35 "
          "keep another iterate than rank 16)", "none above", worse8[:3])
    a3s_arr = arrays(os.path.join(s3, "b2-r8.h5"))
    a1s_arr, a3_arr = arrays(os.path.join(s1, "b2-r8.h5")), arrays(os.path.join(s3, "b2-r16.h5"))
    firsts = [k for k in a3s if a3s[k]["iter_chosen"] == 1]
    same1 = all(np.array_equal(a3s_arr[(*k, x)], a1s_arr[(*k, x)]) for k in firsts for x in ("codes", "lora_A", "lora_B"))
    check(same1, f"{qname}: rank 8 modules keeping the first iterate are bitwise T = 1's ({len(firsts)} of 35)",
          True, same1)
    shared = [k for k in a3s if a3s[k]["iter_chosen"] == a3[k]["iter_chosen"]]
    same16 = all(np.array_equal(a3s_arr[(*k, "codes")], a3_arr[(*k, "codes")]) for k in shared)
    check(same16, f"{qname}: rank 8 modules keeping rank 16's iterate hold its codes ({len(shared)} of 35)",
          True, same16)
    bal = imbalance(a3s_arr, [(b, m) for b in range(L) for m in MODULES])
    check(bal <= 1e-4, f"{qname}: rank 8's factors are split in balance (B^T B = A A^T, worst {bal:.1e})",
          "<= 1e-4", bal)
    if qname == "rtn":
        # the per-rank results travel from the rank that computed a unit to the block's owner in
        # the sweep's order: on 2 ranks with --dist-threshold 64, a model whose MLP is narrower
        # (48) than its width (64) solves the attention units on ScaLAPACK and spreads the MLP's two
        # units over the ranks (one computed away from its owner); those match 1 rank bitwise
        syn = os.path.join(d, "narrow-mlp")
        p_ = run(["synth", "--out", syn, "--dim", 64, "--layers", 2, "--heads", 4, "--mlp", 48, "--vocab", 256,
                  "--max-pos", 256, "--calib-samples", 8, "--calib-seqlen", 128, "--seed", 3], timeout=120)
        check(p_.returncode == 0, "synth: a 2-block d-64 model with a 48-wide MLP", 0, p_.stderr.strip()[:200])
        sw = ["sweep", "--model", syn, "--calib", os.path.join(syn, "calib.tok"), "--calib-format", "tokens",
              "--nsamples", 8, "--group-size", 16, "--bits", 2, "--ranks", "8,16", "--cloq-iters", 3]
        o1, o2 = os.path.join(d, "narrow-np1"), os.path.join(d, "narrow-np2")
        p1 = run(sw + ["--out", o1])
        p2 = run(sw + ["--out", o2, "--dist-threshold", 64], np_=2)
        check(p1.returncode == 0 and p2.returncode == 0, "sweep --cloq-iters 3 on 1 rank and on 2 (dist-threshold 64)",
              0, (p1.stderr.strip()[-300:], p2.stderr.strip()[-300:]))
        mlp = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
        for rr in (8, 16):
            same = True
            with h5py.File(os.path.join(o1, f"b2-r{rr}.h5"), "r") as f1, h5py.File(os.path.join(o2, f"b2-r{rr}.h5"), "r") as f2:
                for b in range(2):
                    for m in mlp:
                        g1, g2 = f1[f"layers/{b}/{m}"], f2[f"layers/{b}/{m}"]
                        same &= all(np.array_equal(g1[k][()], g2[k][()]) for k in ("codes", "scales", "zeros", "lora_A", "lora_B"))
                        same &= bool(np.array_equal(g1.attrs["iter_objectives"], g2.attrs["iter_objectives"]) and
                                     g1.attrs["iter_chosen"] == g2.attrs["iter_chosen"])
            check(same, f"--cloq-iters 3 sweep, rank {rr}: MLP modules on 2 ranks bitwise 1 rank", True, same)
        s_def, _ = init("rtn-default", ["--bits", "2", "--ranks", "8,16"], cmd="sweep")
        x, y = arrays(os.path.join(s1, "b2-r16.h5")), arrays(os.path.join(s_def, "b2-r16.h5"))
        same = all(np.array_equal(x[k], y[k]) for k in x)
        check(same, "--cloq-iters 1 is bitwise the default", True, same)
        one, _ = init("rtn-t3-init", ["--bits", 2, "--rank", 16, "--cloq-iters", 3])
        x, y = arrays(one), arrays(os.path.join(s3, "b2-r16.h5"))
        same = all(np.array_equal(x[k], y[k]) for k in x)
        check(same, "--cloq-iters 3: init at rank 16 is bitwise the sweep's rank-16 store", True, same)

# ---- 2. COMQ never above its start ---------------------------------------------------------------
for start, flags in (("rtn", []), ("gptq", ["--comq-init", "gptq"])):
    base, _ = init(f"zero-{start}", ["--bits", 2, "--rank", 8, "--init", "zero"] +
                   (["--quantizer", "gptq"] if start == "gptq" else []))
    cq, _ = init(f"zero-comq-{start}", ["--bits", 2, "--rank", 8, "--init", "zero", "--quantizer", "comq", *flags])
    ab, ac = attrs(base), attrs(cq)
    bad = [k for k in ab if ac[k]["objective_zero"] > ab[k]["objective_zero"] * (1 + SLACK)]
    ratio = np.mean([ac[k]["objective_zero"] / ab[k]["objective_zero"] for k in ab])
    check(not bad, f"COMQ from {start}: Q's objective never above {start}'s on any layer (mean ratio "
          f"{ratio:.3f})", "none above", bad[:3])
    with h5py.File(cq, "r") as f:
        check(f.attrs["quantizer"] == b"comq" and f.attrs["comq_iters"] == 3 and
              f.attrs.get("comq_init", 0) == (start == "gptq"), f"COMQ from {start}: the store records it",
              ("comq", 3), (f.attrs["quantizer"], f.attrs.get("comq_iters")))

# ---- 3. QuAILoRA ---------------------------------------------------------------------------------
qs, _ = init("quailora", ["--bits", 2, "--rank", 8, "--init", "quailora", "--quailora-iters", 5])
ss, _ = init("svd", ["--bits", 2, "--rank", 8, "--init", "svd"])
cs, _ = init("cloq", ["--bits", 2, "--rank", 8])
aq, asv, ac = attrs(qs), attrs(ss), attrs(cs)
mono = all(np.all(np.diff(v["iter_objectives"]) <= 1e-12 * v["iter_objectives"][0]) and
           len(v["iter_objectives"]) == 6 for v in aq.values())
check(mono, "QuAILoRA: 6 recorded objectives per module, non-increasing", True, mono)
start = max(abs(aq[k]["iter_objectives"][0] - asv[k]["objective"]) / asv[k]["objective_zero"] for k in aq)
# obj[0] is that of the float32 svd factors, the svd init's that of their float64 product:
# measured 1.2e-9 of objective_zero apart
check(start <= 1e-7, f"QuAILoRA starts at the svd init's objective (worst {start:.1e} of objective_zero)",
      "<= 1e-7", start)
between = all(ac[k]["objective"] * (1 - 1e-9) <= aq[k]["objective"] <= asv[k]["objective"] * (1 + 1e-9)
              for k in aq)
tot = [sum(a[k]["objective"] for k in a) for a in (ac, aq, asv)]
check(between, f"QuAILoRA between CLoQ's optimum and svd on every layer (totals cloq {tot[0]:.6g}, "
      f"quailora {tot[1]:.6g}, svd {tot[2]:.6g})", True, between)

# ---- 4. rank budget ------------------------------------------------------------------------------
shapes = {}
with h5py.File(cs, "r") as f:
    for b in range(L):
        for m in MODULES:
            shapes[(b, m)] = f[f"layers/{b}/{m}/codes"].shape
cost = {k: s[0] + s[1] for k, s in shapes.items()}
budget = 8 * sum(cost.values())  # what uniform rank 8 spends
uni = {r: attrs(init(f"uniform-r{r}", ["--bits", 2, "--rank", r])[0]) for r in (1, 2, 4, 8, 16)}
uni_any = {}
for weight in ("relative", "raw"):
    bs, p = init(f"budget-{weight}", ["--bits", 2, "--rank", 16, "--rank-budget", budget,
                                      "--rank-weight", weight])
    check("rank budget:" in p.stdout, f"budget {weight}: the run prints the allocation", "rank budget:",
          p.stdout[-300:])
    ab = attrs(bs)
    ranks = {k: int(v["rank"]) for k, v in ab.items()}
    spent = sum(ranks[k] * cost[k] for k in ranks)
    check(all(1 <= r <= 16 for r in ranks.values()) and spent <= budget,
          f"budget {weight}: ranks in [1, 16] ({min(ranks.values())}..{max(ranks.values())}), "
          f"{spent} of {budget} parameters", f"<= {budget}", spent)
    arr = arrays(bs, ("lora_A", "lora_B"))
    padded = all(not arr[(b, m, "lora_A")][ranks[(b, m)]:].any() and
                 not arr[(b, m, "lora_B")][:, ranks[(b, m)]:].any() for b, m in ranks)
    check(padded, f"budget {weight}: factors are zero beyond each module's rank", True, padded)
    # a module at a rank a uniform run also made has that run's objective
    rel = [abs(ab[k]["objective"] - uni[r][k]["objective"]) / uni[r][k]["objective_zero"]
           for k, r in ranks.items() if r in uni]
    check(rel and max(rel) <= 1e-9, f"budget {weight}: {len(rel)} modules at ranks 1/2/4/8/16 have the "
          f"uniform run's objective (worst {max(rel):.1e} of objective_zero)", "<= 1e-9", max(rel))
    bal = imbalance(arr, ranks)
    check(bal <= 1e-4, f"budget {weight}: re-split factors balanced (B^T B = A A^T, worst {bal:.1e})",
          "<= 1e-4", bal)
    u8 = uni[8]
    if weight == "raw":
        tb, tu = sum(v["objective"] for v in ab.values()), sum(v["objective"] for v in u8.values())
    else:
        tb = sum(v["objective"] / v["objective_zero"] for v in ab.values())
        tu = sum(v["objective"] / v["objective_zero"] for v in u8.values())
    check(tb <= tu, f"budget {weight}: weighted total {tb:.6g} <= uniform rank 8's {tu:.6g}", "<=", (tb, tu))
    uni_any[weight] = (bs, ranks)

# the same store from 2 MPI ranks (blocks rewritten by both), and after a kill during the
# rewrite (blocks 0-1 rewritten, 2-4 not) and a re-run: bitwise the single run's
BFLAGS = ["--bits", 2, "--rank", 16, "--rank-budget", budget]
ref = arrays(uni_any["relative"][0], ("codes", "lora_A", "lora_B", "lora_basis"))
ref_a = attrs(uni_any["relative"][0])
b2 = os.path.join(d, "budget-np2.h5")
p = run(["init"] + override(COMMON, ["--out", b2, *BFLAGS]), np_=2)
check(p.returncode == 0, "budget run on 2 MPI ranks", 0, p.stderr.strip()[-400:])
bk = os.path.join(d, "budget-killed.h5")
p = run(["init"] + override(COMMON, ["--out", bk, *BFLAGS]), env={"CLOQ_DEBUG_KILL": "ranks:1:0"})
check(p.returncode != 0 and not os.path.exists(bk), "killed after rewriting block 1: no store yet",
      "killed", p.returncode)
p = run(["init"] + override(COMMON, ["--out", bk, *BFLAGS]))
check(p.returncode == 0, "the re-run finishes the allocation", 0, p.stderr.strip()[-400:])
for name, path in (("2 ranks", b2), ("killed and resumed", bk)):
    if not os.path.exists(path):
        continue
    x, xa = arrays(path, ("codes", "lora_A", "lora_B", "lora_basis")), attrs(path)
    same = all(np.array_equal(x[k], ref[k]) for k in ref) and \
        all(xa[k]["rank"] == ref_a[k]["rank"] and xa[k]["objective"] == ref_a[k]["objective"] for k in ref_a)
    check(same, f"budget store, {name}: bitwise the single run's (factors, ranks, objectives)", True, same)

# the budget on top of the joint alternation (the kept iterate's basis is the one allocated from)
ba, _ = init("budget-alt", ["--bits", 2, "--rank", 16, "--rank-budget", budget, "--cloq-iters", 3])
if os.path.exists(ba):
    aa, a3 = attrs(ba), attrs(os.path.join(d, "rtn-t3-init"))
    ok = all(aa[k]["iter_chosen"] == a3[k]["iter_chosen"] and
             (aa[k]["rank"] < 16 or aa[k]["objective"] == a3[k]["objective"]) for k in aa)
    check(ok, "budget with --cloq-iters 3: the same iterates as without, rank-16 modules unchanged",
          True, ok)

# PEFT: the relative store exported and loaded
bs, ranks = uni_any["relative"]
ex = os.path.join(d, "ex-budget")
p = run(["export", "--store", bs, "--out", ex, "--format", "safetensors,peft"])
check(p.returncode == 0, "export of the budget store", 0, p.stderr.strip()[-400:])
cfg = json.load(open(os.path.join(ex, "adapter", "adapter_config.json")))
rp = cfg.get("rank_pattern", {})
ok = len(rp) == 35 and all(rp[f"model.layers.{b}.{m}"] == ranks[(b, m)] for b, m in ranks) and \
    all(abs(cfg["alpha_pattern"][k] - cfg["lora_alpha"] * v / cfg["r"]) <= 1e-12 * v for k, v in rp.items())
check(ok, "adapter_config.json: rank_pattern = the store's ranks, alpha_pattern keeps scaling alpha / r",
      "35 entries", len(rp))
ppl_c = ppl_of(run(["eval", "--model", MODEL, "--store", bs, "--data", data, "--data-format", "tokens"]))
TORCH = r'''
import json, sys, torch, transformers, peft
a = json.loads(sys.argv[1])
ids = torch.tensor([[int(x) for x in l.split()] for l in open(a["data"]) if l.strip()])
base = transformers.LlamaForCausalLM.from_pretrained(a["base"], dtype=torch.float32)
pm = peft.PeftModel.from_pretrained(base, a["adapter"]).eval()
ranks = {n.split("base_model.model.")[1]: m.r["default"] for n, m in pm.named_modules()
         if isinstance(m, peft.tuners.lora.LoraLayer) and "default" in m.r}
with torch.no_grad():
    lg = pm(input_ids=ids).logits.double()
lp = torch.log_softmax(lg[:, :-1], -1)
print(json.dumps({"ppl": float(torch.exp(-lp.gather(-1, ids[:, 1:, None]).mean())), "ranks": ranks}))
'''
# the Python stack (idempotent; a clean checkout installs it here when this test runs before
# test_export, which installs it too)
ip = subprocess.run(["bash", os.path.join(ROOT, "bench", "peers", "install.sh")], capture_output=True,
                    text=True, timeout=3600)
check(ip.returncode == 0, "bench/peers/install.sh", 0, ip.stderr.strip()[-2000:])
if ip.returncode == 0 and os.path.exists(VENV_PY):
    script = os.path.join(d, "peft_budget.py")
    open(script, "w").write(TORCH)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
    tp = subprocess.run([VENV_PY, script, json.dumps({"data": data, "base": os.path.join(ex, "base"),
                                                      "adapter": os.path.join(ex, "adapter")})],
                        capture_output=True, text=True, timeout=900, env=env)
    check(tp.returncode == 0, "PeftModel loads the budget adapter", 0, tp.stderr.strip()[-2000:])
    if tp.returncode == 0:
        r = json.loads(tp.stdout.strip().splitlines()[-1])
        same_r = all(r["ranks"].get(f"model.layers.{b}.{m}") == ranks[(b, m)] for b, m in ranks)
        check(same_r, "PeftModel's per-module r = the store's ranks", True, same_r)
        rel = abs(r["ppl"] - ppl_c) / ppl_c
        check(rel <= 1e-3, f"PeftModel ppl {r['ppl']:.6f} = cloq eval --store {ppl_c:.6f} (rel {rel:.1e})",
              "<= 1e-3", rel)
else:  # without the venv this part cannot run: a failure (above), not a skip
    check(False, "bench/peers/.venv for PeftModel", VENV_PY, "missing")

# ---- 5. bad settings -----------------------------------------------------------------------------
for args, needle in (
        (["--cloq-iters", 3, "--init", "svd"], "--cloq-iters needs --init cloq"),
        (["--quailora-iters", 3], "--quailora-iters needs --init quailora"),
        (["--comq-iters", 2], "--comq-iters needs --quantizer comq"),
        (["--rank-budget", 1000, "--init", "svd"], "--rank-budget needs --init cloq"),
        (["--rank-budget", 10, "--rank", 4], "is below the"),
        (["--cloq-iters", 0], "--cloq-iters"),
        (["--quantizer", "comq", "--comq-init", "awq"], "not one of rtn, gptq")):
    out = os.path.join(d, "bad.h5")
    p = run(["init"] + override(COMMON, ["--out", out, *args]))
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    check(p.returncode != 0 and len(lines) == 1 and needle in lines[0] and not os.path.exists(out),
          f"refused: {' '.join(map(str, args))}", needle, p.stderr.strip()[-300:])
done()
