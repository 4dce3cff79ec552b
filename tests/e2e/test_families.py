"""The model families (llama with RoPE scaling and biases, mistral's sliding window, qwen2's
biases, qwen3's q/k norms), each checked against transformers on a tiny random checkpoint made by
transformers' own classes and save_pretrained (torch on the CPU, bench/peers/.venv):

1. `cloq eval` logits (every position of the first sequence) and perplexity match transformers'
   within 1e-4 relative, at 1 and 2 ranks.
2. The same weights written as GGUF with gguf-py (as llama.cpp's converter writes them: llama q/k
   rows and biases permuted, llama3 scaling as its rope_freqs tensor, linear scaling as metadata,
   qwen2/qwen3 names) give the same logits; `cloq export` converts such a GGUF back to a Hugging
   Face folder of its family that transformers loads with the same logits. (llama.cpp writes
   Mistral as "llama" without its window, so a Mistral GGUF is read as Llama: not tested here,
   said in the README.)
3. `cloq init` then `cloq export`: transformers loads the base with the family's model_type, and
   PeftModel with the adapter reproduces `cloq eval --store` perplexity within 1e-4 relative.
4. On every module the CLoQ objective is below the zero init's and at most the SVD init's.
The configs exercise GQA, head_dim != hidden / heads, llama3 and linear scaling (factor != 1),
non-zero biases on every linear (llama) and on q/k/v (qwen2), q/k norms, a window shorter than
the sequences, and tied and untied embeddings. Weights are drawn at a scale where attention,
biases and norms all move the logits (transformers' 0.02 init would leave them near uniform).
"""
import json
import math
import os
import subprocess
import sys

import numpy as np

from cloqtest import check, done, ppl_of, read_safetensors, run, tmpdir, write_tokens

import gguf
import h5py

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_PY = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
RTOL = 1e-4
T = 48          # tokens per sequence (> mistral's window of 16, > llama3's original context)
V = 320

BASE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=V, max_position_embeddings=128, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2)
FAMILIES = {
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        head_dim=24, tie_word_embeddings=False, rope_parameters=dict(
            rope_type="llama3", rope_theta=10000.0, factor=4.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=32))),
    "llama-linear-bias": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
        rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0))),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=24, tie_word_embeddings=False)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=16,
                                                             tie_word_embeddings=False)),
}

# ---- transformers: the models, their logits and perplexities ------------------------------------
MAKE = r'''
import json, math, os, sys
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import numpy as np, torch, transformers
a = json.loads(sys.argv[1])
ids = torch.tensor([[int(x) for x in l.split()] for l in open(a["data"]) if l.strip()])
out = {}
for name, (cfg_cls, model_cls, extra) in a["families"].items():
    torch.manual_seed(sum(map(ord, name)))
    cfg = getattr(transformers, cfg_cls)(**a["base"], **extra)
    cfg._attn_implementation = "eager"
    m = getattr(transformers, model_cls)(cfg).float().eval()
    with torch.no_grad():
        for k, p in m.named_parameters():
            if "norm" in k:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif k.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
            elif "embed_tokens" in k:  # also the head when tied: logits of a moderate size
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[1]))
    d = os.path.join(a["dir"], name)
    m.save_pretrained(d)
    with torch.no_grad():
        lg = m(input_ids=ids).logits.double()
    lp = torch.log_softmax(lg[:, :-1], -1).gather(-1, ids[:, 1:, None])
    np.save(os.path.join(d, "logits0.npy"), lg[0].numpy())
    out[name] = {"ppl": float(torch.exp(-lp.mean())), "model_type": cfg.model_type}
print(json.dumps(out))
'''

CHECK = r'''
import json, math, os, sys
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import torch, transformers, peft
a = json.loads(sys.argv[1])
ids = torch.tensor([[int(x) for x in l.split()] for l in open(a["data"]) if l.strip()])
def ppl(m):
    with torch.no_grad():
        lg = m(input_ids=ids).logits.double()
    return float(torch.exp(-torch.log_softmax(lg[:, :-1], -1).gather(-1, ids[:, 1:, None]).mean()))
out = {}
for name, (m, sq, _) in a["samples"].items():
    seq = torch.tensor([[int(x) for x in open(sq).read().split()]])
    mm = transformers.AutoModelForCausalLM.from_pretrained(m, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    with torch.no_grad():
        lg = mm(input_ids=seq).logits.double()[0, :-1]
    np_path = sq + ".ref.npy"
    import numpy as np
    np.save(np_path, lg.numpy())
    out["sample:" + name] = np_path
for name, m in a["converted"].items():
    mm = transformers.AutoModelForCausalLM.from_pretrained(m, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    with torch.no_grad():
        lg = mm(input_ids=ids[:1]).logits.double()[0]
    import numpy as np
    np.save(m + ".logits.npy", lg.numpy())
    out["converted:" + name] = [m + ".logits.npy", mm.config.model_type]
for name, ex in a["exports"].items():
    base = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(ex, "base"),
                                                             dtype=torch.float32,
                                                             attn_implementation="eager").eval()
    r = {"model_type": base.config.model_type, "class": type(base).__name__, "ppl_base": ppl(base)}
    pm = peft.PeftModel.from_pretrained(base, os.path.join(ex, "adapter")).eval()
    r["ppl_peft"] = ppl(pm)
    out[name] = r
print(json.dumps(out))
'''


