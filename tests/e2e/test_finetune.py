"""Fine-tuning from cloq's exports (issue 18), with bench/finetune_torch.py's own loop: what
bench/finetune.py measures rests on these.

stories260K, INT2, group 32. Three exports: CLoQ rank 8 (lora_alpha = rank), the same store with
`--lora-alpha 16` (PEFT scaling 2, lora_B rescaled), and a `--rank-budget` store (rank 16 at most,
the PEFT export's rank_pattern/alpha_pattern). For each, in bench/peers/.venv:
  1. the loss at step 0 (the first batch, before any update) equals log of `cloq eval --store`'s
     perplexity on the same token sequences (the batch is the whole training set, so the same
     tokens whatever the order);
  2. every LoRA module's lora_A and lora_B get a finite, non-zero gradient at step 0, and nothing
     else is trainable;
  3. the training loss falls over 30 steps (mean of the last 5 below step 0's by LOSS_DROP);
  4. every other parameter and buffer (the base Q, embeddings, norms) is bitwise what it was;
  5. the trained adapter differs from the init (training moved it), PEFT scaling and module ranks are
     the export's (2 for --lora-alpha 16; rank_pattern's ranks).
"""
import json
import math
import os
import subprocess
import time

from cloqtest import MODEL, check, done, ppl_of, run, tmpdir

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_PY = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
LOSS_ATOL = 2e-5  # nats: float32 logits in torch and in cloq
LOSS_DROP = 0.1   # nats over 30 steps at lr 1e-3 (measured drop: see the output)
STEPS, LR = 30, 1e-3
T0 = time.time()

p = subprocess.run(["bash", os.path.join(ROOT, "bench", "peers", "install.sh")], capture_output=True,
                   text=True, timeout=3600)
check(p.returncode == 0, "bench/peers/install.sh", 0, p.stderr.strip()[-2000:])
if p.returncode != 0:
    done()
T1 = time.time()

d = tmpdir()
calib, train = os.path.join(d, "calib.tok"), os.path.join(d, "train.tok")
for path, n, seed in ((calib, 32, 1), (train, 8, 3)):
    p = run(["sample", "--model", MODEL, "--n", n, "--length", 128, "--seed", seed, "--out", path])
    check(p.returncode == 0, f"cloq sample {os.path.basename(path)}", 0, p.stderr.strip())
COMMON = ["--model", MODEL, "--calib", calib, "--calib-format", "tokens", "--nsamples", 32, "--seqlen", 128,
          "--group-size", 32, "--bits", 2]
cases = {}
s8 = os.path.join(d, "r8.h5")
p = run(["init", *COMMON, "--rank", 8, "--out", s8, "--export", os.path.join(d, "ex8")])
check(p.returncode == 0, "init --rank 8 --export", 0, p.stderr.strip())
cases["rank 8"] = (s8, os.path.join(d, "ex8"), 1.0)
p = run(["export", "--store", s8, "--out", os.path.join(d, "ex8a16"), "--lora-alpha", 16])
check(p.returncode == 0, "export --lora-alpha 16", 0, p.stderr.strip())
cases["rank 8, --lora-alpha 16"] = (s8, os.path.join(d, "ex8a16"), 2.0)
sb = os.path.join(d, "budget.h5")
# k/v_proj are 32 x 64 (cost 96), the others 64 x 64 (128) or 64 x 172 (236): what uniform rank 6 spends
budget = 6 * 5 * (2 * 128 + 2 * 96 + 128 + 3 * 236)
p = run(["init", *COMMON, "--rank", 16, "--rank-budget", budget, "--out", sb, "--export", os.path.join(d, "exb")])
check(p.returncode == 0, "init --rank 16 --rank-budget --export", 0, p.stderr.strip())
cases["rank budget"] = (sb, os.path.join(d, "exb"), None)

ppl = {k: ppl_of(run(["eval", "--model", MODEL, "--store", s, "--data", train, "--data-format", "tokens"]))
       for k, (s, _, _) in cases.items()}
rp = json.load(open(os.path.join(d, "exb", "adapter", "adapter_config.json"))).get("rank_pattern", {})
check(len(rp) == 35 and len(set(rp.values())) > 1, "the budget export's rank_pattern: 35 modules, ranks vary",
      "35, > 1 distinct", (len(rp), sorted(set(rp.values()))))

