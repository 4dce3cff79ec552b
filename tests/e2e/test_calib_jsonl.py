"""Calibration (and evaluation) data from JSON Lines, as Hugging Face `datasets` exports it
(Dataset.to_json), on stories260K and the WikiText-2 validation text:

(a) one record holding the whole text gives a store bitwise equal to `--calib-format text` on that
    text (also with blank lines and empty-text records around it, which add nothing, and with
    CRLF line ends and no final newline); the text as the `wikitext` dataset's rows (the file's
    lines with their newline, blank lines as "") gives exactly the windows that an independent
    computation draws: Hugging Face `tokenizers` (tok512
    rebuilt as transformers' LlamaConverter would) encodes each non-empty row as its own document
    (<s> + text), the rows' ids joined in file order, and cloq's documented window draw
    (splitmix64, seed mixed with "calib") replayed: the store's calib_digest equals the digest of
    those windows, and a token file of them gives a bitwise equal store (plain and at 2 ranks);
    `eval --data-format jsonl` equals eval of the token file of the stream's windows;
(b) --calib-field picks another field (same store as (a)'s rows, recorded in the store); a resume
    with another field or changed records is refused, the same command resumes;
(c) every bad line (not JSON, not an object, field missing, not a string, NUL, bad UTF-8, two
    values) is one error line naming the file and its 1-based line, exit 1, nothing left behind;
    an empty file, blank lines only, only empty texts; --calib-field / --data-field with another
    format, or empty.
The files are written with json.dumps as pandas writes them for Dataset.to_json (compact, every
non-ASCII character as \\uXXXX, "/" as "\\/"): bytewise what datasets 5.2.0 (pandas 3.1.1) wrote
for these records when this test was written.
"""
import json
import os

import h5py

from cloqtest import (ASSETS, GG, M64, MODEL, WIKI_VALID, check, done, load_tok, mix64, run, seed_mix,
                      tmpdir, write_tokens)
from storecmp import load_layers, same_layers

from tokenizers import AddedToken, Tokenizer, models, normalizers, processors

NSAMPLES, SEQLEN, SEED = 16, 128, 5
COMMON = ["--model", MODEL, "--bits", "4", "--group-size", "32", "--rank", "4",
          "--nsamples", NSAMPLES, "--seqlen", SEQLEN, "--seed", SEED]
CALIB_STREAM = 0x63616C6962  # driver/cloq_calib.c's window-draw constant ("calib")
SPACE = "\u2581"

d = tmpdir()
text = open(WIKI_VALID, encoding="utf-8").read()
lines = text.split("\n")
assert lines[-1] == ""
# the `wikitext` dataset's rows: its file's lines with their newline, a blank line (" ") as ""
# (the shipped test split's rows.jsonl and wiki.test.raw are related this way)
rows = ["" if l == " " else l + "\n" for l in lines[:-1]]


def to_json(rec):
    """One record as pandas' to_json(orient="records", lines=True) writes it."""
    return json.dumps(rec, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


def write_jsonl(path, recs, blank_before=0, blank_after=0):
    with open(path, "w", encoding="ascii") as f:
        f.write("\n" * blank_before)
        for r in recs:
            f.write(to_json(r) + "\n")
        f.write(" \t\n" * blank_after)
    return path


def init(calib, out, fmt, extra=(), np_=0, env=None):
    args = ["--calib", calib, "--calib-format", fmt, "--out", out] + list(extra)
    return run(["init"] + COMMON + args, np_, env=env)


def attrs(path):
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def ok_run(p, what):
    check(p.returncode == 0, f"{what}: exit 0", 0, f"{p.returncode}: {p.stderr.strip()[:300]}")
    return p.returncode == 0


# ---- the independent tokenizer and window draw -------------------------------------------------
def llama_tok512():
    """tok512.bin as transformers' LlamaConverter would build it (as test_tokenizers.py does)."""
    pieces, scores = load_tok(os.path.join(ASSETS, "stories260K", "tok512.bin"))
    names = [{"\n<s>\n": "<s>", "\n</s>\n": "</s>"}.get(p.decode("utf-8"), p.decode("utf-8"))
             .replace(" ", SPACE) for p in pieces]
    vocab = {s: i for i, s in enumerate(names)}
    merges = []
    for piece, score in zip(names, scores):
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        merges.extend(sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]])))
    merges.sort(key=lambda m: m[2], reverse=True)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for a, b, _ in merges],
                              unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE),
                                          normalizers.Replace(" ", SPACE)])
    tk.add_special_tokens([AddedToken(s, special=True, normalized=False)
                           for s in ["<unk>", "<s>", "</s>"]])
    tk.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0",
                                                      special_tokens=[("<s>", 1)])
    # control pieces written in the text ("<unk>", frequent in this word-level text) are text, as
    # in SentencePiece and llama2.c, whose encoder cloq's llama2.c tokenizer is
    tk.encode_special_tokens = True
    return tk




