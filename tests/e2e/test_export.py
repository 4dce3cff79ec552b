"""cloq export on stories260K, loaded by the real libraries (transformers, PEFT) and unpacked by an
independent NumPy reading of AutoGPTQ's layout.

  1. `cloq init` makes a 3-bit CLoQ store (and the zero-init store with the same RTN base) from
     sampled calibration text; `cloq eval --store` gives their perplexity on 64 sampled windows of
     256 tokens (`--data-format tokens`).
  2. `cloq export --format safetensors,peft,gptq`: in bench/peers/.venv (torch, transformers,
     peft; CPU), LlamaForCausalLM loads DIR/base and PeftModel / AutoPeftModelForCausalLM load
     DIR/adapter; their perplexity on the same windows reproduces cloq eval's within PPL_RTOL (the
     base alone reproduces the zero-init store's). scaling * B @ A of every PEFT module equals the
     store's B @ A; with --lora-alpha 16 the scaling is 2 and the product is unchanged. DIR/base
     holds the store's Q exactly (float32), and bf16(Q) with --dtype bf16; a small --shard-size
     gives a sharded base that loads; AutoTokenizer(DIR/base) encodes as the llama2.c tokenizer.
  3. GPTQ exports of stores at 2, 3, 4 and 8 bits (groups 32, 32, 64 and whole rows), in the
     default format gptq_v2, and at 2 bits also with --gptq-format v1: the words equal a NumPy
     transcription of AutoGPTQ's pack(); unpacked with AutoGPTQ's own shifts (qlinear_cuda_old's
     unpacking, written here in NumPy), codes equal the store's exactly, the padding is zero
     codes, g_idx is column // group_size, zero points are stored as they are (v2) or as zero - 1
     (v1: zero 0 as 2^bits - 1, counted in the warning), scales are the float16 of the store's;
     the max relative difference of the GPTQ base from the store's Q is printed. (GPTQModel itself
     loads the v2 export in tests/e2e/test_gptqmodel.py.)
  4. Bad input: an existing DIR without --force (left intact), --force on a folder that is not an
     export, a missing or incomplete store, a store of another model, an unknown format, a bad
     dtype, peft without a store, an unknown --gptq-format: one error line, exit 1, no DIR and no
     DIR.partial left. An unreadable tokenizer is a warning; a stale DIR.partial of export's is
     replaced, another refused.
"""
import glob
import json
import os
import shutil
import subprocess
import time

import h5py
import numpy as np

from cloqtest import MODEL, check, done, ppl_of, read_safetensors_typed, run, tmpdir

PPL_RTOL = 1e-3      # cloq eval vs transformers/PEFT perplexity on the same windows (float32 both)
PROD_RTOL = 1e-6     # PEFT's scaling * B @ A vs the store's B @ A (float64 products of f32 factors)
F16_REL = 2.0 ** -11  # float16 rounding of a normal scale, relative
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_PY = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
L = 5
T_START = time.time()

# ---- the Python stack ---------------------------------------------------------------------------
t = time.time()
p = subprocess.run(["bash", os.path.join(ROOT, "bench", "peers", "install.sh")], capture_output=True,
                   text=True, timeout=3600)
INSTALL_S = time.time() - t
check(p.returncode == 0, f"bench/peers/install.sh ({INSTALL_S:.1f} s)", 0,
      p.stderr.strip()[-2000:])
if p.returncode != 0:
    done()
T_AFTER_INSTALL = time.time()


def read_dir(d):
    """All tensors of a (possibly sharded) safetensors folder."""
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        out.update(read_safetensors_typed(f)[0])
    return out


def dequant(g, gs):
    codes, sc, ze = g["codes"][()], g["scales"][()], g["zeros"][()]
    col = np.arange(codes.shape[1]) // (gs if gs > 0 else codes.shape[1])
    # float32 as cloq_dequant: (code - zero) * scale
    return ((codes.astype(np.float32) - ze[:, col]) * sc[:, col]).astype(np.float32)


def one_error_line(p_):
    lines = [l for l in p_.stderr.strip().splitlines() if l.strip()]
    return p_.returncode == 1 and len(lines) == 1 and lines[0].startswith("cloq: error:")


# ---- 1. stores and cloq's perplexities ------------------------------------------------------------
d = tmpdir()
calib, data = os.path.join(d, "calib.tok"), os.path.join(d, "eval.tok")
for path, seed, n in ((calib, 1, 16), (data, 2, 64)):
    p = run(["sample", "--model", MODEL, "--n", n, "--length", 256, "--seed", seed, "--out", path])
    check(p.returncode == 0, f"sample {os.path.basename(path)}", 0, p.stderr.strip())


