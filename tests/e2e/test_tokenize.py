"""`cloq tokenize` against llama.cpp's tokenizer tests and the Hugging Face `tokenizers` library,
on the four real vocabularies of ../shared/assets/vocab (llama-bpe: Llama 3; llama-spm: Llama 2;
qwen2: Qwen2/2.5/3; qwen35: newer Qwen releases):

(a) llama.cpp's expected ids: every string of every vocab/X.gguf.inp (strings separated by the
    line __ggml_vocab_test__, read as llama.cpp's tests/test-tokenizer-0 reads them), encoded by
    one `cloq tokenize --tokenizer X.gguf --delimiter ... --no-bos` run per file, must equal the
    matching line of X.gguf.out: every string of every file.
(b) `tokenizers`: transformers' own GGUF conversion (get_gguf_tokenizer + convert_gguf_tokenizer,
    offline, in bench/peers/.venv) builds each vocabulary's Tokenizer. Its ids (no special tokens)
    must equal cloq's on the whole WikiText-2 test text (--whole), on each of its lines (the default
    line mode) and on a stress text of combining marks, marks newer than PCRE2's tables,
    contractions, digits and white space (--delimiter). cloq must also read the converted
    tokenizer.json itself (Split(Llama 3 / Qwen2 / Qwen 3.5 regex) + ByteLevel; Metaspace and
    Llama 2's normalizer for llama-spm) with the same ids on WikiText-2, and the tokenizer.json
    that cloq_tok_write_hf writes of the qwen2 and qwen35 GGUFs must load in `tokenizers` and give
    the same ids again.
(c) the command itself: --model (stories260K-hf, its tok512.bin) against the story ids of
    reference_outputs.json; BOS; standard input; --out and --force; the line rules (an empty line
    is an empty sequence, a last line without '\\n' is a line, a final '\\n' starts none, '\\r'
    stays in the line).
(d) errors: missing --text, both or neither of --tokenizer/--model, unreadable files, an existing
    --out, bad flags: one line on stderr, exit status 1, nothing on stdout, nothing left at --out.
(e) the NFC normalizer of real Qwen2/Qwen2.5/Qwen3 tokenizer.json files: the qwen2 conversion of
    (b) with its normalizer set to NFC (and to Sequence[NFC]) with the `tokenizers` API; cloq's ids
    must equal `tokenizers`' on the whole WikiText-2 test text, line by line, and on a stress text
    of decomposed sequences (e + U+0301, Hangul jamo, several combining marks out of order,
    singletons such as U+212B, composition exclusions such as U+0958, marks after added tokens);
    cloq_tok_write_hf must write the normalizer back (same ids in `tokenizers`); a text whose NFC
    differs between cloq's Unicode 14.0.0 and `tokenizers`' 9.0.0 is refused naming the code
    point; NFKC, NFD, NFKD, Lowercase are refused by name. (tests/e2e/test_nfc.py checks the NFC
    itself on every code point.)

Environment: CLOQ_BIN, CLOQ_TOK_TOOL (build/tests/io/tok_tool), CLOQ_ASSETS. transformers comes
from bench/peers/.venv (bench/peers/install.sh, run by this test; failing to make or import it is
a failure).
"""
import json
import os
import subprocess
import time

from cloqtest import ASSETS, check, done, reference, run, tmpdir

TOOL = os.environ.get("CLOQ_TOK_TOOL", "build/tests/io/tok_tool")
VOCAB = os.path.join(ASSETS, "vocab")
NAMES = ["llama-bpe", "llama-spm", "qwen2", "qwen35"]
WIKI = os.path.join(ASSETS, "wikitext-2", "wikitext-2-raw-v1.test.eval_string.txt")
STORIES = os.path.join(ASSETS, "stories260K-hf")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_PY = os.path.join(ROOT, "bench", "peers", ".venv", "bin", "python")
SEP = "\n__ggml_vocab_test__\n"   # llama.cpp's separator in X.gguf.inp
STRESS_SEP = "\n--8<--\n"

