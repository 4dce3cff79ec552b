"""cloq synth: a synthetic checkpoint holds every tensor of the Hugging Face Llama layout with the
right shape and dtype; it depends only on the settings and the seed (not on --threads, nor on the
rank count under mpirun); the outlier columns are there, shared by the modules reading one input;
the model evaluates to a finite perplexity and initializes at 1 and 2 ranks. An existing folder,
impossible shapes and a failing write are one-line errors that leave no complete-looking model."""
import json
import math
import os
import resource
import signal
import struct
import subprocess

import numpy as np

from cloqtest import CLOQ, check, done, ppl_of, read_safetensors, run, tmpdir

D, H, KV, HD, M, L, V = 64, 4, 2, 16, 160, 3, 300
FRAC, X = 0.05, 20.0
NCALIB, TCALIB = 8, 64
TINY = ["--dim", D, "--heads", H, "--kv-heads", KV, "--mlp", M, "--layers", L, "--vocab", V,
        "--outlier-cols", FRAC, "--calib-samples", NCALIB, "--calib-seqlen", TCALIB]
RATIO_TOL = 0.25  # column norms over 32-64 rows: chi noise ~10%, the ratio of medians well within 25%
MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

d = tmpdir()


def synth(name, *extra, np_=0, base=TINY):
    out = os.path.join(d, name)
    return out, run(["synth", "--out", out] + base + list(extra), np_, timeout=120)


def expected_shapes():
    s = {"model.embed_tokens.weight": [V, D], "model.norm.weight": [D], "lm_head.weight": [V, D]}
    for l in range(L):
        p = f"model.layers.{l}."
        s.update({p + "input_layernorm.weight": [D], p + "post_attention_layernorm.weight": [D],
                  p + "self_attn.q_proj.weight": [H * HD, D], p + "self_attn.k_proj.weight": [KV * HD, D],
                  p + "self_attn.v_proj.weight": [KV * HD, D], p + "self_attn.o_proj.weight": [D, H * HD],
                  p + "mlp.gate_proj.weight": [M, D], p + "mlp.up_proj.weight": [M, D],
                  p + "mlp.down_proj.weight": [D, M]})
    return s


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def raw(m, f="model.safetensors"):
    with open(os.path.join(m, f), "rb") as fh:
        return fh.read()


def bf16_bits(a):
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def one_error_line(p):
    lines = p.stderr.strip().splitlines()
    return p.returncode == 1 and len(lines) == 1 and lines[0].startswith("cloq: error:")


# ---- layout, dtype, config, calibration tokens ----------------------------------------------------
a, p = synth("a", "--seed", 1, "--threads", 1)
check(p.returncode == 0, "synth exits 0", 0, f"{p.returncode}: {p.stderr.strip()}")
check(sorted(os.listdir(a)) == ["calib.tok", "config.json", "model.safetensors"],
      "DIR holds config.json, model.safetensors, calib.tok and nothing partial", "3 files", os.listdir(a))
lines = p.stdout.splitlines()
check(sum(l.startswith("layer ") for l in lines) == L and lines[-1].startswith("wrote ") and
      any(l.startswith("embed:") for l in lines) and any(l.startswith("head:") for l in lines),
      "one progress line per layer, embed and head lines, a summary", f"{L} layer lines", p.stdout)

hdr, data_start = header(os.path.join(a, "model.safetensors"))
meta = hdr.pop("__metadata__", {})
want = expected_shapes()
check(sorted(hdr) == sorted(want), "every tensor of the HF layout, nothing else", sorted(want), sorted(hdr))
bad = [k for k in want if k in hdr and (hdr[k]["shape"] != want[k] or hdr[k]["dtype"] != "BF16")]
check(not bad, "shapes and dtype BF16 as the layout says", "none wrong", [(k, hdr[k]) for k in bad[:3]])
end = max(v["data_offsets"][1] for v in hdr.values())
check(data_start % 8 == 0 and os.path.getsize(os.path.join(a, "model.safetensors")) == data_start + end,
      "8-aligned data area, file ends with the last tensor", data_start + end,
      os.path.getsize(os.path.join(a, "model.safetensors")))
check(meta.get("format") == "pt" and meta.get("seed") == "1", "metadata: format pt and the seed", "pt, 1", meta)

cfg = json.load(open(os.path.join(a, "config.json")))
want_cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D,
            "intermediate_size": M, "num_hidden_layers": L, "num_attention_heads": H,
            "num_key_value_heads": KV, "head_dim": HD, "vocab_size": V, "hidden_act": "silu",
            "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1,
            "torch_dtype": "bfloat16"}
diff = {k: cfg.get(k) for k in want_cfg if cfg.get(k) != want_cfg[k]}
check(not diff, "config.json describes the model", want_cfg, diff)

calib = [[int(x) for x in l.split()] for l in open(os.path.join(a, "calib.tok")) if l.strip()]
check(len(calib) == NCALIB and all(len(s) == TCALIB for s in calib), "calib.tok: N lines of T ids",
      (NCALIB, TCALIB), (len(calib), sorted({len(s) for s in calib})))
