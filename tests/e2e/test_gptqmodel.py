"""cloq export --format gptq loaded by the real GPTQModel (7.7.0, PyPI; torch kernel on the CPU),
and PEFT's adapter attached to that quantized base, QLoRA-style.

  1. bench/peers/install.sh --gptqmodel (idempotent) makes bench/peers/.venv-gptqmodel: GPTQModel
     and optimum in a venv layered on bench/peers/.venv (torch, transformers, peft). Not in .venv
     itself: GPTQModel pulls torchao 0.18, with which PEFT 0.18.1 fails on every plain
     nn.Linear (see install.sh).
  2. A synthetic Llama (`cloq synth`: dim 128, 2 blocks, mlp 256, vocab 512). Not stories260K:
     its mlp width 172 is not a multiple of 32, and GPTQModel sizes qweight as
     ceil(in * bits / 32) rows where the export pads to whole 32-value units, so it refuses that
     checkpoint (docs/export.md, Padding). The vocabulary is tok512.bin's, whose tokenizer the
     export writes (GPTQModel.load loads a tokenizer and fails without one).
  3. `cloq init` stores: CLoQ at 4 bits / group 32 / rank 8, and zero-init stores (the same RTN
     base, no adapter) at 2 bits / 32, 3 / 32, 4 / 32, 8 / whole rows; `cloq eval --store` gives
     their perplexity on 16 sampled sequences of 128 tokens.
  4. `cloq export` (default --gptq-format v2): quantize_config.json carries format gptq_v2 and the
     fields GPTQModel reads. GPTQModel.load(backend=TORCH, device cpu, float16) takes each, every
     quantized linear becomes a TorchLinear, and its own dequantize_weight() equals
     float16(float16(scale) * (code - zero)) from the store exactly, groups with zero point 0
     included (v1 cannot hold them); that is within 2^-10 of the store's float32 Q (float16 scale,
     float16 product). The loaded model's perplexity equals cloq eval's of the zero-init store
     within PPL_RTOL (float16 activations against cloq's float32).
  5. PeftModel.from_pretrained(GPTQ base, DIR/adapter): LoRA layers are PEFT's GPTQLoraLinear
     around TorchLinear, scaling 1, and the perplexity equals `cloq eval --store` of the CLoQ
     store within PPL_RTOL. With is_trainable=True one backward pass gives finite, non-zero
     gradients to every lora_A/lora_B and to nothing else.
  6. --gptq-format v1 is refused by GPTQModel for these asymmetric stores (sym false with format
     gptq), as docs/export.md says.
"""
import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np

from cloqtest import ASSETS, check, done, ppl_of, run, tmpdir

PPL_RTOL = 1e-3             # GPTQModel (float16) vs cloq eval (float32) perplexity
DEQ_REL = 2.0 ** -10 * 1.01  # float16 scale and float16 product: two roundings of 2^-11
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_PY = os.path.join(ROOT, "bench", "peers", ".venv-gptqmodel", "bin", "python")  # over .venv
SIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gptqmodel_load.py")
TOK = os.path.join(ASSETS, "stories260K-hf", "tok512.bin")
L = 2
N_LIN = 7 * L

# ---- 1. the Python stack ------------------------------------------------------------------------
t = time.time()
p = subprocess.run(["bash", os.path.join(ROOT, "bench", "peers", "install.sh"), "--gptqmodel"],
                   capture_output=True, text=True, timeout=3600)
INSTALL_S = time.time() - t
check(p.returncode == 0, f"bench/peers/install.sh --gptqmodel ({INSTALL_S:.1f} s)", 0,
      p.stderr.strip()[-2000:])
if p.returncode != 0:
    done()

# ---- 2, 3. model, stores, cloq's perplexities -------------------------------------------------------
d = tmpdir()
syn, data = os.path.join(d, "syn"), os.path.join(d, "eval.tok")
p = run(["synth", "--out", syn, "--dim", 128, "--layers", L, "--heads", 4, "--mlp", 256, "--vocab", 512,
         "--dtype", "f32", "--calib-samples", 16, "--calib-seqlen", 128])
check(p.returncode == 0, "synth (dim 128, 2 blocks, mlp 256, vocab 512)", 0, p.stderr.strip())
p = run(["sample", "--model", syn, "--n", 16, "--length", 128, "--seed", 2, "--out", data])
check(p.returncode == 0, "sample eval.tok", 0, p.stderr.strip())


def init(name, bits, gs, rank, init_):
    out = os.path.join(d, name + ".h5")
    p_ = run(["init", "--model", syn, "--calib", os.path.join(syn, "calib.tok"), "--calib-format", "tokens",
              "--nsamples", 16, "--out", out, "--bits", bits, "--group-size", gs, "--rank", rank,
              "--init", init_])
    check(p_.returncode == 0, f"init {name}", 0, p_.stderr.strip())
    return out


