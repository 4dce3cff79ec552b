"""Seed inputs for the libFuzzer targets of tests/fuzz/, small valid files (a few KB to a few tens
of KB) made from the real assets where there are some ($CLOQ_ASSETS, else ../shared/assets beside
the source tree), so that each fuzzer starts from what cloq really reads:
  fuzz_gguf         tiny GGUF files written by the PyPI `gguf` package: a 1-block llama with
                    tensors in every type cloq reads, with a byte-level BPE (gpt2) and a
                    SentencePiece (llama) tokenizer.
  fuzz_safetensors  stories260K-hf's model.safetensors with every tensor cut to its first 4 x 4
                    values (real names, shapes and data; F32 and an F16/BF16 mix), the real file
                    truncated, scalar and empty tensors, the same model as an index + 2 shards
                    (parts joined by fuzz_safetensors.c's separator), and a GGUF model.
  fuzz_config       stories260K-hf's config.json and variants (mistral, defaults, nulls, errors).
  fuzz_tokenizer    tokenizer.json files: stories260K's tok512.bin as Llama 2 SentencePiece BPE
                    (normalizer, and Metaspace), and the first 300 ids of Llama 3's vocabulary
                    (ggml-vocab-llama-bpe.gguf) with the Llama 3, GPT-2, SmolLM, Qwen2 and
                    Qwen 3.5 pre-tokenizers (Qwen2 also with its NFC normalizer); each followed
                    by NUL, a text to encode (story, WikiText-2) and sometimes NUL and a
                    tokenizer_config.json (fuzz_tokenizer.c's input layout).
  fuzz_tokens       token files: stories260K's reference story and greedy ids, split into lines,
                    with blank lines, CRLF, tabs, leading zeros and ids at the int32 limit.
Usage: python3 tests/fuzz/make_seeds.py OUTDIR [TARGET]   (TARGET default fuzz_gguf)"""
import json
import os
import struct
import sys

import numpy as np

out = sys.argv[1]
target = sys.argv[2] if len(sys.argv) > 2 else "fuzz_gguf"
here = os.path.dirname(os.path.abspath(__file__))
assets = os.environ.get("CLOQ_ASSETS") or os.path.join(here, "..", "..", "..", "shared", "assets")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
SHARD_SEP = b"\n--cloq-fuzz-shard--\n"  # fuzz_safetensors.c


def asset(rel):
    return os.path.join(assets, rel)


def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- fuzz_gguf ----------------------------------------------------------------------------------

