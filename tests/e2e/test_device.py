"""--device cpu|cuda|auto. Everywhere: cpu and auto give bitwise the same results; auto without a
usable GPU prints exactly one notice line (once, also at 2 ranks); cuda without one fails with one
error line, a non-zero exit and no output left behind; CLOQ_DEVICE sets the default; a bad value
is refused.

Where a GPU is usable (`cloq --device cuda` opens it), the same script compares the CUDA path with
the CPU path on stories260K and on a synthetic model, with these tolerances (docs/cuda.md):
  - eval perplexity: relative 1e-5 (float32 forward, different summation order, expf);
  - RTN codes, scales, zeros: identical at full propagation (they depend on W only) ;
  - GPTQ codes: at least 99.9% identical (float64 updates; dgemm order differs); COMQ's too (it runs
    on the CPU, from the GPU's Gram matrices), with a one-line notice that it does;
  - stored objectives and LoRA products B A: relative 1e-3 (they go through the Gram matrices of
    the float32 forward pass, whose rounding differs);
  - CLoQ's objective stays <= the zero init's on every layer, on the GPU too.
The families' variations (biases, q/k norms, a sliding window shorter than the sequences, llama3
RoPE scaling) run on models derived from the synthetic one here (written with NumPy, checked to
run on the CPU everywhere) and are compared the same way on a GPU; tests/e2e/test_families.py
checks them against transformers on the CPU."""
import os

import h5py
import numpy as np

import json

from cloqtest import (MODEL, WIKI_TEST, check, done, read_safetensors_typed, run, tmpdir, write_safetensors_f32,
                      write_tokens)
from storecmp import load_layers, products

d = tmpdir()
calib = os.path.join(d, "calib.tokens")
rng = np.random.default_rng(7)
write_tokens(calib, [[1] + list(rng.integers(3, 500, 127)) for _ in range(8)])
INIT = ["--calib", calib, "--calib-format", "tokens", "--bits", "3", "--group-size", "32",
        "--rank", "8"]
EVAL = ["eval", "--model", MODEL, "--data", WIKI_TEST, "--seqlen", "256", "--limit", "8"]


def err_lines(p):
    return [l for l in p.stderr.strip().splitlines() if l.strip()]


def ppl(p):
    lines = [l for l in p.stdout.strip().splitlines() if l.startswith("ppl ")]
    return float(lines[-1].split()[1]) if p.returncode == 0 and lines else None


def objectives(path, name="objective"):
    """(block, module) -> the module group's float64 attribute `name` (docs/store.md)."""
    with h5py.File(path, "r") as f:
        return {(b, m): float(f["layers"][b][m].attrs[name]) for b in f["layers"] for m in f["layers"][b]}


probe = run(EVAL + ["--device", "cuda"])
gpu = probe.returncode == 0
print(f"GPU usable: {gpu} ({err_lines(probe)[:1] or 'cuda opened'})")

# ---- everywhere: selection, notices, failures ----------------------------------------------------
p_cpu = run(EVAL + ["--device", "cpu"])
check(p_cpu.returncode == 0 and not err_lines(p_cpu), "--device cpu: runs, stderr empty", "", p_cpu.stderr.strip())
p_auto = run(EVAL + ["--device", "auto"])
check(ppl(p_auto) is not None, "--device auto runs", 0, p_auto.stderr.strip()[:300])
if not gpu:
    check(ppl(p_auto) == ppl(p_cpu), "auto without a GPU: bitwise the CPU perplexity", ppl(p_cpu), ppl(p_auto))
    notes = err_lines(p_auto)
    check(len(notes) == 1 and notes[0].startswith("cloq: notice: no usable GPU (") and "running on the CPU" in notes[0],
          "auto without a GPU: exactly one notice line", "cloq: notice: no usable GPU (...): running on the CPU", notes)
    p2 = run(EVAL + ["--device", "auto"], np_=2)
    notes2 = [l for l in err_lines(p2) if "notice" in l]
    check(ppl(p2) == ppl(p_cpu) and len(notes2) == 1 and "(2 of 2 ranks)" in notes2[0],
          "auto at 2 ranks: same perplexity, one notice naming the rank count", "1 notice", err_lines(p2))
    p_env = run(EVAL, env={"CLOQ_DEVICE": "auto"})
    check(len(err_lines(p_env)) == 1 and "notice" in p_env.stderr, "CLOQ_DEVICE=auto is the default device",
          "one notice", err_lines(p_env))
    out = os.path.join(d, "cuda-none.h5")
    for np_ in (0, 2):
        p = run(["init", "--model", MODEL, "--out", out, "--device", "cuda"] + INIT, np_=np_)
        e = err_lines(p)
        check(p.returncode != 0 and len(e) == 1 and e[0].startswith("cloq: error:") and "--device cuda:" in e[0],
              f"--device cuda without a GPU (np={np_}): one error line, non-zero exit", "cloq: error: ... --device cuda: ...", e)
        left = [f for f in os.listdir(d) if f.startswith("cuda-none")]
        check(not left, f"--device cuda without a GPU (np={np_}): nothing written", [], left)