def venv(script, args):
    p = subprocess.run([VENV_PY, "-c", script, json.dumps(args)], capture_output=True, text=True,
                       timeout=1800)
    if p.returncode != 0:
        print(p.stderr[-3000:])
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


p = subprocess.run(["bash", os.path.join(ROOT, "bench", "peers", "install.sh")], capture_output=True,
                   text=True, timeout=3600)
check(p.returncode == 0, "bench/peers/install.sh", 0, p.stderr.strip()[-2000:])
if p.returncode != 0:
    done()

d = tmpdir()
rng = np.random.default_rng(16)
data = os.path.join(d, "eval.tokens")
write_tokens(data, [[1] + list(rng.integers(3, V, T - 1)) for _ in range(3)])
calib = os.path.join(d, "calib.tokens")
write_tokens(calib, [[1] + list(rng.integers(3, V, T - 1)) for _ in range(16)])
ref = venv(MAKE, {"dir": d, "data": data, "base": BASE, "families": FAMILIES})
check(ref is not None, "transformers made the tiny models", "ok", ref)
if ref is None:
    done()


def rel(a, b):
    return abs(a - b) / abs(b)


def logits_rel(path, want):
    got = np.loadtxt(path)
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max() / np.abs(want).max())


# ---- 1. cloq eval against transformers ------------------------------------------------------------
for name in FAMILIES:
    m = os.path.join(d, name)
    want = np.load(os.path.join(m, "logits0.npy"))
    ppls = []
    for np_ in (0, 2):
        lg = os.path.join(d, f"{name}-{np_}.logits")
        p = run(["eval", "--model", m, "--data", data, "--data-format", "tokens", "--dump-logits", lg,
                 "--dump-positions", T], np_)
        if p.returncode != 0:
            check(False, f"{name}: cloq eval at np={np_} runs", 0, p.stderr.strip()[-500:])
            continue
        ppl = ppl_of(p)
        ppls.append(ppl)
        r = logits_rel(lg, want)
        check(r < RTOL, f"{name} np={np_}: logits of all {T} positions within {RTOL} of transformers "
              f"(max rel {r:.2e})", f"< {RTOL}", r)
        check(rel(ppl, ref[name]["ppl"]) < RTOL, f"{name} np={np_}: ppl {ppl:.6f} vs transformers "
              f"{ref[name]['ppl']:.6f}", f"< {RTOL}", rel(ppl, ref[name]["ppl"]))
    check(len(set(ppls)) == 1, f"{name}: the same perplexity at 1 and 2 ranks", ppls[:1], ppls)

# the window and the scaling matter here: the same weights read as plain llama give other logits
for name, key in (("mistral", "sliding_window"), ("llama3", "rope_parameters")):
    m2 = os.path.join(d, name + "-plain")
    os.makedirs(m2, exist_ok=True)
    cfg = json.load(open(os.path.join(d, name, "config.json")))
    cfg["model_type"] = "llama"
    for k in (key, "rope_scaling", "layer_types"):
        cfg.pop(k, None)
    json.dump(cfg, open(os.path.join(m2, "config.json"), "w"))
    os.symlink(os.path.join(d, name, "model.safetensors"), os.path.join(m2, "model.safetensors"))
    lg = os.path.join(d, f"{name}-plain.logits")
    p = run(["eval", "--model", m2, "--data", data, "--data-format", "tokens", "--dump-logits", lg,
             "--dump-positions", T])
    r = logits_rel(lg, np.load(os.path.join(d, name, "logits0.npy"))) if p.returncode == 0 else 0
    check(r > 1e-2, f"{name} without its {key} gives other logits (max rel {r:.2e}): the test sees it",
          "> 1e-2", r if p.returncode == 0 else p.stderr.strip()[-300:])