def windows(stream, n, L, seed):
    """cloq's documented draw: start = u64 % (len - L + 1), splitmix64 seeded with the mix."""
    s, out = seed_mix(seed, CALIB_STREAM, 0), []
    for _ in range(n):
        s = (s + GG) & M64
        start = mix64(s) % (len(stream) - L + 1)
        out.append(stream[start:start + L])
    return out


def fnv(h, b):
    """common/cloq_hash.h: FNV-1a over 8-byte little-endian words, the tail byte by byte."""
    i = 0
    for i in range(0, len(b) - len(b) % 8, 8):
        h = ((h ^ int.from_bytes(b[i:i + 8], "little")) * 0x100000001B3) & M64
        h ^= h >> 29
    for c in b[len(b) - len(b) % 8:]:
        h = ((h ^ c) * 0x100000001B3) & M64
    return h


def digest(samples):
    h = 0xCBF29CE484222325
    for w in samples:
        h = fnv(h, len(w).to_bytes(8, "little"))
        h = fnv(h, b"".join(int(x).to_bytes(4, "little") for x in w))
    return f"{h:016x}"


# ---- (a) one record = the text format; rows = the independent windows -------------------------
txt_out = os.path.join(d, "text.h5")
ok_run(init(WIKI_VALID, txt_out, "text"), "text format on wiki.valid.tokens")
one = write_jsonl(os.path.join(d, "one.jsonl"), [{"id": 0, "text": text}])
pad = write_jsonl(os.path.join(d, "pad.jsonl"), [{"id": 0, "text": ""}, {"id": 1, "text": text},
                                                 {"id": 2, "text": ""}], 2, 3)
crlf = os.path.join(d, "crlf.jsonl")  # Windows line ends, no newline after the last line
open(crlf, "w", encoding="ascii", newline="").write(
    "\r\n".join(to_json(r) for r in [{"text": ""}, {"text": text}, {"text": ""}]))
ref_txt = load_layers(txt_out)
for name, path in [("one record", one), ("one record among blank lines and empty texts", pad),
                   ("one record, CRLF line ends, no final newline", crlf)]:
    out = os.path.join(d, os.path.basename(path) + ".h5")
    p = init(path, out, "jsonl")
    if ok_run(p, f"jsonl, {name}"):
        check(same_layers(load_layers(out), ref_txt), f"jsonl, {name}: store bitwise equal to the "
              "text format's", "equal", "differs")
        a, b = attrs(out), attrs(txt_out)
        check((a["calib_digest"], a["calib_tokens"]) == (b["calib_digest"], b["calib_tokens"]),
              f"jsonl, {name}: same calib_digest and calib_tokens", b["calib_digest"],
              a["calib_digest"])
        check((a["calib_format"], a["calib_field"]) == ("jsonl", "text") and "calib_field" not in b,
              f"jsonl, {name}: calib_format jsonl, calib_field text (none for text)",
              ("jsonl", "text"), (a["calib_format"], a.get("calib_field")))

tok = llama_tok512()
docs = [r for r in rows if r]
stream = [i for enc in tok.encode_batch(docs) for i in enc.ids]
want = windows(stream, NSAMPLES, SEQLEN, SEED)
print(f"     {len(rows)} rows, {len(docs)} with text, {len(stream)} tokens in the stream")
rows_path = write_jsonl(os.path.join(d, "rows.jsonl"), [{"text": r} for r in rows])
rows_out = os.path.join(d, "rows.h5")
p = init(rows_path, rows_out, "jsonl")
if ok_run(p, "jsonl, the validation text as wikitext rows"):
    a = attrs(rows_out)
    check(a["calib_digest"] == digest(want), "rows: calib_digest equals the digest of the "
          "independently drawn windows (HF tokenizers, one document per row)", digest(want),
          a["calib_digest"])
    check(a["calib_tokens"] == NSAMPLES * SEQLEN, "rows: calib_tokens", NSAMPLES * SEQLEN,
          a["calib_tokens"])
    line = next((l for l in p.stdout.splitlines() if l.startswith("calibration:")), "")
    w = f'field "text" of {len(rows)} records, {len(docs)} with text'
    check(w in line, "rows: the calibration line counts records and those with text", w, line)
rows_ref = load_layers(rows_out) if os.path.exists(rows_out) else {}
toks = os.path.join(d, "windows.tok")
write_tokens(toks, want)
for np_ in (0, 2):
    out = os.path.join(d, f"windows-{np_}.h5")
    if ok_run(init(toks, out, "tokens", np_=np_), f"token file of the expected windows, np={np_}"):
        check(same_layers(load_layers(out), rows_ref), f"rows: store bitwise equal to the token "
              f"file of the independently drawn windows (np={np_})", "equal", "differs")