p = run(EVAL + ["--device", "gpu"])
check(p.returncode != 0 and len(err_lines(p)) == 1 and "--device" in p.stderr and "cpu, cuda" in p.stderr.replace("cpu | cuda", "cpu, cuda"),
      "--device gpu: refused, one line naming the choices", "one error line", err_lines(p))
p = run(EVAL, env={"CLOQ_DEVICE": "tpu"})
check(p.returncode != 0 and len(err_lines(p)) == 1 and "CLOQ_DEVICE" in p.stderr, "CLOQ_DEVICE=tpu: refused naming the variable",
      "one error line", err_lines(p))

# cpu and auto give the same store without a GPU (auto is the default users get)
s_cpu = os.path.join(d, "cpu.h5")
p = run(["init", "--model", MODEL, "--out", s_cpu, "--device", "cpu"] + INIT)
check(p.returncode == 0, "init --device cpu", 0, p.stderr.strip()[:300])
if not gpu:
    s_auto = os.path.join(d, "auto.h5")
    p = run(["init", "--model", MODEL, "--out", s_auto, "--device", "auto"] + INIT)
    a, b = load_layers(s_cpu), load_layers(s_auto)
    same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    check(p.returncode == 0 and same, "init --device auto without a GPU: bitwise the CPU store", "equal", p.stderr.strip()[:300])

# ---- with a GPU: CUDA against the CPU ---------------------------------------------------------------
def compare(model, tag, extra, codes_exact):
    sc, sg = os.path.join(d, f"{tag}-cpu.h5"), os.path.join(d, f"{tag}-cuda.h5")
    pc = run(["init", "--model", model, "--out", sc, "--device", "cpu"] + extra)
    pg = run(["init", "--model", model, "--out", sg, "--device", "cuda"] + extra)
    check(pc.returncode == 0 and pg.returncode == 0, f"{tag}: init on cpu and cuda", 0,
          (pc.stderr.strip()[-300:], pg.stderr.strip()[-300:]))
    if pc.returncode or pg.returncode:
        return
    lc, lg = load_layers(sc), load_layers(sg)
    codes = [k for k in lc if k[2] == "codes"]
    same = sum(int(np.sum(lc[k] == lg[k])) for k in codes)
    total = sum(lc[k].size for k in codes)
    if codes_exact:
        check(same == total, f"{tag}: codes identical", total, same)
        for part in ("scales", "zeros"):
            ks = [k for k in lc if k[2] == part]
            check(all(np.array_equal(lc[k], lg[k]) for k in ks), f"{tag}: {part} identical", "equal", "differ")
    else:
        check(same >= 0.999 * total, f"{tag}: codes >= 99.9% identical", total, f"{same} ({same / total:.6f})")
    pcpu, pgpu = products(lc), products(lg)
    worst = max(np.linalg.norm(pcpu[k] - pgpu[k]) / max(np.linalg.norm(pcpu[k]), 1e-30) for k in pcpu)
    check(worst <= 1e-3, f"{tag}: LoRA products B A within 1e-3 (Frobenius, relative)", 1e-3, worst)
    oc, og = objectives(sc), objectives(sg)
    worst = max(abs(oc[k] - og[k]) / max(abs(oc[k]), 1e-30) for k in oc)
    check(worst <= 1e-3, f"{tag}: stored objectives within 1e-3", 1e-3, worst)
    oz = objectives(sg, "objective_zero")
    bad = [k for k in og if og[k] > oz[k] * (1 + 1e-9)]
    check(not bad, f"{tag}: CLoQ objective <= zero init on every layer (GPU)", [], bad[:3])
    if model == MODEL:  # EVAL's WikiText-2 text needs stories260K's tokenizer
        a, b = (ppl(run(EVAL + ["--store", s, "--device", dev])) for s, dev in ((sc, "cpu"), (sg, "cuda")))
        check(a is not None and b is not None and abs(a - b) <= 1e-3 * a,
              f"{tag}: store perplexity cpu vs cuda within 1e-3", a, b)
    return pg