# run by VENV_PY: argv = job JSON, result JSON. Converts each GGUF with transformers' own GGUF
# tokenizer code and saves its tokenizer.json (DIR/NAME). For llama-spm that conversion is
# Metaspace(prepend_scheme "first"), which puts no extra U+2581 before a text that starts with a
# space, unlike SentencePiece, llama.cpp, the .out file and Llama 2's own tokenizer.json (a
# Prepend + Replace normalizer, no pre-tokenizer): the reference for the GGUF is that structure
# (variant llama-spm/llama2), and the conversion is kept as a tokenizer.json for cloq to read
# (whole text only). Every variant encodes the texts without special tokens.
HF_JOB = r'''
import json, os, sys
import transformers
from tokenizers import Tokenizer, normalizers
from transformers.integrations.gguf.gguf_tokenizer_mapping import (convert_gguf_tokenizer,
                                                                    get_gguf_tokenizer)
job = json.load(open(sys.argv[1], encoding="utf-8"))
wiki = open(job["wiki"], encoding="utf-8").read()
out = {"version": transformers.__version__, "variant": {}, "written": {}}


def encode(label, tok, lines=True):
    path = os.path.join(job["dir"], label, "tokenizer.json")
    os.makedirs(os.path.dirname(path))
    tok.save(path)
    spec = json.loads(tok.to_str())
    enc = lambda xs: [e.ids for e in tok.encode_batch(xs, add_special_tokens=False)]
    out["variant"][label] = {
        "json": path, "normalizer": spec["normalizer"], "pre_tokenizer": spec["pre_tokenizer"],
        "ignore_merges": spec["model"].get("ignore_merges"),
        "wiki": tok.encode(wiki, add_special_tokens=False).ids,
        "lines": enc(job["lines"]) if lines else None, "stress": enc(job["stress"]),
        "inp": enc(job["inp"][label.split("/")[0]])}


for name, path in job["vocab"].items():
    arch, tdict, _ = get_gguf_tokenizer(path)
    tok, _ = convert_gguf_tokenizer(arch, tdict)
    encode(name, tok, name != "llama-spm")  # the llama-spm conversion: read by cloq, whole
    if name == "llama-spm":
        l2 = Tokenizer.from_str(tok.to_str())
        l2.pre_tokenizer = None
        l2.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                              normalizers.Replace(" ", "\u2581")])
        encode(name + "/llama2", l2)
for name, path in job["written"].items():
    out["written"][name] = Tokenizer.from_file(path).encode(wiki, add_special_tokens=False).ids
json.dump(out, open(sys.argv[2], "w"))
'''
# which variant is the reference for each GGUF (the others are checked through their tokenizer.json)
REFERENCE = {"llama-bpe": "llama-bpe", "llama-spm": "llama-spm/llama2", "qwen2": "qwen2",
             "qwen35": "qwen35"}

d = tmpdir()
wiki = open(WIKI, encoding="utf-8").read()
print(f"work dir {d}")


def read_inp(name):
    """The test strings of X.gguf.inp and the ids of X.gguf.out, as test-tokenizer-0 pairs them."""
    text = open(os.path.join(VOCAB, f"ggml-vocab-{name}.gguf.inp"), encoding="utf-8").read()
    strings = text.split(SEP)
    assert strings[-1] == "", f"{name}.inp does not end with the separator"
    strings = strings[:-1]
    out = open(os.path.join(VOCAB, f"ggml-vocab-{name}.gguf.out"), encoding="utf-8").read()
    ids = [[int(x) for x in line.split()] for line in out.split("\n")[:len(strings)]]
    return strings, ids


