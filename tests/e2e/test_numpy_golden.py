"""An independent float64 NumPy re-derivation of cloq init on stories260K.

The test tokenizes calibration text with its own llama2.c BPE, runs its own forward pass to get the
Gram matrix of every distinct input of every block, quantizes with its own RTN and computes the CLoQ
product with numpy.linalg (eigh, svd). Against the stores cloq writes it checks:
  - codes, scales and zeros equal exactly (same float32 arithmetic);
  - block 0's q/k/v LoRA products equal to 1e-4 relative (same input up to float32 rounding);
  - for every module of every block, the calibrated objective of the stored CLoQ product is within
    1e-4 of NumPy's optimum and never above the zero or svd inits' objectives;
  - the objectives every store records (`objective`, `objective_zero` attributes of each module)
    equal NumPy's, computed with its own Gram matrices, within 1e-4;
  - the factors of every module of the cloq and svd stores are split in balance, in the weight's
    units: B^T B = A A^T = diag(S), S the singular values of the stored product B A, to float32
    rounding (BALANCE_RTOL of S_1);
  - LoftQ on a GPTQ base with 150 alternations (which, kept to the last iterate, ended up to 1.8e6
    times above the zero init) keeps its best iterate: the objective NumPy computes from the stored
    Q and B A equals the recorded one and is never above the first alternation's zero init.
"""
import os

import h5py
import numpy as np

from npref import attention, rms, rope
from cloqtest import (MODEL, WIKI_VALID, check, done, encode, load_tok, read_safetensors, run,
                      tmpdir, write_tokens)

BITS, GROUP, RANK, DAMP = 2, 32, 8, 0.01
CODES_EXACT = True
PROD_RTOL = 1e-4
OBJ_RTOL = 1e-4
ORDER_SLACK = 1e-6
BALANCE_RTOL = 1e-5  # float32 factors: B^T B vs A A^T vs diag(S), relative to S_1
MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
INPUT = {"self_attn.q_proj": 0, "self_attn.k_proj": 0, "self_attn.v_proj": 0, "self_attn.o_proj": 1,
         "mlp.gate_proj": 2, "mlp.up_proj": 2, "mlp.down_proj": 3}

# calibration: 8 sequences of 96 tokens from the validation text
pieces, scores = load_tok(os.path.join(MODEL, "tok512.bin"))
text = open(WIKI_VALID, encoding="utf-8").read()[:6000]
ids = encode(text, pieces, scores)
seqs = [ids[i * 96:(i + 1) * 96] for i in range(8)]
assert all(len(s) == 96 for s in seqs)
d = tmpdir()
calib = os.path.join(d, "calib.tokens")
write_tokens(calib, seqs)

stores = {}
for init in ("cloq", "svd", "zero"):
    out = os.path.join(d, f"{init}.h5")
    p = run(["init", "--model", MODEL, "--calib", calib, "--calib-format", "tokens", "--out", out,
             "--init", init, "--bits", BITS, "--group-size", GROUP, "--rank", RANK, "--damp", DAMP])
    check(p.returncode == 0, f"init {init} exits 0", 0, p.stderr.strip())
    stores[init] = h5py.File(out, "r")
out = os.path.join(d, "loftq150.h5")
p = run(["init", "--model", MODEL, "--calib", calib, "--calib-format", "tokens", "--out", out, "--init", "loftq",
         "--quantizer", "gptq", "--loftq-iters", 150, "--bits", BITS, "--group-size", GROUP, "--rank", RANK,
         "--damp", DAMP])
check(p.returncode == 0, "init loftq (gptq, 150 alternations) exits 0", 0, p.stderr.strip())
stores["loftq150"] = h5py.File(out, "r")

W = {k: v.astype(np.float64) for k, v in read_safetensors(os.path.join(MODEL, "model.safetensors")).items()}
dim, nh, nkv, hd, L, eps, theta = 64, 8, 4, 8, 5, 1e-5, 10000.0




H = [[0, 0, 0, 0] for _ in range(L)]
for s in seqs:
    x = W["model.embed_tokens.weight"][s]
    T = len(s)
    for b in range(L):
        p_ = f"model.layers.{b}."
        xn = rms(x, W[p_ + "input_layernorm.weight"])
        H[b][0] = H[b][0] + xn.T @ xn
        q = rope(xn @ W[p_ + "self_attn.q_proj.weight"].T, nh)
        k = rope(xn @ W[p_ + "self_attn.k_proj.weight"].T, nkv)
        v = xn @ W[p_ + "self_attn.v_proj.weight"].T
        att = attention(q, k, v, nh, nkv)
        H[b][1] = H[b][1] + att.T @ att
        x = x + att @ W[p_ + "self_attn.o_proj.weight"].T
        xn = rms(x, W[p_ + "post_attention_layernorm.weight"])
        H[b][2] = H[b][2] + xn.T @ xn
        gt = xn @ W[p_ + "mlp.gate_proj.weight"].T
        hh = gt / (1 + np.exp(-gt)) * (xn @ W[p_ + "mlp.up_proj.weight"].T)
        H[b][3] = H[b][3] + hh.T @ hh
        x = x + hh @ W[p_ + "mlp.down_proj.weight"].T