def gguf_model(path, tok, k_rows=16):
    import gguf
    from gguf import GGMLQuantizationType as QT
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(32)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(8)
    if tok == "gpt2":
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(["<|endoftext|>", "H", "e", "l", "o", "\u0120", "He", "ll"])
        w.add_token_types([3, 1, 1, 1, 1, 1, 1, 1])
        w.add_token_merges(["H e", "l l"])
        w.add_bos_token_id(0)
    else:
        w.add_tokenizer_model("llama")
        w.add_token_list(["<unk>", "<s>", "</s>", "<0x48>", "\u2581", "H", "e", "\u2581H"])
        w.add_token_scores([0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -0.5])
        w.add_token_types([2, 3, 3, 6, 1, 1, 1, 1])
        w.add_bos_token_id(1)
        w.add_add_bos_token(True)
    types = [QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1]
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight",
             "blk.0.attn_output.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight",
             "blk.0.ffn_down.weight"]
    shapes = [(8, 32), (32, 32), (k_rows, 32), (16, 32), (32, 32), (32, 32), (32, 32), (32, 32)]
    for name, shape, t in zip(names, shapes, types):
        a = rng.standard_normal(shape).astype(np.float32)
        if t == QT.F32:
            w.add_tensor(name, a)
        else:
            q = gguf.quants.quantize(a, t)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=t)
    for name in ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"]:
        w.add_tensor(name, np.ones(32, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def seeds_gguf():
    gguf_model(os.path.join(out, "llama_gpt2.gguf"), "gpt2")
    gguf_model(os.path.join(out, "llama_spm.gguf"), "llama")


# ---- fuzz_safetensors ---------------------------------------------------------------------------

def st_bytes(tensors, meta=True):
    """A safetensors file: tensors is a list of (name, dtype, shape, raw bytes)."""
    hdr, off, data = {}, 0, b""
    if meta:
        hdr["__metadata__"] = {"format": "pt"}
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # as Hugging Face pads
    return struct.pack("<Q", len(h)) + h + data


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack_from("<Q", b)[0]
    hdr = json.loads(b[8:8 + n])
    base = 8 + n
    res = []
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        s, t = e["data_offsets"]
        res.append((name, np.frombuffer(b[base + s:base + t], np.float32).reshape(e["shape"])))
    return b, res


def to_raw(a, dt):
    if dt == "F32":
        return a.astype("<f4").tobytes()
    if dt == "F16":
        return a.astype("<f2").tobytes()
    u = a.astype("<f4").view("<u4").astype(np.uint64)  # BF16, round to nearest even
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def seeds_safetensors():
    real, tensors = read_st(asset("stories260K-hf/model.safetensors"))
    small = [(n, a[tuple(slice(0, 4) for _ in a.shape)]) for n, a in tensors]
    f32 = [(n, "F32", a.shape, to_raw(a, "F32")) for n, a in small]
    write("stories260K_4x4.safetensors", st_bytes(f32))
    mixed = [(n, ("F32", "F16", "BF16")[i % 3], a.shape, to_raw(a, ("F32", "F16", "BF16")[i % 3]))
             for i, (n, a) in enumerate(small)]
    write("stories260K_4x4_f16_bf16.safetensors", st_bytes(mixed, meta=False))
    hlen = struct.unpack_from("<Q", real)[0]
    write("stories260K_truncated.safetensors", real[:8 + hlen + 4096])
    one = np.array([1.5], np.float32)
    write("scalar_empty.safetensors",
          st_bytes([("scalar", "F32", (), to_raw(one, "F32")), ("empty", "F16", (0, 3), b""),
                    ("v", "BF16", (2,), to_raw(np.array([-2.0, 0.25], np.float32), "BF16"))]))
    # the index form: the same tensors over two shards
    names = [t[0] for t in f32]
    half = len(f32) // 2
    shards = [f32[:half], f32[half:]]
    files = ["model-%05d-of-%05d.safetensors" % (i + 1, len(shards)) for i in range(len(shards))]
    wm = {n: files[0 if i < half else 1] for i, n in enumerate(names)}
    index = json.dumps({"metadata": {"total_size": sum(len(t[3]) for t in f32)},
                        "weight_map": wm}, indent=2).encode()
    write("stories260K_4x4_sharded.bin", SHARD_SEP.join([index] + [st_bytes(s) for s in shards]))
    # three shards, one of them holding only metadata-free small tensors
    three = [f32[:10], f32[10:30], f32[30:]]
    files3 = ["model-%05d-of-%05d.safetensors" % (i + 1, 3) for i in range(3)]
    wm3 = {n: files3[0 if i < 10 else 1 if i < 30 else 2] for i, n in enumerate(names)}
    write("stories260K_4x4_3shards.bin",
          SHARD_SEP.join([json.dumps({"weight_map": wm3}).encode()] +
                         [st_bytes(s, meta=False) for s in three]))
    # regression: headers that name no tensor (both cloq_ckpt_open and open_index sorted NULL)
    write("regress_no_tensors.safetensors", st_bytes([]))
    write("regress_index_empty_shard.bin",
          SHARD_SEP.join([b'{"weight_map": {"a": "model-00001-of-00001.safetensors"}}',
                          st_bytes([])]))
    try:
        gguf_model(os.path.join(out, "llama_spm.gguf"), "llama")
        # regression: k_proj rows that do not split into heads of even size (the error return of
        # open_gguf leaked the tensor's name)
        gguf_model(os.path.join(out, "regress_gguf_k_rows.gguf"), "llama", k_rows=3)
    except ImportError:
        pass


# ---- fuzz_config --------------------------------------------------------------------------------

def seeds_config():
    real = open(asset("stories260K-hf/config.json"), "rb").read()
    write("stories260K_config.json", real)
    c = json.loads(real)
    variants = {
        "mistral": dict(c, model_type="mistral", architectures=["MistralForCausalLM"],
                        sliding_window=None, head_dim=None, num_key_value_heads=2),
        "defaults": {k: c[k] for k in ("model_type", "hidden_size", "intermediate_size",
                                       "num_hidden_layers", "num_attention_heads", "vocab_size")},
        "nulls": dict(c, num_key_value_heads=None, rms_norm_eps=None, rope_theta=None,
                      bos_token_id=None, tie_word_embeddings=None, hidden_act=None),
        "llama7b": {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
                    "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
                    "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1,
                    "eos_token_id": 2, "pretraining_tp": 1, "rope_scaling": None,
                    "torch_dtype": "float16", "transformers_version": "4.31.0.dev0"},
        "rope_scaling": dict(c, rope_scaling={"type": "linear", "factor": 2.0}),
        "gelu_bias": dict(c, hidden_act="gelu", attention_bias=True),
        "big": dict(c, vocab_size=2**31, hidden_size=2**62, num_attention_heads=3,
                    rope_theta=1e308, rms_norm_eps=5e-324),
    }
    for name, v in variants.items():
        write("config_%s.json" % name, json.dumps(v, indent=2))


# ---- fuzz_tokenizer -----------------------------------------------------------------------------

def read_tok512():
    b = open(asset("stories260K/tok512.bin"), "rb").read()
    o, res = 4, []
    while o < len(b):
        score, n = struct.unpack_from("<fi", b, o)
        o += 8
        res.append((b[o:o + n].decode("utf-8"), score))
        o += n
    return res


def spm_json(tok, metaspace):
    """tok512.bin as Llama 2's tokenizer.json (pieces with U+2581; merges from the scores, as
    transformers' LlamaConverter makes them)."""
    pieces = []
    for i, (p, _) in enumerate(tok):
        pieces.append({1: "<s>", 2: "</s>"}.get(i, p.replace(" ", "\u2581")))
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = []
    for i, p in enumerate(pieces):
        if i < 259:  # control and byte pieces are never merge results
            continue
        for k in range(1, len(p)):
            l, r = p[:k], p[k:]
            if l in vocab and r in vocab:
                merges.append((-tok[i][1], vocab[l], vocab[r], l, r))
    merges.sort()
    added = [{"id": i, "content": pieces[i], "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i in range(3)]
    j = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None if metaspace else {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                          "split": False} if metaspace else None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ",
                                                        "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab,
                  "merges": [[m[3], m[4]] for m in merges] if metaspace
                  else ["%s %s" % (m[3], m[4]) for m in merges]},
    }
    return json.dumps(j, ensure_ascii=False, indent=1 if metaspace else None).encode()


def gguf_strings(path, keys, limit):
    """The first `limit` strings of the string arrays `keys` of a GGUF file (a minimal reader:
    gguf-py's GGUFReader takes seconds on a 128K-token vocabulary)."""
    b = open(path, "rb").read()
    assert b[:4] == b"GGUF"
    n_kv = struct.unpack_from("<Q", b, 16)[0]
    o = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    res = {}

    def string(o):
        n = struct.unpack_from("<Q", b, o)[0]
        return b[o + 8:o + 8 + n].decode("utf-8"), o + 8 + n

    for _ in range(n_kv):
        key, o = string(o)
        vt = struct.unpack_from("<I", b, o)[0]
        o += 4
        if vt == 8:
            o = string(o)[1]
        elif vt == 9:
            et, n = struct.unpack_from("<IQ", b, o)
            o += 12
            if et == 8:
                vals = []
                for i in range(n):
                    s, o2 = string(o) if key in keys and i < limit else (None, None)
                    if s is not None:
                        vals.append(s)
                        o = o2
                    else:
                        o += 8 + struct.unpack_from("<Q", b, o)[0]
                if key in keys:
                    res[key] = vals
            else:
                o += n * sizes[et]
        else:
            o += sizes[vt]
    return res


HF_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
HF_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
             r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
HF_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
            r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
HF_QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}"
             r"\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def bpe_json(pre, n=300, normalizer=None):
    """The first n ids of Llama 3's vocabulary (all 256 bytes among them) and the merges among
    them, with two added tokens, as a byte-level tokenizer.json with pre-tokenizer `pre` (and
    `normalizer`). Small: the fuzzer's speed falls with the size of the JSON (10 ms per run at
    1000 ids, 3 at 300)."""
    r = gguf_strings(asset("vocab/ggml-vocab-llama-bpe.gguf"),
                        ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"), 20000)
    toks = r["tokenizer.ggml.tokens"][:n]
    vocab = {t: i for i, t in enumerate(toks)}
    merges = []
    for m in r["tokenizer.ggml.merges"]:
        a, c = m.split(" ", 1)
        if a in vocab and c in vocab and a + c in vocab:
            merges.append([a, c])
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    added = [{"id": n, "content": bos, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True},
             {"id": n + 1, "content": eos, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}]
    if pre == "gpt2":  # added-token options, and "left right" merges
        added.append({"id": n + 2, "content": "<mask>", "single_word": True, "lstrip": True,
                      "rstrip": True, "normalized": True, "special": False})
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    pre_tok = {
        "llama3": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": HF_LLAMA3}, "behavior": "Isolated",
             "invert": False}, dict(bl, use_regex=False)]},
        "gpt2": bl,
        "smollm": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, bl]},
        "split_gpt2": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": HF_GPT2}, "behavior": "Isolated",
             "invert": False}, dict(bl, use_regex=False)]},
        "qwen2": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": HF_QWEN2}, "behavior": "Isolated",
             "invert": False}, dict(bl, add_prefix_space=False, use_regex=False)]},
        "qwen35": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": HF_QWEN35}, "behavior": "Isolated",
             "invert": False}, dict(bl, add_prefix_space=False, use_regex=False)]},
    }[pre]
    post = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {bos: {"id": bos, "ids": [n], "tokens": [bos]}}}
    j = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
         "normalizer": normalizer, "pre_tokenizer": pre_tok,
         "post_processor": post if pre == "llama3" else
         {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
         "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                     "use_regex": True},
         "model": {"type": "BPE", "dropout": None, "unk_token": None,
                   "continuing_subword_prefix": None, "end_of_word_suffix": None,
                   "fuse_unk": False, "byte_fallback": False, "ignore_merges": pre == "llama3",
                   "vocab": vocab,
                   "merges": ["%s %s" % (a, c) for a, c in merges] if pre == "gpt2" else merges}}
    return json.dumps(j, ensure_ascii=False).encode()


