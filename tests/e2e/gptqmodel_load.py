"""The GPTQModel side of tests/e2e/test_gptqmodel.py, run with the Python of
bench/peers/.venv-gptqmodel: loads cloq's GPTQ exports with GPTQModel (torch kernel, CPU, float16),
and measures what the test compares with cloq. Usage: python gptqmodel_load.py ARGS RESULT (JSON)

ARGS.json: {"data": token file, "gptq": [{"name", "dir", "store", "group_size"}...],
"adapter": {"gptq": dir, "adapter": dir} or null, "refused": [dirs that GPTQModel must refuse]}.
RESULT.json gets, per GPTQ folder: the kernel classes, the perplexity of the loaded model, and how
GPTQModel's own dequantize_weight() compares with the store (exactly with float16(float16(scale) *
(code - zero)), relatively with the store's float32 Q); for the adapter: the perplexity of
PeftModel on the GPTQ base, its LoRA layer types and scalings, and one training step's gradients;
for each refused folder: the error.
"""
import json
import os
import sys

# GPTQModel's thread pools. Its default device pool (gptqmodel/__init__.py,
# _build_device_thread_pool) has (cores + 1) // 2 CPU workers (GPTQMODEL_CPU_WORKERS overrides
# that) and a virtual pool "model_loader:cpu" fixed at 2 workers carved out of them: on a 2-core
# machine that is 1 worker and construction fails with "ValueError: Virtual pool
# 'model_loader:cpu' requests 2 workers but parent 'cpu' only has 1" (seen here), and with
# GPTQMODEL_CPU_WORKERS=2 it has been seen to deadlock. No variable sets the virtual pool's size.
# Loading a quantized model does not build the pool today (only quantizing does), but we do not
# rely on that: one CPU worker from the environment, and below, before anything can build the
# default pool, a DeviceThreadPool with one worker in each pool put in its place.
os.environ["GPTQMODEL_CPU_WORKERS"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# TorchLinear.post_init wraps dequantize_weight in torch.compile (inductor): about 45 s of C
# compilation on 2 cores for the same arithmetic. TORCHDYNAMO_DISABLE makes torch.compile a
# pass-through, so the kernel runs eagerly (same perplexity to all printed digits here).
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import gptqmodel  # noqa: E402
from gptqmodel import BACKEND, GPTQModel  # noqa: E402
from gptqmodel.nn_modules.qlinear import BaseQuantLinear  # noqa: E402
from gptqmodel.utils.threadx import DeviceThreadPool  # noqa: E402
import peft  # noqa: E402

gptqmodel._DEVICE_THREAD_POOL = DeviceThreadPool(inference_mode=True,
                                                 workers={"cpu": 1, "model_loader:cpu": 1})

a = json.load(open(sys.argv[1]))
ids = torch.tensor([[int(x) for x in l.split()] for l in open(a["data"]) if l.strip()])


def ppl(m):
    m.eval()
    with torch.no_grad():
        lg = m(input_ids=ids).logits.float()
    lp = torch.log_softmax(lg[:, :-1].double(), -1)
    return float(torch.exp(-lp.gather(-1, ids[:, 1:, None]).mean()))


def load(d):
    # float16: the checkpoint's torch_dtype, and what TorchLinear computes in (its SUPPORTS_DTYPES
    # are float16 and bfloat16; GPTQModel's default on a CPU is bfloat16)
    return GPTQModel.load(d, backend=BACKEND.TORCH, device="cpu", dtype=torch.float16)


def dequant_check(model, store, gs):
    """GPTQModel's dequantize_weight() of every quantized linear against the store."""
    f = h5py.File(store, "r")
    exact, n, rel = True, 0, 0.0
    for name, mod in model.named_modules():
        if not isinstance(mod, BaseQuantLinear):
            continue
        b, rest = name.split(".layers.")[1].split(".", 1)
        g = f[f"layers/{b}/{rest}"]
        codes, sc, ze = g["codes"][()], g["scales"][()], g["zeros"][()]
        col = np.arange(codes.shape[1]) // (gs if gs > 0 else codes.shape[1])
        with torch.no_grad():
            w = mod.dequantize_weight().T.float().numpy()  # (in, out) -> (out, in)
        diff = codes.astype(np.float32) - ze[:, col]
        # float16 scale times a small integer is exact in float32, then rounded once to float16:
        # what torch's float16 product gives
        want = (sc.astype(np.float16).astype(np.float32)[:, col] * diff).astype(np.float16)
        exact &= w.shape == want.shape and np.array_equal(w, want.astype(np.float32))
        q = diff * sc[:, col]  # the store's Q, float32 (cloq_dequant)
        nz = q != 0
        if nz.any():
            rel = max(rel, float((np.abs(w - q)[nz] / np.abs(q)[nz]).max()))
        n += 1
    return exact, n, rel


r = {"gptq": {}, "refused": {}}
for e in a["gptq"]:
    gm = load(e["dir"])
    kinds = sorted({type(m).__name__ for m in gm.model.modules() if isinstance(m, BaseQuantLinear)})
    exact, n, rel = dequant_check(gm.model, e["store"], e["group_size"])
    r["gptq"][e["name"]] = {"ppl": ppl(gm.model), "kernels": kinds, "dequant_exact": bool(exact),
                            "n_quant": n, "dequant_rel_q": rel, "dtype": str(gm.model.dtype)}
    del gm

if a.get("adapter"):
    gm = load(a["adapter"]["gptq"])
    pm = peft.PeftModel.from_pretrained(gm.model, a["adapter"]["adapter"])
    lora = [m for m in pm.modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    out = {"ppl": ppl(pm), "n_lora": len(lora),
           "lora_types": sorted({type(m).__name__ for m in lora}),
           "base_types": sorted({type(m.get_base_layer()).__name__ for m in lora}),
           "scaling": sorted({float(m.scaling["default"]) for m in lora})}
    # QLoRA-style fine-tuning starts from here: the adapter trainable, the packed base frozen.
    pt = peft.PeftModel.from_pretrained(load(a["adapter"]["gptq"]).model, a["adapter"]["adapter"],
                                        is_trainable=True)
    pt.train()
    loss = pt(input_ids=ids[:2], labels=ids[:2]).loss
    loss.backward()
    gr = [p.grad for n_, p in pt.named_parameters() if "lora_" in n_ and p.requires_grad]
    out["train_loss"] = float(loss)
    out["n_lora_grads"] = sum(g is not None for g in gr)
    out["lora_grads_ok"] = all(g is not None and bool(torch.isfinite(g).all()) for g in gr) and \
        any(g is not None and float(g.abs().max()) > 0 for g in gr)
    out["trainable_non_lora"] = [n_ for n_, p in pt.named_parameters()
                                 if p.requires_grad and "lora_" not in n_]
    r["adapter"] = out

for d in a.get("refused", []):
    try:
        load(d)
        r["refused"][d] = None
    except Exception as ex:  # noqa: BLE001 (what GPTQModel raises is the result)
        r["refused"][d] = f"{type(ex).__name__}: {ex}"

json.dump(r, open(sys.argv[2], "w"))