out = os.path.join(d, "rows-2.h5")
if ok_run(init(rows_path, out, "jsonl", np_=2), "jsonl rows at 2 ranks"):
    check(same_layers(load_layers(out), rows_ref),
          "rows at 2 ranks: store equal to the plain run's", "equal", "differs")

# eval: the same stream, non-overlapping windows
LIMIT = 12
ev = [stream[k * SEQLEN:(k + 1) * SEQLEN] for k in range(LIMIT)]
ev_tok = os.path.join(d, "eval.tok")
write_tokens(ev_tok, ev)
EV = ["eval", "--model", MODEL, "--seqlen", SEQLEN, "--limit", LIMIT]
pj = run(EV + ["--data", rows_path, "--data-format", "jsonl"])
pt = run(EV + ["--data", ev_tok, "--data-format", "tokens"])
lj, lt = pj.stdout.strip().splitlines()[-1:], pt.stdout.strip().splitlines()[-1:]
check(pj.returncode == 0 and lj and lj == lt and lj[0].startswith("ppl "),
      "eval --data-format jsonl: the ppl of the token file of the stream's first windows", lt,
      f"{lj} {pj.stderr.strip()[:200]}")

# ---- (b) --calib-field -------------------------------------------------------------------------
# the text under "content"; "text" holds something else, and "n" is not a string
other = write_jsonl(os.path.join(d, "other.jsonl"),
                    [{"n": i, "text": r.upper(), "content": r} for i, r in enumerate(rows)])
out = os.path.join(d, "content.h5")
if ok_run(init(other, out, "jsonl", ["--calib-field", "content"]), "--calib-field content"):
    check(same_layers(load_layers(out), rows_ref), "--calib-field content: store equal to the rows "
          "run's", "equal", "differs")
    a = attrs(out)
    check((a["calib_field"], a["calib_digest"]) == ("content", attrs(rows_out)["calib_digest"]),
          "--calib-field content: recorded, same calib_digest", "content",
          (a["calib_field"], a["calib_digest"]))
out = os.path.join(d, "upper.h5")
if ok_run(init(other, out, "jsonl"), "the default field of the same file"):
    check(attrs(out)["calib_digest"] != attrs(rows_out)["calib_digest"],
          "the default field reads \"text\" (other windows)", "another digest", "the same")

# resume: a run stopped after block 2, then another field, changed records, the same command
out = os.path.join(d, "resume.h5")
p = init(other, out, "jsonl", ["--calib-field", "content"], env={"CLOQ_DEBUG_KILL": "block:2:0"})
check(p.returncode != 0 and os.path.isdir(out + ".partial.d"), "a jsonl run killed after block 2 "
      "leaves its work folder", "work folder", p.returncode)
p = init(other, out, "jsonl", ["--calib-field", "text"])
check(p.returncode != 0 and "--calib-field content, this run text" in p.stderr,
      "resume with another --calib-field is refused, naming it", "--calib-field ...",
      p.stderr.strip()[:300])
changed = write_jsonl(os.path.join(d, "changed.jsonl"), [{"content": r} for r in rows[:-40]])
os.replace(other, other + ".keep")
os.replace(changed, other)
p = init(other, out, "jsonl", ["--calib-field", "content"])
os.replace(other + ".keep", other)
check(p.returncode != 0 and "other calibration data" in p.stderr,
      "resume with changed records is refused (calib_digest)", "other calibration data",
      p.stderr.strip()[:300])
p = init(other, out, "jsonl", ["--calib-field", "content"])
if ok_run(p, "the same command resumes"):
    check("resuming" in p.stdout and same_layers(load_layers(out), rows_ref),
          "the resumed jsonl store equals the uninterrupted run's", "equal", "differs")

# ---- (c) bad lines and bad flags ---------------------------------------------------------------
GOOD = [to_json({"text": r}) for r in rows[:50]]


def bad_file(name, line_no, bad):
    """GOOD's lines with a blank line first (line numbers count it) and `bad` (bytes) at line_no."""
    body = [b""] + [g.encode() for g in GOOD]
    body.insert(line_no - 1, bad)
    path = os.path.join(d, name + ".jsonl")
    open(path, "wb").write(b"\n".join(body) + b"\n")
    return path


def expect_error(name, args, words, np_=0, out=None):
    p = run(args, np_, timeout=120)
    errs = [l for l in p.stderr.splitlines() if l.startswith("cloq: error:")]
    text = errs[0] if errs else p.stderr.strip()[:300]
    ok = p.returncode == 1 and len(errs) == 1 and all(w in text for w in words)
    if np_ == 0:
        ok = ok and len(p.stderr.strip().splitlines()) == 1
    check(ok, f"{name} (np={np_}): {text}", f"rc 1, one line with {words}", p.stderr.strip()[:400])
    if out:
        left = [f for f in os.listdir(os.path.dirname(out))
                if f.startswith(os.path.basename(out))]
        check(not left, f"{name}: nothing left", [], left)


