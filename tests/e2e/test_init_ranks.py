"""cloq init gives identical stores at 1 (plain process), 2, 3 and 6 ranks (6 > 5 blocks: idle
ranks), for every init; the stores are complete, describe themselves, and leave no .partial."""
import os

import h5py
import numpy as np

from cloqtest import MODEL, WIKI_VALID, WIKI_TEST, check, done, ppl_of, run, tmpdir

MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
DATASETS = ["codes", "scales", "zeros", "lora_A", "lora_B"]
COMMON = ["--calib", WIKI_VALID, "--bits", "3", "--group-size", "32", "--rank", "8",
          "--nsamples", "8", "--seqlen", "128", "--seed", "7"]


def layers(path):
    with h5py.File(path, "r") as f:
        out = {}
        for b in f["layers"]:
            for m in MODULES:
                for d in DATASETS:
                    out[(b, m, d)] = f[f"layers/{b}/{m}/{d}"][()]
        attrs = {k: f.attrs[k] for k in f.attrs}
        complete = [int(f[f"layers/{b}"].attrs["complete"]) for b in f["layers"]]
    return out, attrs, complete


d = tmpdir()
for init in ("cloq", "svd", "zero"):
    ref = None
    for np_ in (0, 2, 3, 6):
        out = os.path.join(d, f"{init}-{np_}.h5")
        p = run(["init", "--model", MODEL, "--out", out, "--init", init] + COMMON, np_)
        check(p.returncode == 0, f"{init} np={np_}: init exits 0", 0, f"{p.returncode}: {p.stderr.strip()}")
        if p.returncode != 0:
            continue
        check(not os.path.exists(out + ".partial"), f"{init} np={np_}: no .partial left", "absent", "present")
        data, attrs, complete = layers(out)
        check(complete == [1] * 5, f"{init} np={np_}: every block complete", [1] * 5, complete)
        check(attrs["format"] == b"cloq-store" and attrs["init"] == init.encode() and attrs["bits"] == 3
              and attrs["group_size"] == 32 and attrs["rank"] == 8 and attrs["nranks"] == max(np_, 1)
              and attrs["calib_tokens"] == 8 * 128,
              f"{init} np={np_}: root attributes record the settings", "bits 3 ...", attrs)
        blocks = [l for l in p.stdout.splitlines() if l.startswith("block ")]
        check(len(blocks) == 5, f"{init} np={np_}: one progress line per block", 5, len(blocks))
        if ref is None:
            ref = data
            continue
        diff = [k for k in ref if not np.array_equal(ref[k], data[k])]
        check(not diff, f"{init} np={np_}: store bitwise equal to the 1-rank store", "no differences", diff[:3])

# The stores evaluate to the same perplexity at any rank count; CLoQ beats the bare quantizer.
ppl = {}
for init in ("cloq", "zero"):
    for np_ in (0, 3):
        p = run(["eval", "--model", MODEL, "--store", os.path.join(d, f"{init}-0.h5"),
                 "--data", WIKI_TEST, "--seqlen", "256", "--limit", "40"], np_)
        ppl[(init, np_)] = ppl_of(p)
    check(ppl[(init, 0)] == ppl[(init, 3)], f"{init}: eval ppl identical at 1 and 3 ranks", ppl[(init, 0)], ppl[(init, 3)])
check(ppl[("cloq", 0)] < ppl[("zero", 0)], "3-bit: ppl with CLoQ below the bare RTN model",
      f"< {ppl[('zero', 0)]}", ppl[("cloq", 0)])
done()
