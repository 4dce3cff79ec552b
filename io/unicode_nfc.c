/* unicode_nfc.c: Unicode Normalization Form C (UAX #15), for the NFC normalizer of tokenizer.json.
 *
 * The text is cut into stretches at the code points that nothing before them can interact with
 * (NFC_F_BOUNDARY: combining class 0, never the second half of a composition, and a canonical
 * decomposition, if any, that starts with such a character; every ASCII character is one), so
 * the NFC of the text is the NFC of each stretch in turn. A stretch is decomposed (the full
 * canonical decompositions of the table, Hangul syllables by the algorithm of Unicode 3.12), put
 * in canonical order (a stable sort of each run of non-zero combining classes), and composed
 * (each character with the last starter, unless a character between them has a class 0 or >= its
 * own; primary composites only, so the composition exclusions and singletons stay decomposed).
 *
 * The tables (io/unicode_nfc_table.h, scripts/gen-unicode-nfc.py) are Python's unicodedata;
 * Hugging Face `tokenizers` uses Unicode 9.0.0. The 101 code points that have NFC properties in
 * the tables and were not assigned in 9.0.0 carry NFC_F_NEW: as 9.0.0 they are inert (class 0,
 * no decomposition, no composition). CLOQ_NFC_CHECKED normalizes a stretch that holds one both
 * ways and refuses the text when the results differ (a lone U+08D3 after a letter, say, is the
 * same either way; U+1DF6 between a letter and U+0301 is not).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_internal.h" /* cloq_bpe__put_utf8 */
#include "cloq_err.h"
#include "unicode_nfc.h"

typedef struct {
  uint8_t ccc;   /* canonical combining class */
  uint8_t flags; /* NFC_F_* */
  uint8_t dlen;  /* length of the full canonical decomposition (0: none) */
  uint16_t doff; /* its offset in nfc_pool */
} nfc_rec;

enum { NFC_F_SECOND = 1, NFC_F_BOUNDARY = 2, NFC_F_NEW = 4 };

#include "unicode_nfc_table.h"

/* Hangul (Unicode 3.12, Conjoining Jamo Behavior) */
#define S_BASE 0xAC00u
#define L_BASE 0x1100u
#define V_BASE 0x1161u
#define T_BASE 0x11A7u
#define L_COUNT 19u
#define V_COUNT 21u
#define T_COUNT 28u
#define S_COUNT (L_COUNT * V_COUNT * T_COUNT)

static const nfc_rec inert = {0, NFC_F_BOUNDARY, 0, 0};