def init(out, bits, gs, rank, init_="cloq"):
    p_ = run(["init", "--model", MODEL, "--calib", calib, "--calib-format", "tokens", "--nsamples", 16,
              "--out", out, "--bits", bits, "--group-size", gs, "--rank", rank, "--init", init_])
    check(p_.returncode == 0, f"init {os.path.basename(out)}", 0, p_.stderr.strip())


S3, Z3 = os.path.join(d, "s3.h5"), os.path.join(d, "z3.h5")
init(S3, 3, 32, 8)
init(Z3, 3, 32, 8, "zero")
ppl_cloq = ppl_of(run(["eval", "--model", MODEL, "--store", S3, "--data", data, "--data-format", "tokens"]))
ppl_zero = ppl_of(run(["eval", "--model", MODEL, "--store", Z3, "--data", data, "--data-format", "tokens"]))
fs3, fz3 = h5py.File(S3, "r"), h5py.File(Z3, "r")
same_q = all(np.array_equal(fs3[f"layers/{b}/{m}/{k}"][()], fz3[f"layers/{b}/{m}/{k}"][()])
             for b in range(L) for m in MODULES for k in ("codes", "scales", "zeros"))
check(same_q, "the cloq and zero stores share the RTN base (codes, scales, zeros)", True, same_q)

# ---- 2. export, and transformers / PEFT on it ------------------------------------------------------
EX, EX16, EXBF = os.path.join(d, "ex"), os.path.join(d, "ex16"), os.path.join(d, "exbf")
t = time.time()
p = run(["export", "--store", S3, "--out", EX, "--format", "safetensors,peft,gptq"])
EXPORT_S = time.time() - t
print(p.stdout.strip())
check(p.returncode == 0, f"export safetensors,peft,gptq ({EXPORT_S:.2f} s)", 0, p.stderr.strip())
EX_ERR = p.stderr
check(not os.path.exists(EX + ".partial"), "no .partial left", "absent", "present")
for f in ("base/config.json", "base/model.safetensors", "adapter/adapter_config.json",
          "adapter/adapter_model.safetensors", "gptq/model.safetensors", "gptq/quantize_config.json",
          "gptq/config.json", "cloq_export.json"):
    check(os.path.isfile(os.path.join(EX, f)), f"{f} written", "a file", "missing")
# one command: `cloq init ... --export DIR` writes the same store and the same files as init + export
S3b, EXb = os.path.join(d, "s3b.h5"), os.path.join(d, "exb")
p = run(["init", "--model", MODEL, "--calib", calib, "--calib-format", "tokens", "--nsamples", 16, "--out", S3b,
         "--bits", 3, "--group-size", 32, "--rank", 8, "--init", "cloq", "--export", EXb, "--export-format",
         "safetensors,peft,gptq"])
check(p.returncode == 0, "init --export (store and hand-off in one command)", 0, p.stderr.strip())
for f in ("base/model.safetensors", "adapter/adapter_model.safetensors", "adapter/adapter_config.json",
          "gptq/model.safetensors"):
    a_, b_ = os.path.join(EX, f), os.path.join(EXb, f)
    same = os.path.isfile(b_) and open(a_, "rb").read() == open(b_, "rb").read().replace(
        S3b.encode(), S3.encode()).replace(EXb.encode(), EX.encode())
    check(same, f"init --export: {f} equal to init + export's", "equal", "different or missing")
p = run(["init", "--model", MODEL, "--calib", calib, "--calib-format", "tokens", "--nsamples", 16, "--out",
         os.path.join(d, "s3c.h5"), "--export", EXb])
check(p.returncode != 0 and "already exists" in p.stderr and not os.path.exists(os.path.join(d, "s3c.h5")),
      "init --export to an existing folder is refused before any work", "refused", p.stderr.strip())
p = run(["export", "--store", S3, "--out", EX16, "--format", "safetensors,peft", "--lora-alpha", 16,
         "--shard-size", 0.25])
check(p.returncode == 0, "export --lora-alpha 16 --shard-size 0.25", 0, p.stderr.strip())
nshard = len(glob.glob(os.path.join(EX16, "base", "model-*-of-*.safetensors")))
check(nshard > 1 and os.path.isfile(os.path.join(EX16, "base", "model.safetensors.index.json")),
      "--shard-size 0.25 (MiB) gives a sharded base with an index", "> 1 shards", nshard)
p = run(["export", "--store", S3, "--out", EXBF, "--format", "safetensors", "--dtype", "bf16"])
check(p.returncode == 0, "export --dtype bf16", 0, p.stderr.strip())