# the decoding path (K/V cache, one position at a time): `cloq sample` greedy, its logits at every
# position against transformers on the sequence it drew (compared at the end, in one venv call)
samples = {}
for name in FAMILIES:
    sq, lg = os.path.join(d, f"{name}.sample"), os.path.join(d, f"{name}-sample.logits")
    p = run(["sample", "--model", os.path.join(d, name), "--out", sq, "--n", "1", "--length", T,
             "--temperature", "0", "--dump-logits", lg])
    check(p.returncode == 0, f"{name}: cloq sample runs", 0, p.stderr.strip()[-300:])
    if p.returncode == 0:
        samples[name] = [os.path.join(d, name), sq, lg]


# ---- 2. GGUF written by gguf-py from the same weights ---------------------------------------------
GG = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
      "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
      "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
      "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
      "self_attn.v_proj.bias": "attn_v.bias", "self_attn.o_proj.bias": "attn_output.bias",
      "mlp.gate_proj.bias": "ffn_gate.bias", "mlp.up_proj.bias": "ffn_up.bias",
      "mlp.down_proj.bias": "ffn_down.bias", "self_attn.q_norm.weight": "attn_q_norm.weight",
      "self_attn.k_norm.weight": "attn_k_norm.weight",
      "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
      "mlp.down_proj.weight": "ffn_down.weight"}


