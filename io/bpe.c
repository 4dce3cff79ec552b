/* bpe.c: the tokenizers beyond llama2.c, with the ids of the Hugging Face `tokenizers` library.
 *
 * Two kinds share io/tokenizer.c's merge core:
 *   CLOQ_TOK_BPE  byte-level BPE (GPT-2, SmolLM, Llama 3): the text is split at added tokens, then
 *                 by the pre-tokenizer regexes (PCRE2); each piece's bytes become the GPT-2 byte
 *                 alphabet and are merged by merge rank, lowest first, leftmost on ties.
 *   CLOQ_TOK_SPM  SentencePiece BPE as in Llama 2: each text segment between added tokens gets a
 *                 U+2581 in front and its spaces replaced by U+2581, then is merged as one word:
 *                 by merge rank (tokenizer.json) or, for a vocabulary with scores and no merges
 *                 (GGUF "llama"), by the score of the merged piece as llama.cpp and SentencePiece
 *                 do. Characters without a piece fall back to the <0xNN> byte pieces.
 * The pipeline is the one of `tokenizers` (Tokenizer::encode): added tokens that are not
 * normalized are found in the raw text (leftmost-longest, with their lstrip/rstrip/single_word
 * options), the normalizer runs on each remaining segment, normalized added tokens are found in
 * that, the pre-tokenizer splits the rest, the model encodes each piece, the post-processor adds
 * BOS. tests/e2e/test_tokenizers.py checks the ids against `tokenizers` on all of WikiText-2.
 *
 * Regexes: `tokenizers` runs its patterns with Oniguruma, whose Unicode tables are newer than
 * PCRE2 10.42's and whose \s is exactly the White_Space property. The patterns here therefore spell
 * \s as that list, and add to \p{L} and \p{N} the code points that Oniguruma (as shipped in
 * `tokenizers` 0.23) classifies so and PCRE2 10.42 does not (letters and digits of Unicode 15 and
 * 16). Text that is not valid UTF-8 is accepted: PCRE2 never matches across an invalid byte
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

#include "cloq_err.h"
#include "cloq_io.h"
#include "tok_internal.h"

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
/* Digits(individual_digits): every numeric character alone (Rust char::is_numeric is \p{N}) */
static const char PAT_DIGIT[] = NUM;
/* \w of Rust's regex crate, for single_word added tokens */
static const char PAT_WORD[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}" XL XN "]";

/* The patterns as tokenizer.json spells them. */
static const char HF_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char HF_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char SPACE_MARK[] = "\xe2\x96\x81"; /* U+2581, SentencePiece's space */

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
static int bl_cp(int b) {
  if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
  if (b <= 0x20) return 256 + b;
  if (b <= 0xA0) return 256 + 33 + (b - 0x7F);
  return 256 + 33 + 34; /* 0xAD */
}

/* The byte code point cp stands for, or -1. */
static int bl_byte(uint32_t cp) {
  if (cp < 256) return bl_cp((int)cp) == (int)cp ? (int)cp : -1;
  if (cp < 256 + 33) return (int)cp - 256;
  if (cp < 256 + 33 + 34) return 0x7F + ((int)cp - 256 - 33);
  if (cp == 256 + 33 + 34) return 0xAD;
  return -1;
}

