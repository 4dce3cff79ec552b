"""The torch side of bench/finetune.py (and of tests/e2e/test_finetune.py): fine-tune a cloq
export's LoRA adapter with PEFT and a plain torch loop, as QLoRA / LoftQ / CLoQ users do.

Runs in bench/peers/.venv (torch, transformers, peft). One run:

    python bench/finetune_torch.py '{"export": DIR, "train": T.npy, "eval": {"name": E.npy, ...},
                                     "lr": 3e-4, "steps": 300, "batch": 8, "seed": 0, ...}'

- The model is `DIR/base` (the dequantized base Q, float32) with `DIR/adapter` loaded by
  `PeftModel.from_pretrained(..., is_trainable=True)`: only lora_A and lora_B train; the base,
  the embeddings and the norms stay frozen (checked: they are bitwise equal afterwards).
- Optimizer: AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0), linear warm-up over the first
  `warmup` fraction of the steps, then cosine decay to 0; gradient norm clipped at 1.
- Batches of `batch` whole sequences (N x T int arrays, every sequence the same length), drawn
  without replacement in an order set by `seed` (a new permutation each epoch).
- Loss: transformers' causal-LM loss, the mean NLL of tokens 2..T of each sequence. Perplexity:
  exp of the same mean over an evaluation set, which is what `cloq eval` reports for the same
  token windows.
- `old_split` (optional): re-split every module's product B A as cloq's store format 3 did
  (B = V diag(sqrt S), A = diag(1/sqrt S) V^T B A, V and S^2 the top eigenpairs of E Hd E^T within
  the product's column space, E = W - Q, Hd the damped Gram matrix of the module's calibration
  inputs); the product is unchanged, only the balance of the pair differs.

Writes the result JSON to `out` (written as out.tmp, then renamed), or prints it.
"""
import json
import math
import os
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def load(export, device="cpu", dtype=torch.float32, attn=None):
    """PeftModel(base, adapter) with only the adapters trainable. attn: transformers'
    attn_implementation (default: its own choice, sdpa)."""
    import peft
    import transformers
    kw = {"attn_implementation": attn} if attn else {}
    base = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(export, "base"), dtype=dtype, **kw)
    m = peft.PeftModel.from_pretrained(base, os.path.join(export, "adapter"), is_trainable=True)
    return m.to(device)


def lora_modules(m):
    """(name, module) of every LoRA layer carrying the adapter "default"."""
    import peft
    return [(n, mod) for n, mod in m.named_modules()
            if isinstance(mod, peft.tuners.lora.LoraLayer) and "default" in mod.lora_A]


@torch.no_grad()
def nll(m, ids, batch=8):
    """(sum of NLL, count) of tokens 2..T of every row of ids (N x T), float64 sums."""
    m.eval()
    tot, n = 0.0, 0
    dev = next(m.parameters()).device
    for i in range(0, len(ids), batch):
        x = ids[i:i + batch].to(dev)
        lg = m(input_ids=x).logits.float()
        lp = torch.log_softmax(lg[:, :-1].double(), -1)
        tot -= float(lp.gather(-1, x[:, 1:, None]).sum())
        n += x[:, 1:].numel()
    return tot, n


def ppl(m, ids, batch=8):
    s, n = nll(m, ids, batch)
    return math.exp(s / n)


@torch.no_grad()
def calib_grams(model_dir, calib, batch=8):
    """Sum over every calibration token of x x^T (float64) at the input of each linear of each
    block, from the full-precision model (cloq's --propagate full): {"layers.b.self_attn": H, ...}
    for q/k/v (one input), o_proj, gate/up (one input) and down_proj."""
    import transformers
    fp = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    fp.eval()
    H, hooks = {}, []
    for name, mod in fp.named_modules():
        if name.endswith(("q_proj", "o_proj", "gate_proj", "down_proj")):
            key = name[name.index("layers."):]

            def hook(mod_, inp, out_, key=key):
                x = inp[0].reshape(-1, inp[0].shape[-1]).double()
                H[key] = H.get(key, 0) + x.T @ x
            hooks.append(mod.register_forward_hook(hook))
    for i in range(0, len(calib), batch):
        fp(input_ids=calib[i:i + batch])
    for h in hooks:
        h.remove()
    W = {n: p.detach().double() for n, p in fp.named_parameters()}
    return H, W


