"""cloq sample on stories260K, against an independent float64 NumPy forward of the model.

  - KV-cache decoding equals the full forward: the logits cloq dumps for every position of a
    sampled sequence (greedy, T = 1 and top-p) match NumPy's full-sequence forward of the same ids;
  - greedy (temperature 0) reproduces NumPy's greedy continuation token for token over the whole
    window (a disagreement is excused only at a near-tie of NumPy's top two logits, and counted),
    and the reference greedy continuation of reference_outputs.json;
  - every draw is the documented one: replaying splitmix64 (seed mixed with the sequence index)
    over the dumped logits in float64 gives exactly the sampled tokens, with and without top-p;
  - determinism: same seed byte-identical, another seed different, sequence i the same for any --n,
    the same file under mpirun -np 2;
  - statistics: the token file reads back in `cloq eval`, whose perplexity equals NumPy's on the
    same ids; at T = 1 the mean NLL of the drawn tokens equals the mean entropy of the predictive
    distributions within 4 standard errors; ppl(T=0.7) < ppl(T=1) < ppl(T=1.5);
  - text output is the llama2.c decoding of the token output, byte for byte;
  - errors: bad flags and values, missing model, existing --out are one line, exit 1, nothing left.
"""
import math
import os

import numpy as np

from npref import attention, rms, rope
from cloqtest import (CLOQ, GG, M64, MODEL, check, done, encode, load_tok, mix64, ppl_of, read_safetensors, reference,
                      run, seed_mix, tmpdir)

LOGIT_ATOL = 1e-4       # float32 incremental decode vs float64 full forward (logits ~ +-15)
TIE_TOL = 1e-4          # top-two NumPy logits closer than this: argmax may differ honestly
MIN_GREEDY = 64         # greedy must agree with NumPy at least this far without any excuse
Z_MAX = 4.0             # mean NLL vs mean entropy, in standard errors
PPL_RTOL = 1e-4         # cloq eval vs NumPy perplexity on the same ids
STREAM = 0x73616D706C65  # cloq_sample.c's per-sequence seed constant ("sample")
LENGTH = 512

d = tmpdir()
W = {k: v.astype(np.float64) for k, v in read_safetensors(os.path.join(MODEL, "model.safetensors")).items()}
dim, nh, nkv, hd, L, eps, theta, V = 64, 8, 4, 8, 5, 1e-5, 10000.0, 512


# ---- the independent forward (as test_numpy_golden.py: HF rotate_half layout, float64) ----------