def cloq_ppl(store):
    return ppl_of(run(["eval", "--model", syn, "--store", store, "--data", data, "--data-format", "tokens"]))


S4 = init("s4", 4, 32, 8, "cloq")
CASES = {"4 bits, group 32": (4, 32), "2 bits, group 32": (2, 32), "3 bits, group 32": (3, 32),
         "8 bits, whole rows": (8, -1)}
zero = {name: init(f"z{bits}", bits, gs, 4 if bits != 4 else 8, "zero") for name, (bits, gs) in CASES.items()}
ppl_cloq = cloq_ppl(S4)
ppl_zero = {name: cloq_ppl(s) for name, s in zero.items()}
fs, fz = h5py.File(S4, "r"), h5py.File(zero["4 bits, group 32"], "r")
same_q = all(np.array_equal(fs[f"layers/{b}/{m}/{k}"][()], fz[f"layers/{b}/{m}/{k}"][()])
             for b in range(L) for m in fs[f"layers/{b}"] for k in ("codes", "scales", "zeros"))
check(same_q, "the CLoQ and zero-init 4-bit stores share the RTN base", True, same_q)

# ---- 4. exports ---------------------------------------------------------------------------------------
def export(store, out, fmt, extra=()):
    p_ = run(["export", "--store", store, "--out", out, "--format", fmt, "--tokenizer", TOK] + list(extra))
    check(p_.returncode == 0, f"export {os.path.basename(out)} --format {fmt} {' '.join(extra)}".rstrip(),
          0, p_.stderr.strip())
    return p_


EX = os.path.join(d, "ex")
gptq_dirs = {}
for name, (bits, gs) in CASES.items():
    if bits == 4:  # the CLoQ store's export: its gptq/ is the RTN base the zero store holds too
        p = export(S4, EX, "safetensors,peft,gptq")
        gptq_dirs[name] = (os.path.join(EX, "gptq"), S4, gs, p.stderr)
    else:
        out = os.path.join(d, f"ex{bits}")
        p = export(zero[name], out, "gptq")
        gptq_dirs[name] = (os.path.join(out, "gptq"), zero[name], gs, p.stderr)
for name, (gd, store, gs, err) in gptq_dirs.items():
    qc = json.load(open(os.path.join(gd, "quantize_config.json")))
    cj = json.load(open(os.path.join(gd, "config.json")))
    want = {"format": "gptq_v2", "checkpoint_format": "gptq_v2", "method": "gptq", "quant_method": "gptq",
            "bits": CASES[name][0], "group_size": gs, "sym": False, "desc_act": False, "lm_head": False,
            "pack_dtype": "int32"}
    got = {k: qc.get(k) for k in want}
    check(got == want and qc.get("meta", {}).get("quantizer", [""])[0].startswith("cloq:"),
          f"{name}: quantize_config.json: gptq_v2 and GPTQModel's fields, meta.quantizer cloq:VERSION",
          want, (got, qc.get("meta")))
    check(cj.get("quantization_config") == qc and cj.get("torch_dtype") == "float16",
          f"{name}: config.json carries it as quantization_config", qc, cj.get("quantization_config"))
    prov = json.load(open(os.path.join(os.path.dirname(gd), "cloq_export.json")))
    z0 = prov.get("gptq_zero_point_0_groups")
    check(prov.get("gptq_format") == "gptq_v2" and "zero point 0" not in err,
          f"{name}: provenance gptq_format gptq_v2; {z0} zero-point-0 groups, no warning (v2 holds them)",
          "gptq_v2, no warning", (prov.get("gptq_format"), err.strip()[-300:]))
    gptq_dirs[name] = (gd, store, gs, z0)
EXV1 = os.path.join(d, "exv1")
p = export(zero["2 bits, group 32"], EXV1, "gptq", ["--gptq-format", "v1"])
qc1 = json.load(open(os.path.join(EXV1, "gptq", "quantize_config.json")))
check(qc1.get("checkpoint_format") == "gptq" and "meta" not in qc1 and "zero point 0" in p.stderr,
      "--gptq-format v1: checkpoint_format gptq (AutoGPTQ's fields), the zero-point-0 warning",
      "gptq + warning", (qc1.get("checkpoint_format"), p.stderr.strip()[-300:]))

# ---- GPTQModel and PEFT ------------------------------------------------------------------------------
args = {"data": data,
        "gptq": [{"name": n, "dir": gd, "store": st, "group_size": gs} for n, (gd, st, gs, _) in gptq_dirs.items()],
        "adapter": {"gptq": os.path.join(EX, "gptq"), "adapter": os.path.join(EX, "adapter")},
        "refused": [os.path.join(EXV1, "gptq")]}
