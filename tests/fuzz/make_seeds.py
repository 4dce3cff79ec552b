"""Seed inputs for fuzz_gguf: tiny GGUF files (a few KB) written by the PyPI `gguf` package, so
that the fuzzer starts from valid files: a 1-block llama with tensors in every type cloq reads, one
with a byte-level BPE (gpt2) tokenizer and one with a SentencePiece (llama) tokenizer.
Usage: python3 tests/fuzz/make_seeds.py OUTDIR"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)


def model(path, tok):
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
    shapes = [(8, 32), (32, 32), (16, 32), (16, 32), (32, 32), (32, 32), (32, 32), (32, 32)]
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


model(os.path.join(out, "llama_gpt2.gguf"), "gpt2")
model(os.path.join(out, "llama_spm.gguf"), "llama")
print("seeds:", ", ".join(f"{f} ({os.path.getsize(os.path.join(out, f))} B)" for f in sorted(os.listdir(out))))
