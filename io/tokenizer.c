/* tokenizer.c: the llama2.c tokenizer (tok512.bin / tokenizer.bin format), encoding exactly as
 * llama2.c run.c `encode` does, but fast enough for whole evaluation corpora.
 *
 * run.c's merge loop rescans every adjacent pair after each merge, which is quadratic: minutes
 * for the 1.3 MB of WikiText-2. Here the same greedy order (highest score first, leftmost on
 * ties) is produced with a lazy-deletion heap over a linked list of symbols: an entry is (score,
 * left position, right position, the two ids); it is stale once either symbol has changed, and
 * is then dropped when popped. Live symbols keep their original left positions in order, so
 * "smallest left position" is "leftmost" and the pop order is run.c's scan order.
 *
 * On top of that, when no vocabulary piece is empty or holds a ' ' after its first byte (checked
 * at load; true of SentencePiece vocabularies, which put the space only in front), no merge can
 * ever have a symbol starting with ' ' as its right half: the merged piece would contain ' '
 * after its first byte. Such symbols therefore split the sequence into chunks that merge
 * independently, and greedy-by-chunk equals global greedy (a merge in one chunk never changes a
 * candidate of another, and the global leftmost-best is the leftmost-best of its own chunk). The
 * heaps then stay a few entries long. Any other vocabulary takes the single global heap: still
 * exact, only with a larger heap.
 *
 * Departures from run.c, where run.c's behaviour is undefined or unusable: text is (pointer,
 * length), and a NUL byte is an ordinary byte (it falls back to id 3; run.c stops at it); a
 * missing " " piece for the dummy prefix falls back to the byte id of ' ' (run.c would emit -1);
 * duplicate pieces resolve to the lowest id (run.c's qsort/bsearch picks an unspecified one).
 * Pieces are compared as C strings, as run.c does (a piece is its bytes up to the first NUL).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_io.h"

/* run.c's starting best_score: a merge must score strictly above it to be taken */
#define MERGE_FLOOR (-1e10f)