def tokenize(args, text=None, stdin=None, label="t"):
    """cloq tokenize ARGS (text written to a file given as --text); (ids per output line, proc)."""
    if text is not None:
        tf = os.path.join(d, f"{label}.txt")
        with open(tf, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        args = args + ["--text", tf]
    p = subprocess.run([os.environ.get("CLOQ_BIN", "build/cmd/cloq"), "tokenize"] + args,
                       input=stdin, capture_output=True, text=True)
    lines = p.stdout.split("\n")
    if p.returncode != 0 or lines[-1] != "":
        return None, p
    return [[int(x) for x in line.split()] for line in lines[:-1]], p


def gguf(name):
    return os.path.join(VOCAB, f"ggml-vocab-{name}.gguf")


def first_diff(a, b):
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), -1)
    return min(len(a), len(b)) if i < 0 and len(a) != len(b) else i


def compare_ids(what, want, got):
    i = first_diff(want, got)
    check(i < 0, f"{what}: {len(want)} ids identical",
          f"{len(want)} ids {want[max(0, i - 2):i + 3]}",
          f"{len(got)} ids, first difference at {i}: {got[max(0, i - 2):i + 3]}")


def compare_seqs(what, want, got):
    bad = [k for k, (w, g) in enumerate(zip(want, got or [])) if w != g]
    ok = got is not None and len(want) == len(got) and not bad
    check(ok, f"{what}: {len(want)}/{len(want)} sequences equal",
          f"{len(want)} sequences", "no output" if got is None else
          f"{len(got)} sequences, {len(want) - len(bad)} equal; first differing: "
          + (f"#{bad[0]}: {want[bad[0]][:8]} vs {got[bad[0]][:8]}" if bad else "-"))


# ---- the stress text: what tells the pre-tokenizers apart (marks with and without a base letter,
# marks of Unicode 15/16 that PCRE2 10.42 lacks, decomposed accents, contractions, digits, spaces)
stress = [
    "e\u0301", "re\u0301sume\u0301", "a\u0300" * 9, "\u0301abc", " \u0301\u0302 x",
    "Vie\u0302\u0323t", "\u0915\u094d\u0937\u093f",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd",
    "\u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627", "x\u0897y \u0cf3 \u0ece\u0e81",
    "\U00011241a\U000113b8b\U00011f34c\U0001611e\U0001e08f", "!\u0301?", "..\u20dd..",
    "I'M you're WE'LL 'S 's 'ſ", "1234567 12 3.14159", "a  \n\n  b\t\tc \r\n",
    "\u3000\u3000\u6f22\u5b57",
    "\U0001f44d\U0001f3fd\u200d", "   ", "", "\n",
]
assert not any(STRESS_SEP in s for s in stress)
lines = wiki.split("\n")
if lines[-1] == "":
    lines = lines[:-1]

# ---- (b) first: cloq_tok_write_hf of each byte-level GGUF, then the Hugging Face side -----------
written = {}
for name in ["qwen2", "qwen35"]:  # the writer's Split patterns
    wd = os.path.join(d, f"written-{name}")
    os.makedirs(wd)
    p = subprocess.run([TOOL, "write-hf", gguf(name), wd], capture_output=True, text=True)
    check(p.returncode == 0, f"{name}: cloq_tok_write_hf of the GGUF", "rc 0", p.stderr.strip())
    if p.returncode == 0:
        written[name] = os.path.join(wd, "tokenizer.json")

job = {"dir": d, "wiki": WIKI, "lines": lines, "stress": stress, "written": written,
       "vocab": {n: gguf(n) for n in NAMES}, "inp": {n: read_inp(n)[0] for n in NAMES}}
job_json, res_json = os.path.join(d, "hf-job.json"), os.path.join(d, "hf-ids.json")
with open(job_json, "w", encoding="utf-8") as f:
    json.dump(job, f)
# bench/peers/install.sh (idempotent, but it imports torch and peft to check them: slow) only when
# the venv cannot import what this test needs
have = os.path.exists(VENV_PY) and subprocess.run(
    [VENV_PY, "-c", "import transformers, tokenizers"], capture_output=True).returncode == 0