af, rf = os.path.join(d, "gptqmodel_args.json"), os.path.join(d, "gptqmodel_result.json")
json.dump(args, open(af, "w"))
env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1",
           TOKENIZERS_PARALLELISM="false")
t = time.time()
tp = subprocess.run([VENV_PY, SIDE, af, rf], capture_output=True, text=True, timeout=1500, env=env, cwd=d)
SIDE_S = time.time() - t
check(tp.returncode == 0 and os.path.isfile(rf), f"GPTQModel/PEFT script ({SIDE_S:.1f} s)", 0,
      (tp.stdout + tp.stderr).strip()[-3000:])
if tp.returncode != 0 or not os.path.isfile(rf):
    done()
r = json.load(open(rf))


def rel(a_, b_):
    return abs(a_ - b_) / b_


for name, (gd, store, gs, z0) in gptq_dirs.items():
    g = r["gptq"][name]
    check(g["kernels"] == ["TorchLinear"] and g["n_quant"] == N_LIN and g["dtype"] == "torch.float16",
          f"{name}: GPTQModel loads it, {g['n_quant']} linears on TorchLinear, float16",
          (["TorchLinear"], N_LIN), (g["kernels"], g["n_quant"], g["dtype"]))
    check(g["dequant_exact"], f"{name}: GPTQModel's dequantize_weight() = float16(f16(scale) * (code - zero)) "
          f"of the store exactly ({z0} groups with zero point 0 included)", True, g["dequant_exact"])
    check(g["dequant_rel_q"] <= DEQ_REL, f"{name}: GPTQModel's weights vs the store's float32 Q: max rel "
          f"{g['dequant_rel_q']:.3g} <= 2^-10", DEQ_REL, g["dequant_rel_q"])
    check(rel(g["ppl"], ppl_zero[name]) <= PPL_RTOL,
          f"{name}: GPTQModel ppl {g['ppl']:.6f} = cloq eval of the base {ppl_zero[name]:.6f} "
          f"(rel {rel(g['ppl'], ppl_zero[name]):.2e})", f"<= {PPL_RTOL}", rel(g["ppl"], ppl_zero[name]))

ad = r["adapter"]
check(ad["lora_types"] == ["GPTQLoraLinear"] and ad["base_types"] == ["TorchLinear"] and ad["n_lora"] == N_LIN
      and ad["scaling"] == [1.0],
      f"PeftModel on the GPTQ base: {ad['n_lora']} GPTQLoraLinear around TorchLinear, scaling 1",
      (["GPTQLoraLinear"], ["TorchLinear"], N_LIN, [1.0]),
      (ad["lora_types"], ad["base_types"], ad["n_lora"], ad["scaling"]))
check(rel(ad["ppl"], ppl_cloq) <= PPL_RTOL,
      f"PeftModel(GPTQModel base, adapter) ppl {ad['ppl']:.6f} = cloq eval --store {ppl_cloq:.6f} "
      f"(rel {rel(ad['ppl'], ppl_cloq):.2e})", f"<= {PPL_RTOL}", rel(ad["ppl"], ppl_cloq))
base4 = r["gptq"]["4 bits, group 32"]["ppl"]
check(ad["ppl"] < base4, f"the adapter lowers the GPTQ base's perplexity ({base4:.3f} -> {ad['ppl']:.3f})",
      f"< {base4}", ad["ppl"])
check(np.isfinite(ad["train_loss"]) and ad["n_lora_grads"] == 2 * N_LIN and ad["lora_grads_ok"]
      and not ad["trainable_non_lora"],
      f"is_trainable: one backward pass (loss {ad['train_loss']:.4f}) gives finite non-zero gradients to "
      f"the {ad['n_lora_grads']} LoRA factors and nothing else trains",
      (2 * N_LIN, True, []), (ad["n_lora_grads"], ad["lora_grads_ok"], ad["trainable_non_lora"]))
err = r["refused"].get(os.path.join(EXV1, "gptq")) or ""
check("sym=False" in err and "FORMAT.GPTQ" in err,
      "GPTQModel refuses the --gptq-format v1 export (sym=False with format gptq)", "ValueError ... sym=False",
      err or "loaded")

print(f"perplexity on 16 x 128 sampled tokens (GPTQModel float16 / cloq eval float32): "
      + "; ".join(f"{n}: {r['gptq'][n]['ppl']:.6f} / {ppl_zero[n]:.6f}" for n in CASES)
      + f"; CLoQ adapter on the 4-bit GPTQ base: {ad['ppl']:.6f} / {ppl_cloq:.6f}")
print(f"install check {INSTALL_S:.1f} s; GPTQModel/PEFT script {SIDE_S:.1f} s")
sys.stdout.flush()
done()
