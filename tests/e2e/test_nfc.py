"""cloq's NFC (io/unicode_nfc.c, the NFC normalizer of Qwen2/Qwen2.5/Qwen3 tokenizer.json files)
against Python's unicodedata and the Hugging Face `tokenizers` library, through `tok_tool nfc`
(each line of a file normalized alone), on:

  - every code point alone (all of U+0000..U+10FFFF but the surrogates and '\\n');
  - every primary composite decomposed (NFD of each character with a canonical decomposition),
    alone and followed by a mark; every first character of a composition with every second one;
  - starter + mark + mark for one mark of each combining class in every order (canonical ordering
    and blocking), and each composition pair with such a mark or a starter between or after;
  - Hangul: every L+V, LV+T and L+V+T, and these with a mark or a syllable in the way;
  - the characters newer than `tokenizers`' Unicode 9.0.0 with NFC properties, in context;
  - random strings (seeded) from all of the above, and long runs of marks.

unicodedata is Unicode 14.0.0 (Python 3.11), `tokenizers` Unicode 9.0.0 (its crate
unicode-normalization-alignments 0.1.12). Expected, per case:
  mode current    == unicodedata.normalize("NFC", s)   (the tables, exactly)
  mode tokenizers == tokenizers' NFC().normalize_str(s) (the 9.0.0 emulation, exactly)
  mode checked    == both where they agree; where they differ, refused, naming a code point
                     newer than 9.0.0 that the case holds (never a refusal where they agree).
Environment: CLOQ_TOK_TOOL (build/tests/io/tok_tool). Needs `tokenizers` in this Python.
"""
import os
import random
import re
import subprocess
import unicodedata as ud

from cloqtest import check, done, tmpdir

from tokenizers import normalizers
import tokenizers

TOOL = os.environ.get("CLOQ_TOK_TOOL", "build/tests/io/tok_tool")
HF = normalizers.NFC()
d = tmpdir()
print(f"unicodedata {ud.unidata_version}; tokenizers {tokenizers.__version__}; work dir {d}")

# ---- the characters, by their properties in unicodedata ----------------------------------------
ALL = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
canon = {}
for c in ALL:
    dd = ud.decomposition(chr(c))
    if dd and not dd.startswith("<"):
        canon[c] = [int(x, 16) for x in dd.split()]
pairs = {(v[0], v[1]): c for c, v in canon.items()
         if len(v) == 2 and ud.normalize("NFC", chr(c)) == chr(c)}
firsts = sorted({a for a, _ in pairs})
seconds = sorted({b for _, b in pairs})
marks = [c for c in ALL if ud.combining(chr(c))]
by_class = {}
for m in marks:
    by_class.setdefault(ud.combining(chr(m)), m)
reps = sorted(by_class.values())  # one mark per combining class
starters = [0x61, 0x41, 0x3B1, 0x928, 0x1100, 0xAC00, 0x2126]
excluded = [c for c, v in canon.items() if ud.normalize("NFC", chr(c)) != chr(c)]
hangul_l = range(0x1100, 0x1113)
hangul_v = range(0x1161, 0x1176)
hangul_t = range(0x11A8, 0x11C3)
lv = [0xAC00 + (l * 21 + v) * 28 for l in range(19) for v in range(21)]
print(f"{len(canon)} canonical decompositions, {len(pairs)} primary composites, {len(marks)} "
      f"marks in {len(reps)} classes, {len(excluded)} excluded from composition")

S = lambda *cs: "".join(map(chr, cs))
cases = {}


def add(group, strings):
    cases.setdefault(group, []).extend(s for s in strings if "\n" not in s)


add("code points alone", (chr(c) for c in ALL))
add("decomposed characters", (ud.normalize("NFD", chr(c)) for c in canon))
add("decomposed + mark", (ud.normalize("NFD", chr(c)) + chr(m) for c in canon for m in
                          (0x301, 0x323, 0x345, 0x302)))
add("first + second", (S(a, b) for a in firsts for b in seconds))
add("starter + mark + mark", (S(s, m1, m2) for s in starters + firsts[:40] for m1 in reps
                              for m2 in reps))
add("pair with a mark between/after", (S(a, m, b) for (a, b) in pairs for m in reps))
add("pair with a mark between/after", (S(a, b, m) for (a, b) in pairs for m in reps[::3]))
add("pair with a starter between", (S(a, x, b) for (a, b) in pairs for x in (0x61, 0x1100, 0x308)))
add("excluded and singletons, composed context", (S(0x61, c, 0x301) for c in excluded))
add("Hangul L+V", (S(l, v) for l in hangul_l for v in hangul_v))
add("Hangul LV+T", (S(s, t) for s in lv for t in hangul_t))
add("Hangul L+V+T", (S(l, v, t) for l in hangul_l for v in hangul_v for t in hangul_t))
add("Hangul blocked", (S(l, m, v) for l in hangul_l for m in (0x301, 0x302E, 0x1100)
                       for v in hangul_v))
add("Hangul blocked", (S(s, m, t) for s in lv[::7] for m in (0x301, 0x302E, 0x1161)
                       for t in hangul_t))
add("Hangul blocked", (S(s + 1, t) for s in lv[::5] for t in hangul_t))  # LVT + T
rng = random.Random(20260622)
pool = (reps + marks[::7] + seconds + firsts[::3] + excluded[::5] + list(hangul_l) +
        list(hangul_v) + list(hangul_t) + lv[::11] + [0x61, 0x65, 0x20, 0x2126, 0x212B, 0x958])