def seeds_tokenizer():
    ref = json.load(open(asset("stories260K/reference_outputs.json")))
    story = ref["story_text"][:400].encode()
    wiki = open(asset("wikitext-2/wikitext-2-raw-v1.test.eval_string.txt"), "rb").read()[:600]
    tok = read_tok512()
    cfg = json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"}, "unk_token": "<unk>",
                      "pad_token": None, "add_bos_token": True}).encode()
    write("tok512_llama2.bin", spm_json(tok, False) + b"\0" + story)
    write("tok512_llama2_config.bin", spm_json(tok, False) + b"\0" + wiki + b"\0" + cfg)
    write("tok512_metaspace.bin", spm_json(tok, True) + b"\0" + story + b" \xe2\x96\x81 \xff\x00")
    bcfg = json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}).encode()
    write("llama3_300.bin", bpe_json("llama3") + b"\0" + wiki)
    write("gpt2_300.bin", bpe_json("gpt2") + b"\0" + story + b" <mask> x<mask>y\n\n\n 123456")
    write("smollm_300.bin", bpe_json("smollm") + b"\0" + wiki + b"\0" + bcfg)
    write("split_gpt2_300.bin", bpe_json("split_gpt2"))
    marks = "re\u0301sume\u0301 a\u0300a\u0300 \u0301x !\u0301? \u0915\u094d\u0937\u093f 12345\n".encode()
    write("qwen2_300.bin", bpe_json("qwen2") + b"\0" + marks + wiki[:200])
    write("qwen35_300.bin", bpe_json("qwen35") + b"\0" + marks + wiki[:200])
    # Qwen2's NFC normalizer: decomposed letters, Hangul jamo, marks out of order, singletons,
    # exclusions, invalid bytes; then a character newer than Unicode 9.0.0 (the text is refused)
    nfc = ("e\u0301 \u1100\u1161\u11a8 a\u0301\u0316 \u212b \u0958 \u0344 \u00e9\u0301\u0301"
           "\n").encode() + b"e\xff\xcc\x81 \xc0\x80 "
    write("qwen2_nfc_300.bin", bpe_json("qwen2", normalizer={"type": "NFC"}) + b"\0" + nfc +
          wiki[:100])
    write("qwen2_seqnfc_300.bin", bpe_json("qwen2", normalizer={
        "type": "Sequence", "normalizers": [{"type": "NFC"}]}) + b"\0" + nfc +
        "a\u1df6\u0301".encode())


