"""GGUF input, checked against the PyPI `gguf` package (llama.cpp's own Python reader/writer) and
transformers' GGUF loader:

1. stories260K written as GGUF by gguf-py (q/k rows permuted as llama.cpp's converter does) in
   F32 gives bitwise the perplexity of the Hugging Face checkpoint; in F16, BF16, Q8_0, Q4_0, Q4_1,
   Q5_0 and Q5_1 it gives bitwise the perplexity of a safetensors checkpoint holding gguf-py's own
   dequantization of the same file (so every dequantizer and the row order are exact).
2. The same file carrying the tokenizer as GGUF "llama" (SentencePiece) metadata tokenizes raw
   WikiText-2 exactly as the llama2.c tokenizer does (same perplexity on the raw test text).
3. The real SmolLM2-135M-Instruct.Q4_1.gguf (fetched by scripts/fetch-smollm2.sh): the config read
   from its metadata, and `cloq eval` on token windows equal to transformers' GGUF loader run in
   float32 (bench/peers/.venv, torch on the CPU) within 1e-4 relative.
4. Malformed files: every truncation of a small GGUF's header, a bad magic, version 1, impossible
   counts, an unknown tensor type, a misaligned or out-of-range offset, overlapping tensors, another
   architecture, an unsupported quantization type and a NaN weight each give one error line naming
   the problem and a non-zero exit.
"""
import json
import os
import shutil
import struct
import subprocess

import numpy as np

from cloqtest import (ASSETS, MODEL, check, done, ppl_of, read_safetensors, run, tmpdir, write_safetensors_f32,
                      write_tokens)

import gguf
from gguf import GGMLQuantizationType as QT

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
d = tmpdir()
cfg = json.load(open(os.path.join(MODEL, "config.json")))
W = {k: np.array(v, dtype=np.float32) for k, v in read_safetensors(os.path.join(MODEL, "model.safetensors")).items()}
H, HKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]

# a few deterministic token windows of the stories model
rng = np.random.default_rng(6)
toks = os.path.join(d, "toks.txt")
write_tokens(toks, [[1] + list(rng.integers(3, 512, 95)) for _ in range(4)])


def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: HF rotary halves -> interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GG = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
      "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
      "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
      "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
      "mlp.down_proj.weight": "ffn_down.weight"}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    p = hf.split(".")
    return f"blk.{p[2]}." + GG[".".join(p[3:])]