check(all(s[0] == 1 for s in calib) and all(3 <= t < V for s in calib for t in s[1:]),
      "calib.tok: BOS first, then ordinary ids inside the vocabulary", "1, then 3..V-1", calib[0][:8])
ids = np.concatenate([s[1:] for s in calib])
top = np.mean(ids < 3 + 10)
check(0.25 < top < 0.75 and len(set(ids.tolist())) > 50,
      f"calib.tok: Zipf-like ids (10 most frequent ids carry {top:.2f} of the tokens)", "0.25..0.75", top)

# ---- determinism: threads, ranks, seed; f32 is the bf16 model before rounding ---------------------
b, p = synth("b", "--seed", 1, "--threads", 3)
check(p.returncode == 0 and all(raw(a, f) == raw(b, f) for f in ("model.safetensors", "calib.tok", "config.json")),
      "same seed, 1 vs 3 threads: byte-identical files", "identical", p.stderr.strip() or "different")
c, p = synth("c", "--seed", 1, np_=2)
check(p.returncode == 0 and raw(a) == raw(c) and p.stdout.count("wrote ") == 2,
      "same seed under mpirun -np 2 (rank 0 alone writes): byte-identical", "identical",
      p.stderr.strip() or "different")
e, p = synth("e", "--seed", 2)
check(p.returncode == 0 and raw(a) != raw(e) and raw(a, "calib.tok") != raw(e, "calib.tok"),
      "a different seed gives different weights and tokens", "different", "identical")
f32, p = synth("f32", "--seed", 1, "--dtype", "f32")
check(p.returncode == 0, "f32 model exits 0", 0, p.stderr.strip())
W = read_safetensors(os.path.join(f32, "model.safetensors"))  # the independent reader (F32 only)
check({k: list(v.shape) for k, v in W.items()} == want, "f32: independent reader finds every tensor and shape",
      want, {k: list(v.shape) for k, v in W.items()})
bits = {k: np.frombuffer(raw(a)[data_start + v["data_offsets"][0]:data_start + v["data_offsets"][1]], "<u2")
        for k, v in hdr.items()}
same = [k for k in want if np.array_equal(bits[k], bf16_bits(W[k]).ravel())]
check(len(same) == len(want), "bf16 model == the f32 model rounded to nearest even", len(want), len(same))
f16, p = synth("f16", "--seed", 1, "--dtype", "f16")
h16, start16 = header(os.path.join(f16, "model.safetensors"))
h16.pop("__metadata__", None)
same = [k for k in want if h16[k]["dtype"] == "F16" and np.array_equal(
    np.frombuffer(raw(f16)[start16 + h16[k]["data_offsets"][0]:start16 + h16[k]["data_offsets"][1]], "<u2"),
    W[k].astype(np.float16).view(np.uint16).ravel())]
check(p.returncode == 0 and len(same) == len(want), "f16 model == the f32 model rounded by numpy", len(want), len(same))
check(all(np.isfinite(v).all() for v in W.values()), "every value finite", "finite", "non-finite")

# ---- outliers and norms ----------------------------------------------------------------------------
def outlier_cols(w, k):
    n = np.linalg.norm(w, axis=0)
    order = np.argsort(n)[::-1]
    return set(order[:k].tolist()), np.median(n[order[:k]]) / np.median(n[order[k:]])


k_d, k_m = round(FRAC * D), round(FRAC * M)
for l in range(L):
    p_ = f"model.layers.{l}."
    sets, ratios = {}, {}
    for mod, k in (("self_attn.q_proj", k_d), ("self_attn.k_proj", k_d), ("self_attn.v_proj", k_d),
                   ("self_attn.o_proj", k_d), ("mlp.gate_proj", k_d), ("mlp.up_proj", k_d), ("mlp.down_proj", k_m)):
        sets[mod], ratios[mod] = outlier_cols(W[p_ + mod + ".weight"], k)
    okr = {m: r for m, r in ratios.items() if not abs(r / X - 1) < RATIO_TOL}
    check(not okr, f"layer {l}: outlier columns' norms ~{X:g}x the others' in every module", X, okr)
    check(sets["self_attn.q_proj"] == sets["self_attn.k_proj"] == sets["self_attn.v_proj"],
          f"layer {l}: q/k/v share their outlier columns", sets["self_attn.q_proj"],
          (sets["self_attn.k_proj"], sets["self_attn.v_proj"]))
    check(sets["mlp.gate_proj"] == sets["mlp.up_proj"], f"layer {l}: gate/up share their outlier columns",
          sets["mlp.gate_proj"], sets["mlp.up_proj"])
    for nm in ("input_layernorm", "post_attention_layernorm"):
        g = W[p_ + nm + ".weight"]
        check(abs(np.median(g) - 1) < 0.05 and g.max() >= 2.9 and np.sum(g > 2) <= 2,
              f"layer {l} {nm}: near 1 with a large channel", "median 1, max 3..6", (np.median(g), g.max()))