def np_logits(ids):
    x = W["model.embed_tokens.weight"][ids]
    for b in range(L):
        p_ = f"model.layers.{b}."
        xn = rms(x, W[p_ + "input_layernorm.weight"])
        q = rope(xn @ W[p_ + "self_attn.q_proj.weight"].T, nh)
        k = rope(xn @ W[p_ + "self_attn.k_proj.weight"].T, nkv)
        v = xn @ W[p_ + "self_attn.v_proj.weight"].T
        att = attention(q, k, v, nh, nkv)
        x = x + att @ W[p_ + "self_attn.o_proj.weight"].T
        xn = rms(x, W[p_ + "post_attention_layernorm.weight"])
        gt = xn @ W[p_ + "mlp.gate_proj.weight"].T
        x = x + (gt / (1 + np.exp(-gt)) * (xn @ W[p_ + "mlp.up_proj.weight"].T)) @ W[p_ + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"]) @ W["model.embed_tokens.weight"].T


def log_softmax(lg):
    m = lg.max(-1, keepdims=True)
    return lg - m - np.log(np.exp(lg - m).sum(-1, keepdims=True))


# ---- the documented draw, replayed -------------------------------------------------------------


class Rng:
    def __init__(self, seed):
        self.s = seed

    def uniform(self):
        self.s = (self.s + GG) & M64
        return (mix64(self.s) >> 11) * 2.0 ** -53


def draw(lg, temp, top_p, rng):
    """lg: the float32 logits as Python floats. A full sort for top-p (cloq sorts a pre-filtered
    candidate set: the results must agree)."""
    am = max(range(len(lg)), key=lambda j: (lg[j], -j))
    if temp == 0:
        return am
    e = [math.exp((l - lg[am]) / temp) for l in lg]
    S = 0.0
    for x in e:
        S += x
    if top_p < 1:
        order = sorted(range(len(e)), key=lambda j: (-e[j], j))
        acc, keep = 0.0, len(order)
        for k, j in enumerate(order):
            acc += e[j]
            if acc >= top_p * S:
                keep = k + 1
                break
        kept = set(order[:keep])
        e = [x if j in kept else 0.0 for j, x in enumerate(e)]
        S = 0.0
        for x in e:
            S += x
    target, acc, last = rng.uniform() * S, 0.0, am
    for j, x in enumerate(e):
        if x <= 0:
            continue
        acc += x
        if acc > target:
            return j
        last = j
    return last


def read_tok(path):
    with open(path) as f:
        return [[int(t) for t in l.split()] for l in f if l.strip()]


def read_logits(path):
    return np.loadtxt(path, dtype=np.float64, ndmin=2)


def sample(name, *args, np_=0):
    out = os.path.join(d, name)
    p = run(["sample", "--model", MODEL, "--out", out] + list(args), np_, timeout=300)
    return out, p


def one_error_line(p):
    lines = p.stderr.strip().splitlines()
    return p.returncode == 1 and len(lines) == 1 and lines[0].startswith("cloq: error:")


# ---- greedy: KV cache vs full forward, NumPy's greedy continuation ------------------------------
g, p = sample("greedy.tok", "--n", 1, "--length", LENGTH, "--temperature", 0, "--dump-logits",
              os.path.join(d, "greedy.lg"))
check(p.returncode == 0, "greedy sample exits 0", 0, p.stderr.strip())
last = p.stdout.strip().splitlines()[-1]
check(last.startswith("sampled 1 sequences, 512 tokens (511 drawn)") and "tokens/s" in last,
      "summary line: sequences, tokens, seconds, tokens/s", "sampled 1 sequences, 512 tokens ...", last)
seq = read_tok(g)
check(len(seq) == 1 and len(seq[0]) == LENGTH and seq[0][0] == 1, "one line of 512 ids starting with BOS",
      f"1 x {LENGTH}", [len(s) for s in seq])
ids = seq[0]
lg_c = read_logits(os.path.join(d, "greedy.lg"))
check(lg_c.shape == (LENGTH - 1, V), "dump: one row of logits per drawn token", (LENGTH - 1, V), lg_c.shape)
lg_np = np_logits(ids)[:LENGTH - 1]
err = float(np.abs(lg_c - lg_np).max())
check(err < LOGIT_ATOL, f"greedy: KV-cache logits vs NumPy full forward, all {LENGTH - 1} positions "
      f"(max abs diff {err:.2e})", f"< {LOGIT_ATOL}", err)
top2 = np.sort(lg_np, 1)[:, -2:]
margin = top2[:, 1] - top2[:, 0]
np_arg = lg_np.argmax(1)
agree = np_arg == np.array(ids[1:])
bad = [i for i in range(LENGTH - 1) if not agree[i] and margin[i] >= TIE_TOL]
ties = [i for i in range(LENGTH - 1) if not agree[i] and margin[i] < TIE_TOL]
first = int(np.argmin(agree)) if not agree.all() else LENGTH - 1
print(f"greedy: NumPy argmax agrees at {int(agree.sum())} of {LENGTH - 1} positions; first "
      f"disagreement at {first}; near-ties excused: {ties}; smallest margin {margin.min():.2e}")
check(not bad, "greedy equals NumPy's greedy continuation (excused only at near-ties)", "none",
      f"{len(bad)} positions differ, first {bad[:10]}")
check(first >= MIN_GREEDY, f"greedy: first {MIN_GREEDY} tokens equal NumPy's without excuse",
      f">= {MIN_GREEDY}", first)
ref = reference()["greedy_from_bos_ids"]
check(ids[:len(ref)] == ref, f"greedy: first {len(ref)} ids equal reference_outputs.json's greedy "
      "continuation", ref[:12], ids[:12])

# ---- T = 1 and top-p: logits of sampled sequences, exact replay of the draws -------------------
for tag, temp, top_p, seed in [("t1", 1.0, 1.0, 7), ("topp", 0.9, 0.8, 11)]:
    out, p = sample(f"{tag}.tok", "--n", 2, "--length", 320, "--temperature", temp, "--top-p", top_p,
                    "--seed", seed, "--dump-logits", os.path.join(d, f"{tag}.lg"))
    check(p.returncode == 0, f"{tag}: sample exits 0", 0, p.stderr.strip())
    s0 = read_tok(out)[0]
    lg_c = read_logits(os.path.join(d, f"{tag}.lg"))
    err = float(np.abs(lg_c - np_logits(s0)[:len(s0) - 1]).max())
    check(err < LOGIT_ATOL, f"{tag}: KV-cache logits vs NumPy full forward (max abs diff {err:.2e})",
          f"< {LOGIT_ATOL}", err)
    rng = Rng(seed_mix(seed, 0, STREAM))
    replay = [1] + [draw(list(lg_c[i]), temp, top_p, rng) for i in range(len(s0) - 1)]
    nbad = sum(a != b for a, b in zip(replay, s0))
    check(nbad == 0, f"{tag}: every token is the documented draw (splitmix64 replay over the dumped "
          "logits)", "0 differ", f"{nbad} differ")
    if top_p < 1:
        outside = 0
        for i in range(len(s0) - 1):
            pr = np.exp(log_softmax(lg_c[i] / temp))
            order = np.argsort(-pr, kind="stable")
            k = int(np.searchsorted(np.cumsum(pr[order]), top_p - 1e-9)) + 1
            outside += s0[i + 1] not in set(order[:k].tolist())
        check(outside == 0, f"{tag}: every drawn token lies in the top-p {top_p} nucleus", 0, outside)

# ---- determinism -------------------------------------------------------------------------------
a1, _ = sample("a1.tok", "--n", 5, "--length", 96, "--seed", 3)
a2, _ = sample("a2.tok", "--n", 5, "--length", 96, "--seed", 3)
a3, _ = sample("a3.tok", "--n", 5, "--length", 96, "--seed", 4)
a4, _ = sample("a4.tok", "--n", 2, "--length", 96, "--seed", 3)
a5, p = sample("a5.tok", "--n", 5, "--length", 96, "--seed", 3, np_=2)
raw = lambda f: open(f, "rb").read()
check(raw(a1) == raw(a2), "same seed: byte-identical files", "identical", "different")
la1, la3 = read_tok(a1), read_tok(a3)
check(all(x != y for x, y in zip(la1, la3)), "another seed: every sequence differs", "all differ",
      sum(x == y for x, y in zip(la1, la3)))
check(len(set(map(tuple, la1))) == 5, "the 5 sequences of one run differ from each other", 5,
      len(set(map(tuple, la1))))
check(read_tok(a4) == la1[:2], "sequence i does not depend on --n (--n 2 vs --n 5)", "equal", "different")
check(p.returncode == 0 and raw(a5) == raw(a1), "mpirun -np 2: the same file (rank 0 samples)",
      "identical", p.stderr.strip() or "different")

# ---- statistics: eval reads the file; NLL vs entropy; temperature ordering ---------------------
ppl = {}
for temp in (0.7, 1.0, 1.5):
    out, p = sample(f"T{temp}.tok", "--n", 16, "--length", 256, "--temperature", temp, "--seed", 5)
    check(p.returncode == 0, f"T={temp}: sample exits 0", 0, p.stderr.strip())
    ppl[temp] = ppl_of(run(["eval", "--model", MODEL, "--data", out, "--data-format", "tokens"]))
    if temp == 1.0:
        nll = ent = var = 0.0
        n = 0
        for s in read_tok(out):
            lp = log_softmax(np_logits(s)[:-1])
            pr = np.exp(lp)
            tok_lp = lp[np.arange(len(s) - 1), s[1:]]
            h = -(pr * lp).sum(1)
            nll -= tok_lp.sum()
            ent += h.sum()
            var += ((pr * lp * lp).sum(1) - h * h).sum()
            n += len(s) - 1
        z = (nll - ent) / math.sqrt(var)
        print(f"T=1: mean NLL {nll / n:.4f}, mean entropy {ent / n:.4f}, z = {z:.2f} over {n} tokens; "
              f"exp(mean entropy) {math.exp(ent / n):.4f}")
        check(abs(z) < Z_MAX, "T=1: mean NLL of the drawn tokens = mean predictive entropy "
              f"(NLL {nll / n:.4f}, entropy {ent / n:.4f})", f"|z| < {Z_MAX}", z)
        np_ppl = math.exp(nll / n)
        check(abs(ppl[temp] / np_ppl - 1) < PPL_RTOL, f"T=1: cloq eval ppl {ppl[temp]:.6f} = NumPy's "
              f"{np_ppl:.6f} on the sampled file", f"rel < {PPL_RTOL}", abs(ppl[temp] / np_ppl - 1))
print("ppl of own samples: " + ", ".join(f"T={t}: {v:.4f}" for t, v in ppl.items()))
check(ppl[0.7] < ppl[1.0] < ppl[1.5], "ppl(T=0.7) < ppl(T=1) < ppl(T=1.5)", "increasing", ppl)

# ---- text output --------------------------------------------------------------------------------
pieces, scores = load_tok(os.path.join(MODEL, "tok512.bin"))


def decode(s):
    b = bytearray()
    for prev, t in zip(s, s[1:]):
        if t in (1, 2):
            b += b"\n"
            continue
        if t == 0:
            continue
        pc = pieces[t]
        if prev == 1 and pc.startswith(b" "):
            pc = pc[1:]
        if 3 <= t < 259:
            pc = bytes([t - 3])
        if len(pc) == 1 and pc[0] < 0x80 and not (0x20 <= pc[0] < 0x7F or pc in b" \t\n\v\f\r"):
            continue
        b += pc
    return bytes(b) + b"\n"


tx, p = sample("a1.txt", "--n", 5, "--length", 96, "--seed", 3, "--format", "text")
check(p.returncode == 0, "text output exits 0", 0, p.stderr.strip())
want = b"\n".join(decode(s) for s in la1)
check(raw(tx) == want, "text output = llama2.c decoding of the token output, sequences separated by "
      "a blank line", want[:80], raw(tx)[:80])
first_text = decode(la1[0]).decode("utf-8", "replace").strip().split("\n")[0]
re_ids = encode(first_text, pieces, scores)
back = b"".join(pieces[t] for t in re_ids[1:]).decode("utf-8", "replace").lstrip(" ")
check(back == first_text and len(re_ids) <= 1.25 * len(la1[0]),
      f"text re-tokenizes to itself in {len(re_ids)} tokens ({first_text[:40]!r}...)", first_text[:40], back[:40])

# ---- --help, --force, errors --------------------------------------------------------------------
p = run(["sample", "--help"])
flags = ["--model", "--out", "--force", "--format", "--tokenizer", "--n", "--length", "--temperature",
         "--top-p", "--seed", "--dump-logits"]
check(p.returncode == 0 and all(f in p.stdout for f in flags) and p.stdout.count("default") >= 7,
      "--help lists every flag with its default", flags, p.stdout)
p = run(["--help"])
check("sample" in p.stdout, "top-level help lists sample", "sample", p.stdout)
before = raw(a1)
_, p = sample("a1.tok", "--n", 1, "--length", 16)
check(one_error_line(p) and "exists" in p.stderr and raw(a1) == before,
      "existing --out refused (one line, exit 1, file untouched)", "exists", p.stderr.strip())
_, p = sample("a1.tok", "--n", 1, "--length", 16, "--force")
check(p.returncode == 0 and len(read_tok(a1)) == 1 and not os.path.exists(a1 + ".tmp"),
      "--force replaces it (no .tmp left)", "1 line", p.stderr.strip())
bad_cases = [
    (["--n", 0], "--n"), (["--n", "x"], "--n"), (["--length", 1], "--length"),
    (["--length", 513], "--length"), (["--temperature", -0.5], "--temperature"),
    (["--temperature", "nan"], "--temperature"), (["--temperature", "inf"], "--temperature"),
    (["--top-p", 0], "--top-p"), (["--top-p", 1.5], "--top-p"), (["--top-p", "nan"], "--top-p"),
    (["--format", "xml"], "--format"), (["--bogus", 1], "--bogus"), (["--seed", -1], "--seed"),
    (["--n"], "--n"), (["stray"], "stray"),
]
for k, (extra, word) in enumerate(bad_cases):
    out = os.path.join(d, f"bad{k}.tok")
    p = run(["sample", "--model", MODEL, "--out", out] + extra)
    check(one_error_line(p) and word in p.stderr and not os.path.exists(out)
          and not os.path.exists(out + ".tmp"), f"error {extra}: one line naming {word}, nothing written",
          word, f"rc {p.returncode}: {p.stderr.strip()}")
for extra, word in [(["--model", os.path.join(d, "nomodel"), "--out", os.path.join(d, "x.tok")], "nomodel"),
                    (["--out", os.path.join(d, "x.tok")], "--model"),
                    (["--model", MODEL], "--out"),
                    (["--model", MODEL, "--out", d], "folder"),
                    (["--model", MODEL, "--out", os.path.join(d, "x.txt"), "--format", "text",
                      "--tokenizer", os.path.join(d, "none.bin")], "none.bin")]:
    p = run(["sample"] + extra)
    check(one_error_line(p) and word in p.stderr and not os.path.exists(os.path.join(d, "x.tok"))
          and not os.path.exists(os.path.join(d, "x.txt")), f"error: {word}: one line, nothing written",
          word, f"rc {p.returncode}: {p.stderr.strip()}")
done()
