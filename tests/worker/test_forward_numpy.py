"""The worker's forward pass, block by block, against an independent float64 NumPy forward on the
real stories260K model (../shared/assets/stories260K-hf: 5 blocks, dim 64, 8 query and 4 key/value
heads of 8, SwiGLU 172, RoPE in the rotate_half layout).

The binary has no per-block dump, so tests/worker/fwd_tool (the worker library's
cloq_worker_forward_block on weights read with the io library, as the driver loads them) runs the
blocks on hidden states written here, and every block's output comes back. Sequences: BOS alone
(t = 1), the 169-token story of reference_outputs.json, 37 random ids, and the first 512 tokens
(max_position_embeddings) of the WikiText-2 test text, tokenized by the Python llama2.c encoder.

  - isolated: each block b gets the NumPy input of block b (rounded to float32); its float32 output
    must match the NumPy block applied to that same rounded input within BLOCK_TOL, so a bug in
    one block shows at that block and errors do not compound;
  - chained: the embedding rows (exact in float32) through all 5 blocks in one call, as a run does;
    block b's output must match the float64 chain within CHAIN_TOL (float32 rounding accumulates
    over blocks).
Error measure: max |cloq - numpy| over a block's (t, 64) output, divided by max |numpy| of it.
The NumPy side reads model.safetensors with its own reader (cloqtest.read_safetensors) and uses
npref's rms, rope and attention (the pieces the other e2e goldens use).
"""
import json
import os
import struct
import subprocess

import numpy as np

from cloqtest import MODEL, REF, WIKI_TEST, check, done, encode, load_tok, read_safetensors, tmpdir
from npref import attention, rms, rope

# float32 against float64: measured worst 9.4e-7 (isolated) and 2.3e-6 (chained) on these sequences
# (8 and 20 float32 epsilons relative to the block's largest entry); the bounds leave a factor of
# ~10 for other BLAS builds and summation orders, and stay well below what a wrong formula gives
# (planted: a 0.1% change inside SiLU gives 1.5e-4, RMSNorm's eps x10 1.8e-4, theta x1.01 6.5e-4).
BLOCK_TOL = 1e-5
CHAIN_TOL = 2e-5
TOOL = os.environ.get("CLOQ_FWD_TOOL", "build/tests/worker/fwd_tool")

cfg = json.load(open(os.path.join(MODEL, "config.json")))
D, L = cfg["hidden_size"], cfg["num_hidden_layers"]
NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
HD = cfg.get("head_dim", D // NH)
EPS, THETA = cfg["rms_norm_eps"], cfg["rope_theta"]
W32 = read_safetensors(os.path.join(MODEL, "model.safetensors"))
W = {k: v.astype(np.float64) for k, v in W32.items()}
EMB = W32["model.embed_tokens.weight"]  # float32


def block64(x, b):
    """Llama block b in float64: x (t, D) -> (t, D)."""
    p = f"model.layers.{b}."
    h = rms(x, W[p + "input_layernorm.weight"], EPS)
    q = rope(h @ W[p + "self_attn.q_proj.weight"].T, NH, HD, THETA)
    k = rope(h @ W[p + "self_attn.k_proj.weight"].T, NKV, HD, THETA)
    v = h @ W[p + "self_attn.v_proj.weight"].T
    x = x + attention(q, k, v, NH, NKV, HD) @ W[p + "self_attn.o_proj.weight"].T
    h = rms(x, W[p + "post_attention_layernorm.weight"], EPS)
    g = h @ W[p + "mlp.gate_proj.weight"].T
    u = h @ W[p + "mlp.up_proj.weight"].T
    return x + ((g / (1.0 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T


ref = json.load(open(REF))
pieces, scores = load_tok(os.path.join(MODEL, "tok512.bin"))
wiki_ids = encode(open(WIKI_TEST, encoding="utf-8").read()[:4000], pieces, scores)
rng = np.random.default_rng(260)
seqs = {"BOS": [1], "story": ref["story_ids"], "random37": [1] + rng.integers(3, 512, 36).tolist(),
        "wiki512": wiki_ids[:cfg["max_position_embeddings"]]}
check(len(seqs["wiki512"]) == 512 and len(seqs["story"]) == 169, "sequences of 1, 169, 37 and 512 tokens",
      [1, 169, 37, 512], [len(s) for s in seqs.values()])

# ---- the NumPy side, and the records for the tool ------------------------------------------------
d = tmpdir()
records, expect = [], []  # expect: (label, reference output (t, D) float64, tolerance) per block run
for name, ids in seqs.items():
    x0 = EMB[np.asarray(ids)]  # float32 rows, exactly what a run feeds block 0
    xs = [x0.astype(np.float64)]
    for b in range(L):
        xs.append(block64(xs[-1], b))
    for b in range(L):  # isolated: the float32 rounding of NumPy's block input
        xin = xs[b].astype(np.float32)
        records.append((b, 1, xin))
        expect.append((f"{name} block {b} isolated", block64(xin.astype(np.float64), b), BLOCK_TOL))
    records.append((0, L, x0))  # chained
    for b in range(L):
        expect.append((f"{name} block {b} chained", xs[b + 1], CHAIN_TOL))

inp, outp = os.path.join(d, "in.bin"), os.path.join(d, "out.bin")
with open(inp, "wb") as f:
    for b0, nb, x in records:
        f.write(struct.pack("<qqq", b0, nb, x.shape[0]))
        f.write(np.ascontiguousarray(x, dtype="<f4").tobytes())
p = subprocess.run([TOOL, MODEL, inp, outp], capture_output=True, text=True, timeout=300)
check(p.returncode == 0, f"fwd_tool runs {len(records)} records", 0, f"{p.returncode}: {p.stderr.strip()[-500:]}")
if p.returncode != 0:
    done()
got = np.fromfile(outp, dtype="<f4")
want_n = sum(e[1].size for e in expect)
check(got.size == want_n, "fwd_tool wrote one (t, dim) output per block run", want_n, got.size)
if got.size != want_n:
    done()

# ---- compare -------------------------------------------------------------------------------------
off, worst = 0, {"isolated": 0.0, "chained": 0.0}
bad = []
for label, want, tol in expect:
    y = got[off:off + want.size].reshape(want.shape).astype(np.float64)
    off += want.size
    err = np.abs(y - want).max() / np.abs(want).max()
    kind = label.rsplit(" ", 1)[1]
    worst[kind] = max(worst[kind], err)
    if not err <= tol:  # NaN fails too
        i = np.unravel_index(np.argmax(np.abs(y - want)), want.shape)
        bad.append(f"{label}: relative error {err:.3g} > {tol:g} (at position {i[0]}, column {i[1]}: "
                   f"cloq {y[i]:.9g}, numpy {want[i]:.9g})")
n_iso = sum(1 for e in expect if e[0].endswith("isolated"))
check(not [b for b in bad if "isolated" in b],
      f"every block on NumPy's input ({n_iso} block runs over 4 sequences): max |cloq - numpy| / max |numpy| "
      f"<= {BLOCK_TOL:g} (worst {worst['isolated']:.3g})", "within tolerance", [b for b in bad if "isolated" in b][:5])
check(not [b for b in bad if "chained" in b],
      f"the 5 blocks chained from the embedding: every block's output within {CHAIN_TOL:g} of the float64 "
      f"chain (worst {worst['chained']:.3g})", "within tolerance", [b for b in bad if "chained" in b][:5])
done()