if not have:
    inst = subprocess.run(["bash", os.path.join(ROOT, "bench", "peers", "install.sh")],
                          capture_output=True, text=True, timeout=3600)
    check(inst.returncode == 0, "bench/peers/install.sh (the venv with transformers)", 0,
          inst.stderr.strip()[-1000:])
    have = inst.returncode == 0
hf = None
if have:
    t0 = time.perf_counter()
    p = subprocess.run([VENV_PY, "-c", HF_JOB, job_json, res_json], capture_output=True, text=True,
                       timeout=900)
    check(p.returncode == 0, "transformers' GGUF conversion of the four vocabularies", "rc 0",
          f"rc {p.returncode}: {p.stderr.strip()[-1500:]}")
    if p.returncode == 0:
        hf = json.load(open(res_json, encoding="utf-8"))
        print(f"     transformers {hf['version']}: converted and encoded in "
              f"{time.perf_counter() - t0:.1f} s")

# ---- (a) llama.cpp's tokenizer tests ---------------------------------------------------------
print("== (a) vocab/*.inp against llama.cpp's .out")
for name in NAMES:
    strings, want = read_inp(name)
    got, p = tokenize(["--tokenizer", gguf(name), "--no-bos", "--delimiter", SEP, "--text",
                       gguf(name) + ".inp"])
    if got is None:
        check(False, f"{name}: cloq tokenize of the .inp strings", "rc 0", p.stderr.strip())
        continue
    bad = [k for k in range(len(strings)) if k >= len(got) or got[k] != want[k]]
    check(len(got) == len(strings) and not bad,
          f"{name}: {len(strings) - len(bad)}/{len(strings)} strings equal the .out ids",
          f"{len(strings)} lines", f"{len(got)} lines; differing: " + "; ".join(
              f"#{k} {strings[k][:20]!r}: {want[k][:8]} vs {got[k][:8] if k < len(got) else None}"
              for k in bad[:3]))
    for label, v in (hf["variant"].items() if hf else []):  # reported, not checked
        if label.split("/")[0] == name:
            hb = [k for k, ids in enumerate(v["inp"]) if ids != want[k]]
            print(f"     (`tokenizers` {label}: {len(strings) - len(hb)}/{len(strings)} strings "
                  f"equal the .out ids{'; differs at ' + str(hb[:5]) if hb else ''})")

# ---- (b) Hugging Face `tokenizers` on WikiText-2 and the stress text ----------------------------
print("== (b) against transformers' GGUF conversion in `tokenizers`")
if hf:
    for label, h in hf["variant"].items():
        pre = h["pre_tokenizer"] or {}
        print(f"     {label}: normalizer {(h['normalizer'] or {}).get('type')}"
              f"{[x.get('type') for x in (h['normalizer'] or {}).get('normalizers', [])]}, "
              f"pre_tokenizer {pre.get('type')}"
              f"{[x.get('type') for x in pre.get('pretokenizers', [])]}, "
              f"ignore_merges {h['ignore_merges']}")
    for name in NAMES:
        h = hf["variant"][REFERENCE[name]]
        got, p = tokenize(["--tokenizer", gguf(name), "--whole", "--no-bos", "--text", WIKI])
        compare_ids(f"{name}: WikiText-2 test ({len(wiki)} chars), --whole", h["wiki"],
                    got[0] if got else [])
        got, p = tokenize(["--tokenizer", gguf(name), "--no-bos", "--text", WIKI])
        compare_seqs(f"{name}: WikiText-2 line by line", h["lines"], got)
        got, p = tokenize(["--tokenizer", gguf(name), "--no-bos", "--delimiter", "\\n--8<--\\n"],
                          text=STRESS_SEP.join(stress), label=f"stress-{name}")
        compare_seqs(f"{name}: stress text ({len(stress)} pieces)", h["stress"], got)
        if name in hf["written"]:
            compare_ids(f"{name}: `tokenizers` on cloq_tok_write_hf's tokenizer.json, WikiText-2",
                        h["wiki"], hf["written"][name])
    for label, h in hf["variant"].items():  # cloq reading each tokenizer.json
        got, p = tokenize(["--tokenizer", h["json"], "--whole", "--no-bos", "--text", WIKI])
        compare_ids(f"{label}: cloq on its tokenizer.json, WikiText-2", h["wiki"],
                    got[0] if got else [p.stderr.strip()])
        if h["lines"] is not None:
            got, p = tokenize(["--tokenizer", h["json"], "--no-bos", "--text", WIKI])
            compare_seqs(f"{label}: cloq on its tokenizer.json, WikiText-2 line by line",
                         h["lines"], got)

