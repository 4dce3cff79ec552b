"""Model input forms: a sharded checkpoint (index.json) gives bitwise the same perplexity and store
as the single file; F16 and BF16 checkpoints give bitwise the same perplexity as an F32 checkpoint
holding the same rounded values (so the conversion is exact); an untied lm_head equal to the
embedding gives the same perplexity as the tied model, and a different one changes it; rope_theta
is honoured; an untied config without lm_head.weight is an error."""
import json
import os
import shutil
import struct

import h5py
import numpy as np

from cloqtest import MODEL, check, done, ppl_of, read_safetensors, reference, run, tmpdir, write_tokens

ref = reference()
d = tmpdir()
story = os.path.join(d, "story.tokens")
write_tokens(story, [ref["story_ids"], ref["greedy_from_bos_ids"]])
tensors = {k: np.array(v) for k, v in read_safetensors(os.path.join(MODEL, "model.safetensors")).items()}
config = json.load(open(os.path.join(MODEL, "config.json")))


def bf16_bits(a):
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_st(path, ts, dtype="F32"):
    hdr, blobs, off = {}, [], 0
    for name, a in ts.items():
        if dtype == "F32":
            b = a.astype("<f4").tobytes()
        elif dtype == "F16":
            b = a.astype("<f2").tobytes()
        else:
            b = bf16_bits(a).astype("<u2").tobytes()
        hdr[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def model(name, ts, cfg=None, dtype="F32", shards=1):
    m = os.path.join(d, name)
    os.makedirs(m)
    json.dump(cfg or config, open(os.path.join(m, "config.json"), "w"))
    shutil.copy(os.path.join(MODEL, "tok512.bin"), m)
    if shards == 1:
        write_st(os.path.join(m, "model.safetensors"), ts, dtype)
    else:
        names = sorted(ts)
        wm = {}
        for k in range(shards):
            fn = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: ts[n] for n in names[k::shards]}
            write_st(os.path.join(m, fn), part, dtype)
            wm.update({n: fn for n in part})
        json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(m, "model.safetensors.index.json"), "w"))
    return m


def ppl(m, np_=0):
    return ppl_of(run(["eval", "--model", m, "--data", story, "--data-format", "tokens"], np_))


base = ppl(MODEL)
sh = model("sharded", tensors, shards=3)
check(ppl(sh) == base and ppl(sh, 2) == base, "sharded checkpoint: same perplexity", base, ppl(sh))
calib = os.path.join(d, "calib.tokens")
write_tokens(calib, [ref["story_ids"], ref["greedy_from_bos_ids"]])
stores = []
for m in (MODEL, sh):
    out = os.path.join(d, f"store{len(stores)}.h5")
    p = run(["init", "--model", m, "--calib", calib, "--calib-format", "tokens", "--out", out, "--bits", "3",
             "--group-size", "32", "--rank", "4"])
    check(p.returncode == 0, f"init from {os.path.basename(m)}", 0, p.stderr.strip())
    stores.append(h5py.File(out, "r"))
same = all(np.array_equal(stores[0][f"layers/{b}/{mm}/{ds}"][()], stores[1][f"layers/{b}/{mm}/{ds}"][()])
           for b in range(5) for mm in ("self_attn.q_proj", "mlp.down_proj") for ds in ("codes", "lora_A", "lora_B"))
check(same, "sharded checkpoint: store equal to the single file's", "equal", "different")

for dt, rounded in (("F16", {k: v.astype(np.float16).astype(np.float32) for k, v in tensors.items()}),
                    ("BF16", {k: (bf16_bits(v).astype(np.uint32) << 16).view(np.float32) for k, v in tensors.items()})):
    a = ppl(model(dt.lower(), tensors, dtype=dt, shards=2))
    b = ppl(model(dt.lower() + "-as-f32", rounded))
    check(a == b, f"{dt} checkpoint equals F32 of the same rounded values ({a})", b, a)
    check(abs(a - base) / base < 0.05, f"{dt} checkpoint close to full precision", base, a)

untied_cfg = dict(config, tie_word_embeddings=False)
t2 = dict(tensors)
t2["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
check(ppl(model("untied", t2, untied_cfg)) == base, "untied lm_head equal to the embedding: same ppl", base, "different")
t3 = dict(tensors)
t3["lm_head.weight"] = tensors["model.embed_tokens.weight"] * 0.5
p_half = ppl(model("untied-half", t3, untied_cfg))
check(p_half != base, "untied lm_head is used", f"!= {base}", p_half)
m = model("untied-missing", tensors, untied_cfg)
p = run(["eval", "--model", m, "--data", story, "--data-format", "tokens"])
check(p.returncode != 0 and "lm_head" in p.stderr, "untied config without lm_head.weight is an error", "error", p.stderr.strip())
p_theta = ppl(model("theta", tensors, dict(config, rope_theta=500000.0)))
check(p_theta != base, "rope_theta is honoured", f"!= {base}", p_theta)
done()