def rtn(w32):
    """float32 RTN, the documented convention (numpy rint = ties to even)."""
    n_out, n_in = w32.shape
    maxq = np.float32(2 ** BITS - 1)
    codes = np.zeros(w32.shape, np.uint8)
    ng = -(-n_in // GROUP)
    sc = np.zeros((n_out, ng), np.float32)
    ze = np.zeros((n_out, ng), np.float32)
    for g in range(ng):
        blk = w32[:, g * GROUP:(g + 1) * GROUP]
        xmin = np.minimum(blk.min(1), np.float32(0))
        xmax = np.maximum(blk.max(1), np.float32(0))
        both0 = (xmin == 0) & (xmax == 0)
        xmin[both0], xmax[both0] = -1, 1
        scale = ((xmax - xmin) / maxq).astype(np.float32)
        zero = np.rint(-xmin / scale).astype(np.float32)
        q = np.clip(np.rint(blk / scale[:, None]) + zero[:, None], 0, maxq)
        codes[:, g * GROUP:(g + 1) * GROUP] = q.astype(np.uint8)
        sc[:, g], ze[:, g] = scale, zero
    return codes, sc, ze


def objective(E, Lr, Hd):
    D = E - Lr
    return float(np.einsum("ij,jk,ik->", D, Hd, D))


for b in range(L):
    for m in MODULES:
        w32 = read_safetensors(os.path.join(MODEL, "model.safetensors"))[f"model.layers.{b}.{m}.weight"]
        codes, sc, ze = rtn(np.array(w32))
        g = stores["cloq"][f"layers/{b}/{m}"]
        same = (np.array_equal(codes, g["codes"][()]) and np.array_equal(sc, g["scales"][()])
                and np.array_equal(ze, g["zeros"][()]))
        nbad = int((codes != g["codes"][()]).sum())
        check(same, f"block {b} {m}: codes/scales/zeros equal NumPy's RTN", "equal", f"{nbad} codes differ")
        gi = np.repeat(np.arange(sc.shape[1]), GROUP)[:codes.shape[1]]
        Q = (codes.astype(np.float64) - ze[:, gi]) * sc[:, gi]
        E = w32.astype(np.float64) - Q
        Hh = H[b][INPUT[m]]
        Hd = Hh + DAMP * np.mean(np.diag(Hh)) * np.eye(Hh.shape[0])
        s, U = np.linalg.eigh(Hd)
        R = np.sqrt(s)[:, None] * U.T
        P, S, Vt = np.linalg.svd(R @ E.T, full_matrices=False)
        Mr = (P[:, :RANK] * S[:RANK]) @ Vt[:RANK]
        Lnp = (np.linalg.solve(R, Mr)).T
        obj = {}
        for init in ("cloq", "svd", "zero"):
            gg = stores[init][f"layers/{b}/{m}"]
            prod = gg["lora_B"][()].astype(np.float64) @ gg["lora_A"][()].astype(np.float64)
            obj[init] = objective(E, prod, Hd)
            st_obj, st_zero = gg.attrs["objective"], gg.attrs["objective_zero"]
            e0 = objective(E, 0.0, Hd)
            rel_o = abs(st_obj - obj[init]) / obj[init]
            rel_z = abs(st_zero - e0) / e0
            check(rel_o < OBJ_RTOL and rel_z < OBJ_RTOL,
                  f"block {b} {m} {init}: stored objectives = NumPy's (rel {rel_o:.1e}, zero {rel_z:.1e})",
                  f"< {OBJ_RTOL}", (rel_o, rel_z))
            if init in ("cloq", "svd"):
                Bf, Af = gg["lora_B"][()].astype(np.float64), gg["lora_A"][()].astype(np.float64)
                BtB, AAt = Bf.T @ Bf, Af @ Af.T
                S = np.linalg.svd(prod, compute_uv=False)[:RANK]
                worst = max(np.abs(BtB - np.diag(S)).max(), np.abs(AAt - np.diag(S)).max()) / S[0]
                check(worst < BALANCE_RTOL, f"block {b} {m} {init}: B^T B = A A^T = diag(S) (rel {worst:.1e})",
                      f"< {BALANCE_RTOL}", worst)
            if init == "cloq" and b == 0 and INPUT[m] == 0:
                rel = np.linalg.norm(prod - Lnp) / np.linalg.norm(Lnp)
                check(rel < PROD_RTOL, f"block 0 {m}: CLoQ product vs NumPy (rel {rel:.1e})", f"< {PROD_RTOL}", rel)
        g = stores["loftq150"][f"layers/{b}/{m}"]
        Ql = (g["codes"][()].astype(np.float64) - g["zeros"][()][:, gi]) * g["scales"][()][:, gi]
        prod = g["lora_B"][()].astype(np.float64) @ g["lora_A"][()].astype(np.float64)
        ol = objective(w32.astype(np.float64) - Ql, prod, Hd)
        rel = abs(ol - g.attrs["objective"]) / ol
        check(rel < OBJ_RTOL and ol <= g.attrs["objective_zero"] * (1 + ORDER_SLACK),
              f"block {b} {m} loftq x150: stored objective = NumPy's (rel {rel:.1e}), "
              f"{ol / g.attrs['objective_zero']:.4f} of the zero init", "<= 1", ol / g.attrs["objective_zero"])
        onp = objective(E, Lnp, Hd)
        rel = abs(obj["cloq"] - onp) / onp
        check(rel < OBJ_RTOL, f"block {b} {m}: CLoQ objective {obj['cloq']:.6g} vs NumPy optimum {onp:.6g}",
              f"rel < {OBJ_RTOL}", rel)
        check(obj["cloq"] <= min(obj["svd"], obj["zero"]) * (1 + ORDER_SLACK),
              f"block {b} {m}: CLoQ objective <= svd {obj['svd']:.6g} and zero {obj['zero']:.6g}",
              "<=", obj["cloq"])
done()