# ---- (c) the command: --model, BOS, stdin, --out, the line rules -------------------------------
print("== (c) the command")
ref = reference()
story, story_ids = ref["story_text"], ref["story_ids"]
got, p = tokenize(["--model", STORIES, "--whole"], text=story, label="story")
check(got is not None and got[0] == story_ids,
      f"--model stories260K-hf (tok512.bin): the reference story, {len(story_ids)} ids with BOS",
      story_ids[:8], got[0][:8] if got else p.stderr.strip())

spm = gguf("llama-spm")
small = os.path.join(STORIES, "tok512.bin")  # loads at once: for the command's own rules
txt = "Hello world\n\n \r\nlast"
got, p = tokenize(["--tokenizer", small, "--no-bos"], text=txt, label="lines")
per = [tokenize(["--tokenizer", small, "--no-bos", "--whole"], text=s, label=f"line{k}")[0][0]
       for k, s in enumerate(["Hello world", "", " \r", "last"])]
check(got == per, "line mode: 4 lines (an empty one, one with '\\r', a last one without '\\n') are "
      "4 sequences, each as encoded alone", per, got)
got2, _ = tokenize(["--tokenizer", small, "--no-bos"], text=txt + "\n", label="lines-nl")
check(got2 == per, "a final '\\n' starts no further sequence", per, got2)
got, _ = tokenize(["--tokenizer", small, "--no-bos"], text="", label="empty")
check(got == [], "an empty text gives no line", [], got)
got, _ = tokenize(["--tokenizer", small, "--no-bos", "--whole"], text="", label="empty-whole")
check(got == [[]], "an empty text with --whole gives one empty line", [[]], got)
got, _ = tokenize(["--tokenizer", spm], text="Hello world\n\nx", label="bos")
nob, _ = tokenize(["--tokenizer", spm, "--no-bos"], text="Hello world\n\nx", label="nobos")
check(got is not None and nob is not None and got == [[1] + s for s in nob],
      "llama-spm adds BOS (1) to every sequence, --no-bos none", [[1] + s for s in nob or []], got)
got, p = tokenize(["--tokenizer", small, "--text", "-"], stdin="Hello world\nx\n")
check(got is not None and got == tokenize(["--tokenizer", small], text="Hello world\nx\n",
                                          label="stdin")[0], "--text - reads standard input",
      "the file's ids", got or p.stderr.strip())
out = os.path.join(d, "ids.txt")
p = run(["tokenize", "--tokenizer", small, "--text", WIKI, "--out", out])
check(p.returncode == 0 and os.path.exists(out) and "sequences" in p.stdout and
      not os.path.exists(out + ".tmp"), "--out writes the file and one summary line",
      "rc 0", f"rc {p.returncode}: {p.stdout.strip()} {p.stderr.strip()}")
print(f"     {p.stdout.strip()}")
ids_out = [[int(x) for x in line.split()] for line in open(out).read().split("\n")[:-1]]
got, _ = tokenize(["--tokenizer", small, "--text", WIKI])
check(ids_out == got, "--out holds what standard output gets", len(got or []), len(ids_out))
before = open(out).read()
p = run(["tokenize", "--tokenizer", small, "--text", WIKI, "--out", out])
check(p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "--force" in p.stderr and
      open(out).read() == before, "an existing --out is refused (one line naming --force) and kept",
      "rc 1", f"rc {p.returncode}: {p.stderr.strip()}")