bad_out = os.path.join(d, "bad.h5")
CASES = [
    ("not JSON", 7, b'{"text": "a', ["not valid JSON"]),
    ("two values on a line", 12, b'{"text": "a"} {"text": "b"}', ["not valid JSON"]),
    ("bad UTF-8", 20, b'{"text": "caf\xe9"}', ["not valid JSON"]),
    ("an array", 3, b'["text"]', ["an array, not a JSON object"]),
    ("a string", 4, b'"text"', ["a string, not a JSON object"]),
    ("field missing", 30, b'{"id": 1, "body": "x"}', ['no field "text"', '"id", "body"']),
    ("field null", 51, b'{"text": null}', ['field "text" is null, not a string']),
    ("field a number", 9, b'{"text": 5}', ['field "text" is an integer, not a string']),
    ("field an object", 10, b'{"text": {"t": "x"}}', ['field "text" is an object, not a string']),
    ("a NUL in the field", 11, b'{"text": "a\\u0000b"}', ['field "text" holds a NUL']),
]
for i, (name, line_no, bad, words) in enumerate(CASES):
    path = bad_file(f"bad{i}", line_no, bad)
    expect_error(f"jsonl {name}", ["init"] + COMMON + ["--calib", path, "--calib-format", "jsonl",
                                                       "--out", bad_out],
                 [f"{path}:{line_no}:"] + words, out=bad_out)
path = bad_file("nul-elsewhere", 5, b'{"text": "ok", "other": "a\\u0000b"}')
p = init(path, os.path.join(d, "nul-elsewhere.h5"), "jsonl")
check(p.returncode == 0, "a NUL in a field not read is no error", 0, p.stderr.strip()[:300])
path = bad_file("bad-np2", 33, b'{"text": 1.5}')
expect_error("jsonl field a real number", ["init"] + COMMON + ["--calib", path, "--calib-format",
             "jsonl", "--out", bad_out], [f"{path}:33:", "a real number"], np_=2, out=bad_out)
expect_error("eval: jsonl field missing", EV + ["--data", path, "--data-format", "jsonl",
             "--data-field", "body"], [f"{path}:2:", 'no field "body"'])

empty = os.path.join(d, "empty.jsonl")
open(empty, "w").close()
blank = os.path.join(d, "blank.jsonl")
open(blank, "w").write("\n \n\t\r\n")
no_text = write_jsonl(os.path.join(d, "notext.jsonl"), [{"text": ""}] * 3)
short = write_jsonl(os.path.join(d, "short.jsonl"), [{"text": "Once upon a time."}] * 3)
for name, path, words in [("an empty file", empty, [f"{empty} is empty"]),
                          ("blank lines only", blank, [f"{blank}: no records (3 blank lines"]),
                          ("only empty texts", no_text, ['field "text" is empty in all 3 records']),
                          ("too few tokens", short, ["fewer than --seqlen 128"])]:
    expect_error(f"jsonl {name}", ["init"] + COMMON + ["--calib", path, "--calib-format", "jsonl",
                                                       "--out", bad_out], words, out=bad_out)

for name, args, words in [
        ("--calib-field with text", ["init"] + COMMON + ["--calib", WIKI_VALID, "--calib-field",
                                                         "text", "--out", bad_out],
         ["--calib-field needs --calib-format jsonl (this run: --calib-format text)"]),
        ("--calib-field with tokens", ["init"] + COMMON + ["--calib", toks, "--calib-format",
                                                           "tokens", "--calib-field", "text",
                                                           "--out", bad_out],
         ["--calib-field needs --calib-format jsonl (this run: --calib-format tokens)"]),
        ("--calib-field empty", ["init"] + COMMON + ["--calib", rows_path, "--calib-format",
                                                     "jsonl", "--calib-field=", "--out", bad_out],
         ["--calib-field is empty"]),
        ("sweep: --calib-field with text", ["sweep", "--model", MODEL, "--calib", WIKI_VALID,
                                            "--calib-field", "text", "--bits", "4", "--ranks", "4",
                                            "--out", os.path.join(d, "sweep")],
         ["--calib-field needs --calib-format jsonl"]),
        ("--data-field with text", EV + ["--data", WIKI_VALID, "--data-field", "text"],
         ["--data-field needs --data-format jsonl (this run: --data-format text)"]),
        ("--data-field on init", ["init"] + COMMON + ["--calib", rows_path, "--calib-format",
                                                      "jsonl", "--data-field", "text", "--out",
                                                      bad_out],
         ["unknown option --data-field for 'cloq init'"])]:
    expect_error(name, args, words, out=bad_out)

done()