@torch.no_grad()
def old_split(m, model_dir, calib, damp):
    """Re-split every module's product as cloq's store format 3 did (see the module docstring).
    Returns the largest relative change of a product and block 0 q_proj's factor norms."""
    H, W = calib_grams(model_dir, calib)
    worst, norms = 0.0, None
    for name, mod in lora_modules(m):
        key = name[name.index("layers."):]  # layers.b.self_attn.q_proj
        gram = H[key.replace("k_proj", "q_proj").replace("v_proj", "q_proj").replace("up_proj", "gate_proj")]
        Hd = gram + damp * float(torch.diagonal(gram).mean()) * torch.eye(gram.shape[0], dtype=torch.float64)
        A = mod.lora_A["default"].weight
        B = mod.lora_B["default"].weight
        s = mod.scaling["default"]
        L = s * (B.double() @ A.double())
        Q = mod.base_layer.weight.double()
        E = W["model." + key + ".weight"] - Q
        U, sv, _ = torch.linalg.svd(L, full_matrices=False)
        r = int((sv > sv[0] * 1e-6).sum()) if sv[0] > 0 else 0
        if r == 0:
            continue
        U = U[:, :r]
        G = U.T @ (E @ Hd @ E.T) @ U  # E Hd E^T within the product's column space
        lam, Y = torch.linalg.eigh(G)
        lam, Y = lam.flip(0).clamp_min(0), Y.flip(1)
        V = U @ Y
        S = lam.sqrt().clamp_min(1e-30)
        Bn = V * S.sqrt()
        An = (V.T @ L) / S.sqrt()[:, None] / s
        full = B.shape[1]
        Bp = torch.zeros(B.shape, dtype=torch.float64)
        Ap = torch.zeros(A.shape, dtype=torch.float64)
        Bp[:, :r], Ap[:r] = Bn, An
        worst = max(worst, float((s * Bp @ Ap - L).abs().max() / L.abs().max()))
        mod.lora_B["default"].weight.copy_(Bp.to(B.dtype))
        mod.lora_A["default"].weight.copy_(Ap.to(A.dtype))
        if key.endswith("layers.0.self_attn.q_proj"):
            norms = (float(Ap.norm()), float(Bp.norm()), full)
    return worst, norms


def train(m, train_ids, evals, lr, steps, batch, seed, warmup=0.05, eval_every=50, eval_batch=8,
          log=None, inspect=None, final_evals=None):
    """The plain loop. Returns the curve: loss per step, and {name: [(step, ppl), ...]} at step 0,
    every eval_every steps and at the end (final_evals: at the end only). inspect(m, step, batch), if given, is called after each
    backward pass, before clipping and the update (the tests read the gradients there)."""
    dev = next(m.parameters()).device
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    nw = max(1, int(round(warmup * steps)))

    def factor(step):  # step counts from 0 for the first update
        if step < nw:
            return (step + 1) / nw
        return 0.5 * (1 + math.cos(math.pi * (step - nw) / max(1, steps - nw)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    final_evals = final_evals or {}
    curve = {"loss": [], "evals": {k: [] for k in (*evals, *final_evals)}}

    def evaluate(step):
        sets = {**evals, **final_evals} if step == steps else evals
        for k, ids in sets.items():
            curve["evals"][k].append((step, ppl(m, ids, eval_batch)))
        if log:
            log(f"step {step}: " + ", ".join(f"{k} {v[-1][1]:.4f}" for k, v in curve["evals"].items() if v))
    evaluate(0)
    order, pos = torch.randperm(len(train_ids), generator=g), 0
    for step in range(steps):
        if pos + batch > len(order):
            order, pos = torch.randperm(len(train_ids), generator=g), 0
        x = train_ids[order[pos:pos + batch]].to(dev)
        pos += batch
        m.train()
        loss = m(input_ids=x, labels=x).loss
        loss.backward()
        if inspect:
            inspect(m, step, x)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        curve["loss"].append(float(loss))
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evaluate(step + 1)
    return curve


def main():
    a = json.loads(sys.argv[1])
    torch.set_num_threads(int(a.get("threads", 1)))
    t0 = time.time()
    dev = a.get("device", "cpu")
    m = load(a["export"], dev, attn=a.get("attn"))
    res = {"args": a}
    if a.get("old_split"):
        calib = torch.from_numpy(np.load(a["old_split"]["calib"]).astype(np.int64))
        res["old_split_prod_rel"], res["old_split_q0_norms"] = old_split(
            m, a["old_split"]["model"], calib, a["old_split"]["damp"])
        m.to(dev)
    tr = torch.from_numpy(np.load(a["train"]).astype(np.int64))
    def arrays(d):
        return {k: torch.from_numpy(np.load(v).astype(np.int64)) for k, v in d.items()}
    res["curve"] = train(m, tr, arrays(a["eval"]), a["lr"], a["steps"], a["batch"], a["seed"],
                         a.get("warmup", 0.05), a.get("eval_every", 50), a.get("eval_batch", 8),
                         log=(lambda s: print(s, file=sys.stderr, flush=True)) if a.get("verbose") else None,
                         final_evals=arrays(a.get("final_eval", {})))
    res["s"] = time.time() - t0
    res["device"] = str(torch.cuda.get_device_name(0)) if dev.startswith("cuda") else "cpu"
    out = a.get("out")
    if out:
        with open(out + ".tmp", "w") as f:
            json.dump(res, f)
        os.replace(out + ".tmp", out)
    else:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
