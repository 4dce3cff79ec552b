#!/usr/bin/env python3
"""gen-unicode-nfc.py: writes io/unicode_nfc_table.h, the data of io/unicode_nfc.c (Unicode
Normalization Form C, as the NFC normalizer of Hugging Face `tokenizers` applies it to the text of
Qwen2 / Qwen2.5 / Qwen3 tokenizer.json files).

Everything comes from Python's unicodedata (its version is written into the header as
CLOQ_NFC_UNICODE_VERSION; Python 3.11 has 14.0.0):
  - the canonical combining class of every code point (unicodedata.combining);
  - the full canonical decomposition of every code point that has one (unicodedata.decomposition,
    applied recursively; compatibility mappings, which start with "<tag>", are not canonical),
    checked against unicodedata.normalize("NFD"); Hangul syllables are left to the algorithm;
  - the primary composites: the characters with a two-character canonical decomposition that NFC
    leaves alone (unicodedata.normalize("NFC", c) == c). The others are Full_Composition_Exclusion:
    singletons (U+212B), non-starter decompositions (U+0344) and CompositionExclusions.txt (U+0958)
    (Unicode 14.0.0: 941 composites; 1035, 4 and 81 excluded).

`tokenizers` (0.23 and earlier) normalizes with the Rust crate unicode-normalization-alignments
0.1.12, whose tables are Unicode 9.0.0 (CLOQ_NFC_TOKENIZERS_VERSION). Normalization stability
guarantees that a text made only of characters assigned in 9.0.0 has the same NFC in both; the
characters that differ are the ones assigned after 9.0.0 that have a combining class, a canonical
decomposition or a part in a canonical composition in the newer tables. They are marked
NFC_F_NEW; io/unicode_nfc.c normalizes a stretch of text holding one both ways (NEW characters
inert for 9.0.0) and refuses the text where the results differ. Which characters 9.0.0 had comes
from perl's Unicode::UCD (Present_In=9.0, from DerivedAge.txt), the only part not in unicodedata.

Usage: python3 scripts/gen-unicode-nfc.py [OUT]   (default: io/unicode_nfc_table.h of this repo)
"""
import bisect
import os
import subprocess
import sys
import unicodedata as ud

TOKENIZERS_VERSION = "9.0.0"  # unicode-normalization-alignments 0.1.12: UNICODE_VERSION (9, 0, 0)
SHIFT = 6                     # code points per stage-2 block: 1 << SHIFT
HANGUL = range(0xAC00, 0xD7A4)
F_SECOND, F_BOUNDARY, F_NEW = 1, 2, 4  # must match io/unicode_nfc.c


def present_in(version):
    """Sorted inversion list of the code points assigned in `version` (perl's Unicode::UCD)."""
    p = subprocess.run(["perl", "-MUnicode::UCD=prop_invlist", "-e",
                        f'print join(" ", prop_invlist("Present_In={version}"))'],
                       capture_output=True, text=True, check=True)
    inv = [int(x) for x in p.stdout.split()]
    assert len(inv) > 100, f"perl returned no Present_In={version} list: {p.stderr}"
    return inv


def canonical(c):
    d = ud.decomposition(chr(c))
    return [int(x, 16) for x in d.split()] if d and not d.startswith("<") else []