def run_tool(mode, strings, label):
    src, out = os.path.join(d, f"{label}.txt"), os.path.join(d, f"{label}.{mode}")
    with open(src, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(strings))
    p = subprocess.run([TOOL, "nfc", mode, src, out], capture_output=True, text=True)
    check(p.returncode == 0, f"tok_tool nfc {mode} {label}", "rc 0", p.stderr.strip())
    print(f"     {p.stdout.strip()}")
    lines = open(out, "rb").read().split(b"\n")[:-1]
    return [("ERR", x[1:].decode()) if x[:1] == b"\xff" else x.decode("utf-8") for x in lines]


# the characters that the tables mark newer than tokenizers' Unicode 9.0.0 (NFC_F_NEW): each must
# be normalized otherwise by tokenizers in some context (its class, decomposition or composition
# unknown to it), and every case below where the two differ must hold one
nf = os.path.join(d, "newer.txt")
p = subprocess.run([TOOL, "nfc-newer", nf], capture_output=True, text=True)
check(p.returncode == 0, "tok_tool nfc-newer", "rc 0", p.stderr.strip())
nl = [int(x, 16) for x in open(nf).read().split()]
newer = set(nl)


def contexts(c):
    """Strings in which a character's NFC properties show."""
    out = [S(c), S(0x61, c, 0x301), S(0x61, c, 0x316), S(0x61, 0x301, c), S(c, 0x301)]
    out += [S(a, b) for (a, b) in pairs if c in (a, b)]
    out += [ud.normalize("NFD", chr(x)) for x in canon if c == x or c in canon[x]]
    return out


unjustified = [hex(c) for c in nl if all(ud.normalize("NFC", s) == HF.normalize_str(s)
                                         for s in contexts(c))]
check(len(nl) > 0 and not unjustified, f"each of the {len(nl)} characters marked newer than "
      f"Unicode 9.0.0 is normalized otherwise by tokenizers in some context", "all", unjustified)
add("newer characters in context", (S(*t) for c in nl for t in (
    (c,), (0x61, c), (c, 0x301), (0x61, 0x301, c), (0x61, 0x316, c, 0x301), (0x61, c, 0x316),
    (0x61, c, c), (c, 0x61), (0x928, c, 0x93C))))
add("newer characters in context", (S(a, b) for a in nl for b in nl))
pool += nl
add("random", ("".join(chr(rng.choice(pool)) for _ in range(rng.randint(2, 8)))
               for _ in range(60000)))
# long runs of marks (io/unicode_nfc.c sorts runs of more than 32 with a counting sort)
add("long runs of marks", (chr(rng.choice(starters)) + "".join(
    chr(rng.choice(marks + [0x301, 0x316, 0x345, 0x1161, 0x11A8] * 20 + starters[:2]))
    for _ in range(rng.randint(30, 3000))) for _ in range(300)))

strings = [s for g in cases.values() for s in g]
groups = [g for g, v in cases.items() for _ in v]
print(f"{len(strings)} cases in {len(cases)} groups")
want_ud = [ud.normalize("NFC", s) for s in strings]
want_hf = [HF.normalize_str(s) for s in strings]
differ = [i for i, (a, b) in enumerate(zip(want_ud, want_hf)) if a != b]
print(f"     unicodedata and tokenizers differ on {len(differ)} cases "
      f"({len({groups[i] for i in differ})} groups)")
res = {m: run_tool(m, strings, "cases") for m in ("current", "tokenizers", "checked")}


def per_group(what, bad):
    by = {}
    for i in bad:
        by.setdefault(groups[i], []).append(i)
    for g, v in cases.items():
        b = by.get(g, [])
        n = sum(1 for x in groups if x == g)
        check(not b, f"{what}: {g}: {n - len(b)}/{n}", "all",
              [(strings[i].encode("unicode_escape").decode(), res_of(i)) for i in b[:3]])


res_of = lambda i: None
for mode, want in (("current", want_ud), ("tokenizers", want_hf)):
    got = res[mode]
    check(len(got) == len(strings), f"mode {mode}: one result per case", len(strings), len(got))
    res_of = lambda i, got=got: got[i] if i < len(got) else None
    per_group(f"mode {mode} == {'unicodedata' if mode == 'current' else 'tokenizers'}",
              [i for i in range(len(strings)) if i >= len(got) or got[i] != want[i]])

got = res["checked"]
res_of = lambda i: got[i] if i < len(got) else None
refused = [i for i, g in enumerate(got) if isinstance(g, tuple)]


def names_newer(i):
    m = re.search(r"U\+([0-9A-F]{4,6}) at byte (\d+)", got[i][1])
    return m and int(m.group(1), 16) in newer and chr(int(m.group(1), 16)) in strings[i]


bad = [i for i in range(len(strings)) if i >= len(got) or
       (want_ud[i] == want_hf[i] and got[i] != want_ud[i]) or
       (want_ud[i] != want_hf[i] and not (isinstance(got[i], tuple) and names_newer(i)))]
per_group("mode checked: equal where they agree, refused naming a newer character where not", bad)
check(set(refused) == set(differ), f"mode checked: refused exactly the {len(differ)} cases where "
      f"unicodedata and tokenizers differ", len(differ), len(refused))
check(all(any(chr(c) in strings[i] for c in newer) for i in differ), "every case where "
      "unicodedata and tokenizers differ holds a character marked newer", "all",
      [strings[i].encode("unicode_escape").decode() for i in differ
       if not any(chr(c) in strings[i] for c in newer)][:3])
one = got[refused[0]][1] if refused else ""
check("\n" not in one and "Unicode 14.0.0" in one and "9.0.0" in one and "tokenizers" in one,
      "a refusal is one line naming both Unicode versions", "U+XXXX ... 14.0.0 ... 9.0.0", one)
done()
