/* bpe_vocab.c: the tokenizers beyond llama2.c, with the ids of the Hugging Face `tokenizers` library.
 * This file: the patterns, the byte-level alphabet and building a tokenizer from a vocabulary;
 * bpe_json.c reads tokenizer.json, bpe_encode.c encodes, bpe_write.c writes tokenizer.json.
 *
 * Two kinds share io/tokenizer.c's merge core:
 *   CLOQ_TOK_BPE  byte-level BPE (GPT-2, SmolLM, Llama 3, Qwen2, Qwen 3.5): the text is split at
 *                 added tokens, then by the pre-tokenizer regexes (PCRE2); each piece's bytes
 *                 become the GPT-2 byte alphabet and are merged by merge rank, lowest first,
 *                 leftmost on ties.
 *   CLOQ_TOK_SPM  SentencePiece BPE as in Llama 2: each text segment between added tokens gets a
 *                 U+2581 in front and its spaces replaced by U+2581, then is merged as one word:
 *                 by merge rank (tokenizer.json) or, for a vocabulary with scores and no merges
 *                 (GGUF "llama"), by the score of the merged piece as llama.cpp and SentencePiece
 *                 do. Characters without a piece fall back to the <0xNN> byte pieces.
 * The pipeline is the one of `tokenizers` (Tokenizer::encode): added tokens that are not
 * normalized are found in the raw text (leftmost-longest, with their lstrip/rstrip/single_word
 * options), the normalizer (NFC through io/unicode_nfc.c; Llama 2's) runs on each remaining
 * segment, normalized added tokens are found in that, the pre-tokenizer splits the rest, the
 * model encodes each piece, the post-processor adds BOS. tests/e2e/test_tokenizers.py checks the
 * ids against `tokenizers` on all of WikiText-2.
 *
 * Regexes: `tokenizers` runs its patterns with Oniguruma, whose Unicode tables are newer than
 * PCRE2 10.42's and whose \s is exactly the White_Space property. The patterns here therefore spell
 * \s as that list, and add to \p{L}, \p{N} and \p{M} the code points that Oniguruma (as shipped in
 * `tokenizers` 0.23) classifies so and PCRE2 10.42 does not (letters, digits and marks of Unicode
 * 15 and 16; no code point is in one of these classes for PCRE2 and not for Oniguruma). Text
 * that is not valid UTF-8 is accepted: PCRE2 never matches across an invalid byte
 * (PCRE2_MATCH_INVALID_UTF), so such bytes become pieces of their own, and a "character" is a
 * lead byte with up to 3 continuation bytes, as in llama2.c. `tokenizers` itself only takes
 * valid UTF-8.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_internal.h"
#include "cloq_err.h"
#include "cloq_tok.h"
#include "tok_internal.h"
#include "unicode_nfc.h"

/* ---- patterns ------------------------------------------------------------------------------- */

/* \s of Oniguruma: the Unicode White_Space property (PCRE2's UCP \s adds U+180E) */
#define WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
/* letters and numbers that Oniguruma knows and PCRE2 10.42 (Unicode 14) does not */
#define XL                                                                                         \
  "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D4A}-"      \
  "\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}" \
  "\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}"   \
  "\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-" \
  "\\x{143FA}\\x{16100}-\\x{1611D}\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-"  \
  "\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}"  \
  "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define XN                                                                                         \
  "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}\\x{16130}-" \
  "\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"  \
  "\\x{1E5F1}-\\x{1E5FA}"
/* marks that Oniguruma knows and PCRE2 10.42 does not (Unicode 15 and 16), for qwen35 */
#define XM                                                                                         \
  "\\x{0897}\\x{0CF3}\\x{0ECE}\\x{10D69}-\\x{10D6D}\\x{10EFC}-\\x{10EFF}\\x{11241}"                \
  "\\x{113B8}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D0}"            \
  "\\x{113D2}\\x{113E1}-\\x{113E2}\\x{11F00}-\\x{11F01}\\x{11F03}\\x{11F34}-\\x{11F3A}"            \
  "\\x{11F3E}-\\x{11F42}\\x{11F5A}\\x{13440}\\x{13447}-\\x{13455}\\x{1611E}-\\x{1612F}"            \
  "\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}\\x{1E5EE}-\\x{1E5EF}"