p = run(["tokenize", "--tokenizer", small, "--text", WIKI, "--out", out, "--force", "--whole"])
check(p.returncode == 0 and len(open(out).read().split("\n")) == 2, "--force replaces it",
      "rc 0 and one line", f"rc {p.returncode}: {p.stderr.strip()}")

# ---- (d) errors: one line, exit 1, nothing on stdout, nothing left ----------------------------
print("== (d) errors")
tf = os.path.join(d, "small.txt")
with open(tf, "w") as f:
    f.write("hi\n")
bad_out = os.path.join(d, "never.txt")
cases = [
    ("no --text", ["--tokenizer", small], "--text is required"),
    ("neither --tokenizer nor --model", ["--text", tf],
     "--tokenizer FILE or --model M is required"),
    ("both --tokenizer and --model", ["--tokenizer", small, "--model", STORIES, "--text", tf],
     "not both"),
    ("unreadable --text", ["--tokenizer", small, "--text", os.path.join(d, "none.txt")],
     "none.txt: cannot open"),
    ("--text is a folder", ["--tokenizer", small, "--text", d], "not a regular file"),
    ("unreadable --tokenizer", ["--tokenizer", os.path.join(d, "none.gguf"), "--text", tf],
     "none.gguf"),
    ("--tokenizer is not a tokenizer", ["--tokenizer", tf, "--text", tf], "small.txt"),
    ("--model without a tokenizer", ["--model", d, "--text", tf], d),
    ("a vocabulary-only GGUF as --model", ["--model", spm, "--text", tf], "ggml-vocab-llama-spm"),
    ("unknown flag", ["--tokenizer", small, "--text", tf, "--bos"], "--bos"),
    ("a flag given twice", ["--tokenizer", small, "--text", tf, "--text", tf], "given twice"),
    ("a switch given a value", ["--tokenizer", small, "--text", tf, "--whole=yes"],
     "takes no value"),
    ("--whole and --delimiter", ["--tokenizer", small, "--text", tf, "--whole", "--delimiter", "x"],
     "not both"),
    ("bad --delimiter escape", ["--tokenizer", small, "--text", tf, "--delimiter", "\\x"],
     "escape"),
    ("empty --delimiter", ["--tokenizer", small, "--text", tf, "--delimiter", ""], "empty"),
    ("--out is a folder", ["--tokenizer", small, "--text", tf, "--out", d], "folder"),
    ("--out is the --text file", ["--tokenizer", small, "--text", tf, "--out", tf, "--force"],
     "--text file"),
    ("--out in a missing folder", ["--tokenizer", small, "--text", tf, "--out",
                                   os.path.join(d, "no", "x.txt")], "cannot create"),
]
for what, args, needle in cases:
    p = run(["tokenize"] + args + (["--out", bad_out] if what == "unreadable --text" else []),
            allow_dup=True)
    err = p.stderr.strip().splitlines()
    ok = (p.returncode == 1 and len(err) == 1 and err[0].startswith("cloq: error:") and
          needle in err[0] and p.stdout == "" and not os.path.exists(bad_out) and
          not os.path.exists(bad_out + ".tmp"))
    check(ok, f"error: {what}: one line naming it", f"rc 1, one line with {needle!r}",
          f"rc {p.returncode}, stdout {p.stdout[:80]!r}, stderr {err}")
flags = ["--tokenizer", "--model", "--text", "--delimiter", "--whole", "--no-bos", "--out",
         "--force"]
p = run(["tokenize", "--help"])
check(p.returncode == 0 and all(f in p.stdout for f in flags), "tokenize --help lists every flag",
      flags, p.stdout[:200])
p = run(["--help"])
check(p.returncode == 0 and "tokenize" in p.stdout, "cloq --help lists tokenize", "tokenize",
      p.stdout[-300:])