/* The properties of cp; old: as Unicode 9.0.0 (the newer characters inert). */
static const nfc_rec *rec_of(uint32_t cp, int old) {
  if (cp >= NFC_LIMIT) return &inert;
  uint32_t blk = (uint32_t)nfc_stage1[cp >> NFC_SHIFT] << NFC_SHIFT;
  const nfc_rec *r = &nfc_recs[nfc_stage2[blk | (cp & ((1u << NFC_SHIFT) - 1))]];
  return old && (r->flags & NFC_F_NEW) ? &inert : r;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b, int old) {
  if (a - L_BASE < L_COUNT && b - V_BASE < V_COUNT)
    return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
  if (a - S_BASE < S_COUNT && (a - S_BASE) % T_COUNT == 0 && b - T_BASE - 1 < T_COUNT - 1)
    return a + (b - T_BASE);
  if (!(rec_of(b, old)->flags & NFC_F_SECOND)) return 0;
  if (old && (rec_of(a, 0)->flags & NFC_F_NEW)) return 0;
  uint64_t key = (uint64_t)a << 21 | b;
  size_t lo = 0, hi = sizeof nfc_pair_key / sizeof nfc_pair_key[0];
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (nfc_pair_key[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo < sizeof nfc_pair_key / sizeof nfc_pair_key[0] && nfc_pair_key[lo] == key
             ? nfc_pair_val[lo]
             : 0;
}

/* The code point at s[0..n) and its length in *len; UINT32_MAX (and *len 1) when the byte at s
 * does not start a well-formed UTF-8 character. */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *len) {
  *len = 1;
  if (s[0] < 0x80) return s[0];
  size_t k;
  uint32_t cp, min;
  if ((s[0] & 0xE0) == 0xC0) k = 2, cp = s[0] & 0x1Fu, min = 0x80;
  else if ((s[0] & 0xF0) == 0xE0) k = 3, cp = s[0] & 0x0Fu, min = 0x800;
  else if ((s[0] & 0xF8) == 0xF0) k = 4, cp = s[0] & 0x07u, min = 0x10000;
  else return UINT32_MAX;
  if (n < k) return UINT32_MAX;
  for (size_t i = 1; i < k; i++) {
    if ((s[i] & 0xC0) != 0x80) return UINT32_MAX;
    cp = cp << 6 | (s[i] & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return UINT32_MAX;
  *len = k;
  return cp;
}

/* A decomposed stretch (code points and their classes) and the output. */
typedef struct {
  uint32_t *cp;
  uint8_t *cc;
  size_t n, cap;
  uint32_t *tmp; /* long runs of marks: (class << 24 | code point) while sorting */
  size_t tmpcap;
  char *out;
  size_t len, outcap;
} nfc_buf;

static int push(nfc_buf *b, uint32_t cp, uint8_t cc) {
  if (b->n == b->cap) {
    size_t c = b->cap ? 2 * b->cap : 64;
    uint32_t *g = realloc(b->cp, c * sizeof *g);
    if (g) b->cp = g;
    uint8_t *h = realloc(b->cc, c);
    if (h) b->cc = h;
    CLOQ_CHECK(g && h, "NFC normalizer: out of memory (%zu code points)", c);
    b->cap = c;
  }
  b->cp[b->n] = cp;
  b->cc[b->n++] = cc;
  return CLOQ_OK;
}

/* Appends the full canonical decomposition of cp. */
static int decompose(nfc_buf *b, uint32_t cp, int old) {
  if (cp - S_BASE < S_COUNT) {
    uint32_t s = cp - S_BASE, t = s % T_COUNT;
    CLOQ_CALL(push(b, L_BASE + s / (V_COUNT * T_COUNT), 0));
    CLOQ_CALL(push(b, V_BASE + (s % (V_COUNT * T_COUNT)) / T_COUNT, 0));
    return t ? push(b, T_BASE + t, 0) : CLOQ_OK;
  }
  const nfc_rec *r = rec_of(cp, old);
  if (!r->dlen) return push(b, cp, r->ccc);
  for (int i = 0; i < r->dlen; i++) { /* the generator checked: old decomposes into old */
    uint32_t d = nfc_pool[r->doff + i];
    CLOQ_CALL(push(b, d, rec_of(d, old)->ccc));
  }
  return CLOQ_OK;
}

static int reserve_out(nfc_buf *b, size_t more) {
  if (b->len + more + 1 <= b->outcap) return CLOQ_OK;
  size_t c = b->outcap ? b->outcap : 256;
  while (c < b->len + more + 1) c *= 2;
  char *g = realloc(b->out, c);
  CLOQ_CHECK(g, "NFC normalizer: out of memory (%zu bytes)", c);
  b->out = g;
  b->outcap = c;
  return CLOQ_OK;
}

/* Canonical ordering of the run of non-starters lo..hi-1: a stable sort by class (insertion sort
 * when short, a counting sort when long, so that a text of many marks stays linear). */
static int sort_run(nfc_buf *b, size_t lo, size_t hi) {
  if (hi - lo <= 32) {
    for (size_t i = lo + 1; i < hi; i++) {
      uint8_t c = b->cc[i];
      uint32_t v = b->cp[i];
      size_t j = i;
      for (; j > lo && b->cc[j - 1] > c; j--) {
        b->cp[j] = b->cp[j - 1];
        b->cc[j] = b->cc[j - 1];
      }
      b->cp[j] = v;
      b->cc[j] = c;
    }
    return CLOQ_OK;
  }
  if (hi - lo > b->tmpcap) {
    uint32_t *g = realloc(b->tmp, (hi - lo) * sizeof *g);
    CLOQ_CHECK(g, "NFC normalizer: out of memory (%zu marks)", hi - lo);
    b->tmp = g;
    b->tmpcap = hi - lo;
  }
  size_t at[256] = {0};
  for (size_t i = lo; i < hi; i++) {
    b->tmp[i - lo] = (uint32_t)b->cc[i] << 24 | b->cp[i];
    at[b->cc[i]]++;
  }
  for (size_t c = 0, sum = lo; c < 256; c++) {
    size_t k = at[c];
    at[c] = sum;
    sum += k;
  }
  for (size_t i = 0; i < hi - lo; i++) {
    size_t to = at[b->tmp[i] >> 24]++;
    b->cp[to] = b->tmp[i] & 0xFFFFFFu;
    b->cc[to] = (uint8_t)(b->tmp[i] >> 24);
  }
  return CLOQ_OK;
}

/* Canonical order and composition of the decomposed stretch, appended to the output as UTF-8. */
static int finish(nfc_buf *b, int old) {
  for (size_t lo = 0, hi; lo < b->n; lo = hi) {
    for (hi = lo; hi < b->n && b->cc[hi]; hi++) continue;
    if (hi - lo > 1) CLOQ_CALL(sort_run(b, lo, hi));
    if (hi == lo) hi++;
  }
  size_t w = 0, starter = SIZE_MAX;
  int last = -1; /* class of the last character kept after the starter; -1: none */
  for (size_t i = 0; i < b->n; i++) {
    uint32_t c = b->cp[i];
    uint8_t k = b->cc[i];
    if (starter != SIZE_MAX && (last < 0 || last < k)) {
      uint32_t comp = compose(b->cp[starter], c, old);
      if (comp) {
        b->cp[starter] = comp;
        continue;
      }
    }
    if (k == 0) {
      starter = w;
      last = -1;
    } else {
      last = k;
    }
    b->cp[w] = c;
    b->cc[w++] = k;
  }
  CLOQ_CALL(reserve_out(b, 4 * w));
  for (size_t i = 0; i < w; i++) b->len += cloq_bpe__put_utf8(b->cp[i], b->out + b->len);
  b->n = 0;
  return CLOQ_OK;
}

/* The stretch s[0..n) (well-formed, starting at a boundary): normalized into b; in
 * CLOQ_NFC_CHECKED also as 9.0.0 into o (when it holds a newer character), and compared. */
static int stretch(nfc_buf *b, nfc_buf *o, const char *s, size_t n, int mode, size_t at) {
  const unsigned char *u = (const unsigned char *)s;
  int old = mode == CLOQ_NFC_TOKENIZERS;
  uint32_t first_new = 0;
  size_t new_at = 0;
  for (size_t i = 0, cl; i < n; i += cl) {
    uint32_t cp = utf8_next(u + i, n - i, &cl);
    if (!first_new && (rec_of(cp, 0)->flags & NFC_F_NEW)) {
      first_new = cp;
      new_at = i;
    }
    CLOQ_CALL(decompose(b, cp, old));
  }
  size_t start = b->len;
  CLOQ_CALL(finish(b, old));
  if (mode != CLOQ_NFC_CHECKED || !first_new) return CLOQ_OK;
  o->len = 0;
  for (size_t i = 0, cl; i < n; i += cl) CLOQ_CALL(decompose(o, utf8_next(u + i, n - i, &cl), 1));
  CLOQ_CALL(finish(o, 1));
  CLOQ_CHECK(o->len == b->len - start && !memcmp(o->out, b->out + start, o->len),
             "NFC normalizer: U+%04X at byte %zu: Unicode %s (cloq's tables) and Unicode %s (the "
             "crate unicode-normalization-alignments of Hugging Face `tokenizers`) normalize the "
             "text around it differently; refused rather than encoded unlike `tokenizers`",
             (unsigned)first_new, at + new_at, CLOQ_NFC_UNICODE_VERSION,
             CLOQ_NFC_TOKENIZERS_VERSION);
  return CLOQ_OK;
}

static int run(nfc_buf *b, nfc_buf *o, const char *s, size_t n, int mode, size_t base) {
  const unsigned char *u = (const unsigned char *)s;
  int old = mode == CLOQ_NFC_TOKENIZERS;
  size_t start = 0, i = 0;
  CLOQ_CALL(reserve_out(b, n));
  while (i < n) {
    if (u[i] < 0x80) { /* ASCII: a boundary; alone, it is its own NFC */
      if (i > start) CLOQ_CALL(stretch(b, o, s + start, i - start, mode, base + start));
      size_t j = i + 1;
      while (j < n && u[j] < 0x80) j++;
      /* all but the last are finished: the last may compose with what follows */
      CLOQ_CALL(reserve_out(b, j - i));
      memcpy(b->out + b->len, s + i, j - 1 - i);
      b->len += j - 1 - i;
      start = j - 1;
      i = j;
      continue;
    }
    size_t cl;
    uint32_t cp = utf8_next(u + i, n - i, &cl);
    if (cp == UINT32_MAX) { /* copied as it is; nothing composes across it */
      if (i > start) CLOQ_CALL(stretch(b, o, s + start, i - start, mode, base + start));
      CLOQ_CALL(reserve_out(b, 1));
      b->out[b->len++] = s[i];
      start = ++i;
      continue;
    }
    int bound = cp - S_BASE < S_COUNT || (rec_of(cp, old)->flags & NFC_F_BOUNDARY);
    if (bound && i > start) {
      CLOQ_CALL(stretch(b, o, s + start, i - start, mode, base + start));
      start = i;
    }
    i += cl;
  }
  if (n > start) CLOQ_CALL(stretch(b, o, s + start, n - start, mode, base + start));
  b->out[b->len] = '\0';
  return CLOQ_OK;
}

int cloq_nfc(const char *s, size_t n, int mode, size_t base, char **out, size_t *outlen) {
  *out = NULL;
  *outlen = 0;
  CLOQ_CHECK(mode == CLOQ_NFC_CHECKED || mode == CLOQ_NFC_CURRENT || mode == CLOQ_NFC_TOKENIZERS,
             "NFC normalizer: unknown mode %d", mode);
  nfc_buf b = {0}, o = {0};
  int rc = run(&b, &o, s, n, mode, base);
  free(b.cp);
  free(b.cc);
  free(b.tmp);
  free(o.cp);
  free(o.cc);
  free(o.tmp);
  free(o.out);
  if (rc != CLOQ_OK) {
    free(b.out);
    return rc;
  }
  *out = b.out;
  *outlen = b.len;
  return CLOQ_OK;
}

int cloq_nfc_newer(uint32_t cp) { return (rec_of(cp, 0)->flags & NFC_F_NEW) != 0; }
const char *cloq_nfc_unicode_version(void) { return CLOQ_NFC_UNICODE_VERSION; }
const char *cloq_nfc_tokenizers_version(void) { return CLOQ_NFC_TOKENIZERS_VERSION; }