if gpu:
    a, b = ppl(p_cpu), ppl(probe)
    check(abs(a - b) <= 1e-5 * a, "eval: cuda perplexity within 1e-5 of the CPU's", a, b)
    compare(MODEL, "stories-rtn", INIT, True)
    compare(MODEL, "stories-gptq", INIT + ["--quantizer", "gptq"], False)
    compare(MODEL, "stories-seq", INIT + ["--propagate", "sequential"], False)
    # COMQ runs on the CPU (from the GPU's Gram matrices) and says so once; the joint alternation's
    # CLoQ solves run on the GPU
    pg = compare(MODEL, "stories-comq-joint", INIT + ["--quantizer", "comq", "--cloq-iters", "3"], False)
    notes = [l for l in err_lines(pg) if "comq" in l] if pg else []
    check(len(notes) == 1 and "runs on the CPU" in notes[0], "cuda + comq: one notice that comq runs on the CPU",
          1, err_lines(pg) if pg else None)
    synth = os.path.join(d, "synth")
    p = run(["synth", "--out", synth, "--dim", "512", "--layers", "2", "--heads", "8", "--kv-heads", "4",
             "--mlp", "1408", "--vocab", "1000", "--calib-samples", "8", "--calib-seqlen", "256"])
    check(p.returncode == 0, "synthetic GQA model written", 0, p.stderr.strip()[:300])
    sc = ["--calib", os.path.join(synth, "calib.tok"), "--calib-format", "tokens", "--bits", "4",
          "--group-size", "128", "--rank", "16"]
    compare(synth, "synth-rtn", sc, True)
    compare(synth, "synth-gptq", sc + ["--quantizer", "gptq", "--act-order"], False)


# ---- the families' variations, derived from a small synthetic model ------------------------------
fam_base = os.path.join(d, "fam-synth")
p = run(["synth", "--out", fam_base, "--dim", "256", "--layers", "2", "--heads", "4", "--kv-heads", "2",
         "--mlp", "512", "--vocab", "600", "--calib-samples", "8", "--calib-seqlen", "192", "--dtype", "f32"])
check(p.returncode == 0, "synthetic model for the families written", 0, p.stderr.strip()[:300])
W0 = {k: a for k, (_, a) in read_safetensors_typed(os.path.join(fam_base, "model.safetensors"))[0].items()}
cfg0 = json.load(open(os.path.join(fam_base, "config.json")))
frng = np.random.default_rng(11)
HD = cfg0["head_dim"]
FAM = {
    "qwen3-bias": ({"model_type": "qwen3", "attention_bias": True}, ["q_norm", "k_norm"],
                   ["q_proj", "k_proj", "v_proj", "o_proj"]),
    "qwen2": ({"model_type": "qwen2"}, [], ["q_proj", "k_proj", "v_proj"]),
    "mistral-window": ({"model_type": "mistral", "sliding_window": 48}, [], []),
    "llama3-rope": ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                     "mlp_bias": True}, [], ["gate_proj", "up_proj", "down_proj"]),
}
fam_models = {}
for tag, (patch, norms, biases) in FAM.items():
    m = os.path.join(d, "fam-" + tag)
    os.makedirs(m, exist_ok=True)
    cfg = dict(cfg0, **patch)
    json.dump(cfg, open(os.path.join(m, "config.json"), "w"))
    W = dict(W0)
    for b in range(cfg["num_hidden_layers"]):
        for n in norms:
            W[f"model.layers.{b}.self_attn.{n}.weight"] = 1 + 0.2 * frng.standard_normal(HD).astype(np.float32)
        for n in biases:
            part = "self_attn" if n in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            rows = W[f"model.layers.{b}.{part}.{n}.weight"].shape[0]
            W[f"model.layers.{b}.{part}.{n}.bias"] = 0.3 * frng.standard_normal(rows).astype(np.float32)
    write_safetensors_f32(os.path.join(m, "model.safetensors"), W)
    fam_models[tag] = m
    fe = ["eval", "--model", m, "--data", os.path.join(fam_base, "calib.tok"), "--data-format", "tokens"]
    pc = run(fe + ["--device", "cpu"])
    check(ppl(pc) is not None, f"{tag}: runs on the CPU", 0, pc.stderr.strip()[-300:])
    if gpu:
        pg = run(fe + ["--device", "cuda"])
        a, b = ppl(pc), ppl(pg)
        check(a is not None and b is not None and abs(a - b) <= 1e-5 * a,
              f"{tag}: eval cuda perplexity within 1e-5 of the CPU's", a, b)
        fc = ["--calib", os.path.join(fam_base, "calib.tok"), "--calib-format", "tokens", "--bits", "4",
              "--group-size", "64", "--rank", "8"]
        compare(m, f"{tag}-rtn", fc, True)
done()