# base/: Q exactly (f32), bf16(Q) with --dtype bf16; the model's other tensors as they are
base, meta = read_safetensors_typed(os.path.join(EX, "base", "model.safetensors"))
check(meta == {"format": "pt"}, "base safetensors metadata {format: pt}", {"format": "pt"}, meta)
bbf = read_safetensors_typed(os.path.join(EXBF, "base", "model.safetensors"))[0]
model_t = read_safetensors_typed(os.path.join(MODEL, "model.safetensors"))[0]
q_exact = bf_exact = True
for b in range(L):
    for m in MODULES:
        Q = dequant(fs3[f"layers/{b}/{m}"], 32)
        nm = f"model.layers.{b}.{m}.weight"
        q_exact &= base[nm][0] == "F32" and np.array_equal(base[nm][1], Q)
        Qbf = (Q.view(np.uint32) + 0x7FFF + ((Q.view(np.uint32) >> 16) & 1)) >> 16 << 16
        bf_exact &= bbf[nm][0] == "BF16" and np.array_equal(bbf[nm][1].view(np.uint32), Qbf)
check(q_exact, "base/ linears equal the store's (codes - zeros) * scales exactly (float32)", True, q_exact)
check(bf_exact, "--dtype bf16: base/ linears are bf16(Q), round to nearest even", True, bf_exact)
others = [k for k in model_t if ".self_attn." not in k and ".mlp." not in k]
same_o = all(np.array_equal(base[k][1], model_t[k][1]) for k in others) and \
    set(base) == set(model_t)
check(same_o, f"base/ has the model's tensor names; {len(others)} others equal the model's", True, same_o)
cfg = json.load(open(os.path.join(EX, "base", "config.json")))
check(cfg.get("torch_dtype") == "float32" and cfg.get("architectures") == ["LlamaForCausalLM"],
      "base/config.json: LlamaForCausalLM, torch_dtype float32", "float32",
      (cfg.get("torch_dtype"), cfg.get("architectures")))
cfgbf = json.load(open(os.path.join(EXBF, "base", "config.json")))
check(cfgbf.get("torch_dtype") == "bfloat16", "--dtype bf16: config torch_dtype bfloat16", "bfloat16",
      cfgbf.get("torch_dtype"))
ac = json.load(open(os.path.join(EX, "adapter", "adapter_config.json")))
want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 8, "lora_dropout": 0.0,
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "init_lora_weights": True,
        "base_model_name_or_path": os.path.realpath(os.path.join(EX, "base"))}