static size_t put_utf8(uint32_t c, char *o) {
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
static size_t char_len(const char *s, size_t n) {
  size_t k = 1;
  while (k < n && k < 4 && ((unsigned char)s[k] & 0xC0) == 0x80) k++;
  return k;
}

/* The code point of a well-formed character of k bytes, or UINT32_MAX. */
static uint32_t decode_cp(const char *s, size_t k) {
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
static int is_ws(uint32_t c) {
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
static int build_merge_index(cloq_tok *t) {
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
static int add_merge(cloq_tok *t, int64_t r, const char *l, size_t ll, const char *rr, size_t rl,
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
static int set_pieces(cloq_tok *t, int64_t n, const char *const *pieces, const size_t *lens) {
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

/* The normalizer of the SPM kind on s[0..n) into *out (malloc'd): U+2581 in front (when
 * t->prepend and n > 0), each ' ' as U+2581 (when t->replace_space). */
static int normalize(const cloq_tok *t, const char *s, size_t n, char **out, size_t *outlen) {
  size_t cap = 3 * n + 4, k = 0;
  char *o = malloc(cap);
  CLOQ_CHECK(o, "tokenizer: out of memory normalizing %zu bytes", n);
  if (t->prepend && n > 0) {
    memcpy(o, SPACE_MARK, 3);
    k = 3;
  }
  for (size_t i = 0; i < n; i++) {
    if (s[i] == ' ' && t->replace_space) {
      memcpy(o + k, SPACE_MARK, 3);
      k += 3;
    } else {
      o[k++] = s[i];
    }
  }
  o[k] = '\0';
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
    if (a->normalized && t->kind == CLOQ_TOK_SPM) {
      size_t nl;
      CLOQ_CALL(normalize(t, a->content, strlen(a->content), &a->pattern, &nl));
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
          if (n - j >= 3 && !memcmp(p + j, SPACE_MARK, 3)) {
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
        size_t cl = char_len(p + j, n - j);
        uint32_t cp = decode_cp(p + j, cl);
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

static int setup_pre(cloq_tok *t, int pre, const char *what) {
  t->pre = pre;
  t->n_re = 0;
  if (pre == TOK_PRE_SMOLLM) CLOQ_CALL(compile(PAT_DIGIT, what, &t->re[t->n_re++]));
  if (pre == TOK_PRE_GPT2 || pre == TOK_PRE_SMOLLM)
    CLOQ_CALL(compile(PAT_GPT2, what, &t->re[t->n_re++]));
  if (pre == TOK_PRE_LLAMA3) CLOQ_CALL(compile(PAT_LLAMA3, what, &t->re[t->n_re++]));
  return CLOQ_OK;
}

/* The byte pieces / byte alphabet ids, the decode table, the added-token index: what every
 * SPM/BPE tokenizer needs once its pieces, kind and merges are set. */
static int finish(cloq_tok *t) {
  for (int b = 0; b < 256; b++) {
    char s[8];
    size_t n;
    if (t->kind == CLOQ_TOK_SPM) {
      n = (size_t)snprintf(s, sizeof s, "<0x%02X>", b);
    } else {
      n = put_utf8((uint32_t)bl_cp(b), s);
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

static cloq_tok *new_tok(int kind) {
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
  else
    return CLOQ_FAIL("%s: pre-tokenizer \"%s\" is not supported (gpt2, smollm, starcoder, "
                     "llama-bpe are)", nm, name);
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
  int rc = set_pieces(t, n, v->tokens, lens);
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
      CLOQ_CALL(add_merge(t, r, m, (size_t)(sp - m), sp + 1, strlen(sp + 1),
                          nm));
    }
    CLOQ_CALL(build_merge_index(t));
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
    CLOQ_CALL(setup_pre(t, pre, "pre-tokenizer"));
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
  return finish(t);
}

int cloq_tok_from_vocab(const cloq_tok_vocab *v, cloq_tok **out) {
  *out = NULL;
  CLOQ_CHECK(v->kind == CLOQ_TOK_SPM || v->kind == CLOQ_TOK_BPE,
             "tokenizer vocabulary: kind %d is not CLOQ_TOK_SPM or CLOQ_TOK_BPE", v->kind);
  cloq_tok *t = new_tok(v->kind);
  CLOQ_CHECK(t, "out of memory");
  int rc = from_vocab(v, t);
  if (rc != CLOQ_OK) {
    cloq_tok_free(&t);
    return rc;
  }
  *out = t;
  return CLOQ_OK;
}

/* ---- tokenizer.json --------------------------------------------------------------------------- */

static const char *jtype(const json_t *o) {
  const char *s = json_string_value(json_object_get(o, "type"));
  return s ? s : "(no type)";
}

static int jbool(const json_t *o, const char *key, int def) {
  json_t *v = json_object_get(o, key);
  return json_is_boolean(v) ? json_is_true(v) : def;
}

/* A string of tokenizer.json that holds a piece: copied out with its length (jansson rejects
 * strings with NUL, so strlen is the length). */
static const char *jstr(const json_t *o, const char *key) {
  return json_string_value(json_object_get(o, key));
}

static int is_replace_space(const json_t *n) {
  return !strcmp(jtype(n), "Replace") &&
         json_string_value(json_object_get(json_object_get(n, "pattern"), "String")) &&
         !strcmp(json_string_value(json_object_get(json_object_get(n, "pattern"), "String")), " ") &&
         jstr(n, "content") && !strcmp(jstr(n, "content"), SPACE_MARK);
}

static int is_prepend_mark(const json_t *n) {
  return !strcmp(jtype(n), "Prepend") && jstr(n, "prepend") &&
         !strcmp(jstr(n, "prepend"), SPACE_MARK);
}

/* normalizer: null, or Llama 2's Sequence[Prepend(U+2581), Replace(' ', U+2581)] (either order,
 * or the Replace alone). */
static int parse_normalizer(cloq_tok *t, const json_t *n, const char *path) {
  if (!n || json_is_null(n)) return CLOQ_OK;
  CLOQ_CHECK(json_is_object(n), "%s: \"normalizer\" is not an object", path);
  const json_t *list = n;
  size_t cnt = 1;
  int seq = !strcmp(jtype(n), "Sequence");
  if (seq) {
    list = json_object_get(n, "normalizers");
    CLOQ_CHECK(json_is_array(list), "%s: normalizer Sequence without \"normalizers\"", path);
    cnt = json_array_size(list);
  }
  for (size_t i = 0; i < cnt; i++) {
    const json_t *e = seq ? json_array_get(list, i) : list;
    if (is_prepend_mark(e) && !t->prepend) t->prepend = 1;
    else if (is_replace_space(e) && !t->replace_space) t->replace_space = 1;
    else
      return CLOQ_FAIL("%s: normalizer %s is not supported (only Llama 2's Prepend(\"\xe2\x96\x81\") "
                       "and Replace(\" \", \"\xe2\x96\x81\") are)", path, jtype(e));
  }
  CLOQ_CHECK(t->replace_space, "%s: normalizer Prepend without Replace(\" \", \"\xe2\x96\x81\") is "
             "not supported", path);
  return CLOQ_OK;
}

/* pre_tokenizer: ByteLevel (gpt2); Sequence[Digits(individual_digits), ByteLevel] (smollm);
 * Sequence[Split(Llama 3 regex, Isolated), ByteLevel(use_regex false)] (llama-bpe);
 * Split(GPT-2 regex) + ByteLevel(use_regex false) is gpt2 too. Metaspace (SentencePiece BPE as
 * transformers converts Llama tokenizers with legacy=False) sets t->meta. */
static int parse_pre(cloq_tok *t, const json_t *p, const char *path, int *byte_level) {
  *byte_level = 0;
  if (!p || json_is_null(p)) return CLOQ_OK;
  CLOQ_CHECK(json_is_object(p), "%s: \"pre_tokenizer\" is not an object", path);
  const json_t *list = p;
  size_t cnt = 1;
  int seq = !strcmp(jtype(p), "Sequence");
  if (seq) {
    list = json_object_get(p, "pretokenizers");
    CLOQ_CHECK(json_is_array(list), "%s: pre_tokenizer Sequence without \"pretokenizers\"", path);
    cnt = json_array_size(list);
  }
  if (!strcmp(jtype(p), "Metaspace")) {
    const char *rep = jstr(p, "replacement");
    CLOQ_CHECK(rep && !strcmp(rep, SPACE_MARK), "%s: pre_tokenizer Metaspace with replacement "
               "\"%s\" is not supported (U+2581 is)", path, rep ? rep : "(none)");
    const char *scheme = jstr(p, "prepend_scheme");
    if (!scheme) t->meta_scheme = jbool(p, "add_prefix_space", 1) ? 2 : 0; /* older files */
    else if (!strcmp(scheme, "first")) t->meta_scheme = 1;
    else if (!strcmp(scheme, "always")) t->meta_scheme = 2;
    else if (!strcmp(scheme, "never")) t->meta_scheme = 0;
    else return CLOQ_FAIL("%s: pre_tokenizer Metaspace prepend_scheme \"%s\" is not supported",
                          path, scheme);
    t->meta = 1;
    t->meta_split = jbool(p, "split", 1);
    return CLOQ_OK;
  }
  int digits = 0, split = 0; /* split: 1 gpt2 regex, 2 llama3 regex */
  for (size_t i = 0; i < cnt; i++) {
    const json_t *e = seq ? json_array_get(list, i) : list;
    const char *ty = jtype(e);
    CLOQ_CHECK(!*byte_level, "%s: pre_tokenizer %s after ByteLevel is not supported", path, ty);
    if (!strcmp(ty, "Digits") && !digits && !split) {
      digits = jbool(e, "individual_digits", 0) ? 1 : 2;
    } else if (!strcmp(ty, "Split") && !split && !digits) {
      const char *re = json_string_value(json_object_get(json_object_get(e, "pattern"), "Regex"));
      const char *beh = jstr(e, "behavior");
      CLOQ_CHECK(re, "%s: pre_tokenizer Split with a String pattern is not supported", path);
      CLOQ_CHECK(beh && !strcmp(beh, "Isolated") && !jbool(e, "invert", 0),
                 "%s: pre_tokenizer Split with behavior %s%s is not supported (Isolated is)", path,
                 beh ? beh : "(none)", jbool(e, "invert", 0) ? " and invert" : "");
      if (!strcmp(re, HF_LLAMA3)) split = 2;
      else if (!strcmp(re, HF_GPT2)) split = 1;
      else
        return CLOQ_FAIL("%s: pre_tokenizer Split regex \"%.60s%s\" is not supported (the GPT-2 "
                         "and Llama 3 patterns are)", path, re, strlen(re) > 60 ? "..." : "");
    } else if (!strcmp(ty, "ByteLevel")) {
      *byte_level = 1;
      t->pre_prefix_space = jbool(e, "add_prefix_space", 1);
      int use_regex = jbool(e, "use_regex", 1);
      if (split) {
        CLOQ_CHECK(split == 2 || !t->pre_prefix_space, "%s: pre_tokenizer Split(GPT-2 regex) + "
                   "ByteLevel(add_prefix_space) is not supported", path);
        CLOQ_CHECK(!use_regex, "%s: pre_tokenizer Split followed by ByteLevel with use_regex is "
                   "not supported", path);
        CLOQ_CALL(setup_pre(t, split == 2 ? TOK_PRE_LLAMA3 : TOK_PRE_GPT2, path));
      } else if (digits) {
        CLOQ_CHECK(use_regex && digits == 1, "%s: pre_tokenizer Digits(individual_digits=%s) + "
                   "ByteLevel(use_regex=%s) is not supported", path, digits == 1 ? "true" : "false",
                   use_regex ? "true" : "false");
        CLOQ_CALL(setup_pre(t, TOK_PRE_SMOLLM, path));
      } else {
        CLOQ_CHECK(use_regex, "%s: pre_tokenizer ByteLevel without use_regex is not supported",
                   path);
        CLOQ_CALL(setup_pre(t, TOK_PRE_GPT2, path));
      }
    } else {
      return CLOQ_FAIL("%s: pre_tokenizer %s%s is not supported (ByteLevel, Sequence[Digits, "
                       "ByteLevel], Sequence[Split, ByteLevel], Metaspace are)", path, ty,
                       seq ? " inside a Sequence" : "");
    }
  }
  CLOQ_CHECK(*byte_level, "%s: pre_tokenizer without ByteLevel or Metaspace is not supported",
             path);
  return CLOQ_OK;
}

/* The id of piece s among the model vocabulary and the added tokens, or -1. */
static int32_t find_any(const cloq_tok *t, const char *s) {
  int32_t id = cloq_tok__lookup(t, s, strlen(s));
  if (id >= 0) return id;
  for (int64_t i = 0; i < t->n_added; i++)
    if (!strcmp(t->added[i].content, s)) return t->added[i].id;
  return -1;
}

/* post_processor: null, ByteLevel, TemplateProcessing with one special token before $A (BOS),
 * or a Sequence of these. */
static int parse_post(cloq_tok *t, const json_t *p, const char *path) {
  if (!p || json_is_null(p)) return CLOQ_OK;
  const char *ty = jtype(p);
  if (!strcmp(ty, "ByteLevel")) return CLOQ_OK;
  if (!strcmp(ty, "Sequence")) {
    const json_t *list = json_object_get(p, "processors");
    CLOQ_CHECK(json_is_array(list), "%s: post_processor Sequence without \"processors\"", path);
    for (size_t i = 0; i < json_array_size(list); i++)
      CLOQ_CALL(parse_post(t, json_array_get(list, i), path));
    return CLOQ_OK;
  }
  CLOQ_CHECK(!strcmp(ty, "TemplateProcessing"), "%s: post_processor %s is not supported "
             "(TemplateProcessing, ByteLevel are)", path, ty);
  const json_t *single = json_object_get(p, "single");
  const json_t *specials = json_object_get(p, "special_tokens");
  CLOQ_CHECK(json_is_array(single), "%s: post_processor TemplateProcessing without \"single\"",
             path);
  int seen_a = 0, before = 0;
  for (size_t i = 0; i < json_array_size(single); i++) {
    const json_t *e = json_array_get(single, i);
    const json_t *sp = json_object_get(e, "SpecialToken");
    if (json_object_get(e, "Sequence")) {
      seen_a = 1;
      continue;
    }
    CLOQ_CHECK(sp, "%s: post_processor TemplateProcessing: item %zu of \"single\" is neither "
               "SpecialToken nor Sequence", path, i);
    CLOQ_CHECK(!seen_a, "%s: post_processor TemplateProcessing adds tokens after the text (an "
               "EOS): not supported", path);
    const char *name = jstr(sp, "id");
    const json_t *entry = json_object_get(specials, name ? name : "");
    const json_t *idl = json_object_get(entry, "ids");
    CLOQ_CHECK(name && json_is_array(idl) && json_array_size(idl) == 1 &&
               json_is_integer(json_array_get(idl, 0)),
               "%s: post_processor TemplateProcessing: special token \"%s\" needs one id in "
               "\"special_tokens\"", path, name ? name : "(none)");
    json_int_t id = json_integer_value(json_array_get(idl, 0));
    CLOQ_CHECK(id >= 0 && id < t->vocab_size, "%s: post_processor: id %lld of \"%s\" is out of "
               "range", path, (long long)id, name);
    CLOQ_CHECK(++before == 1, "%s: post_processor TemplateProcessing adds %d tokens before the "
               "text: only one (BOS) is supported", path, before);
    t->bos_id = (int32_t)id;
    t->add_bos = 1;
  }
  CLOQ_CHECK(seen_a, "%s: post_processor TemplateProcessing without $A", path);
  return CLOQ_OK;
}

/* bos/eos/unk/pad from DIR/tokenizer_config.json next to the tokenizer.json, when there is one
 * (the names may be strings or {"content": ...}). Only fills the ids; encoding is tokenizer.json's. */
static void roles_from_config(cloq_tok *t, const char *path) {
  const char *slash = strrchr(path, '/');
  size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
  char *cfg = malloc(dl + 32);
  if (!cfg) return;
  memcpy(cfg, path, dl);
  strcpy(cfg + dl, "tokenizer_config.json");
  json_t *root = json_load_file(cfg, 0, NULL);
  free(cfg);
  if (!root) return;
  static const char *const keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
  int32_t *dst[4] = {&t->bos_id, &t->eos_id, &t->unk_id, &t->pad_id};
  for (int k = 0; k < 4; k++) {
    const json_t *v = json_object_get(root, keys[k]);
    const char *s = json_is_string(v) ? json_string_value(v) : jstr(v, "content");
    if (!s) continue;
    int32_t id = find_any(t, s);
    if (id < 0) continue;
    if (k == 0 && t->add_bos) continue; /* the post-processor's BOS is what encoding adds */
    if (k == 2 && t->unk_name) continue; /* model.unk_token is what the model falls back to */
    *dst[k] = id;
  }
  json_decref(root);
}

static int32_t first_present(const cloq_tok *t, const char *const *names) {
  for (; *names; names++) {
    int32_t id = find_any(t, *names);
    if (id >= 0) return id;
  }
  return -1;
}

static int parse_json(cloq_tok *t, const json_t *root, const char *path) {
  CLOQ_CHECK(json_is_object(root), "%s: the top level is not a JSON object", path);
  const json_t *model = json_object_get(root, "model");
  CLOQ_CHECK(json_is_object(model), "%s: no \"model\" object: not a tokenizer.json", path);
  const char *mt = jstr(model, "type");
  CLOQ_CHECK(!mt || !strcmp(mt, "BPE"), "%s: model type %s is not supported (BPE is)", path, mt);
  const json_t *vocab = json_object_get(model, "vocab");
  const json_t *merges = json_object_get(model, "merges");
  CLOQ_CHECK(json_is_object(vocab), "%s: model.vocab is missing or not an object", path);
  CLOQ_CHECK(json_is_array(merges), "%s: model.merges is missing or not an array", path);
  const json_t *dropout = json_object_get(model, "dropout");
  CLOQ_CHECK(!dropout || json_is_null(dropout) || json_number_value(dropout) == 0.0,
             "%s: model.dropout %g is not supported (encoding would be random)", path,
             json_number_value(dropout));
  const char *cont = jstr(model, "continuing_subword_prefix");
  const char *suff = jstr(model, "end_of_word_suffix");
  CLOQ_CHECK(!cont || !*cont, "%s: model.continuing_subword_prefix \"%s\" is not supported", path,
             cont);
  CLOQ_CHECK(!suff || !*suff, "%s: model.end_of_word_suffix \"%s\" is not supported", path, suff);
  t->byte_fallback = jbool(model, "byte_fallback", 0);
  t->fuse_unk = jbool(model, "fuse_unk", 0);
  t->ignore_merges = jbool(model, "ignore_merges", 0);
  const char *unk = jstr(model, "unk_token");
  if (unk) {
    t->unk_name = strdup(unk);
    CLOQ_CHECK(t->unk_name, "out of memory");
  }

  /* ids: the model vocabulary, then added tokens that are not in it */
  const json_t *added = json_object_get(root, "added_tokens");
  CLOQ_CHECK(!added || json_is_null(added) || json_is_array(added),
             "%s: \"added_tokens\" is not an array", path);
  size_t nadd = json_is_array(added) ? json_array_size(added) : 0;
  json_int_t maxid = -1;
  const char *key;
  const json_t *val;
  json_object_foreach((json_t *)vocab, key, val) {
    CLOQ_CHECK(json_is_integer(val) && json_integer_value(val) >= 0 &&
               json_integer_value(val) < INT32_MAX,
               "%s: model.vocab[\"%s\"] is not a valid id", path, key);
    if (json_integer_value(val) > maxid) maxid = json_integer_value(val);
  }
  for (size_t i = 0; i < nadd; i++) {
    const json_t *a = json_array_get(added, i);
    const json_t *id = json_object_get(a, "id");
    CLOQ_CHECK(json_is_integer(id) && json_integer_value(id) >= 0 &&
               json_integer_value(id) < INT32_MAX && jstr(a, "content"),
               "%s: added_tokens[%zu] needs an \"id\" and a \"content\"", path, i);
    if (json_integer_value(id) > maxid) maxid = json_integer_value(id);
  }
  CLOQ_CHECK(maxid >= 0, "%s: model.vocab is empty", path);
  int64_t n = (int64_t)maxid + 1;
  const char **pieces = calloc((size_t)n, sizeof *pieces);
  size_t *lens = calloc((size_t)n, sizeof *lens);
  unsigned char *from_model = calloc((size_t)n, 1);
  int rc = pieces && lens && from_model ? CLOQ_OK : CLOQ_FAIL("%s: out of memory", path);
  json_object_foreach((json_t *)vocab, key, val) {
    if (rc != CLOQ_OK) break;
    json_int_t id = json_integer_value(val);
    if (pieces[id])
      rc = CLOQ_FAIL("%s: model.vocab: id %lld is given to both \"%s\" and \"%s\"", path,
                     (long long)id, pieces[id], key);
    pieces[id] = key;
    lens[id] = strlen(key);
    from_model[id] = 1;
  }
  for (size_t i = 0; i < nadd && rc == CLOQ_OK; i++) {
    const json_t *a = json_array_get(added, i);
    json_int_t id = json_integer_value(json_object_get(a, "id"));
    if (!pieces[id]) {
      pieces[id] = jstr(a, "content");
      lens[id] = strlen(pieces[id]);
    }
  }
  for (int64_t i = 0; i < n && rc == CLOQ_OK; i++)
    if (!pieces[i]) rc = CLOQ_FAIL("%s: id %lld has no piece (ids must be 0..%lld without holes)",
                                   path, (long long)i, (long long)n - 1);
  if (rc == CLOQ_OK) rc = set_pieces(t, n, pieces, lens);
  if (rc == CLOQ_OK) memcpy(t->in_model, from_model, (size_t)n);
  free(pieces);
  free(lens);
  free(from_model);
  CLOQ_CALL(rc);
  CLOQ_CALL(cloq_tok__build_index(t));

  /* merges: "left right" strings (tokenizers < 0.20) or ["left", "right"] pairs */
  int64_t nm = (int64_t)json_array_size(merges);
  t->n_merges = nm;
  CLOQ_ALLOC(t->merge_a, nm + 1, "merges");
  CLOQ_ALLOC(t->merge_b, nm + 1, "merges");
  CLOQ_ALLOC(t->merge_new, nm + 1, "merges");
  for (int64_t r = 0; r < nm; r++) {
    const json_t *m = json_array_get(merges, (size_t)r);
    if (json_is_string(m)) {
      const char *s = json_string_value(m);
      const char *sp = strchr(s, ' ');
      CLOQ_CHECK(sp && !strchr(sp + 1, ' '), "%s: model.merges[%lld] (\"%s\") is not \"left "
                 "right\"", path, (long long)r, s);
      CLOQ_CALL(add_merge(t, r, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), path));
    } else {
      const char *l = json_string_value(json_array_get(m, 0));
      const char *rr = json_string_value(json_array_get(m, 1));
      CLOQ_CHECK(json_is_array(m) && json_array_size(m) == 2 && l && rr,
                 "%s: model.merges[%lld] is neither \"left right\" nor [left, right]", path,
                 (long long)r);
      CLOQ_CALL(add_merge(t, r, l, strlen(l), rr, strlen(rr), path));
    }
  }
  CLOQ_CALL(build_merge_index(t));
  t->merge_mode = TOK_MERGE_RANKS;

  /* added tokens, with their options */
  if (nadd) CLOQ_ALLOC(t->added, (int64_t)nadd, "added tokens");
  for (size_t i = 0; i < nadd; i++) {
    const json_t *a = json_array_get(added, i);
    const char *content = jstr(a, "content");
    if (!*content) continue; /* `tokenizers` ignores empty ones */
    tok_added *d = &t->added[t->n_added++];
    d->content = strdup(content);
    CLOQ_CHECK(d->content, "out of memory");
    d->id = (int32_t)json_integer_value(json_object_get(a, "id"));
    d->special = (unsigned char)jbool(a, "special", 0);
    d->normalized = (unsigned char)jbool(a, "normalized", !d->special);
    d->lstrip = (unsigned char)jbool(a, "lstrip", 0);
    d->rstrip = (unsigned char)jbool(a, "rstrip", 0);
    d->single_word = (unsigned char)jbool(a, "single_word", 0);
  }

  /* the kind: ByteLevel pre-tokenizer, or Llama 2's normalizer and no pre-tokenizer */
  int byte_level;
  CLOQ_CALL(parse_normalizer(t, json_object_get(root, "normalizer"), path));
  CLOQ_CALL(parse_pre(t, json_object_get(root, "pre_tokenizer"), path, &byte_level));
  if (byte_level) {
    CLOQ_CHECK(!t->replace_space, "%s: a normalizer together with a ByteLevel pre_tokenizer is not "
               "supported", path);
    t->kind = CLOQ_TOK_BPE;
  } else if (t->meta) {
    CLOQ_CHECK(!t->replace_space, "%s: a normalizer together with a Metaspace pre_tokenizer is not "
               "supported", path);
    t->kind = CLOQ_TOK_SPM;
  } else {
    CLOQ_CHECK(t->replace_space, "%s: neither a ByteLevel pre_tokenizer (byte-level BPE) nor "
               "Llama 2's normalizer or a Metaspace pre_tokenizer (SentencePiece BPE): not "
               "supported", path);
    t->kind = CLOQ_TOK_SPM;
  }
  CLOQ_CALL(parse_post(t, json_object_get(root, "post_processor"), path));
  const json_t *trunc = json_object_get(root, "truncation");
  if (trunc && !json_is_null(trunc))
    cloq_warn("%s: \"truncation\" is ignored: cloq encodes whole texts", path);
  CLOQ_CALL(finish(t));

  /* roles: the post-processor's BOS, model.unk_token, tokenizer_config.json, usual names */
  static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|endoftext|>", NULL};
  static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", NULL};
  if (t->bos_id < 0) t->bos_id = first_present(t, bos_names);
  t->eos_id = first_present(t, eos_names);
  roles_from_config(t, path);
  return CLOQ_OK;
}

int cloq_tok__load_json(const char *path, const char *buf, size_t len, cloq_tok **out) {
  *out = NULL;
  json_error_t err;
  json_t *root = json_loadb(buf, len, 0, &err);
  CLOQ_CHECK(root, "%s: malformed JSON at line %d column %d: %s", path, err.line, err.column,
             err.text);
  cloq_tok *t = new_tok(CLOQ_TOK_BPE);
  int rc = t ? parse_json(t, root, path) : CLOQ_FAIL("%s: out of memory", path);
  json_decref(root);
  if (rc != CLOQ_OK) {
    cloq_tok_free(&t);
    return rc;
  }
  *out = t;
  return CLOQ_OK;
}

/* ---- encoding --------------------------------------------------------------------------------- */

typedef struct {
  const cloq_tok *t;
  tok_merger m;
  int32_t *out;
  int64_t nout, capout;
  int split_only;      /* cloq_tok_split: record piece lengths instead of encoding */
  int64_t *lens;
  int64_t nlens, caplens;
  char *wbuf;          /* a piece in the byte alphabet, or after Metaspace */
  size_t wcap;
  const char *text0;   /* the text being encoded (Metaspace "first" prepends only at its start) */
  pcre2_match_data *md;
} enc;

static int emit(enc *s, int32_t id) {
  if (s->nout == s->capout) {
    int64_t c = s->capout ? 2 * s->capout : 1024;
    int32_t *g = realloc(s->out, (size_t)c * sizeof *g);
    CLOQ_CHECK(g, "tokenizer: out of memory (%lld ids)", (long long)c);
    s->out = g;
    s->capout = c;
  }
  s->out[s->nout++] = id;
  return CLOQ_OK;
}

static int emit_len(enc *s, size_t n) {
  if (s->nlens == s->caplens) {
    int64_t c = s->caplens ? 2 * s->caplens : 256;
    int64_t *g = realloc(s->lens, (size_t)c * sizeof *g);
    CLOQ_CHECK(g, "tokenizer: out of memory (%lld pieces)", (long long)c);
    s->lens = g;
    s->caplens = c;
  }
  s->lens[s->nlens++] = (int64_t)n;
  return CLOQ_OK;
}

static int grow(char **buf, size_t *cap, size_t need) {
  if (need <= *cap) return CLOQ_OK;
  size_t c = *cap ? *cap : 256;
  while (c < need) c *= 2;
  char *g = realloc(*buf, c);
  CLOQ_CHECK(g, "tokenizer: out of memory (%zu bytes)", c);
  *buf = g;
  *cap = c;
  return CLOQ_OK;
}

/* The surviving symbols of positions 0..cnt-1, in order. */
static int emit_survivors(enc *s, int64_t cnt) {
  const cloq_tok *t = s->t;
  for (int64_t i = 0; i < cnt; i++) {
    int32_t id = s->m.tok[i];
    if (id >= 0) {
      CLOQ_CALL(emit(s, id));
    } else if (id == TOK_UNKNOWN) { /* a character no merge absorbed: its bytes */
      for (int32_t k = 0; k < s->m.slen[i]; k++) {
        int32_t b = t->byte_id[(unsigned char)s->m.text[s->m.off[i] + k]];
        if (b < 0) b = t->unk_id;
        CLOQ_CHECK(b >= 0, "tokenizer: byte 0x%02X has no <0x%02X> piece and there is no unk "
                   "token", (unsigned char)s->m.text[s->m.off[i] + k],
                   (unsigned char)s->m.text[s->m.off[i] + k]);
        CLOQ_CALL(emit(s, b));
      }
    }
  }
  return CLOQ_OK;
}

/* The BPE model of `tokenizers` on one word w[0..n) (BPE::merge_word + Word::merge_all):
 * characters looked up in the model vocabulary, else byte fallback, else unk (fused when
 * fuse_unk), else dropped; then merges by rank. */
static int hf_word(enc *s, const char *w, size_t n) {
  const cloq_tok *t = s->t;
  if (t->ignore_merges) {
    int32_t id = cloq_tok__lookup(t, w, n);
    if (id >= 0) return emit(s, id);
  }
  CLOQ_CALL(cloq_tok__merger_reserve(&s->m, (int64_t)n + 1));
  int32_t *tok = s->m.tok;
  int64_t cnt = 0;
  int32_t unk = -1; /* a pending unk symbol */
  for (size_t i = 0; i < n;) {
    size_t cl = char_len(w + i, n - i);
    int32_t id = cloq_tok__lookup(t, w + i, cl);
    if (id >= 0) {
      if (unk >= 0) tok[cnt++] = unk;
      unk = -1;
      tok[cnt++] = id;
    } else {
      int bytes_ok = t->byte_fallback;
      for (size_t k = 0; k < cl && bytes_ok; k++)
        bytes_ok = t->byte_id[(unsigned char)w[i + k]] >= 0;
      if (bytes_ok) { /* note: a pending unk is not flushed first, as in `tokenizers` */
        for (size_t k = 0; k < cl; k++) tok[cnt++] = t->byte_id[(unsigned char)w[i + k]];
      } else if (t->unk_name) {
        CLOQ_CHECK(t->unk_id >= 0, "tokenizer: unk_token \"%s\" is not in the vocabulary",
                   t->unk_name);
        if (unk >= 0 && !t->fuse_unk) tok[cnt++] = unk;
        unk = t->unk_id;
      }
    }
    i += cl;
  }
  if (unk >= 0) tok[cnt++] = unk;
  CLOQ_CALL(cloq_tok__merge_range(&s->m, 0, cnt));
  return emit_survivors(s, cnt);
}

/* SentencePiece by score (llama.cpp's llm_tokenizer_spm): characters, known or not, merged while
 * the text of two neighbours is a piece, highest score first; what stays unknown is bytes. */
static int spm_word(enc *s, const char *w, size_t n) {
  const cloq_tok *t = s->t;
  CLOQ_CALL(cloq_tok__merger_reserve(&s->m, (int64_t)n + 1));
  int64_t cnt = 0;
  s->m.text = w;
  for (size_t i = 0; i < n;) {
    size_t cl = char_len(w + i, n - i);
    int32_t id = cloq_tok__lookup(t, w + i, cl);
    s->m.tok[cnt] = id >= 0 ? id : TOK_UNKNOWN;
    s->m.off[cnt] = (int64_t)i;
    s->m.slen[cnt] = (int32_t)cl;
    cnt++;
    i += cl;
  }
  CLOQ_CALL(cloq_tok__merge_range(&s->m, 0, cnt));
  return emit_survivors(s, cnt);
}

/* A pre-tokenized piece of a byte-level tokenizer: into the byte alphabet, then the model. */
static int bl_word(enc *s, const char *w, size_t n) {
  if (s->split_only) return emit_len(s, n);
  CLOQ_CALL(grow(&s->wbuf, &s->wcap, 2 * n + 1));
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += put_utf8((uint32_t)bl_cp((unsigned char)w[i]), s->wbuf + k);
  return hf_word(s, s->wbuf, k);
}

static int pre_split(enc *s, int step, const char *str, size_t n);

/* Pre-tokenizer step `step` on str[0..n): the regex's matches and the text between them are the
 * pieces of the next step (SplitDelimiterBehavior::Isolated); after the last step, the model. */
static int split_step(enc *s, int step, const char *str, size_t n) {
  const cloq_tok *t = s->t;
  if (step == t->n_re) return bl_word(s, str, n);
  const pcre2_code *re = t->re[step];
  size_t pos = 0, start = 0;
  while (start < n) {
    int mr = pcre2_match(re, (PCRE2_SPTR)str, n, start, 0, s->md, NULL);
    if (mr == PCRE2_ERROR_NOMATCH) break;
    CLOQ_CHECK(mr >= 0, "tokenizer: pre-tokenizer regex failed (PCRE2 error %d)", mr);
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
    size_t b = ov[0], e = ov[1];
    if (e == b) { /* no pattern here matches empty; kept safe anyway */
      start = b + char_len(str + b, n - b);
      continue;
    }
    if (b > pos) CLOQ_CALL(pre_split(s, step + 1, str + pos, b - pos));
    CLOQ_CALL(pre_split(s, step + 1, str + b, e - b));
    pos = start = e;
  }
  if (pos < n) CLOQ_CALL(pre_split(s, step + 1, str + pos, n - pos));
  return CLOQ_OK;
}

/* ByteLevel's add_prefix_space: a ' ' in front of each piece that reaches ByteLevel without one
 * (ByteLevel is the last regex for gpt2 and smollm, after the Split for llama-bpe). */
static int pre_split(enc *s, int step, const char *str, size_t n) {
  const cloq_tok *t = s->t;
  int bl_step = t->pre == TOK_PRE_LLAMA3 ? t->n_re : t->n_re - 1;
  if (step != bl_step || !t->pre_prefix_space || str[0] == ' ') return split_step(s, step, str, n);
  char *copy = malloc(n + 1);
  CLOQ_CHECK(copy, "tokenizer: out of memory");
  copy[0] = ' ';
  memcpy(copy + 1, str, n);
  int rc = split_step(s, step, copy, n + 1);
  free(copy);
  return rc;
}

static int spm_model(enc *s, const char *w, size_t n) {
  if (s->split_only) return emit_len(s, n);
  return s->t->merge_mode == TOK_MERGE_SPANS ? spm_word(s, w, n) : hf_word(s, w, n);
}

/* The Metaspace pre-tokenizer: ' ' becomes U+2581, one is prepended (scheme "always", or "first"
 * when the piece starts the text) unless the piece starts with one, and with split each U+2581
 * starts a new piece (SplitDelimiterBehavior::MergedWithNext). */
static int metaspace(enc *s, const char *str, size_t n) {
  const cloq_tok *t = s->t;
  CLOQ_CALL(grow(&s->wbuf, &s->wcap, 3 * n + 4));
  char *w = s->wbuf;
  size_t k = 0;
  int pre = t->meta_scheme == 2 || (t->meta_scheme == 1 && str == s->text0);
  if (pre && !(str[0] == ' ' || (n >= 3 && !memcmp(str, SPACE_MARK, 3)))) {
    memcpy(w, SPACE_MARK, 3);
    k = 3;
  }
  for (size_t i = 0; i < n; i++) {
    if (str[i] == ' ') {
      memcpy(w + k, SPACE_MARK, 3);
      k += 3;
    } else {
      w[k++] = str[i];
    }
  }
  if (!t->meta_split) return spm_model(s, w, k);
  /* hf_word and spm_word do not touch wbuf: the pieces can stay in it */
  size_t start = 0;
  for (size_t i = 1; i + 3 <= k; i++)
    if (!memcmp(w + i, SPACE_MARK, 3)) {
      CLOQ_CALL(spm_model(s, w + start, i - start));
      start = i;
    }
  return spm_model(s, w + start, k - start);
}

/* A normalized segment without added tokens: the pre-tokenizer and the model. */
static int enc_pretok(enc *s, const char *str, size_t n) {
  const cloq_tok *t = s->t;
  if (n == 0) return CLOQ_OK;
  if (t->kind == CLOQ_TOK_BPE) return pre_split(s, 0, str, n);
  if (t->meta) return metaspace(s, str, n);
  return spm_model(s, str, n);
}

static int ends_with_word(const cloq_tok *t, enc *s, const char *text, size_t start) {
  if (start == 0) return 0;
  size_t b = start - 1;
  while (b > 0 && start - b < 4 && ((unsigned char)text[b] & 0xC0) == 0x80) b--;
  return pcre2_match(t->re_word, (PCRE2_SPTR)text, start, b, PCRE2_ANCHORED, s->md, NULL) >= 0;
}

static int starts_with_word(const cloq_tok *t, enc *s, const char *text, size_t n) {
  return n > 0 && pcre2_match(t->re_word, (PCRE2_SPTR)text, n, 0, PCRE2_ANCHORED, s->md, NULL) >= 0;
}

static int enc_segment(enc *s, const char *seg, size_t n);

/* AddedVocabulary::find_matches with the tokens of one set (0 raw, 1 normalized): leftmost-longest
 * non-overlapping matches; single_word drops a match inside a word; lstrip/rstrip take the white
 * space beside a match into it. The text between matches goes on: set 0 to the normalizer, set 1
 * to the pre-tokenizer. */
static int split_added(enc *s, int set, const char *text, size_t len) {
  const cloq_tok *t = s->t;
  const int32_t *order = t->added_order[set];
  const int64_t *first = t->added_first[set];
  size_t start_offset = 0, i = 0;
  if (first[256] > 0) {
    while (i < len) {
      unsigned c = (unsigned char)text[i];
      const tok_added *a = NULL;
      for (int64_t k = first[c]; k < first[c + 1]; k++) {
        const tok_added *cand = &t->added[order[k]];
        if ((size_t)cand->plen <= len - i && !memcmp(text + i, cand->pattern, (size_t)cand->plen)) {
          a = cand;
          break;
        }
      }
      if (!a) {
        i++;
        continue;
      }
      size_t start = i, stop = i + (size_t)a->plen;
      i = stop;
      if (a->single_word && (ends_with_word(t, s, text, start) ||
                             starts_with_word(t, s, text + stop, len - stop)))
        continue;
      if (a->lstrip) {
        size_t ns = start;
        while (ns > 0) {
          size_t b = ns - 1;
          while (b > 0 && ns - b < 4 && ((unsigned char)text[b] & 0xC0) == 0x80) b--;
          uint32_t cp = decode_cp(text + b, ns - b);
          if (cp == UINT32_MAX || !is_ws(cp)) break;
          ns = b;
        }
        start = ns > start_offset ? ns : start_offset;
      }
      if (a->rstrip)
        while (stop < len) {
          size_t cl = char_len(text + stop, len - stop);
          uint32_t cp = decode_cp(text + stop, cl);
          if (cp == UINT32_MAX || !is_ws(cp)) break;
          stop += cl;
        }
      if (start_offset < start) {
        if (set == 0) CLOQ_CALL(enc_segment(s, text + start_offset, start - start_offset));
        else CLOQ_CALL(enc_pretok(s, text + start_offset, start - start_offset));
      }
      if (s->split_only) CLOQ_CALL(emit_len(s, stop - start));
      else CLOQ_CALL(emit(s, a->id));
      start_offset = stop;
    }
  }
  if (start_offset < len) {
    if (set == 0) CLOQ_CALL(enc_segment(s, text + start_offset, len - start_offset));
    else CLOQ_CALL(enc_pretok(s, text + start_offset, len - start_offset));
  }
  return CLOQ_OK;
}

/* A raw-text segment between added tokens: normalize, then the normalized added tokens. */
static int enc_segment(enc *s, const char *seg, size_t n) {
  const cloq_tok *t = s->t;
  if (t->kind != CLOQ_TOK_SPM || t->meta) return split_added(s, 1, seg, n);
  char *norm;
  size_t nl;
  CLOQ_CALL(normalize(t, seg, n, &norm, &nl));
  int rc = split_added(s, 1, norm, nl);
  free(norm);
  return rc;
}

static int run(enc *s, const char *text, size_t len, int bos) {
  const cloq_tok *t = s->t;
  s->text0 = text;
  if (t->n_re > 0 || t->re_word) {
    s->md = pcre2_match_data_create(4, NULL);
    CLOQ_CHECK(s->md, "tokenizer: out of memory");
  }
  if (bos && t->bos_id >= 0 && !s->split_only) CLOQ_CALL(emit(s, t->bos_id));
  return split_added(s, 0, text, len);
}

static void enc_free(enc *s) {
  cloq_tok__merger_free(&s->m);
  free(s->wbuf);
  if (s->md) pcre2_match_data_free(s->md);
}

int cloq_tok__encode_hf(const cloq_tok *t, const char *text, size_t len, int bos, int32_t **ids,
                        int64_t *n) {
  enc s = {0};
  s.t = t;
  s.m.t = t;
  int rc = run(&s, text, len, bos);
  enc_free(&s);
  if (rc != CLOQ_OK) {
    free(s.out);
    return rc;
  }
  if (!s.out) {
    s.out = malloc(sizeof *s.out);
    CLOQ_CHECK(s.out, "tokenizer: out of memory");
  }
  *ids = s.out;
  *n = s.nout;
  return CLOQ_OK;
}

int cloq_tok_split(const cloq_tok *t, const char *text, size_t len, int64_t **lens, int64_t *n) {
  *lens = NULL;
  *n = 0;
  CLOQ_CHECK(text || len == 0, "tokenizer: NULL text");
  enc s = {0};
  s.t = t;
  s.m.t = t;
  s.split_only = 1;
  int rc = CLOQ_OK;
  if (t->kind == CLOQ_TOK_LLAMA2C) {
    if (len > 0) rc = emit_len(&s, len);
  } else {
    rc = run(&s, text, len, 0);
  }
  enc_free(&s);
  if (rc != CLOQ_OK) {
    free(s.lens);
    return rc;
  }
  if (!s.lens) {
    s.lens = malloc(sizeof *s.lens);
    CLOQ_CHECK(s.lens, "tokenizer: out of memory");
  }
  *lens = s.lens;
  *n = s.nlens;
  return CLOQ_OK;
}

/* ---- writing tokenizer.json ------------------------------------------------------------------- */

/* json_t builders that record the first failure instead of returning NULL into a tree */
typedef struct {
  int bad;
  const char *what;
} jb;

static json_t *jb_str(jb *b, const char *s, size_t n) {
  json_t *v = json_stringn(s, n);
  if (!v && !b->bad) {
    b->bad = 1;
    b->what = s;
  }
  return v ? v : json_null();
}

static json_t *jb_s(jb *b, const char *s) { return s ? jb_str(b, s, strlen(s)) : json_null(); }

static json_t *bytelevel_json(int prefix, int use_regex) {
  return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", prefix,
                   "trim_offsets", 1, "use_regex", use_regex);
}

/* The pieces a tokenizer.json vocabulary holds: llama2.c's ' ' becomes U+2581 and its BOS/EOS
 * pieces "\n<s>\n" "\n</s>\n" become "<s>" "</s>"; others as stored. Malloc'd, NUL-terminated. */
static char *hf_piece(const cloq_tok *t, int64_t id) {
  const char *p = t->piece[id];
  size_t n = (size_t)t->plen[id];
  if (t->kind == CLOQ_TOK_LLAMA2C) {
    if (!strcmp(p, "\n<s>\n")) return strdup("<s>");
    if (!strcmp(p, "\n</s>\n")) return strdup("</s>");
    size_t sp = 0;
    for (size_t i = 0; i < n; i++) sp += p[i] == ' ';
    char *o = malloc(n + 2 * sp + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
      if (p[i] == ' ') {
        memcpy(o + k, SPACE_MARK, 3);
        k += 3;
      } else {
        o[k++] = p[i];
      }
    }
    o[k] = '\0';
    return o;
  }
  return strdup(p);
}

typedef struct {
  float score;
  int64_t seq;
  int32_t l, r;
} gen_merge;

static int cmp_gen(const void *pa, const void *pb) {
  const gen_merge *a = pa, *b = pb;
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int cmp_pair(const void *pa, const void *pb) {
  const gen_merge *a = pa, *b = pb;
  if (a->l != b->l) return a->l < b->l ? -1 : 1;
  return a->r < b->r ? -1 : a->r > b->r;
}

/* Merges from scores as transformers' LlamaConverter makes them (SentencePieceExtractor): for
 * each piece in id order, every split into two pieces of the vocabulary (at character
 * boundaries), sorted by (left id, right id); then all of them stably by the merged piece's score,
 * highest first. names[i] is the piece as written; idx looks names up. */
static int generate_merges(const cloq_tok *t, char **names, json_t *vocab, gen_merge **out,
                           int64_t *nout) {
  int64_t cap = 1024, n = 0;
  gen_merge *g = malloc((size_t)cap * sizeof *g);
  CLOQ_CHECK(g, "out of memory generating merges");
  for (int64_t id = 0; id < t->vocab_size; id++) {
    const char *p = names[id];
    size_t len = strlen(p);
    int64_t start = n;
    for (size_t k = char_len(p, len); k < len; k += char_len(p + k, len - k)) {
      char *l = strndup(p, k);
      if (!l) {
        free(g);
        return CLOQ_FAIL("out of memory generating merges");
      }
      json_t *li = json_object_get(vocab, l), *ri = json_object_get(vocab, p + k);
      free(l);
      if (!li || !ri) continue;
      if (n == cap) {
        cap *= 2;
        gen_merge *gg = realloc(g, (size_t)cap * sizeof *g);
        if (!gg) {
          free(g);
          return CLOQ_FAIL("out of memory generating merges");
        }
        g = gg;
      }
      g[n].score = t->score[id];
      g[n].l = (int32_t)json_integer_value(li);
      g[n].r = (int32_t)json_integer_value(ri);
      n++;
    }
    qsort(g + start, (size_t)(n - start), sizeof *g, cmp_pair);
  }
  for (int64_t i = 0; i < n; i++) g[i].seq = i;
  qsort(g, (size_t)n, sizeof *g, cmp_gen);
  *out = g;
  *nout = n;
  return CLOQ_OK;
}

static json_t *merge_json(jb *b, const char *l, const char *r, int legacy) {
  if (!legacy) return json_pack("[o, o]", jb_s(b, l), jb_s(b, r));
  size_t ll = strlen(l), rl = strlen(r);
  char *s = malloc(ll + rl + 2);
  if (!s) {
    b->bad = 1;
    b->what = "(out of memory)";
    return json_null();
  }
  memcpy(s, l, ll);
  s[ll] = ' ';
  memcpy(s + ll + 1, r, rl + 1);
  json_t *v = jb_str(b, s, ll + rl + 1);
  free(s);
  return v;
}

/* Writes j to dir/name through dir/name.tmp and a rename. */
static int write_atomic(const char *dir, const char *name, json_t *j) {
  size_t n = strlen(dir) + strlen(name) + 8;
  char *path = malloc(n), *tmp = malloc(n);
  int rc = CLOQ_OK;
  if (!path || !tmp) {
    rc = CLOQ_FAIL("%s/%s: out of memory", dir, name);
  } else {
    snprintf(path, n, "%s/%s", dir, name);
    snprintf(tmp, n, "%s/%s.tmp", dir, name);
    if (json_dump_file(j, tmp, JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0) {
      rc = CLOQ_FAIL("%s: cannot write (%s)", tmp, strerror(errno));
      remove(tmp);
    } else if (rename(tmp, path) != 0) {
      rc = CLOQ_FAIL("%s: cannot rename %s into place (%s)", path, tmp, strerror(errno));
      remove(tmp);
    }
  }
  free(path);
  free(tmp);
  return rc;
}

static json_t *added_json(jb *b, int32_t id, const char *content, int special, int normalized,
                          int lstrip, int rstrip, int single_word) {
  return json_pack("{s:i, s:o, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content",
                   jb_s(b, content), "single_word", single_word, "lstrip", lstrip, "rstrip", rstrip,
                   "normalized", normalized, "special", special);
}

static int write_hf(const cloq_tok *t, const char *dir) {
  int64_t V = t->vocab_size;
  int rc = CLOQ_OK;
  jb b = {0};
  char **names = calloc((size_t)V, sizeof *names);
  CLOQ_CHECK(names, "%s: out of memory", dir);
  json_t *root = NULL, *vocab = json_object(), *added = json_array(), *merges = json_array();
  gen_merge *gen = NULL;
  for (int64_t i = 0; i < V && rc == CLOQ_OK; i++) {
    names[i] = hf_piece(t, i);
    if (!names[i]) rc = CLOQ_FAIL("%s: out of memory", dir);
  }
  /* the model vocabulary (ids that only added tokens have stay out of it) */
  for (int64_t i = 0; i < V && rc == CLOQ_OK; i++) {
    if (t->in_model && !t->in_model[i]) continue;
    if (json_object_get(vocab, names[i]))
      rc = CLOQ_FAIL("%s/tokenizer.json: piece \"%s\" of id %lld is also id %lld: a tokenizer.json "
                     "vocabulary cannot hold it twice", dir, names[i], (long long)i,
                     (long long)json_integer_value(json_object_get(vocab, names[i])));
    else if (json_object_set_new(vocab, names[i], json_integer(i)) != 0)
      rc = CLOQ_FAIL("%s/tokenizer.json: piece %lld is not valid UTF-8", dir, (long long)i);
  }
  /* added tokens */
  if (rc == CLOQ_OK) {
    if (t->kind == CLOQ_TOK_LLAMA2C) {
      for (int32_t i = 0; i < 3; i++) json_array_append_new(added, added_json(&b, i, names[i], 1, 0, 0, 0, 0));
    } else {
      for (int64_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        json_array_append_new(added, added_json(&b, a->id, a->content, a->special, a->normalized,
                                                a->lstrip, a->rstrip, a->single_word));
      }
    }
  }
  /* merges: the stored ones in rank order, or generated from scores */
  int legacy = 1; /* "left right" strings unless a piece holds a space */
  int64_t nm = 0;
  if (rc == CLOQ_OK) {
    if (t->merge_mode == TOK_MERGE_RANKS) {
      nm = t->n_merges;
    } else {
      for (int64_t i = 0; i < V && rc == CLOQ_OK; i++)
        if (t->score[i] != t->score[i])
          rc = CLOQ_FAIL("%s/tokenizer.json: the score of piece %lld is NaN", dir, (long long)i);
      if (rc == CLOQ_OK) rc = generate_merges(t, names, vocab, &gen, &nm);
    }
  }
  for (int64_t r = 0; r < nm && rc == CLOQ_OK; r++) {
    int32_t l = gen ? gen[r].l : t->merge_a[r], rr = gen ? gen[r].r : t->merge_b[r];
    if (strchr(names[l], ' ') || strchr(names[rr], ' ')) legacy = 0;
  }
  for (int64_t r = 0; r < nm && rc == CLOQ_OK; r++) {
    int32_t l = gen ? gen[r].l : t->merge_a[r], rr = gen ? gen[r].r : t->merge_b[r];
    json_array_append_new(merges, merge_json(&b, names[l], names[rr], legacy));
  }
  const char *bos = t->bos_id >= 0 ? names[t->bos_id] : NULL;
  const char *eos = t->eos_id >= 0 ? names[t->eos_id] : NULL;
  const char *unk = t->unk_id >= 0 ? names[t->unk_id] : NULL;
  const char *pad = t->pad_id >= 0 ? names[t->pad_id] : NULL;
  if (rc == CLOQ_OK) {
    int spm = t->kind != CLOQ_TOK_BPE;
    int prepend = t->kind == CLOQ_TOK_LLAMA2C || t->prepend || t->meta_scheme;
    json_t *model = json_pack(
        "{s:s, s:n, s:o, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
        "unk_token", spm || t->unk_name ? jb_s(&b, spm ? unk : t->unk_name) : json_null(),
        "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk",
        spm ? 1 : t->fuse_unk, "byte_fallback", spm ? 1 : t->byte_fallback, "ignore_merges",
        t->ignore_merges, "vocab", vocab, "merges", merges);
    vocab = merges = NULL;
    json_t *normalizer, *pre, *decoder, *post;
    if (spm) {
      json_t *repl = json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ",
                               "content", SPACE_MARK);
      normalizer = prepend ? json_pack("{s:s, s:[{s:s, s:s}, o]}", "type", "Sequence",
                                       "normalizers", "type", "Prepend", "prepend", SPACE_MARK, repl)
                           : repl;
      pre = json_null();
      if (t->meta) {
        static const char *const schemes[3] = {"never", "first", "always"};
        json_decref(normalizer);
        normalizer = json_null();
        pre = json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", SPACE_MARK,
                        "prepend_scheme", schemes[t->meta_scheme], "split", t->meta_split);
      }
      decoder = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]}", "type", "Sequence",
                          "decoders", "type", "Replace", "pattern", "String", SPACE_MARK,
                          "content", " ", "type", "ByteFallback", "type", "Fuse");
      if (prepend)
        json_array_append_new(json_object_get(decoder, "decoders"),
                              json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ",
                                        "start", 1, "stop", 0));
    } else {
      normalizer = json_null();
      json_t *bl = bytelevel_json(t->pre_prefix_space, t->pre != TOK_PRE_LLAMA3);
      if (t->pre == TOK_PRE_SMOLLM)
        pre = json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type",
                        "Digits", "individual_digits", 1, bl);
      else if (t->pre == TOK_PRE_LLAMA3)
        pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                        "pretokenizers", "type", "Split", "pattern", "Regex", HF_LLAMA3, "behavior",
                        "Isolated", "invert", 0, bl);
      else
        pre = bl;
      decoder = bytelevel_json(1, 1);
    }
    int add_bos = t->add_bos && bos;
    if (add_bos) {
      post = json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, "
                       "s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
                       "type", "TemplateProcessing", "single", "SpecialToken", "id", bos,
                       "type_id", 0, "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken",
                       "id", bos, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                       "SpecialToken", "id", bos, "type_id", 1, "Sequence", "id", "B", "type_id",
                       1, "special_tokens", bos, "id", bos, "ids", (json_int_t)t->bos_id, "tokens",
                       bos);
      if (!spm) post = json_pack("{s:s, s:[o, o]}", "type", "Sequence", "processors",
                                 bytelevel_json(1, 1), post);
    } else {
      post = spm ? json_null() : bytelevel_json(1, 1);
    }
    root = json_pack("{s:s, s:n, s:n, s:o, s:o, s:o, s:o, s:o, s:o}", "version", "1.0",
                     "truncation", "padding", "added_tokens", added, "normalizer", normalizer,
                     "pre_tokenizer", pre, "post_processor", post, "decoder", decoder, "model",
                     model);
    added = NULL;
    if (!root || !model || !normalizer || !pre || !decoder || !post)
      rc = CLOQ_FAIL("%s/tokenizer.json: out of memory building the JSON", dir);
    else if (b.bad)
      rc = CLOQ_FAIL("%s/tokenizer.json: a string (\"%.40s\") is not valid UTF-8", dir, b.what);
    if (rc == CLOQ_OK) rc = write_atomic(dir, "tokenizer.json", root);
    json_decref(root);

    /* transformers: PreTrainedTokenizerFast over tokenizer.json, with the roles named */
    json_t *cfg = json_pack("{s:b, s:b, s:b, s:s}", "add_bos_token", add_bos, "add_eos_token", 0,
                            "clean_up_tokenization_spaces", 0, "tokenizer_class",
                            "PreTrainedTokenizerFast");
    json_t *map = json_object();
    const char *roles[4][2] = {{"bos_token", bos}, {"eos_token", eos}, {"unk_token", unk},
                               {"pad_token", pad}};
    for (int k = 0; k < 4; k++)
      if (roles[k][1]) {
        json_object_set_new(cfg, roles[k][0], jb_s(&b, roles[k][1]));
        json_object_set_new(map, roles[k][0], jb_s(&b, roles[k][1]));
      }
    if (rc == CLOQ_OK && (!cfg || !map)) rc = CLOQ_FAIL("%s: out of memory building the JSON", dir);
    if (rc == CLOQ_OK) rc = write_atomic(dir, "tokenizer_config.json", cfg);
    if (rc == CLOQ_OK) rc = write_atomic(dir, "special_tokens_map.json", map);
    json_decref(cfg);
    json_decref(map);
  }
  json_decref(vocab);
  json_decref(added);
  json_decref(merges);
  free(gen);
  for (int64_t i = 0; i < V; i++) free(names[i]);
  free(names);
  return rc;
}

int cloq_tok_write_hf(const cloq_tok *t, const char *dir) { return write_hf(t, dir); }