def write_gguf(path, qtype, tokenizer=False, arch="llama"):
    """stories260K as llama.cpp would write it; 2-D weights whose rows fit qtype's block in qtype.
    Returns {hf name: gguf-py's dequantization, un-permuted} (what cloq must read)."""
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_vocab_size(cfg["vocab_size"])
    if tokenizer:
        from cloqtest import load_tok
        pieces, scores = load_tok(os.path.join(MODEL, "tok512.bin"))
        toks_, types = [], []
        for i, p in enumerate(pieces):
            s = p.decode("utf-8", "replace")
            if 3 <= i < 259:
                types.append(6)  # byte
            elif i < 3:
                types.append(2 if i == 0 else 3)
            else:
                types.append(1)
                s = s.replace(" ", "\u2581")
            toks_.append(s)
        w.add_tokenizer_model("llama")
        w.add_token_list(toks_)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
    expect = {}
    for hf in sorted(W):
        a = W[hf]
        if hf.endswith("q_proj.weight"):
            a = permute(a, H)
        elif hf.endswith("k_proj.weight"):
            a = permute(a, HKV)
        t = qtype if a.ndim == 2 and a.shape[1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0 else QT.F32
        if t == QT.F32:
            w.add_tensor(gguf_name(hf), a)
            deq = a
        else:
            q = gguf.quants.quantize(a, t)
            w.add_tensor(gguf_name(hf), q, raw_shape=q.shape, raw_dtype=t)
            deq = gguf.quants.dequantize(q, t).reshape(a.shape).astype(np.float32)
        if hf.endswith("q_proj.weight"):
            deq = unpermute(deq, H)
        elif hf.endswith("k_proj.weight"):
            deq = unpermute(deq, HKV)
        expect[hf] = deq
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expect


def write_hf(dirpath, tensors):
    os.makedirs(dirpath, exist_ok=True)
    shutil.copy(os.path.join(MODEL, "config.json"), dirpath)
    shutil.copy(os.path.join(MODEL, "tok512.bin"), dirpath)
    write_safetensors_f32(os.path.join(dirpath, "model.safetensors"), tensors)


def eval_out(model, data=toks, fmt="tokens", extra=()):
    return run(["eval", "--model", model, "--data", data, "--data-format", fmt, *extra])


# ---- 1. every tensor type, against gguf-py's dequantization ----------------------------------
ref_hf = eval_out(MODEL)
ppl_hf = ppl_of(ref_hf)
for qt in [QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1]:
    g = os.path.join(d, f"s_{qt.name}.gguf")
    expect = write_gguf(g, qt)
    hfd = os.path.join(d, f"hf_{qt.name}")
    write_hf(hfd, expect)
    pg, ph = eval_out(g), eval_out(hfd)
    check(pg.returncode == 0, f"{qt.name}: cloq eval reads the GGUF", 0, pg.stderr.strip())
    if pg.returncode:
        continue
    check(ppl_of(pg) == ppl_of(ph),
          f"{qt.name}: GGUF perplexity bitwise equal to gguf-py's dequantization as safetensors "
          f"({ppl_of(pg):.6f})", ppl_of(ph), ppl_of(pg))
    if qt == QT.F32:
        check(ppl_of(pg) == ppl_hf, "F32 GGUF (q/k rows permuted by the converter) = the HF checkpoint",
              ppl_hf, ppl_of(pg))

# ---- 2. the GGUF SentencePiece tokenizer = the llama2.c tokenizer on raw WikiText-2 ------------
g_tok = os.path.join(d, "s_tok.gguf")
write_gguf(g_tok, QT.F32, tokenizer=True)
wiki = os.path.join(ASSETS, "wikitext-2", "wiki.test.raw")
a = run(["eval", "--model", g_tok, "--data", wiki, "--seqlen", "256", "--limit", "8"])
b = run(["eval", "--model", MODEL, "--data", wiki, "--seqlen", "256", "--limit", "8"])
check(a.returncode == 0 and b.returncode == 0 and ppl_of(a) == ppl_of(b),
      "GGUF llama tokenizer metadata: raw-text perplexity equal to the llama2.c tokenizer's",
      b.stdout.strip()[-40:] + b.stderr.strip(), a.stdout.strip()[-40:] + a.stderr.strip())

# ---- 3. the real SmolLM2-135M Q4_1 file ---------------------------------------------------------
smol = os.environ.get("CLOQ_SMOLLM2_GGUF") or subprocess.run(
    ["bash", os.path.join(ROOT, "scripts", "fetch-smollm2.sh")], capture_output=True, text=True,
    check=True).stdout.strip().splitlines()[-1]
r = gguf.GGUFReader(smol)
types = sorted({t.tensor_type.name for t in r.tensors})
print("SmolLM2 tensor types:", types)
dry = run(["init", "--model", smol, "--calib", toks, "--calib-format", "tokens", "--out",
           os.path.join(d, "dry.h5"), "--dry-run"])
print(dry.stdout[-600:], dry.stderr[-400:])
f = {k: r.fields[k].contents() for k in ["llama.block_count", "llama.embedding_length",
                                         "llama.feed_forward_length", "llama.attention.head_count",
                                         "llama.attention.head_count_kv"]}
want = (f"{f['llama.block_count']} blocks, d {f['llama.embedding_length']}, mlp "
        f"{f['llama.feed_forward_length']}, heads {f['llama.attention.head_count']}/"
        f"{f['llama.attention.head_count_kv']}")
check(dry.returncode == 0, "cloq init --dry-run reads SmolLM2's GGUF", 0, dry.stderr.strip())
check(want == "30 blocks, d 576, mlp 1536, heads 9/3" and want in dry.stdout,
      f"cloq's config from the metadata equals gguf-py's: {want}", want, dry.stdout[:300])
venv_py = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
inst = subprocess.run(["bash", os.path.join(ROOT, "bench", "peers", "install.sh")], capture_output=True, text=True)
check(inst.returncode == 0, "bench/peers/install.sh (torch, transformers, gguf)", 0, inst.stderr[-500:])
if inst.returncode == 0:
    ref_script = os.path.join(d, "hfref.py")
    with open(ref_script, "w") as f:
        f.write(r'''
import math, os, sys
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import torch
from transformers import AutoModelForCausalLM
path, out = sys.argv[1], sys.argv[2]
m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                         torch_dtype=torch.float32)
g = torch.Generator().manual_seed(6)
wins = [torch.randint(0, 49152, (192,), generator=g).tolist() for _ in range(3)]
nll, cnt = 0.0, 0
with torch.no_grad():
    for w in wins:
        x = torch.tensor([w])
        lp = torch.log_softmax(m(x).logits[0].double(), -1)
        nll -= lp[:-1].gather(1, x[0, 1:, None]).sum().item()
        cnt += len(w) - 1
with open(out, "w") as f:
    f.write("\n".join(" ".join(map(str, w)) for w in wins) + "\n")
print("ppl", math.exp(nll / cnt))
''')
    toks_s = os.path.join(d, "smol_toks.txt")
    hf = subprocess.run([venv_py, ref_script, smol, toks_s], capture_output=True, text=True,
                        env=dict(os.environ, OMP_NUM_THREADS="2"))
    check(hf.returncode == 0, "transformers loads the GGUF (its own dequantizer)", 0, hf.stderr[-800:])
    if hf.returncode == 0:
        p_hf = float(hf.stdout.strip().splitlines()[-1].split()[1])
        c = eval_out(smol, toks_s)
        p_c = ppl_of(c) if c.returncode == 0 else float("nan")
        rel = abs(p_c - p_hf) / p_hf
        check(rel < 1e-4, f"SmolLM2 Q4_1: cloq eval {p_c:.6f} vs transformers {p_hf:.6f} (rel {rel:.1e})",
              "< 1e-4", rel)

# ---- 4. malformed files ---------------------------------------------------------------------------
base_path = os.path.join(d, "s_Q4_1.gguf")
blob = open(base_path, "rb").read()
rd = gguf.GGUFReader(base_path)
data_start = rd.data_offset
bad = os.path.join(d, "bad.gguf")


def expect_error(content, what, needle):
    with open(bad, "wb") as f:
        f.write(content)
    p = eval_out(bad)
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    ok = p.returncode != 0 and len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr
    check(ok, f"{what}: one error line with '{needle}'", needle, (p.returncode, p.stderr.strip()[-300:]))


expect_error(b"GGUX" + blob[4:], "bad magic", "not a GGUF model")
expect_error(blob[:4] + struct.pack("<I", 1) + blob[8:], "version 1", "version 1")
expect_error(blob[:8] + struct.pack("<Q", 1 << 60) + blob[16:], "tensor count 2^60", "impossible")
expect_error(blob[:16] + struct.pack("<Q", 1 << 40) + blob[24:], "metadata count 2^40", "impossible")
# every truncation inside the header, then a few inside the data
cuts = list(range(0, data_start, max(1, data_start // 37))) + [data_start + 1, len(blob) // 2, len(blob) - 1]
fails = []
for cut in cuts:
    with open(bad, "wb") as f:
        f.write(blob[:cut])
    p = eval_out(bad)
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    if not (p.returncode not in (0,) and p.returncode < 128 and len(lines) == 1):
        fails.append((cut, p.returncode, p.stderr[-200:]))
check(not fails, f"{len(cuts)} truncations each give one error line, no crash", [], fails[:3])
# tensor infos: locate the first tensor's type/offset fields through gguf-py's parse
t0 = rd.tensors[0]
name_b = t0.name.encode()
pos = blob.index(struct.pack("<Q", len(name_b)) + name_b, 24)
p_nd = pos + 8 + len(name_b)
nd = struct.unpack_from("<I", blob, p_nd)[0]
p_type = p_nd + 4 + 8 * nd
p_off = p_type + 4


def patch(at, fmt, val):
    b = bytearray(blob)
    struct.pack_into(fmt, b, at, val)
    return bytes(b)


expect_error(patch(p_type, "<I", 99), "unknown tensor type 99", "unknown ggml type 99")
expect_error(patch(p_type, "<I", 14), "Q6_K tensor (not dequantized by cloq)", "Q6_K")
expect_error(patch(p_off, "<Q", 8), "misaligned offset", "alignment")
expect_error(patch(p_off, "<Q", 1 << 40), "offset past the end", "truncated GGUF")
t1_off = rd.tensors[1].data_offset - data_start
expect_error(patch(p_off, "<Q", t1_off), "overlapping tensors", "overlap")
expect_error(patch(p_nd, "<I", 7), "7 dimensions", "dimensions")
ga = os.path.join(d, "gpt2arch.gguf")
write_gguf(ga, QT.F32, arch="gpt2")
expect_error(open(ga, "rb").read(), "architecture gpt2", "only llama, qwen2 and qwen3")
# a NaN weight in an F32 tensor (the norm of block 0)
nn = rd.tensors[[t.name for t in rd.tensors].index("blk.0.attn_norm.weight")]
expect_error(patch(nn.data_offset, "<f", float("nan")), "NaN weight", "non-finite")

done()