got = {k: ac.get(k) for k in want}
check(got == want, "adapter_config.json fields", want, got)
check(sorted(ac.get("target_modules", [])) == sorted(
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "adapter target_modules: the seven projections", "7 names", ac.get("target_modules"))
# stories260K's llama2.c tokenizer is written as tokenizer.json (cloq_tok_write_hf): required here
tok_ok = all(os.path.isfile(os.path.join(EX, sub, f)) for sub in ("base", "gptq")
             for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"))
check(tok_ok, "tokenizer files in base/ and gptq/", "written", EX_ERR.strip()[-300:])

TORCH = r'''
import json, os, sys
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import h5py, numpy as np, torch, transformers, peft
torch.manual_seed(0)
a = json.loads(sys.argv[1])
ids = torch.tensor([[int(x) for x in l.split()] for l in open(a["data"]) if l.strip()])

def ppl(m):
    m.eval()
    with torch.no_grad():
        lg = m(input_ids=ids).logits.float()
    lp = torch.log_softmax(lg[:, :-1].double(), -1)
    return float(torch.exp(-lp.gather(-1, ids[:, 1:, None]).mean()))

def products(m, store):
    """max |scaling * B @ A - B_s @ A_s| / max |B_s @ A_s| over every LoRA module, and the scalings."""
    f = h5py.File(store, "r")
    worst, scal, n = 0.0, set(), 0
    for name, mod in m.named_modules():
        if not isinstance(mod, peft.tuners.lora.LoraLayer) or "default" not in mod.lora_A:
            continue
        i = name.split(".layers.")[1]
        b, rest = i.split(".", 1)
        g = f[f"layers/{b}/{rest}"]
        want = g["lora_B"][()].astype(np.float64) @ g["lora_A"][()].astype(np.float64)
        s = mod.scaling["default"]
        got = s * (mod.lora_B["default"].weight.detach().double().numpy() @
                   mod.lora_A["default"].weight.detach().double().numpy())
        worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)))
        scal.add(float(s)); n += 1
    return worst, sorted(scal), n

r = {}
base = transformers.LlamaForCausalLM.from_pretrained(a["base"], dtype=torch.float32)
r["ppl_base"] = ppl(base)
pm = peft.PeftModel.from_pretrained(base, a["adapter"])
r["ppl_peft"] = ppl(pm)
r["prod_rel"], r["scaling"], r["n_lora"] = products(pm, a["store"])
am = peft.AutoPeftModelForCausalLM.from_pretrained(a["adapter"], dtype=torch.float32)
r["auto_type"] = type(am).__name__
r["ppl_auto"] = ppl(am)
am16 = peft.AutoPeftModelForCausalLM.from_pretrained(a["adapter16"], dtype=torch.float32)
r["ppl_auto16"] = ppl(am16)
r["prod_rel16"], r["scaling16"], _ = products(am16, a["store"])
# the GPTQ export dequantized as a GPTQ loader does, in a LlamaForCausalLM: its perplexity
g = {}
from safetensors.torch import load_file
g = load_file(os.path.join(a["gptq_dir"], "model.safetensors"))
sd = {k: v.float() for k, v in g.items() if not k.endswith(("qweight", "qzeros", "scales", "g_idx"))}
for k, w in np.load(a["gptq_w"]).items():
    sd[k] = torch.from_numpy(w)
gm = transformers.LlamaForCausalLM.from_pretrained(a["base"], dtype=torch.float32)
missing = gm.load_state_dict(sd, strict=False)
r["gptq_missing"] = [k for k in missing.missing_keys if "rotary" not in k and k != "lm_head.weight"]
r["ppl_gptq_base"] = ppl(gm)
if a["tok"]:
    tk = transformers.AutoTokenizer.from_pretrained(a["base"])
    r["tok_ids"] = tk(a["text"])["input_ids"]
print(json.dumps(r))
'''


# ---- 3. GPTQ: independent unpacking (AutoGPTQ qlinear_cuda_old.forward's shifts, in NumPy) --------
def unpack_rows(q, bits):
    """q: int32 (rows, cols) packed along axis 0 -> int64 (rows * 32 / bits, cols) values."""
    q = q.astype(np.int32)  # arithmetic shifts, as torch.int32 in AutoGPTQ
    if bits in (2, 4, 8):
        wf = np.arange(0, 32, bits, dtype=np.int32)
        v = (q[:, None, :] >> wf[None, :, None]) & (2 ** bits - 1)
        return v.reshape(-1, q.shape[1]).astype(np.int64)
    wf = np.array([[0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0],
                   [0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31],
                   [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0]], dtype=np.int32)
    w = np.broadcast_to(q.reshape(q.shape[0] // 3, 3, 1, q.shape[1]),
                        (q.shape[0] // 3, 3, 12, q.shape[1]))
    w = (w >> wf[None, :, :, None]) & 0x7
    w[:, 0, 10] = (w[:, 0, 10] & 0x3) | ((w[:, 1, 0] << 2) & 0x4)
    w[:, 1, 11] = (w[:, 1, 11] & 0x1) | ((w[:, 2, 0] << 1) & 0x6)
    w = w & 0x7
    w = np.concatenate([w[:, 0, :11], w[:, 1, 1:12], w[:, 2, 1:11]], axis=1)  # (n/3, 32, cols)
    return w.reshape(-1, q.shape[1]).astype(np.int64)


def pack_autogptq(intweight, bits):
    """AutoGPTQ's pack() loop (qlinear_cuda_old.py), transcribed: intweight (n, cols) uint32 with n a
    multiple of 32 -> (n // 32 * bits, cols) words, packed along axis 0."""
    intweight = intweight.astype(np.uint32)
    q = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < q.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                q[row] |= intweight[j] << np.uint32(bits * (j - i))
            i += 32 // bits
            row += 1
        else:
            for j in range(i, i + 10):
                q[row] |= intweight[j] << np.uint32(3 * (j - i))
            i += 10
            q[row] |= intweight[i] << np.uint32(30)
            row += 1
            q[row] |= (intweight[i] >> np.uint32(2)) & np.uint32(1)
            i += 1
            for j in range(i, i + 10):
                q[row] |= intweight[j] << np.uint32(3 * (j - i) + 1)
            i += 10
            q[row] |= intweight[i] << np.uint32(31)
            row += 1
            q[row] |= (intweight[i] >> np.uint32(1)) & np.uint32(0x3)
            i += 1
            for j in range(i, i + 10):
                q[row] |= intweight[j] << np.uint32(3 * (j - i) + 2)
            i += 10
            row += 1
    return q.view(np.int32)


def pad_rows(a, n):
    out = np.zeros((n,) + a.shape[1:], a.dtype)
    out[:a.shape[0]] = a
    return out


def check_gptq(store, exdir, bits, gs, stderr, v1=False):
    f = h5py.File(store, "r")
    tag = f"gptq {bits} bits {'v1' if v1 else 'v2'}"
    tens = read_dir(os.path.join(exdir, "gptq"))
    qc = json.load(open(os.path.join(exdir, "gptq", "quantize_config.json")))
    cj = json.load(open(os.path.join(exdir, "gptq", "config.json")))
    want = {"bits": bits, "group_size": gs, "desc_act": False, "sym": False,
            "checkpoint_format": "gptq" if v1 else "gptq_v2", "quant_method": "gptq"}
    if not v1:
        want.update({"format": "gptq_v2", "method": "gptq", "pack_dtype": "int32", "lm_head": False})
    got = {k: qc.get(k) for k in want}
    check(got == want, f"{tag}: quantize_config.json", want, got)
    check(cj.get("quantization_config") == qc and cj.get("torch_dtype") == "float16",
          f"{tag}: config.json carries quantization_config, torch_dtype float16",
          "same as quantize_config.json", cj.get("quantization_config"))
    codes_ok = pad_ok = gidx_ok = zeros_ok = scales_ok = dt_ok = words_ok = True
    zero0 = groups = 0
    rel = 0.0
    W = {}
    for b in range(L):
        for m in MODULES:
            g = f[f"layers/{b}/{m}"]
            codes, sc, ze = g["codes"][()], g["scales"][()], g["zeros"][()]
            n_out, n_in = codes.shape
            pre = f"model.layers.{b}.{m}."
            dts = [tens[pre + k][0] for k in ("qweight", "qzeros", "scales", "g_idx")]
            dt_ok &= dts == ["I32", "I32", "F16", "I32"]
            qw, qz = tens[pre + "qweight"][1], tens[pre + "qzeros"][1]
            s16, gi = tens[pre + "scales"][1], tens[pre + "g_idx"][1]
            # the words themselves: AutoGPTQ's pack() of the codes and of the zeros (v1: (zero - 1)
            # & mask; the mask only matters for zero 0, where pack() itself would spill -1 into
            # other fields)
            n_in_pad, n_out_pad = -(-n_in // 32) * 32, -(-n_out // 32) * 32
            zm1 = (ze.T.astype(np.int64) - (1 if v1 else 0)) & (2 ** bits - 1)
            words_ok &= np.array_equal(qw, pack_autogptq(pad_rows(codes.T, n_in_pad), bits)) and \
                np.array_equal(qz, pack_autogptq(pad_rows(zm1.T, n_out_pad), bits).T)
            u = unpack_rows(qw, bits)                   # (in_pad, out)
            codes_ok &= u.shape[1] == n_out and np.array_equal(u[:n_in].T, codes)
            pad_ok &= u.shape[0] % 32 == 0 and not u[n_in:].any()
            col = np.arange(n_in) // (gs if gs > 0 else n_in)
            gidx_ok &= gi.shape == (n_in,) and np.array_equal(gi, col)
            z = unpack_rows(qz.T.copy(), bits).T[:, :n_out]  # (n_groups, out)
            zt = ze.T.astype(np.int64)
            zwant = np.where(zt == 0, 2 ** bits - 1, zt - 1) if v1 else zt
            zeros_ok &= z.shape == zt.shape and np.array_equal(zwant, z)
            zero0 += int((zt == 0).sum())
            groups += zt.size
            scales_ok &= np.array_equal(s16, sc.T.astype(np.float16))
            # what a loader computes: (code - zero) * float16 scale, zero = stored (+ 1 for v1)
            Wg = (u[:n_in].T - (z.T + (1 if v1 else 0))[:, col]) * s16.astype(np.float32).T[:, col]
            Q = dequant(g, gs)
            ok = np.broadcast_to(((ze != 0) | (not v1))[:, col], Q.shape) & (Q != 0)
            if ok.any():
                rel = max(rel, float((np.abs(Wg - Q)[ok] / np.abs(Q)[ok]).max()))
            W[pre + "weight"] = Wg.astype(np.float32)
    check(dt_ok, f"{tag}: dtypes qweight/qzeros/g_idx int32, scales float16", True, dt_ok)
    check(words_ok, f"{tag}: qweight/qzeros words equal AutoGPTQ pack()'s", True, words_ok)
    check(codes_ok, f"{tag}: unpacked qweight equals the store's codes exactly", True, codes_ok)
    check(pad_ok, f"{tag}: padding to a multiple of 32 inputs holds zero codes", True, pad_ok)
    check(gidx_ok, f"{tag}: g_idx = column // group_size", True, gidx_ok)
    check(zeros_ok, f"{tag}: qzeros = " + ("zero - 1 (zero 0 as 2^bits - 1)" if v1 else "zero"), True,
          zeros_ok)
    check(scales_ok, f"{tag}: scales = float16(store scales), (n_groups, out)", True, scales_ok)
    if zero0 and v1:
        warned = f"{zero0} of {groups} groups have zero point 0" in stderr
    else:
        warned = "zero point 0" not in stderr
    check(warned,
          f"{tag}: {zero0} of {groups} groups with zero point 0, warned iff any",
          "a matching warning" if zero0 and v1 else "no warning", stderr.strip()[-300:])
    prov = json.load(open(os.path.join(exdir, "cloq_export.json")))
    check(prov.get("gptq_zero_point_0_groups") == zero0 and
          prov.get("gptq_format") == ("gptq" if v1 else "gptq_v2"),
          f"{tag}: provenance counts them and names the format", zero0,
          (prov.get("gptq_zero_point_0_groups"), prov.get("gptq_format")))
    check(rel <= F16_REL, f"{tag}: max relative difference of the GPTQ base from Q "
          f"{rel:.3g} <= 2^-11 (float16 scales; "
          f"{'zero-point-0 groups excluded' if v1 else 'all groups'})", F16_REL, rel)
    others = [k for k in model_t if ".self_attn." not in k and ".mlp." not in k]
    f16_ok = all(tens[k][0] == "F16" and np.array_equal(tens[k][1], model_t[k][1].astype(np.float16))
                 for k in others)
    check(f16_ok, f"{tag}: embeddings and norms are float16(model)", True, f16_ok)
    return W, rel, zero0, groups


gptq_stats = {}
W3 = None
for bits, gs, v1 in ((2, 32, False), (2, 32, True), (3, 32, False), (4, 64, False), (8, -1, False)):
    store = os.path.join(d, f"g{bits}.h5")
    if bits == 3:  # the gptq folder of the three-format export
        store, exdir, err = S3, EX, EX_ERR
    else:
        if not os.path.exists(store):
            init(store, bits, gs, 4, "zero")
        exdir = os.path.join(d, f"exg{bits}{'v1' if v1 else ''}")
        pg = run(["export", "--store", store, "--out", exdir, "--format", "gptq"] +
                 (["--gptq-format", "v1"] if v1 else []))
        check(pg.returncode == 0, f"export gptq {bits} bits{' --gptq-format v1' if v1 else ''}", 0,
              pg.stderr.strip())
        err = pg.stderr
    Wb, rel, z0, ng = check_gptq(store, exdir, bits, gs, err, v1)
    gptq_stats[f"{bits} bits {'v1' if v1 else 'v2'}"] = (rel, z0, ng)
    if bits == 3:
        W3 = Wb
gw = os.path.join(d, "gptq3_w.npz")
np.savez(gw, **W3)

# ---- the torch side --------------------------------------------------------------------------------
TEXT = "Once upon a time, there was a little girl named Lily."
args = {"data": data, "base": os.path.join(EX, "base"), "adapter": os.path.join(EX, "adapter"),
        "adapter16": os.path.join(EX16, "adapter"), "store": S3, "gptq_dir": os.path.join(EX, "gptq"),
        "gptq_w": gw, "tok": tok_ok, "text": TEXT}
script = os.path.join(d, "peft_check.py")
with open(script, "w") as f:
    f.write(TORCH)
t = time.time()
env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1",
           TOKENIZERS_PARALLELISM="false")
tp = subprocess.run([VENV_PY, script, json.dumps(args)], capture_output=True, text=True, timeout=900,
                    env=env, cwd=d)
TORCH_S = time.time() - t
check(tp.returncode == 0, f"transformers/PEFT script ({TORCH_S:.1f} s)", 0, tp.stderr.strip()[-3000:])
r = json.loads(tp.stdout.strip().splitlines()[-1]) if tp.returncode == 0 else {}
if r:
    def rel_(a, b):
        return abs(a - b) / b

    print(f"perplexity on 64 x 256 sampled tokens: cloq eval {ppl_cloq:.6f}, PEFT {r['ppl_peft']:.6f}, "
          f"AutoPeft {r['ppl_auto']:.6f}; zero-init store {ppl_zero:.6f}, transformers base "
          f"{r['ppl_base']:.6f}; GPTQ base (f16 scales) {r['ppl_gptq_base']:.6f}")
    check(rel_(r["ppl_peft"], ppl_cloq) <= PPL_RTOL,
          f"PeftModel(base, adapter) ppl {r['ppl_peft']:.6f} = cloq eval {ppl_cloq:.6f} "
          f"(rel {rel_(r['ppl_peft'], ppl_cloq):.2e})", f"<= {PPL_RTOL}", rel_(r["ppl_peft"], ppl_cloq))
    check(rel_(r["ppl_auto"], ppl_cloq) <= PPL_RTOL and r["auto_type"].startswith("PeftModel"),
          f"AutoPeftModelForCausalLM.from_pretrained(adapter) ppl {r['ppl_auto']:.6f} ({r['auto_type']})",
          ppl_cloq, r["ppl_auto"])
    check(rel_(r["ppl_base"], ppl_zero) <= PPL_RTOL,
          f"base alone ppl {r['ppl_base']:.6f} = cloq eval of the zero-init store {ppl_zero:.6f} "
          f"(rel {rel_(r['ppl_base'], ppl_zero):.2e})", f"<= {PPL_RTOL}", rel_(r["ppl_base"], ppl_zero))
    check(r["ppl_peft"] < r["ppl_base"], "the adapter lowers the base's perplexity (CLoQ works)",
          f"< {r['ppl_base']}", r["ppl_peft"])
    check(r["n_lora"] == 7 * L and r["scaling"] == [1.0] and r["prod_rel"] <= PROD_RTOL,
          f"scaling 1 * B @ A = the store's B @ A on {r['n_lora']} modules (max rel {r['prod_rel']:.2e})",
          f"<= {PROD_RTOL}, scaling [1.0]", (r["prod_rel"], r["scaling"]))
    check(r["scaling16"] == [2.0] and r["prod_rel16"] <= PROD_RTOL,
          f"--lora-alpha 16: scaling 2, product unchanged (max rel {r['prod_rel16']:.2e})",
          "[2.0]", (r["scaling16"], r["prod_rel16"]))
    check(rel_(r["ppl_auto16"], ppl_cloq) <= PPL_RTOL, f"--lora-alpha 16 (sharded base) ppl "
          f"{r['ppl_auto16']:.6f}", ppl_cloq, r["ppl_auto16"])
    check(not r["gptq_missing"], "GPTQ 3-bit base loads into LlamaForCausalLM", [], r["gptq_missing"])
    check(rel_(r["ppl_gptq_base"], r["ppl_base"]) <= 1e-2,
          f"GPTQ 3-bit base ppl {r['ppl_gptq_base']:.6f} vs float32 base {r['ppl_base']:.6f} "
          f"(rel {rel_(r['ppl_gptq_base'], r['ppl_base']):.2e}, float16 scales)", "<= 1e-2",
          rel_(r["ppl_gptq_base"], r["ppl_base"]))
    if tok_ok:
        from cloqtest import encode, load_tok
        pieces, scores = load_tok(os.path.join(MODEL, "tok512.bin"))
        want_ids = encode(TEXT, pieces, scores)
        check(r.get("tok_ids") == want_ids, "AutoTokenizer(base) encodes as the llama2.c tokenizer",
              want_ids, r.get("tok_ids"))

# ---- 4. bad input ----------------------------------------------------------------------------------
marker = os.path.join(EX, "cloq_export.json")
before = open(marker).read()
p = run(["export", "--store", S3, "--out", EX, "--format", "peft"])
check(one_error_line(p) and "exists" in p.stderr, "existing DIR without --force: one error line",
      "cloq: error: ... exists", p.stderr.strip())
check(open(marker).read() == before and os.path.isdir(os.path.join(EX, "gptq")),
      "existing DIR left intact", "unchanged", "changed")
p = run(["export", "--store", S3, "--out", EX, "--format", "peft", "--force"])
after = json.load(open(marker))
check(p.returncode == 0 and after["formats"] == ["peft"] and not os.path.exists(os.path.join(EX, "gptq"))
      and not os.path.exists(EX + ".old") and not os.path.exists(EX + ".partial"),
      "--force replaces an earlier export (nothing of the old one left)", "peft only",
      (p.returncode, after.get("formats"), p.stderr.strip()))
notex = os.path.join(d, "notexport")
os.makedirs(notex)
open(os.path.join(notex, "keep.txt"), "w").write("mine")
p = run(["export", "--store", S3, "--out", notex, "--force"])
check(one_error_line(p) and open(os.path.join(notex, "keep.txt")).read() == "mine",
      "--force never replaces a folder that is not an export", "refused, keep.txt intact", p.stderr.strip())

# the top file's external links name "s3.h5.d/...": the copy keeps the name, in its own folder
os.makedirs(os.path.join(d, "inc"))
inc = os.path.join(d, "inc", "s3.h5")
shutil.copy(S3, inc)
shutil.copytree(S3 + ".d", inc + ".d")
os.remove(sorted(glob.glob(os.path.join(inc + ".d", "block_*.h5")))[2])
synth = os.path.join(d, "synth")
ps = run(["synth", "--out", synth, "--dim", 64, "--layers", 5, "--heads", 4, "--mlp", 128, "--vocab", 512,
          "--dtype", "f32"])
check(ps.returncode == 0, "synth a model of another shape", 0, ps.stderr.strip())
bad = [
    ("missing store", ["--store", os.path.join(d, "nope.h5")], "does not exist"),
    ("incomplete store", ["--store", inc, "--model", MODEL], "block"),
    ("store of another model", ["--store", S3, "--model", synth], "was made for a model"),
    ("unknown format", ["--store", S3, "--format", "safetensors,onnx"], "onnx"),
    ("bad dtype", ["--store", S3, "--dtype", "f64"], "--dtype"),
    ("peft without a store", ["--model", MODEL, "--format", "peft"], "--store is required"),
    ("unknown GPTQ format", ["--store", S3, "--format", "gptq", "--gptq-format", "v3"], "--gptq-format"),
]
for i, (what, a, needle) in enumerate(bad):
    out = os.path.join(d, f"bad{i}")
    p = run(["export", "--out", out] + a)
    check(one_error_line(p) and needle in p.stderr, f"{what}: one error line naming it", needle,
          p.stderr.strip())
    check(not os.path.exists(out) and not os.path.exists(out + ".partial"),
          f"{what}: nothing left at DIR or DIR.partial", "absent", os.listdir(d))

# a tokenizer that cannot be read is a warning, not a failure
notok = os.path.join(d, "notok")
p = run(["export", "--store", S3, "--out", notok, "--format", "safetensors", "--tokenizer",
         os.path.join(d, "nope.bin")])
check(p.returncode == 0 and "warning" in p.stderr and os.path.isfile(os.path.join(notok, "base", "model.safetensors"))
      and not os.path.exists(os.path.join(notok, "base", "tokenizer.json")),
      "unreadable --tokenizer: a warning, the weights exported, no tokenizer files", "rc 0 + warning",
      (p.returncode, p.stderr.strip()))
# DIR.partial: a stale one left by export is cleared, anything else is refused
stale = os.path.join(d, "stale")
os.makedirs(stale + ".partial")
open(os.path.join(stale + ".partial", ".cloq-export-partial"), "w").close()
p = run(["export", "--store", S3, "--out", stale, "--format", "peft"])
check(p.returncode == 0 and not os.path.exists(stale + ".partial") and os.path.isdir(stale),
      "a stale DIR.partial left by export is replaced", 0, p.stderr.strip())
foreign = os.path.join(d, "foreign")
os.makedirs(foreign + ".partial")
open(os.path.join(foreign + ".partial", "mine.txt"), "w").write("mine")
p = run(["export", "--store", S3, "--out", foreign, "--format", "peft"])
check(one_error_line(p) and os.path.isfile(os.path.join(foreign + ".partial", "mine.txt"))
      and not os.path.exists(foreign), "a DIR.partial that export did not leave is refused, untouched",
      "refused", p.stderr.strip())

# no store, --format safetensors: the model converted (here: HF -> HF), values unchanged
conv = os.path.join(d, "conv")
p = run(["export", "--model", MODEL, "--out", conv, "--format", "safetensors", "--dtype", "f16"])
ct = read_safetensors_typed(os.path.join(conv, "base", "model.safetensors"))[0] if p.returncode == 0 else {}
conv_ok = p.returncode == 0 and set(ct) == set(model_t) and all(
    ct[k][0] == "F16" and np.array_equal(ct[k][1], model_t[k][1].astype(np.float16)) for k in ct)
check(conv_ok, "no store: --format safetensors --dtype f16 converts the model", True, p.stderr.strip())

for what, (rel, z0, ng) in gptq_stats.items():
    print(f"gptq {what}: max rel. difference from the store's Q {rel:.3g}, zero point 0 in "
          f"{z0} of {ng} groups")
print(f"install check {INSTALL_S:.1f} s; test after install {time.time() - T_AFTER_INSTALL:.1f} s "
      f"(torch part {TORCH_S:.1f} s)")
done()
