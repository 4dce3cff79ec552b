"""Bad input gets one error line naming the problem, a non-zero exit, and leaves nothing that looks
complete: missing/truncated/corrupt safetensors, shapes that disagree with the config, an
unsupported dtype, NaN weights, activations that overflow (mid-stream, on a downstream rank),
impossible settings, empty or too-short calibration, an existing --out."""
import hashlib
import json
import os
import shutil
import struct

import numpy as np

import cloqtest
from cloqtest import MODEL, WIKI_VALID, check, done, override, poke_float, run, tmpdir, write_tokens

d = tmpdir()
calib = os.path.join(d, "calib.tokens")
write_tokens(calib, [list(range(3, 67)), list(range(100, 164))])
BASE = ["--calib", calib, "--calib-format", "tokens", "--bits", "4", "--group-size", "32", "--rank", "4"]


def edit_header(m, fn):
    p = os.path.join(m, "model.safetensors")
    data = open(p, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    fn(hdr, data, 8 + n)
    return hdr, data, n


def model_copy(name):
    return cloqtest.model_copy(d, name)


def expect_error(name, args, words, np_=0, out=None):
    p = run(args, np_, timeout=120, allow_dup=True)
    errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
    text = errs[0] if errs else p.stderr.strip()[:300]
    ok = p.returncode != 0 and len(errs) == 1 and all(w.lower() in text.lower() for w in words)
    if np_ == 0:
        ok = ok and len(p.stderr.strip().splitlines()) == 1
    check(ok, f"{name} (np={np_}): rc {p.returncode}: {text}", f"one line with {words}", p.stderr.strip()[:400])
    if out:
        check(not os.path.exists(out), f"{name}: no complete-looking {os.path.basename(out)}", "absent", "present")
        # a failed run leaves its work folder for a resume; the next case uses other inputs
        shutil.rmtree(out + ".partial.d", ignore_errors=True)


out = os.path.join(d, "out.h5")
init = ["init", "--out", out] + BASE

expect_error("missing model folder", ["init", "--model", os.path.join(d, "nope")] + init[1:], ["config.json"], out=out)

m = model_copy("nost")
os.remove(os.path.join(m, "model.safetensors"))
expect_error("missing safetensors", init + ["--model", m], ["model.safetensors"], out=out)

m = model_copy("trunc")
p = os.path.join(m, "model.safetensors")
open(p, "r+b").truncate(os.path.getsize(p) - 1000)
expect_error("truncated safetensors", init + ["--model", m], ["model.safetensors"], out=out)
expect_error("truncated safetensors", init + ["--model", m], ["model.safetensors"], np_=2, out=out)

m = model_copy("garbage")
p = os.path.join(m, "model.safetensors")
data = bytearray(open(p, "rb").read())
data[8:20] = b"not json!!!!"
open(p, "wb").write(bytes(data))
expect_error("corrupt header", init + ["--model", m], ["model.safetensors"], out=out)

m = model_copy("shape")
cfg = json.load(open(os.path.join(m, "config.json")))
cfg["intermediate_size"] = 200
json.dump(cfg, open(os.path.join(m, "config.json"), "w"))
expect_error("config/tensor shape mismatch", init + ["--model", m], ["shape"], out=out)

m = model_copy("dtype")
def to_f64(hdr, data, base):
    t = hdr["model.layers.0.self_attn.q_proj.weight"]
    t["dtype"], t["shape"] = "F64", [32, 64]
    body = json.dumps(hdr).encode()
    body += b" " * (-len(body) % 8)
    open(os.path.join(m, "model.safetensors"), "wb").write(struct.pack("<Q", len(body)) + body + data[base:])
edit_header(m, to_f64)
expect_error("unsupported dtype", init + ["--model", m], ["dtype", "F64"], out=out)

m = model_copy("nan")
poke_float(m, "model.layers.3.mlp.down_proj.weight", 17, float("nan"))
expect_error("NaN weight", init + ["--model", m], ["model.layers.3.mlp.down_proj.weight"], out=out)
expect_error("NaN weight (owned by rank 1)", init + ["--model", m], ["rank 1", "down_proj"], np_=2, out=out)

m = model_copy("inf")
wn = np.full(64, 3e38, np.float32)
for i in range(64):
    poke_float(m, "model.layers.2.post_attention_layernorm.weight", i, 3e38)
    poke_float(m, "model.layers.2.mlp.down_proj.weight", i, 3e38)
expect_error("activations overflow mid-stream", init + ["--model", m], ["non-finite activation", "block 2"], out=out)
expect_error("activations overflow mid-stream on rank 1 of 3", init + ["--model", m],
             ["rank 1", "non-finite activation", "block 2"], np_=3, out=out)

expect_error("rank too large", ["init", "--model", MODEL, "--out", out] + override(BASE, ["--rank", "40"]),
             ["--rank 40", "k_proj"], out=out)
expect_error("bits outside {2,3,4,8}", init + ["--model", MODEL, "--bits", "5"], ["--bits"], out=out)
expect_error("group size 0", init + ["--model", MODEL, "--group-size", "0"], ["--group-size"], out=out)
expect_error("unknown init", init + ["--model", MODEL, "--init", "magic"], ["--init"], out=out)

empty = os.path.join(d, "empty.txt")
open(empty, "w").close()
expect_error("empty calibration text", ["init", "--model", MODEL, "--out", out, "--calib", empty], ["empty"], out=out)
expect_error("empty calibration tokens", ["init", "--model", MODEL, "--out", out, "--calib", empty,
                                          "--calib-format", "tokens"], ["no sequences"], out=out)
short = os.path.join(d, "short.txt")
open(short, "w").write("Once upon a time.")
expect_error("too-short calibration", ["init", "--model", MODEL, "--out", out, "--calib", short, "--seqlen", "128"],
             ["too short"], out=out)
expect_error("too-short calibration", ["init", "--model", MODEL, "--out", out, "--calib", short, "--seqlen", "128"],
             ["too short"], np_=2, out=out)
badtok = os.path.join(d, "bad.tokens")
open(badtok, "w").write("1 2 3 600 4\n")
expect_error("token id outside the vocabulary", ["init", "--model", MODEL, "--out", out, "--calib", badtok,
                                                 "--calib-format", "tokens"], ["600"], out=out)

# an existing --out is refused and left untouched; --force replaces it
open(out, "w").write("precious")
h = hashlib.md5(open(out, "rb").read()).hexdigest()
expect_error("existing --out", init + ["--model", MODEL], ["exists", "--force"])
expect_error("existing --out", init + ["--model", MODEL], ["exists", "--force"], np_=2)
check(hashlib.md5(open(out, "rb").read()).hexdigest() == h, "existing --out unchanged", h, "modified")
p = run(init + ["--model", MODEL, "--force"])
check(p.returncode == 0 and open(out, "rb").read(8) == b"\x89HDF\r\n\x1a\n", "--force overwrites", 0, p.stderr.strip())

# a forced run that fails keeps the old output
good = open(out, "rb").read()
m = model_copy("nan-force")
poke_float(m, "model.layers.1.self_attn.o_proj.weight", 3, float("inf"))
expect_error("failed --force run", init + ["--model", m, "--force"], ["o_proj"])
check(open(out, "rb").read() == good, "failed --force run leaves the old --out intact", "unchanged", "modified")
expect_error("--out in a folder that does not exist", ["init", "--model", MODEL, "--out",
                                                        os.path.join(d, "no", "such", "x.h5")] + BASE,
             ["folder", "does not exist"])

# too few tokens for the Gram matrices to be positive definite: a warning names the layer, the run goes on
few = os.path.join(d, "few.tokens")
write_tokens(few, [list(range(3, 19))])
p = run(["init", "--model", MODEL, "--out", os.path.join(d, "few.h5"), "--calib", few, "--calib-format", "tokens",
         "--damp", "0", "--rank", "4"])
check(p.returncode == 0 and "warning: block 0 input attn_in" in p.stderr and "singular (rank 16 of 64)" in p.stderr,
      "rank-deficient Gram matrix: warning naming the layer and the rank", "warning for block 0 attn_in",
      p.stderr.strip()[:300])

# a failure inside a unit whose solves run on ScaLAPACK (the owner quantizes, the other ranks wait
# for its solves): GPTQ cannot factor the singular H; every rank stops, one error line, no hang
expect_error("GPTQ on a singular Gram matrix, the unit on ScaLAPACK",
             ["init", "--model", MODEL, "--out", os.path.join(d, "fewg.h5"), "--calib", few, "--calib-format",
              "tokens", "--damp", "0", "--rank", "4", "--quantizer", "gptq", "--dist-threshold", "1"],
             ["positive definite"], np_=3, out=os.path.join(d, "fewg.h5"))

# output paths are checked before any work: not empty, not a folder or a device, not an input
# (--force or not), in a writable folder that exists; eval --dump-logits alike, and it does not
# overwrite without --force
expect_error("--out empty", ["init", "--model", MODEL, "--out", ""] + BASE, ["--out is empty"])
expect_error("--model empty", ["init", "--model", "", "--out", os.path.join(d, "e.h5")] + BASE, ["--model is empty"])
mi = model_copy("out-is-input")
st_before = open(os.path.join(mi, "model.safetensors"), "rb").read()
expect_error("--out is the model's safetensors, with --force",
             ["init", "--model", mi, "--out", os.path.join(mi, "model.safetensors"), "--force"] + BASE,
             ["is inside", "an input"])
check(open(os.path.join(mi, "model.safetensors"), "rb").read() == st_before, "the model file is left intact",
      "unchanged", "modified")
expect_error("--out is the calibration file, with --force", ["init", "--model", MODEL, "--out", calib, "--force"] + BASE,
             ["is an input", calib])
expect_error("--out is a device, with --force", ["init", "--model", MODEL, "--out", "/dev/null", "--force"] + BASE,
             ["not a regular file"])
expect_error("--out is a folder", ["init", "--model", MODEL, "--out", d, "--force"] + BASE, ["is a folder"])
logits = os.path.join(d, "logits.txt")
open(logits, "w").write("keep me\n")
EV = ["eval", "--model", MODEL, "--data", calib, "--data-format", "tokens"]
expect_error("eval --dump-logits over an existing file", EV + ["--dump-logits", logits], ["exists", "--force"])
check(open(logits).read() == "keep me\n", "the existing logits file is left intact", "unchanged", "modified")
expect_error("eval --dump-logits in a missing folder", EV + ["--dump-logits", os.path.join(d, "nope", "l.txt")],
             ["does not exist"])
p = run(EV + ["--dump-logits", logits, "--force"])
check(p.returncode == 0 and open(logits).read() != "keep me\n", "eval --dump-logits --force overwrites", "rewritten",
      p.stderr.strip()[:200])

# positions beyond max_position_embeddings (512 for stories260K) are refused, as sample does
expect_error("--seqlen beyond max_position_embeddings", ["init", "--model", MODEL, "--out", os.path.join(d, "long.h5"),
             "--calib", WIKI_VALID, "--seqlen", "600", "--nsamples", "2"], ["--seqlen 600", "max_position_embeddings 512"])
longt = os.path.join(d, "long.tokens")
write_tokens(longt, [list(range(3, 40)), [5] * 600])
expect_error("eval of a token line beyond max_position_embeddings",
             ["eval", "--model", MODEL, "--data", longt, "--data-format", "tokens"], ["line 2", "600 tokens", "512"])
expect_error("calibration line beyond max_position_embeddings",
             ["init", "--model", MODEL, "--out", os.path.join(d, "long2.h5"), "--calib", longt, "--calib-format", "tokens",
              "--nsamples", "2"], ["line 2", "600 tokens"])

# the argument scanner, the same for every command: --flag=value is --flag value; an unknown flag
# is named as unknown wherever it stands; a flag given twice is refused (which one was meant?);
# cloq with no command is an error
eq = os.path.join(d, "eq.h5")
p = run(["init", f"--model={MODEL}", f"--out={eq}"] + [a for f, v in zip(BASE[::2], BASE[1::2]) for a in [f"{f}={v}"]])
check(p.returncode == 0 and os.path.exists(eq), "--flag=value works like --flag value", 0, p.stderr.strip()[:200])
for cmd in (init, ["eval", "--model", MODEL, "--data", calib], ["export", "--store", eq, "--out", os.path.join(d, "ex")],
            ["synth", "--out", os.path.join(d, "sy")], ["sample", "--model", MODEL, "--out", os.path.join(d, "sa")]):
    expect_error(f"cloq {cmd[0]}: an unknown option in last position", cmd + ["--bogus"], ["unknown option --bogus"])
    expect_error(f"cloq {cmd[0]}: an unknown --opt=value", cmd + ["--bogus=1"], ["unknown option --bogus"])
    expect_error(f"cloq {cmd[0]}: a switch given a value", cmd + ["--force=yes"], ["--force takes no value"])
    expect_error(f"cloq {cmd[0]}: a flag given twice", cmd + [cmd[1], cmd[2]], [f"{cmd[1]} is given twice"])
expect_error("sweep: a rank too large is named by --ranks", ["sweep", "--model", MODEL, "--out", os.path.join(d, "swr"),
             "--calib", calib, "--calib-format", "tokens", "--bits", "2", "--ranks", "8,100"], ["--ranks: rank 100", "exceeds"])
expect_error("a known option without its value", init + ["--seed"], ["--seed needs a value"])
expect_error("the same flag as --flag=value and --flag value", init + ["--rank=4"], ["--rank is given twice"])
p = run([])
check(p.returncode != 0 and p.stderr.count("cloq: error:") == 1 and "no command" in p.stderr,
      "cloq with no command: one error line, non-zero exit", "no command", (p.returncode, p.stderr.strip()[:200]))
# a NUL byte is named as such, in token files and in text
nul = os.path.join(d, "nul.tokens")
open(nul, "wb").write(b"3 4 5\n6 7\x008 9\n")
expect_error("a NUL in a token file", ["eval", "--model", MODEL, "--data", nul, "--data-format", "tokens"],
             ["nul.tokens:2", "byte 0x00", "column 4"])
nult = os.path.join(d, "nul.txt")
open(nult, "wb").write(b"Once upon a time\x00 there was")
expect_error("a NUL in a text file", ["eval", "--model", MODEL, "--data", nult], ["nul.txt", "NUL byte at offset 16"])

# a config with fewer layers than the checkpoint is not a 3-block model of it
out = os.path.join(d, "probe.h5")
init = ["init", "--out", out] + BASE
m = model_copy("fewer-layers")
cfg = json.load(open(os.path.join(m, "config.json")))
cfg["num_hidden_layers"] = 3
json.dump(cfg, open(os.path.join(m, "config.json"), "w"))
expect_error("config with fewer layers than the checkpoint", init + ["--model", m],
             ["model.layers.4", "num_hidden_layers 3"], out=out)
expect_error("config with fewer layers than the checkpoint (sample)",
             ["sample", "--model", m, "--out", os.path.join(d, "fewer.tokens")], ["num_hidden_layers 3"])

# a llama2.c tokenizer with a NaN score (it would tokenize differently) is corrupt
m = model_copy("nan-score")
tp = os.path.join(m, "tok512.bin")
tb = bytearray(open(tp, "rb").read())
pos = 4
for i in range(300):
    pos += 8 + struct.unpack_from("<i", tb, pos + 4)[0]
struct.pack_into("<f", tb, pos, float("nan"))
open(tp, "wb").write(bytes(tb))
expect_error("tokenizer with a NaN score", override(init, ["--model", m, "--calib", WIKI_VALID, "--calib-format", "text",
             "--nsamples", "2", "--seqlen", "64"]), ["tok512.bin", "token 300", "NaN"], out=out)

# other families' refusals: a MoE and a RoPE type cloq does not implement, each named in one line
# (tests/e2e/test_families.py checks the families cloq does implement against transformers)
for name, patch, words in (("mixtral", {"model_type": "mixtral"}, ["mixtral", "mixture-of-experts"]),
                           ("yarn", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, ["yarn"])):
    m = model_copy(name)
    cfg = json.load(open(os.path.join(m, "config.json")))
    cfg.update(patch)
    json.dump(cfg, open(os.path.join(m, "config.json"), "w"))
    expect_error(f"config with {name}", init + ["--model", m], words, out=out)

# eval refuses a store left incomplete by a failed run, and a store of another model shape
m = model_copy("inf2")
for i in range(64):
    poke_float(m, "model.layers.2.post_attention_layernorm.weight", i, 3e38)
    poke_float(m, "model.layers.2.mlp.down_proj.weight", i, 3e38)
out2 = os.path.join(d, "failed.h5")
run(["init", "--model", m, "--out", out2] + BASE)
check(os.path.isdir(out2 + ".partial.d") and not os.path.exists(out2), "failed run leaves only its work folder",
      ".partial.d only", os.listdir(d))
# a resume with other settings is refused, naming the setting
expect_error("resume with other settings", ["init", "--model", m, "--out", out2] + override(BASE, ["--rank", "8"]),
             ["cannot resume", "--rank 4", "this run 8"])
story = os.path.join(d, "story.tokens")
write_tokens(story, [list(range(1, 60))])
# a store whose block file went missing is refused, naming the block
broken = os.path.join(d, "broken.h5")
p = run(["init", "--model", MODEL, "--out", broken] + BASE)
check(p.returncode == 0, "store for the missing-block case", 0, p.stderr.strip()[:300])
os.remove(os.path.join(broken + ".d", "block_00003.h5"))
expect_error("eval of a store missing a block file", ["eval", "--model", MODEL, "--store", broken, "--data",
                                                      story, "--data-format", "tokens"], ["block 3", "missing"])
expect_error("eval of a missing store", ["eval", "--model", MODEL, "--store", os.path.join(d, "none.h5"), "--data",
                                         story, "--data-format", "tokens"], ["none.h5"])
expect_error("eval of a non-store", ["eval", "--model", MODEL, "--store", calib, "--data", story,
                                     "--data-format", "tokens"], ["HDF5"])
done()