def full_decomposition(c):
    d = canonical(c)
    return [x for y in d for x in (full_decomposition(y) or [y])] if d else []


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "io", "unicode_nfc_table.h"))
    cps = range(0x110000)
    ccc = [ud.combining(chr(c)) for c in cps]
    full = {}
    for c in cps:
        if c in HANGUL or 0xD800 <= c < 0xE000:
            continue
        f = full_decomposition(c)
        if f:
            assert "".join(map(chr, f)) == ud.normalize("NFD", chr(c)), hex(c)
            full[c] = f
    # primary composites and the exclusions
    pairs, singles, nonstarter, excluded = {}, 0, 0, 0
    for c in cps:
        d = canonical(c)
        if not d:
            continue
        composes = ud.normalize("NFC", chr(c)) == chr(c)
        if len(d) == 1:
            singles += 1
            assert not composes, hex(c)
        elif ccc[c] or ccc[d[0]]:
            nonstarter += 1
            assert not composes, hex(c)
        elif not composes:
            excluded += 1
        else:
            assert len(d) == 2 and (d[0], d[1]) not in pairs, hex(c)
            pairs[(d[0], d[1])] = c
    print(f"Unicode {ud.unidata_version}: {len(full)} decompositions, {len(pairs)} primary "
          f"composites, excluded: {singles} singletons, {nonstarter} non-starter, "
          f"{excluded} listed")
    second = {b for _, b in pairs} | set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    first = {a for a, _ in pairs}

    pv = TOKENIZERS_VERSION.rsplit(".", 1)[0]  # perl's name of the version: "9.0"
    inv9 = present_in(pv)
    old = lambda c: bisect.bisect_right(inv9, c) % 2 == 1
    relevant = lambda c: ccc[c] or c in full or c in first or c in second
    new = {c for c in cps if relevant(c) and not old(c) and not 0xD800 <= c < 0xE000}
    for c, f in full.items():  # stability: an old character decomposes into old ones
        assert not old(c) or not new & set(f), hex(c)
    for (a, b), c in pairs.items():  # so 9.0.0 tables never compose into a newer character
        assert old(c) or a in new or b in new, hex(c)
    print(f"{len(new)} characters newer than Unicode {TOKENIZERS_VERSION} with NFC properties")

    def boundary(c):
        """NFC of the text before c and of the text from c on can be taken apart."""
        if ccc[c] or c in second:
            return False
        h = full.get(c, [c])[0]
        return ccc[h] == 0 and h not in second

    # records: (ccc, flags, decomposition); record 0 is the inert code point
    recs, rec_of, pool = [(0, F_BOUNDARY, ())], {(0, F_BOUNDARY, ()): 0}, []
    pool_of = {}
    per_cp = [0] * 0x110000
    for c in cps:
        if c in HANGUL:
            continue  # the algorithm (and the boundary) is in io/unicode_nfc.c
        flags = (F_SECOND if c in second else 0) | (F_BOUNDARY if boundary(c) else 0) | (
            F_NEW if c in new else 0)
        key = (ccc[c], flags, tuple(full.get(c, ())))
        if key not in rec_of:
            if key[2] and key[2] not in pool_of:
                pool_of[key[2]] = len(pool)
                pool.extend(key[2])
            rec_of[key] = len(recs)
            recs.append(key)
        per_cp[c] = rec_of[key]
    last = max(c for c in cps if per_cp[c]) + 1
    nblocks1 = (last + (1 << SHIFT) - 1) >> SHIFT
    blocks, block_of, stage1 = [], {}, []
    for b in range(nblocks1):
        blk = tuple(per_cp[b << SHIFT:(b + 1) << SHIFT])
        if blk not in block_of:
            block_of[blk] = len(blocks)
            blocks.append(blk)
        stage1.append(block_of[blk])
    assert len(recs) < 65536 and len(blocks) < 65536 and len(pool) < 65536
    print(f"{len(recs)} records, {len(pool)} pool entries, stage 1 {len(stage1)} entries, "
          f"{len(blocks)} blocks of {1 << SHIFT}")

    def rows(vals, fmt, width=98):
        lines, cur = [], "  "
        for v in vals:
            s = fmt(v) + ","
            if len(cur) + len(s) + 1 > width:
                lines.append(cur.rstrip())
                cur = "  "
            cur += s + " "
        lines.append(cur.rstrip())
        return "\n".join(lines)

    keys = sorted(pairs)
    with open(out, "w") as f:
        f.write(f"""/* unicode_nfc_table.h: GENERATED by scripts/gen-unicode-nfc.py from Python's
 * unicodedata (Unicode {ud.unidata_version}) and perl's Unicode::UCD (Present_In={pv}).
 * Do not edit; rerun the script. Included by io/unicode_nfc.c only.
 * {len(full)} canonical decompositions, {len(pairs)} primary composites, {len(new)} characters
 * newer than Unicode {TOKENIZERS_VERSION} with NFC properties (NFC_F_NEW). */
#define CLOQ_NFC_UNICODE_VERSION "{ud.unidata_version}"
#define CLOQ_NFC_TOKENIZERS_VERSION "{TOKENIZERS_VERSION}"
#define NFC_SHIFT {SHIFT}
#define NFC_LIMIT 0x{nblocks1 << SHIFT:X} /* code points from here on are inert */

/* record of a code point: nfc_stage2[nfc_stage1[cp >> NFC_SHIFT] << NFC_SHIFT | low bits] */
static const uint16_t nfc_stage1[{len(stage1)}] = {{
{rows(stage1, str)}
}};
static const uint16_t nfc_stage2[{len(blocks) << SHIFT}] = {{
{rows([r for b in blocks for r in b], str)}
}};
/* {{ccc, flags, length of the full decomposition, its offset in nfc_pool}} */
static const nfc_rec nfc_recs[{len(recs)}] = {{
{rows([(r[0], r[1], len(r[2]), pool_of.get(r[2], 0)) for r in recs], lambda r: "{%d,%d,%d,%d}" % r)}
}};
static const uint32_t nfc_pool[{len(pool)}] = {{
{rows(pool, lambda v: "0x%X" % v)}
}};
/* primary composites: (first << 21 | second) ascending, and the composite */
static const uint64_t nfc_pair_key[{len(keys)}] = {{
{rows(keys, lambda k: "0x%Xull" % (k[0] << 21 | k[1]))}
}};
static const uint32_t nfc_pair_val[{len(keys)}] = {{
{rows([pairs[k] for k in keys], lambda v: "0x%X" % v)}
}};
""")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