TORCH = r'''
import json, math, sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
import finetune_torch as ft
torch.set_num_threads(2)
a = json.loads(sys.argv[2])
ids = torch.tensor([[int(x) for x in l.split()] for l in open(a["train"]) if l.strip()])
out = {}
for name, ex in a["exports"].items():
    m = ft.load(ex)
    mods = ft.lora_modules(m)
    train_names = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    lora_names = sorted(n for n, p in m.named_parameters() if ".lora_A." in n or ".lora_B." in n)
    before = {k: v.detach().clone() for k, v in m.state_dict().items() if "lora_" not in k}
    init = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
    grads = {}
    def inspect(m_, step, x):
        if step == 0:
            for n, mod in ft.lora_modules(m_):
                for side, d in (("A", mod.lora_A), ("B", mod.lora_B)):
                    g = d["default"].weight.grad
                    grads[f"{n}.{side}"] = None if g is None else float(g.norm())
    curve = ft.train(m, ids, {}, a["lr"], a["steps"], len(ids), seed=0, inspect=inspect)
    after = m.state_dict()
    same = [k for k, v in before.items() if torch.equal(v, after[k])]
    moved = sum(not torch.equal(p.detach(), init[n]) for n, p in m.named_parameters() if p.requires_grad)
    out[name] = {"loss": curve["loss"], "grads": grads, "n_state": len(before), "same": len(same),
                 "differ": sorted(set(before) - set(same))[:5], "trainable": len(train_names),
                 "only_lora": train_names == lora_names, "moved": moved, "n_modules": len(mods),
                 "scalings": sorted({float(mod.scaling["default"]) for _, mod in mods}),
                 "ranks": {n[n.index("layers."):]: int(mod.r["default"]) for n, mod in mods}}
print(json.dumps(out))
'''
script = os.path.join(d, "ft_check.py")
open(script, "w").write(TORCH)
args = {"train": train, "lr": LR, "steps": STEPS, "exports": {k: v[1] for k, v in cases.items()}}
env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1",
           TOKENIZERS_PARALLELISM="false")
t = time.time()
tp = subprocess.run([VENV_PY, script, os.path.join(ROOT, "bench"), json.dumps(args)], capture_output=True,
                    text=True, timeout=900, env=env)
TORCH_S = time.time() - t
check(tp.returncode == 0, f"PEFT fine-tuning script ({TORCH_S:.1f} s)", 0, tp.stderr.strip()[-3000:])
r = json.loads(tp.stdout.strip().splitlines()[-1]) if tp.returncode == 0 else {}
for name, v in r.items():
    want = math.log(ppl[name])
    l0 = v["loss"][0]
    check(abs(l0 - want) <= LOSS_ATOL, f"{name}: loss at step 0 {l0:.7f} = log(cloq eval ppl {ppl[name]:.6f}) "
          f"= {want:.7f} (diff {abs(l0 - want):.1e})", f"<= {LOSS_ATOL}", abs(l0 - want))
    g = v["grads"]
    ok = len(g) == 2 * 35 and all(x is not None and math.isfinite(x) and x > 0 for x in g.values())
    check(ok, f"{name}: lora_A and lora_B of all {v['n_modules']} modules get a finite non-zero gradient at "
          f"step 0 (smallest {min((x for x in g.values() if x is not None), default=0):.2e})", 70,
          [k for k, x in g.items() if not (x and math.isfinite(x))][:5] or len(g))
    check(v["only_lora"] and v["trainable"] == 70, f"{name}: the 70 LoRA matrices are the only trainable "
          "parameters", 70, (v["trainable"], v["only_lora"]))
    last = sum(v["loss"][-5:]) / 5
    check(last < l0 - LOSS_DROP, f"{name}: the loss falls over {STEPS} steps: {l0:.4f} -> {last:.4f} "
          "(mean of the last 5)", f"< {l0 - LOSS_DROP:.4f}", last)
    check(v["same"] == v["n_state"] and v["n_state"] > 0, f"{name}: all {v['n_state']} base tensors (Q, "
          "embeddings, norms) bitwise unchanged", v["n_state"], (v["same"], v["differ"]))
    check(v["moved"] == 70, f"{name}: training moved all 70 LoRA matrices", 70, v["moved"])
    sc = cases[name][2]
    if sc is not None:
        check(v["scalings"] == [sc] and set(v["ranks"].values()) == {8}, f"{name}: PEFT scaling {sc}, rank 8",
              [sc], (v["scalings"], sorted(set(v["ranks"].values()))))
    else:
        want_r = {k[len("model."):]: x for k, x in rp.items()}
        check(v["ranks"] == want_r, f"{name}: every module's PEFT rank is rank_pattern's "
              f"({min(want_r.values())}..{max(want_r.values())}), scalings {v['scalings']}", "equal",
              sorted(set(v["ranks"].items()) ^ set(want_r.items()))[:4])
print(f"install {T1 - T0:.0f} s; the rest {time.time() - T1:.0f} s (torch {TORCH_S:.0f} s)")
done()