def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: HF rotary halves -> interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_freqs(rp, head_dim):
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors: the llama3 divisors."""
    base, factor = rp["rope_theta"], rp["factor"]
    low, high, old = rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < old / high:
            out.append(1.0)
        elif wl > old / low:
            out.append(factor)
        else:
            s = (old / wl - low) / (high - low)
            out.append(1 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def write_gguf(name, path):
    cfg = json.load(open(os.path.join(d, name, "config.json")))
    W = read_safetensors(os.path.join(d, name, "model.safetensors"))
    arch = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}[cfg["model_type"]]
    h, hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // h
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(h)
    w.add_head_count_kv(hkv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rp = cfg["rope_parameters"]
    w.add_rope_freq_base(rp["rope_theta"])
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(cfg["vocab_size"])
    if rp["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rp["factor"])
    if rp["rope_type"] == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(rp, hd))
    for hf in sorted(W):
        a = np.asarray(W[hf], dtype=np.float32)
        if hf == "model.embed_tokens.weight":
            g = "token_embd.weight"
        elif hf == "model.norm.weight":
            g = "output_norm.weight"
        elif hf == "lm_head.weight":
            g = "output.weight"
        else:
            p_ = hf.split(".")
            g = f"blk.{p_[2]}." + GG[".".join(p_[3:])]
            if arch == "llama" and hf.endswith(("q_proj.weight", "q_proj.bias")):
                a = permute(a, h)
            elif arch == "llama" and hf.endswith(("k_proj.weight", "k_proj.bias")):
                a = permute(a, hkv)
        w.add_tensor(g, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


for name in ("llama3", "llama-linear-bias", "qwen2", "qwen3"):
    g = os.path.join(d, name + ".gguf")
    write_gguf(name, g)
    lg = os.path.join(d, f"{name}-gguf.logits")
    p = run(["eval", "--model", g, "--data", data, "--data-format", "tokens", "--dump-logits", lg,
             "--dump-positions", T], 2)
    if p.returncode != 0:
        check(False, f"{name}: cloq eval of the GGUF runs", 0, p.stderr.strip()[-500:])
        continue
    r = logits_rel(lg, np.load(os.path.join(d, name, "logits0.npy")))
    check(r < RTOL, f"{name} GGUF: logits within {RTOL} of transformers (max rel {r:.2e})", f"< {RTOL}", r)
    check(rel(ppl_of(p), ref[name]["ppl"]) < RTOL, f"{name} GGUF: ppl {ppl_of(p):.6f}", f"< {RTOL}",
          rel(ppl_of(p), ref[name]["ppl"]))

# a GGUF converted back to a Hugging Face folder (export without a store): its generated config
# names the family; transformers' logits on it are compared at the end. llama3's rope_freqs has no
# config.json form: refused in one line.
converted = {}
for name in ("llama-linear-bias", "qwen2", "qwen3"):
    cv = os.path.join(d, f"{name}-gguf-hf")
    p = run(["export", "--model", os.path.join(d, name + ".gguf"), "--out", cv, "--format", "safetensors"])
    check(p.returncode == 0, f"{name}: export of the GGUF to a Hugging Face folder", 0, p.stderr.strip()[-300:])
    if p.returncode == 0:
        converted[name] = os.path.join(cv, "base")
p = run(["export", "--model", os.path.join(d, "llama3.gguf"), "--out", os.path.join(d, "llama3-gguf-hf"),
         "--format", "safetensors"])
errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
check(p.returncode != 0 and len(errs) == 1 and "rope_freqs" in errs[0],
      "llama3 GGUF export to config.json refused in one line naming rope_freqs", "rope_freqs", p.stderr.strip()[-300:])

# ---- 3 and 4. init, export, PEFT; the objectives -------------------------------------------------
INIT = ["--calib", calib, "--calib-format", "tokens", "--bits", "3", "--group-size", "32", "--rank", "8",
        "--nsamples", "16", "--seqlen", T]


def objectives(store):
    out = {}
    with h5py.File(store, "r") as f:
        blocks = f["layers"] if "layers" in f else None
        if blocks is None:
            return out
        for b in blocks:
            for mname in blocks[b]:
                g = blocks[b][mname]
                out[(b, mname)] = (float(g.attrs["objective"]), float(g.attrs["objective_zero"]))
    return out


exports, store_ppl = {}, {}
for name in FAMILIES:
    m = os.path.join(d, name)
    stores = {}
    for init in ("cloq", "svd"):
        s = os.path.join(d, f"{name}-{init}.h5")
        p = run(["init", "--model", m, "--out", s, "--init", init] + INIT, 2)
        check(p.returncode == 0, f"{name}: init --init {init} at 2 ranks", 0, p.stderr.strip()[-500:])
        stores[init] = s
    if not all(os.path.exists(s) for s in stores.values()):
        continue
    oc, osv = objectives(stores["cloq"]), objectives(stores["svd"])
    below_zero = all(v[0] < v[1] for v in oc.values())
    below_svd = all(oc[k][0] <= osv[k][0] * (1 + 1e-9) for k in oc)
    check(len(oc) == 14 and below_zero and below_svd,
          f"{name}: the CLoQ objective is below zero's and at most svd's on all {len(oc)} modules",
          "14 modules, all below", {str(k): (oc[k][0], oc[k][1], osv[k][0]) for k in oc
                                    if not (oc[k][0] < oc[k][1] and oc[k][0] <= osv[k][0] * (1 + 1e-9))})
    p = run(["eval", "--model", m, "--data", data, "--data-format", "tokens", "--store", stores["cloq"]])
    check(p.returncode == 0, f"{name}: eval --store runs", 0, p.stderr.strip()[-300:])
    store_ppl[name] = ppl_of(p) if p.returncode == 0 else None
    ex = os.path.join(d, f"{name}-export")
    p = run(["export", "--store", stores["cloq"], "--out", ex, "--format", "safetensors,peft"])
    check(p.returncode == 0, f"{name}: export runs", 0, p.stderr.strip()[-300:])
    exports[name] = ex

got = venv(CHECK, {"data": data, "exports": exports, "samples": samples, "converted": converted})
check(got is not None, "transformers + PEFT load every export", "ok", got)
for name, (_, _, lg) in samples.items():
    if got and "sample:" + name in got:
        r = logits_rel(lg, np.load(got["sample:" + name]))
        check(r < RTOL, f"{name}: cloq sample's decoding logits (K/V cache) within {RTOL} of "
              f"transformers on the drawn sequence (max rel {r:.2e})", f"< {RTOL}", r)
for name in converted:
    if got and "converted:" + name in got:
        npy, mt = got["converted:" + name]
        r = float(np.abs(np.load(npy) - np.load(os.path.join(d, name, "logits0.npy"))).max() /
                  np.abs(np.load(os.path.join(d, name, "logits0.npy"))).max())
        check(r < RTOL and mt == ref[name]["model_type"], f"{name}: its GGUF converted back loads as "
              f"{mt} and gives transformers' logits (max rel {r:.2e})", f"< {RTOL}", (r, mt))
for name in exports:
    if not got or name not in got:
        continue
    g = got[name]
    check(g["model_type"] == ref[name]["model_type"], f"{name}: the exported base loads as "
          f"{g['class']} with model_type {g['model_type']}", ref[name]["model_type"], g["model_type"])
    if store_ppl.get(name):
        r = rel(g["ppl_peft"], store_ppl[name])
        check(r < RTOL, f"{name}: base + PeftModel ppl {g['ppl_peft']:.6f} vs cloq eval --store "
              f"{store_ppl[name]:.6f}", f"< {RTOL}", r)
done()