# ---- fuzz_tokens --------------------------------------------------------------------------------

def seeds_tokens():
    ref = json.load(open(asset("stories260K/reference_outputs.json")))
    story, greedy = ref["story_ids"], ref["greedy_from_bos_ids"]
    line = lambda ids: " ".join(map(str, ids))
    write("story.txt", line(story) + "\n")
    write("story_greedy.txt", line(story) + "\n" + line(greedy) + "\n")
    write("story_lines.txt",
          "".join(line(story[i:i + 16]) + "\n" for i in range(0, len(story), 16)))
    write("blanks_crlf.txt", "\n" + line(story[:20]) + "\r\n\r\n  \t\n" +
          "\t".join(map(str, greedy[:30])) + "\r\n" + "007 0 511")
    write("limits.txt", "0 511\n2147483647 2147483646\n")
    write("bad.txt", "1 2 3\n4 -5 6\n7 512\n")


{"fuzz_gguf": seeds_gguf, "fuzz_safetensors": seeds_safetensors, "fuzz_config": seeds_config,
 "fuzz_tokenizer": seeds_tokenizer, "fuzz_tokens": seeds_tokens}[target]()
print("seeds:", ", ".join(f"{f} ({os.path.getsize(os.path.join(out, f))} B)"
                          for f in sorted(os.listdir(out))))