struct cloq_tok {
  int64_t vocab_size;
  char **piece;  /* vocab_size NUL-terminated strings, pointing into blob */
  int32_t *plen; /* strlen(piece[i]) */
  float *score;
  char *blob;
  int32_t maxplen;
  int32_t space_id;    /* the dummy prefix " ", or -1 */
  int split_at_spaces; /* the chunked merge is exact for this vocabulary */
  int32_t *slots;      /* open-addressing hash: piece -> lowest id with it, -1 empty */
  uint64_t mask;
  char bytes[256];     /* decode of the byte pieces <0xNN> */
};

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* The lowest id whose piece is s[0..n), or -1 (run.c's str_lookup). */
static int32_t lookup(const cloq_tok *t, const char *s, size_t n) {
  for (uint64_t h = hash_bytes(s, n) & t->mask;; h = (h + 1) & t->mask) {
    int32_t id = t->slots[h];
    if (id < 0) return -1;
    if ((size_t)t->plen[id] == n && !memcmp(t->piece[id], s, n)) return id;
  }
}

static int build_index(cloq_tok *t) {
  uint64_t cap = 16;
  while (cap < 2 * (uint64_t)t->vocab_size) cap *= 2;
  CLOQ_ALLOC(t->slots, (int64_t)cap, "tokenizer hash table");
  for (uint64_t i = 0; i < cap; i++) t->slots[i] = -1;
  t->mask = cap - 1;
  t->split_at_spaces = 1;
  t->maxplen = 0;
  for (int32_t id = 0; id < (int32_t)t->vocab_size; id++) {
    const char *p = t->piece[id];
    size_t n = (size_t)t->plen[id];
    if (n == 0 || memchr(p + 1, ' ', n - 1)) t->split_at_spaces = 0;
    if (t->plen[id] > t->maxplen) t->maxplen = t->plen[id];
    uint64_t h = hash_bytes(p, n) & t->mask;
    for (;; h = (h + 1) & t->mask) {
      int32_t o = t->slots[h];
      if (o < 0) {
        t->slots[h] = id;
        break;
      }
      if (t->plen[o] == t->plen[id] && !memcmp(t->piece[o], p, n)) break; /* keep the lower id */
    }
  }
  t->space_id = lookup(t, " ", 1);
  return CLOQ_OK;
}

static int parse_tok(cloq_tok *t, const char *path, const unsigned char *d, size_t size) {
  int64_t V = t->vocab_size;
  CLOQ_CHECK(size >= 4, "%s: truncated: %zu bytes, no max_token_length", path, size);
  int32_t maxlen;
  memcpy(&maxlen, d, 4);
  CLOQ_CHECK(maxlen > 0, "%s: max_token_length %d is not positive", path, maxlen);
  /* pieces live in one blob, each NUL-terminated: at most size bytes of text plus V NULs */
  CLOQ_ALLOC(t->blob, (int64_t)size + V, "tokenizer pieces");
  CLOQ_ALLOC(t->piece, V, "tokenizer pieces");
  CLOQ_ALLOC(t->plen, V, "tokenizer pieces");
  CLOQ_ALLOC(t->score, V, "tokenizer scores");
  size_t pos = 4, bpos = 0;
  for (int64_t i = 0; i < V; i++) {
    CLOQ_CHECK(size - pos >= 8,
               "%s: truncated at token %lld of vocab_size %lld (%zu bytes): wrong vocab_size or "
               "corrupt file",
               path, (long long)i, (long long)V, size);
    int32_t n;
    memcpy(&t->score[i], d + pos, 4);
    memcpy(&n, d + pos + 4, 4);
    pos += 8;
    CLOQ_CHECK(n >= 0 && (size_t)n <= size - pos,
               "%s: token %lld: length %d runs past the end of the file (truncated or wrong "
               "vocab_size %lld)",
               path, (long long)i, n, (long long)V);
    t->piece[i] = t->blob + bpos;
    memcpy(t->blob + bpos, d + pos, (size_t)n);
    t->blob[bpos + (size_t)n] = '\0';
    t->plen[i] = (int32_t)strlen(t->piece[i]);
    bpos += (size_t)n + 1;
    pos += (size_t)n;
  }
  CLOQ_CHECK(pos == size,
             "%s: %zu bytes left after %lld tokens: vocab_size does not match this tokenizer",
             path, size - pos, (long long)V);
  /* byte fallback emits id byte+3 and decoding maps <0xNN> back: both need the standard layout */
  for (int b = 0; b < 256; b++) {
    char want[8];
    snprintf(want, sizeof want, "<0x%02X>", b);
    CLOQ_CHECK(!strcmp(t->piece[b + 3], want),
               "%s: token %d is \"%s\", expected \"%s\" (byte-fallback ids 3..258 must be the "
               "byte pieces)",
               path, b + 3, t->piece[b + 3], want);
    t->bytes[b] = (char)b;
  }
  return build_index(t);
}

int cloq_tok_load(const char *path, int64_t vocab_size, cloq_tok **out) {
  *out = NULL;
  CLOQ_CHECK(vocab_size >= 259 && vocab_size <= INT32_MAX,
             "%s: vocab_size %lld: must be in 259..2^31-1 (ids 3..258 are the byte pieces)", path,
             (long long)vocab_size);
  char *buf;
  size_t size;
  CLOQ_CALL(cloq_read_file(path, &buf, &size));
  cloq_tok *t = calloc(1, sizeof *t);
  if (!t) {
    free(buf);
    return CLOQ_FAIL("%s: out of memory", path);
  }
  t->vocab_size = vocab_size;
  int rc = parse_tok(t, path, (const unsigned char *)buf, size);
  free(buf);
  if (rc != CLOQ_OK) {
    cloq_tok_free(&t);
    return rc;
  }
  *out = t;
  return CLOQ_OK;
}

void cloq_tok_free(cloq_tok **pt) {
  if (!pt || !*pt) return;
  cloq_tok *t = *pt;
  free(t->piece);
  free(t->plen);
  free(t->score);
  free(t->blob);
  free(t->slots);
  free(t);
  *pt = NULL;
}

const char *cloq_tok_piece(const cloq_tok *t, int32_t id) {
  return id >= 0 && id < t->vocab_size ? t->piece[id] : NULL;
}

const char *cloq_tok_decode(const cloq_tok *t, int32_t prev, int32_t id, size_t *len) {
  *len = 0;
  if (id < 0 || id >= t->vocab_size) return NULL;
  const char *p = t->piece[id];
  size_t n = (size_t)t->plen[id];
  if (prev == 1 && p[0] == ' ') { /* SentencePiece drops the dummy prefix after BOS */
    p++;
    n--;
  }
  if (id >= 3 && id < 259) { /* checked at load to be <0xNN> with NN = id - 3 */
    *len = 1;
    return &t->bytes[id - 3];
  }
  *len = n;
  return p;
}

int cloq_tok_splits_at_spaces(const cloq_tok *t) { return t->split_at_spaces; }

/* ---- encode ----------------------------------------------------------------------------------- */

typedef struct {
  float score;
  int32_t id;          /* the merged token */
  int32_t a, b;        /* the ids of the pair when pushed: stale if either changed */
  int64_t left, right; /* symbol positions */
} merge_cand;

typedef struct {
  const cloq_tok *t;
  int32_t *tok; /* per position; -1 once merged away */
  int64_t *next, *prev;
  merge_cand *heap;
  int64_t nheap, capheap;
  char *buf; /* 2 * maxplen + 1 */
} merger;

/* a pops before b: higher score, then further left */
static int before(const merge_cand *a, const merge_cand *b) {
  return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(merger *m, const merge_cand *c) {
  if (m->nheap == m->capheap) {
    int64_t nc = m->capheap ? 2 * m->capheap : 64;
    merge_cand *g = realloc(m->heap, (size_t)nc * sizeof *g);
    CLOQ_CHECK(g, "tokenizer: out of memory (%lld merge candidates)", (long long)nc);
    m->heap = g;
    m->capheap = nc;
  }
  int64_t i = m->nheap++;
  while (i > 0) {
    int64_t p = (i - 1) / 2;
    if (!before(c, &m->heap[p])) break;
    m->heap[i] = m->heap[p];
    i = p;
  }
  m->heap[i] = *c;
  return CLOQ_OK;
}

static merge_cand heap_pop(merger *m) {
  merge_cand top = m->heap[0];
  merge_cand last = m->heap[--m->nheap];
  int64_t i = 0, n = m->nheap;
  for (;;) {
    int64_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && before(&m->heap[c + 1], &m->heap[c])) c++;
    if (!before(&m->heap[c], &last)) break;
    m->heap[i] = m->heap[c];
    i = c;
  }
  if (n > 0) m->heap[i] = last;
  return top;
}

/* Pushes the pair (l, r) if its concatenation is a piece that run.c would accept. */
static int consider(merger *m, int64_t l, int64_t r) {
  if (l < 0 || r < 0) return CLOQ_OK;
  const cloq_tok *t = m->t;
  int32_t a = m->tok[l], b = m->tok[r];
  size_t la = (size_t)t->plen[a], lb = (size_t)t->plen[b];
  memcpy(m->buf, t->piece[a], la);
  memcpy(m->buf + la, t->piece[b], lb);
  int32_t id = lookup(t, m->buf, la + lb);
  if (id < 0 || !(t->score[id] > MERGE_FLOOR)) return CLOQ_OK; /* NaN scores never win either */
  merge_cand c = {t->score[id], id, a, b, l, r};
  return heap_push(m, &c);
}

/* Greedy merging of the symbols at positions lo..hi-1 (a linked list after this). */
static int merge_range(merger *m, int64_t lo, int64_t hi) {
  for (int64_t i = lo; i < hi; i++) {
    m->prev[i] = i > lo ? i - 1 : -1;
    m->next[i] = i + 1 < hi ? i + 1 : -1;
  }
  m->nheap = 0;
  for (int64_t i = lo; i + 1 < hi; i++) CLOQ_CALL(consider(m, i, i + 1));
  while (m->nheap > 0) {
    merge_cand c = heap_pop(m);
    if (m->tok[c.left] != c.a || m->next[c.left] != c.right || m->tok[c.right] != c.b) continue;
    m->tok[c.left] = c.id;
    m->tok[c.right] = -1;
    int64_t nx = m->next[c.right];
    m->next[c.left] = nx;
    if (nx >= 0) m->prev[nx] = c.left;
    CLOQ_CALL(consider(m, m->prev[c.left], c.left));
    CLOQ_CALL(consider(m, c.left, nx));
  }
  return CLOQ_OK;
}

/* The symbols before merging, as run.c builds them: BOS, dummy prefix, code points or bytes. */
static int64_t initial_symbols(const cloq_tok *t, const char *text, size_t len, int bos,
                               int32_t *tok) {
  int64_t m = 0;
  if (bos) tok[m++] = 1;
  if (len > 0) tok[m++] = t->space_id >= 0 ? t->space_id : ' ' + 3;
  char cp[4];
  size_t cl = 0;
  for (size_t i = 0; i < len; i++) {
    /* a code point is a lead (or stray) byte and at most 3 following continuation bytes */
    cp[cl++] = text[i];
    if (i + 1 < len && ((unsigned char)text[i + 1] & 0xC0) == 0x80 && cl < 4) continue;
    int32_t id = lookup(t, cp, cl);
    if (id >= 0)
      tok[m++] = id;
    else
      for (size_t k = 0; k < cl; k++) tok[m++] = (unsigned char)cp[k] + 3;
    cl = 0;
  }
  return m;
}

static int encode_into(const cloq_tok *t, merger *m, const char *text, size_t len, int bos,
                       int64_t *n) {
  int64_t cnt = initial_symbols(t, text, len, bos, m->tok);
  if (t->split_at_spaces) {
    int64_t lo = 0;
    for (int64_t i = 1; i <= cnt; i++)
      if (i == cnt || t->piece[m->tok[i]][0] == ' ') {
        CLOQ_CALL(merge_range(m, lo, i));
        lo = i;
      }
  } else {
    CLOQ_CALL(merge_range(m, 0, cnt));
  }
  /* the survivors, in order, are the live positions */
  int64_t w = 0;
  for (int64_t i = 0; i < cnt; i++)
    if (m->tok[i] >= 0) m->tok[w++] = m->tok[i];
  *n = w;
  return CLOQ_OK;
}

int cloq_tok_encode(const cloq_tok *t, const char *text, size_t len, int bos, int32_t **ids,
                    int64_t *n) {
  *ids = NULL;
  *n = 0;
  CLOQ_CHECK(text || len == 0, "tokenizer: NULL text");
  CLOQ_CHECK(len <= (size_t)INT64_MAX / 8 - 2, "tokenizer: text of %zu bytes is too long", len);
  int64_t cap = (int64_t)len + 2;
  merger m = {0};
  m.t = t;
  int rc = CLOQ_OK;
  m.tok = cloq_calloc_checked(cap, sizeof *m.tok);
  m.next = cloq_calloc_checked(cap, sizeof *m.next);
  m.prev = cloq_calloc_checked(cap, sizeof *m.prev);
  m.buf = malloc(2 * (size_t)t->maxplen + 1);
  if (!m.tok || !m.next || !m.prev || !m.buf)
    rc = CLOQ_FAIL("tokenizer: out of memory encoding %zu bytes", len);
  if (rc == CLOQ_OK) rc = encode_into(t, &m, text, len, bos, n);
  free(m.next);
  free(m.prev);
  free(m.heap);
  free(m.buf);
  if (rc != CLOQ_OK) {
    free(m.tok);
    *n = 0;
    return rc;
  }
  int32_t *shrunk = realloc(m.tok, (size_t)(*n > 0 ? *n : 1) * sizeof *shrunk);
  *ids = shrunk ? shrunk : m.tok;
  return CLOQ_OK;
}