# ---- (e) the NFC normalizer (Qwen2, Qwen2.5, Qwen3) ---------------------------------------------
print("== (e) Qwen2's NFC normalizer")
nfc_stress = [
    "e\u0301", "re\u0301sume\u0301 cafe\u0301 cre\u0300me bru\u0302le\u0301e", "nai\u0308ve",
    "A\u030angstro\u0308m \u212bngstr\u00f6m", "Tie\u0302\u0301ng Vie\u0323\u0302t",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af \uac00\u11a8 \uac01\u11a8",
    "\u1100\u0301\u1161 \u1100\u1161\u302e\u11a8",
    "a\u0301\u0316 a\u0316\u0301 A\u030a\u0323 q\u0307\u0323 \u1e0b\u0323 o\u031b\u0323\u0301",
    "x\u0301\u0300\u0302\u0303 e\u0301\u0301 \u03b1\u0313\u0301\u0345",
    "\u212b \u2126 \u212a \u0340\u0341 \u037e \u0387 \u1fef \uf900\uf91f \u2000x\u2001y",
    "\u0958\u0959\u095a \u0915\u093c\u0916\u093c \u09dc \u0a33 \ufb1d \u0f43 \u2adc \u0344",
    "\U0001d15e\U0001d15f \U0002f800", "\u0301abc  \u0301 !\u0301? 12\u20dd3",
    "<|im_start|>e\u0301<|im_end|>\u0301 <|endoftext|>\u0308o",
    "a\u08d3 x\u1df6", "\u00e9 \u00c5 \uac01 \u1e08",
]
qn, refs = None, {}
if hf:
    import unicodedata
    from tokenizers import Tokenizer, normalizers
    wiki_nfc = unicodedata.normalize("NFC", wiki)
    print(f"     NFC changes {sum(a != b for a, b in zip(wiki, wiki_nfc))} characters of "
          f"WikiText-2 (lengths {len(wiki)} -> {len(wiki_nfc)})")
    qn = Tokenizer.from_file(hf["variant"]["qwen2"]["json"])
    plain = Tokenizer.from_file(hf["variant"]["qwen2"]["json"])
    qn.normalizer = normalizers.NFC()
    nfc_json = os.path.join(d, "qwen2-nfc", "tokenizer.json")
    os.makedirs(os.path.dirname(nfc_json))
    qn.save(nfc_json)
    spec = json.load(open(nfc_json, encoding="utf-8"))
    check(spec["normalizer"] == {"type": "NFC"} and spec["pre_tokenizer"]["type"] == "Sequence",
          "the qwen2 conversion with normalizer NFC, as Qwen2's own tokenizer.json",
          {"type": "NFC"}, spec["normalizer"])
    enc = lambda t, xs: [e.ids for e in t.encode_batch(xs, add_special_tokens=False)]
    want_nfc, want_plain = enc(qn, nfc_stress), enc(plain, nfc_stress)
    changed = sum(a != b for a, b in zip(want_nfc, want_plain))
    check(changed >= len(nfc_stress) - 3, f"NFC changes the `tokenizers` ids of {changed} of the "
          f"{len(nfc_stress)} stress pieces", f">= {len(nfc_stress) - 3}", changed)
    got, p = tokenize(["--tokenizer", nfc_json, "--whole", "--no-bos", "--text", WIKI])
    compare_ids("qwen2 + NFC: WikiText-2 test, --whole",
                qn.encode(wiki, add_special_tokens=False).ids,
                got[0] if got else [p.stderr.strip()])
    got, p = tokenize(["--tokenizer", nfc_json, "--no-bos", "--text", WIKI])
    compare_seqs("qwen2 + NFC: WikiText-2 line by line", enc(qn, lines), got)
    got, p = tokenize(["--tokenizer", nfc_json, "--no-bos", "--delimiter", "\\n--8<--\\n"],
                      text=STRESS_SEP.join(nfc_stress + stress), label="stress-nfc")
    compare_seqs(f"qwen2 + NFC: stress text of decomposed sequences ({len(nfc_stress)} pieces) and "
                 f"(b)'s ({len(stress)})", want_nfc + enc(qn, stress), got if got else None)
    whole = " ".join(nfc_stress) + "\n" + wiki[:20000]
    got, p = tokenize(["--tokenizer", nfc_json, "--whole", "--no-bos"], text=whole,
                      label="whole-nfc")
    compare_ids("qwen2 + NFC: the stress pieces as one text",
                qn.encode(whole, add_special_tokens=False).ids,
                got[0] if got else [p.stderr.strip()])
    # Sequence[NFC]
    qs = Tokenizer.from_file(nfc_json)
    qs.normalizer = normalizers.Sequence([normalizers.NFC()])
    seq_json = os.path.join(d, "qwen2-seqnfc.json")
    qs.save(seq_json)
    got, p = tokenize(["--tokenizer", seq_json, "--no-bos", "--delimiter", "\\n--8<--\\n"],
                      text=STRESS_SEP.join(nfc_stress), label="stress-seqnfc")
    compare_seqs("qwen2 + Sequence[NFC]: the stress text", enc(qs, nfc_stress), got)
    # cloq_tok_write_hf writes the normalizer back
    wd = os.path.join(d, "written-qwen2-nfc")
    os.makedirs(wd)
    p = subprocess.run([TOOL, "write-hf", nfc_json, wd], capture_output=True, text=True)
    check(p.returncode == 0, "qwen2 + NFC: cloq_tok_write_hf", "rc 0", p.stderr.strip())
    if p.returncode == 0:
        wj = os.path.join(wd, "tokenizer.json")
        wn = json.load(open(wj, encoding="utf-8"))["normalizer"]
        back = Tokenizer.from_file(wj)
        check(wn == {"type": "NFC"} and enc(back, nfc_stress) == want_nfc and
              back.encode(wiki, add_special_tokens=False).ids ==
              qn.encode(wiki, add_special_tokens=False).ids,
              "qwen2 + NFC: the written tokenizer.json has normalizer NFC and `tokenizers` gives "
              "the same ids on the stress text and WikiText-2", {"type": "NFC"}, wn)
    # refusals: a text whose NFC differs between Unicode 14.0.0 and 9.0.0; other normalizers
    for text, cp in [("a\u1df6\u0301", "U+1DF6"),
                     ("x \u0915\u094d\U00011935\U00011930", "U+11935")]:
        want_ud = unicodedata.normalize("NFC", text)
        got, p = tokenize(["--tokenizer", nfc_json, "--whole"], text=text, label="newer")
        err = p.stderr.strip().splitlines()
        check(want_ud != qn.normalizer.normalize_str(text) and got is None and p.returncode == 1 and
              len(err) == 1 and cp in err[0] and "9.0.0" in err[0] and p.stdout == "",
              f"{text.encode('unicode_escape').decode()}: NFC differs in `tokenizers`' Unicode "
              f"9.0.0; refused in one line naming {cp}", f"rc 1, {cp}", f"rc {p.returncode}: {err}")
    for norm in ["NFKC", "NFD", "NFKD", "Lowercase", "Sequence"]:
        bad = dict(spec, normalizer={"type": norm} if norm != "Sequence" else
                   {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "NFKC"}]})
        bj = os.path.join(d, f"qwen2-{norm}.json")
        json.dump(bad, open(bj, "w", encoding="utf-8"), ensure_ascii=False)
        name = "NFKC inside a Sequence" if norm == "Sequence" else norm
        got, p = tokenize(["--tokenizer", bj, "--whole"], text="x", label="badnorm")
        err = p.stderr.strip().splitlines()
        check(p.returncode == 1 and len(err) == 1 and
              f"normalizer {name} is not supported" in err[0],
              f"normalizer {name}: refused in one line naming it", "rc 1",
              f"rc {p.returncode}: {err}")

done()