#define LET "[\\p{L}" XL "]"
#define NUM "[\\p{N}" XN "]"
#define NOT_WS_L_N "[^" WS "\\p{L}" XL "\\p{N}" XN "]"

/* ByteLevel(use_regex): GPT-2's pattern */
static const char PAT_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?" LET "+| ?" NUM "+| ?" NOT_WS_L_N
                               "+|[" WS "]+(?![^" WS "])|[" WS "]+";
/* Llama 3's Split pattern */
static const char PAT_LLAMA3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}" XL "\\p{N}" XN "]?" LET
                                 "+|" NUM "{1,3}| ?" NOT_WS_L_N "+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS
                                 "]+(?![^" WS "])|[" WS "]+";
/* Qwen2's Split pattern (llama.cpp "qwen2"): Llama 3's with single digits */
static const char PAT_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}" XL "\\p{N}" XN
                                "]?" LET "+|" NUM "| ?" NOT_WS_L_N "+[\\r\\n]*|[" WS "]*[\\r\\n]+|["
                                WS "]+(?![^" WS "])|[" WS "]+";
/* Qwen 3.5's (llama.cpp "qwen35"): Qwen2's with combining marks (\p{M}) kept with the letters
 * before them and out of the punctuation runs */
static const char PAT_QWEN35[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}" XL "\\p{N}" XN
                                 "]?[\\p{L}\\p{M}" XL XM "]+|" NUM "| ?[^" WS "\\p{L}\\p{M}" XL XM
                                 "\\p{N}" XN "]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS
                                 "])|[" WS "]+";
/* Digits(individual_digits): every numeric character alone (Rust char::is_numeric is \p{N}) */
static const char PAT_DIGIT[] = NUM;
/* \w of Rust's regex crate, for single_word added tokens */
static const char PAT_WORD[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}" XL XN "]";

/* The patterns as tokenizer.json spells them. */
const char cloq_bpe__hf_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char cloq_bpe__hf_llama3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const char cloq_bpe__hf_qwen2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char cloq_bpe__hf_qwen35[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}"
    "\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const char cloq_bpe__space_mark[] = "\xe2\x96\x81"; /* U+2581, SentencePiece's space */