q_sd = np.std(np.delete(W["model.layers.0.self_attn.q_proj.weight"],
                        list(outlier_cols(W["model.layers.0.self_attn.q_proj.weight"], k_d)[0]), axis=1))
want_sd = 1 / math.sqrt(D - k_d + k_d * X * X)
check(abs(q_sd / want_sd - 1) < 0.05, "bulk sd = 1/sqrt(fan_in, outliers counted X^2 times)", want_sd, q_sd)
emb_sd = float(np.std(W["model.embed_tokens.weight"]))
check(abs(emb_sd - 0.02) < 0.001, "embedding sd 0.02", 0.02, emb_sd)
z = W["lm_head.weight"].ravel() * math.sqrt(D)
kurt = float(np.mean(z ** 4) / np.mean(z ** 2) ** 2)
check(abs(np.std(z) - 1) < 0.02 and abs(kurt - 3) < 0.15, "lm_head: Gaussian with sd 1/sqrt(dim)",
      "sd 1, kurtosis 3", (np.std(z), kurt))

# ---- the model runs ----------------------------------------------------------------------------
ppl = ppl_of(run(["eval", "--model", a, "--data", os.path.join(a, "calib.tok"), "--data-format", "tokens"]))
check(math.isfinite(ppl) and 1 < ppl < 10 * V, "cloq eval: finite, moderate perplexity", f"1..{10 * V}", ppl)
for np_ in (0, 2):
    out = os.path.join(d, f"store{np_}.h5")
    p = run(["init", "--model", a, "--calib", os.path.join(a, "calib.tok"), "--calib-format", "tokens",
             "--out", out, "--bits", "4", "--group-size", "32", "--rank", "4"], np_)
    check(p.returncode == 0 and os.path.exists(out), f"cloq init np={np_} on the synthetic model",
          0, f"{p.returncode}: {p.stderr.strip()}")

# ---- presets ------------------------------------------------------------------------------------
s, p = synth("preset", "--like", "stories260k", "--layers", 2, "--calib-samples", 2, base=[])
cfg = json.load(open(os.path.join(s, "config.json"))) if p.returncode == 0 else {}
got = [cfg.get(k) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                            "num_hidden_layers", "vocab_size", "max_position_embeddings")]
check(got == [64, 8, 4, 172, 2, 512, 512], "--like stories260k --layers 2: preset with the override",
      [64, 8, 4, 172, 2, 512, 512], got or p.stderr.strip())

# ---- errors ---------------------------------------------------------------------------------------
_, p = synth("a", "--seed", 3)
check(one_error_line(p) and "not empty" in p.stderr and raw(a) == raw(b),
      "existing non-empty DIR without --force: one error line, model untouched", "cloq: error: ... not empty",
      p.stderr.strip())
_, p = synth("a", "--seed", 3, "--force")
check(p.returncode == 0 and raw(a) != raw(b) and sorted(os.listdir(a)) == ["calib.tok", "config.json", "model.safetensors"],
      "--force writes into it (seed 3 replaces seed 1)", "a new model", p.stderr.strip())
for name, args, words in (("heads not dividing dim", ["--dim", 64, "--heads", 5, "--layers", 1, "--mlp", 8, "--vocab", 16],
                           ["--heads 5", "--dim 64"]),
                          ("kv-heads not dividing heads", ["--dim", 64, "--heads", 4, "--kv-heads", 3, "--layers", 1,
                                                           "--mlp", 8, "--vocab", 16], ["--kv-heads 3", "--heads 4"]),
                          ("unknown preset", ["--like", "gpt2"], ["--like", "gpt2"]),
                          ("missing shape", ["--dim", 64], ["--layers", "required"])):
    out = os.path.join(d, "bad-" + name.replace(" ", "-"))
    p = run(["synth", "--out", out] + args)
    check(one_error_line(p) and all(w in p.stderr for w in words) and not os.path.exists(os.path.join(out, "model.safetensors")),
          f"{name}: one error line naming it", words, p.stderr.strip())

# A write that fails (here: the file-size limit, as a full disk would) names the file and leaves no
# model: no model.safetensors, no .partial, no config.json. MPI_Init's own shared-memory files need
# a few MB, so the limit is 24 MB and the model (f32) about 42 MB.
out = os.path.join(d, "full")
FSIZE = 24 << 20


def limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE, FSIZE))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of a signal


env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
big = ["--dim", "256", "--heads", "4", "--mlp", "688", "--layers", "8", "--vocab", "8000", "--dtype", "f32"]
p = subprocess.run([CLOQ, "synth", "--out", out] + big, capture_output=True, text=True, timeout=120, env=env,
                   preexec_fn=limit_file_size)
left = sorted(os.listdir(out)) if os.path.isdir(out) else []
check(one_error_line(p) and "model.safetensors.partial" in p.stderr and "write failed" in p.stderr,
      "failing write: one error line naming the file", "cloq: error: ...partial: write failed", p.stderr.strip())
check("model.safetensors" not in left and "model.safetensors.partial" not in left and "config.json" not in left,
      "failing write: nothing complete-looking left", "no model, no partial, no config", left)
done()