static int compile(const char *pat, const char *what, void **out) {
  int err;
  PCRE2_SIZE off;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
  if (!re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return CLOQ_FAIL("%s: cannot compile pattern (offset %zu): %s", what, (size_t)off,
                     (const char *)msg);
  }
  (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
  *out = re;
  return CLOQ_OK;
}

/* ---- byte-level alphabet (GPT-2 bytes_to_unicode) -------------------------------------------- */

/* The code point byte b is written as: printable Latin-1 bytes stand for themselves, the other 68
 * take 256, 257, ... in byte order. */
int cloq_bpe__bl_cp(int b) {
  if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
  if (b <= 0x20) return 256 + b;
  if (b <= 0xA0) return 256 + 33 + (b - 0x7F);
  return 256 + 33 + 34; /* 0xAD */
}

/* The byte code point cp stands for, or -1. */
static int bl_byte(uint32_t cp) {
  if (cp < 256) return cloq_bpe__bl_cp((int)cp) == (int)cp ? (int)cp : -1;
  if (cp < 256 + 33) return (int)cp - 256;
  if (cp < 256 + 33 + 34) return 0x7F + ((int)cp - 256 - 33);
  if (cp == 256 + 33 + 34) return 0xAD;
  return -1;
}

size_t cloq_bpe__put_utf8(uint32_t c, char *o) {
  if (c < 0x80) {
    o[0] = (char)c;
    return 1;
  }
  if (c < 0x800) {
    o[0] = (char)(0xC0 | (c >> 6));
    o[1] = (char)(0x80 | (c & 63));
    return 2;
  }
  if (c < 0x10000) {
    o[0] = (char)(0xE0 | (c >> 12));
    o[1] = (char)(0x80 | ((c >> 6) & 63));
    o[2] = (char)(0x80 | (c & 63));
    return 3;
  }
  o[0] = (char)(0xF0 | (c >> 18));
  o[1] = (char)(0x80 | ((c >> 12) & 63));
  o[2] = (char)(0x80 | ((c >> 6) & 63));
  o[3] = (char)(0x80 | (c & 63));
  return 4;
}

/* The length of the character at s[0..n): a lead (or stray) byte and at most 3 continuation
 * bytes, as llama2.c splits code points. */
size_t cloq_bpe__char_len(const char *s, size_t n) {
  size_t k = 1;
  while (k < n && k < 4 && ((unsigned char)s[k] & 0xC0) == 0x80) k++;
  return k;
}

/* The code point of a well-formed character of k bytes, or UINT32_MAX. */
uint32_t cloq_bpe__decode_cp(const char *s, size_t k) {
  const unsigned char *u = (const unsigned char *)s;
  if (k == 1) return u[0] < 0x80 ? u[0] : UINT32_MAX;
  if (k == 2 && (u[0] & 0xE0) == 0xC0) return (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F);
  if (k == 3 && (u[0] & 0xF0) == 0xE0)
    return (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
  if (k == 4 && (u[0] & 0xF8) == 0xF0)
    return (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
           (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
  return UINT32_MAX;
}

/* Unicode White_Space (Rust's \s, used by lstrip/rstrip). */
int cloq_bpe__is_ws(uint32_t c) {
  return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

/* ---- building a tokenizer --------------------------------------------------------------------- */

static uint64_t mix64(uint64_t key) {
  uint64_t h = key * 0x9e3779b97f4a7c15ull;
  return h ^ (h >> 29);
}

/* The pair -> rank hash over merge_a/merge_b; a pair listed twice keeps its last rank, as the
 * HashMap that `tokenizers` collects the merges into does. */
int cloq_bpe__build_merge_index(cloq_tok *t) {
  uint64_t cap = 16;
  while (cap < 2 * (uint64_t)t->n_merges) cap *= 2;
  CLOQ_ALLOC(t->mkey, (int64_t)cap, "merge table");
  CLOQ_ALLOC(t->mrank, (int64_t)cap, "merge table");
  t->mmask = cap - 1;
  for (int64_t r = 0; r < t->n_merges; r++) {
    uint64_t key = ((uint64_t)(uint32_t)t->merge_a[r] << 32 | (uint32_t)t->merge_b[r]) + 1;
    for (uint64_t h = mix64(key) & t->mmask;; h = (h + 1) & t->mmask) {
      if (t->mkey[h] == 0 || t->mkey[h] == key) {
        t->mkey[h] = key;
        t->mrank[h] = (int32_t)r;
        break;
      }
    }
  }
  return CLOQ_OK;
}

/* Resolves merge r = (left, right) into ids; what names it in errors. */
int cloq_bpe__add_merge(cloq_tok *t, int64_t r, const char *l, size_t ll, const char *rr, size_t rl,
                        const char *what) {
  int32_t a = cloq_tok__lookup(t, l, ll), b = cloq_tok__lookup(t, rr, rl);
  CLOQ_CHECK(a >= 0, "%s: merge %lld (\"%.*s\" \"%.*s\"): \"%.*s\" is not in the vocabulary", what,
             (long long)r, (int)ll, l, (int)rl, rr, (int)ll, l);
  CLOQ_CHECK(b >= 0, "%s: merge %lld (\"%.*s\" \"%.*s\"): \"%.*s\" is not in the vocabulary", what,
             (long long)r, (int)ll, l, (int)rl, rr, (int)rl, rr);
  char *cat = malloc(ll + rl + 1);
  CLOQ_CHECK(cat, "out of memory");
  memcpy(cat, l, ll);
  memcpy(cat + ll, rr, rl);
  int32_t c = cloq_tok__lookup(t, cat, ll + rl);
  free(cat);
  CLOQ_CHECK(c >= 0, "%s: merge %lld (\"%.*s\" \"%.*s\"): the merged piece \"%.*s%.*s\" is not in "
             "the vocabulary", what, (long long)r, (int)ll, l, (int)rl, rr, (int)ll, l, (int)rl,
             rr);
  t->merge_a[r] = a;
  t->merge_b[r] = b;
  t->merge_new[r] = c;
  return CLOQ_OK;
}

/* Copies n pieces into one blob. pieces[i] may be NULL only when holes are allowed (never). */
int cloq_bpe__set_pieces(cloq_tok *t, int64_t n, const char *const *pieces, const size_t *lens) {
  size_t total = 0;
  for (int64_t i = 0; i < n; i++) total += lens[i] + 1;
  t->vocab_size = n;
  CLOQ_ALLOC(t->blob, (int64_t)total + 1, "tokenizer pieces");
  CLOQ_ALLOC(t->piece, n, "tokenizer pieces");
  CLOQ_ALLOC(t->plen, n, "tokenizer pieces");
  CLOQ_ALLOC(t->in_model, n, "tokenizer pieces");
  size_t pos = 0;
  for (int64_t i = 0; i < n; i++) {
    t->piece[i] = t->blob + pos;
    memcpy(t->blob + pos, pieces[i], lens[i]);
    t->blob[pos + lens[i]] = '\0';
    CLOQ_CHECK(lens[i] < INT32_MAX, "piece %lld is too long", (long long)i);
    t->plen[i] = (int32_t)lens[i];
    pos += lens[i] + 1;
    t->in_model[i] = 1;
  }
  return CLOQ_OK;
}

int cloq_bpe__has_normalizer(const cloq_tok *t) {
  return t->nfc || t->prepend || t->replace_space;
}

/* NFC (t->nfc; CLOQ_NFC_CHECKED, so that a text whose NFC differs in `tokenizers`' Unicode 9.0.0
 * is refused), then U+2581 in front (t->prepend and n > 0) and each ' ' as U+2581
 * (t->replace_space). NFC commutes with both: neither ' ' nor U+2581 composes with anything. */
int cloq_bpe__normalize(const cloq_tok *t, const char *s, size_t n, size_t base, char **out,
                        size_t *outlen) {
  char *nfc = NULL;
  if (t->nfc) {
    CLOQ_CALL(cloq_nfc(s, n, CLOQ_NFC_CHECKED, base, &nfc, &n));
    if (!t->prepend && !t->replace_space) {
      *out = nfc;
      *outlen = n;
      return CLOQ_OK;
    }
    s = nfc;
  }
  size_t cap = 3 * n + 4, k = 0;
  char *o = malloc(cap);
  if (!o) free(nfc);
  CLOQ_CHECK(o, "tokenizer: out of memory normalizing %zu bytes", n);
  if (t->prepend && n > 0) {
    memcpy(o, cloq_bpe__space_mark, 3);
    k = 3;
  }
  for (size_t i = 0; i < n; i++) {
    if (s[i] == ' ' && t->replace_space) {
      memcpy(o + k, cloq_bpe__space_mark, 3);
      k += 3;
    } else {
      o[k++] = s[i];
    }
  }
  o[k] = '\0';
  free(nfc);
  *out = o;
  *outlen = k;
  return CLOQ_OK;
}

static int cmp_added(const void *pa, const void *pb, void *ctx) {
  const cloq_tok *t = ctx;
  const tok_added *a = &t->added[*(const int32_t *)pa], *b = &t->added[*(const int32_t *)pb];
  unsigned ca = (unsigned char)a->pattern[0], cb = (unsigned char)b->pattern[0];
  if (ca != cb) return ca < cb ? -1 : 1;
  if (a->plen != b->plen) return a->plen > b->plen ? -1 : 1; /* longest first */
  if (a->special != b->special) return a->special ? -1 : 1;
  int32_t ia = *(const int32_t *)pa, ib = *(const int32_t *)pb;
  return ia < ib ? -1 : ia > ib;
}

/* After t->added is filled: the normalized patterns, and per set (raw, normalized) the tokens
 * sorted by first byte, then longest first, so that the first that matches at a position is the
 * leftmost-longest match. Among equal patterns special tokens come first, as `tokenizers` lists
 * them first. */
static int index_added(cloq_tok *t) {
  int need_word = 0;
  for (int64_t i = 0; i < t->n_added; i++) {
    tok_added *a = &t->added[i];
    if (a->normalized && cloq_bpe__has_normalizer(t)) {
      size_t nl;
      CLOQ_CALL(cloq_bpe__normalize(t, a->content, strlen(a->content), 0, &a->pattern, &nl));
      a->plen = (int32_t)nl;
    } else {
      a->pattern = strdup(a->content);
      CLOQ_CHECK(a->pattern, "out of memory");
      a->plen = (int32_t)strlen(a->content);
    }
    need_word |= a->single_word;
  }
  for (int set = 0; set < 2; set++) {
    int64_t cnt = 0;
    CLOQ_ALLOC(t->added_order[set], t->n_added + 1, "added tokens");
    for (int64_t i = 0; i < t->n_added; i++)
      if (t->added[i].plen > 0 && t->added[i].normalized == set)
        t->added_order[set][cnt++] = (int32_t)i;
    qsort_r(t->added_order[set], (size_t)cnt, sizeof(int32_t), cmp_added, t);
    int64_t k = 0;
    for (int c = 0; c <= 256; c++) {
      while (k < cnt && (unsigned char)t->added[t->added_order[set][k]].pattern[0] < c) k++;
      t->added_first[set][c] = k;
    }
  }
  if (need_word && !t->re_word) CLOQ_CALL(compile(PAT_WORD, "single_word", &t->re_word));
  return CLOQ_OK;
}

/* Per-id decoded bytes: BPE maps the byte alphabet back (a piece with any other character is its
 * own bytes, as the ByteLevel decoder does); SPM turns U+2581 into ' ' and <0xNN> into the byte. */
static int build_decode(cloq_tok *t) {
  int64_t V = t->vocab_size;
  size_t total = 0;
  for (int64_t i = 0; i < V; i++) total += (size_t)t->plen[i];
  CLOQ_ALLOC(t->dec, (int64_t)total + 1, "tokenizer decode table");
  CLOQ_ALLOC(t->dec_off, V, "tokenizer decode table");
  CLOQ_ALLOC(t->dec_len, V, "tokenizer decode table");
  int16_t *byte_of = NULL;
  if (t->kind == CLOQ_TOK_SPM) {
    CLOQ_ALLOC(byte_of, V, "tokenizer decode table");
    for (int b = 0; b < 256; b++)
      if (t->byte_id[b] >= 0) byte_of[t->byte_id[b]] = (int16_t)(b + 1);
  }
  size_t pos = 0;
  for (int64_t i = 0; i < V; i++) {
    const char *p = t->piece[i];
    size_t n = (size_t)t->plen[i], k = 0;
    char *o = t->dec + pos;
    if (t->kind == CLOQ_TOK_SPM) {
      if (byte_of[i]) {
        o[k++] = (char)(byte_of[i] - 1);
      } else {
        for (size_t j = 0; j < n;) {
          if (n - j >= 3 && !memcmp(p + j, cloq_bpe__space_mark, 3)) {
            o[k++] = ' ';
            j += 3;
          } else {
            o[k++] = p[j++];
          }
        }
      }
    } else {
      int all = 1;
      for (size_t j = 0; j < n && all;) {
        size_t cl = cloq_bpe__char_len(p + j, n - j);
        uint32_t cp = cloq_bpe__decode_cp(p + j, cl);
        int b = cp == UINT32_MAX ? -1 : bl_byte(cp);
        if (b < 0) all = 0;
        else o[k++] = (char)b;
        j += cl;
      }
      if (!all) {
        memcpy(o, p, n);
        k = n;
      }
    }
    t->dec_off[i] = (int64_t)pos;
    t->dec_len[i] = (int32_t)k;
    pos += k;
  }
  free(byte_of);
  return CLOQ_OK;
}

int cloq_bpe__setup_pre(cloq_tok *t, int pre, const char *what) {
  t->pre = pre;
  t->n_re = 0;
  if (pre == TOK_PRE_SMOLLM) CLOQ_CALL(compile(PAT_DIGIT, what, &t->re[t->n_re++]));
  if (pre == TOK_PRE_GPT2 || pre == TOK_PRE_SMOLLM)
    CLOQ_CALL(compile(PAT_GPT2, what, &t->re[t->n_re++]));
  if (pre == TOK_PRE_LLAMA3) CLOQ_CALL(compile(PAT_LLAMA3, what, &t->re[t->n_re++]));
  if (pre == TOK_PRE_QWEN2) CLOQ_CALL(compile(PAT_QWEN2, what, &t->re[t->n_re++]));
  if (pre == TOK_PRE_QWEN35) CLOQ_CALL(compile(PAT_QWEN35, what, &t->re[t->n_re++]));
  return CLOQ_OK;
}

/* The byte pieces / byte alphabet ids, the decode table, the added-token index: what every
 * SPM/BPE tokenizer needs once its pieces, kind and merges are set. */
int cloq_bpe__finish(cloq_tok *t) {
  for (int b = 0; b < 256; b++) {
    char s[8];
    size_t n;
    if (t->kind == CLOQ_TOK_SPM) {
      n = (size_t)snprintf(s, sizeof s, "<0x%02X>", b);
    } else {
      n = cloq_bpe__put_utf8((uint32_t)cloq_bpe__bl_cp(b), s);
    }
    t->byte_id[b] = cloq_tok__lookup(t, s, n);
  }
  if (t->unk_name && t->unk_id < 0) t->unk_id = cloq_tok__lookup(t, t->unk_name, strlen(t->unk_name));
  CLOQ_CALL(build_decode(t));
  return index_added(t);
}

void cloq_tok__free_hf(cloq_tok *t) {
  free(t->type);
  free(t->in_model);
  free(t->unk_name);
  free(t->merge_a);
  free(t->merge_b);
  free(t->merge_new);
  free(t->mkey);
  free(t->mrank);
  for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
  if (t->re_word) pcre2_code_free(t->re_word);
  for (int64_t i = 0; i < t->n_added; i++) {
    free(t->added[i].content);
    free(t->added[i].pattern);
  }
  free(t->added);
  free(t->added_order[0]);
  free(t->added_order[1]);
  free(t->dec);
  free(t->dec_off);
  free(t->dec_len);
}

cloq_tok *cloq_bpe__new_tok(int kind) {
  cloq_tok *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->kind = kind;
  t->bos_id = t->eos_id = t->unk_id = t->pad_id = -1;
  t->space_id = -1;
  return t;
}

/* ---- cloq_tok_from_vocab --------------------------------------------------------------------- */

static int pre_from_name(const char *nm, const char *name, int *pre) {
  if (!name || !strcmp(name, "gpt2") || !strcmp(name, "gpt-2")) *pre = TOK_PRE_GPT2;
  else if (!strcmp(name, "smollm") || !strcmp(name, "starcoder")) *pre = TOK_PRE_SMOLLM;
  else if (!strcmp(name, "llama-bpe") || !strcmp(name, "llama3")) *pre = TOK_PRE_LLAMA3;
  else if (!strcmp(name, "qwen2") || !strcmp(name, "deepseek-r1-qwen")) *pre = TOK_PRE_QWEN2;
  else if (!strcmp(name, "qwen35")) *pre = TOK_PRE_QWEN35;
  else
    return CLOQ_FAIL("%s: pre-tokenizer \"%s\" is not supported (gpt2, smollm, starcoder, "
                     "llama-bpe, qwen2, deepseek-r1-qwen, qwen35 are)", nm, name);
  return CLOQ_OK;
}

static int from_vocab(const cloq_tok_vocab *v, cloq_tok *t) {
  const char *nm = v->name ? v->name : "tokenizer vocabulary";
  int64_t n = v->n_tokens;
  CLOQ_CHECK(n > 0 && n <= INT32_MAX && v->tokens, "%s: %lld tokens", nm,
             (long long)n);
  size_t *lens = malloc((size_t)n * sizeof *lens);
  CLOQ_CHECK(lens, "out of memory");
  for (int64_t i = 0; i < n; i++) {
    if (!v->tokens[i]) {
      free(lens);
      return CLOQ_FAIL("%s: token %lld is NULL", nm, (long long)i);
    }
    lens[i] = strlen(v->tokens[i]);
  }
  int rc = cloq_bpe__set_pieces(t, n, v->tokens, lens);
  free(lens);
  CLOQ_CALL(rc);
  if (v->types) {
    CLOQ_ALLOC(t->type, n, "token types");
    memcpy(t->type, v->types, (size_t)n * sizeof *t->type);
  }
  if (v->scores) {
    CLOQ_ALLOC(t->score, n, "token scores");
    memcpy(t->score, v->scores, (size_t)n * sizeof *t->score);
    for (int64_t i = 0; i < n; i++)
      CLOQ_CHECK(t->score[i] == t->score[i], "%s: the score of token %lld "
                 "(\"%s\") is NaN", nm, (long long)i, t->piece[i]);
  }
  const int32_t *ids[4] = {&v->bos_id, &v->eos_id, &v->unk_id, &v->pad_id};
  static const char *const names[4] = {"bos", "eos", "unk", "pad"};
  for (int k = 0; k < 4; k++)
    CLOQ_CHECK(*ids[k] >= -1 && *ids[k] < n, "%s: %s id %d is out of range "
               "(%lld tokens)", nm, names[k], *ids[k], (long long)n);
  t->bos_id = v->bos_id;
  t->eos_id = v->eos_id;
  t->unk_id = v->unk_id;
  t->pad_id = v->pad_id;
  t->add_bos = v->add_bos != 0;
  CLOQ_CHECK(!t->add_bos || t->bos_id >= 0, "%s: add_bos is set but there is "
             "no bos id", nm);
  CLOQ_CALL(cloq_tok__build_index(t));
  if (v->n_merges > 0) {
    CLOQ_CHECK(v->merges, "%s: %lld merges but no merge list", nm,
               (long long)v->n_merges);
    t->n_merges = v->n_merges;
    CLOQ_ALLOC(t->merge_a, v->n_merges, "merges");
    CLOQ_ALLOC(t->merge_b, v->n_merges, "merges");
    CLOQ_ALLOC(t->merge_new, v->n_merges, "merges");
    for (int64_t r = 0; r < v->n_merges; r++) {
      const char *m = v->merges[r];
      CLOQ_CHECK(m, "%s: merge %lld is NULL", nm, (long long)r);
      /* llama.cpp splits at the first space after the first byte */
      const char *sp = m[0] ? strchr(m + 1, ' ') : NULL;
      CLOQ_CHECK(sp, "%s: merge %lld (\"%s\") is not \"left right\"", nm,
                 (long long)r, m);
      CLOQ_CALL(cloq_bpe__add_merge(t, r, m, (size_t)(sp - m), sp + 1, strlen(sp + 1),
                          nm));
    }
    CLOQ_CALL(cloq_bpe__build_merge_index(t));
  }
  if (t->kind == CLOQ_TOK_SPM) {
    CLOQ_CHECK(v->scores || v->n_merges > 0, "%s: SentencePiece vocabulary "
               "without scores or merges", nm);
    t->merge_mode = v->n_merges > 0 ? TOK_MERGE_RANKS : TOK_MERGE_SPANS;
    t->prepend = v->add_space_prefix != 0;
    t->replace_space = 1;
    t->byte_fallback = 1;
    t->fuse_unk = 1;
  } else {
    t->merge_mode = TOK_MERGE_RANKS;
    int pre = 0;
    CLOQ_CALL(pre_from_name(nm, v->pre, &pre));
    CLOQ_CALL(cloq_bpe__setup_pre(t, pre, "pre-tokenizer"));
    t->ignore_merges = pre == TOK_PRE_LLAMA3; /* llama.cpp and Llama 3's tokenizer.json */
  }
  if (t->unk_id >= 0) {
    t->unk_name = strdup(t->piece[t->unk_id]);
    CLOQ_CHECK(t->unk_name, "out of memory");
  }
  /* unknown, control and user-defined tokens are matched in the text as added tokens */
  if (t->type) {
    CLOQ_ALLOC(t->added, n, "added tokens");
    for (int64_t i = 0; i < n; i++) {
      int ty = t->type[i];
      if ((ty == 2 || ty == 3 || ty == 4) && t->plen[i] > 0) {
        tok_added *a = &t->added[t->n_added++];
        a->content = strdup(t->piece[i]);
        CLOQ_CHECK(a->content, "out of memory");
        a->id = (int32_t)i;
        a->special = ty != 4;
      }
    }
  }
  return cloq_bpe__finish(t);
}

int cloq_tok_from_vocab(const cloq_tok_vocab *v, cloq_tok **out) {
  *out = NULL;
  CLOQ_CHECK(v->kind == CLOQ_TOK_SPM || v->kind == CLOQ_TOK_BPE,
             "tokenizer vocabulary: kind %d is not CLOQ_TOK_SPM or CLOQ_TOK_BPE", v->kind);
  cloq_tok *t = cloq_bpe__new_tok(v->kind);
  CLOQ_CHECK(t, "out of memory");
  int rc = from_vocab(v, t);
  if (rc != CLOQ_OK) {
    cloq_tok_free(&t);
    return rc;
  }
  *out = t;
  return CLOQ_OK;
}
