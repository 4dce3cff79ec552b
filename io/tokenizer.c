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
 *
 * The same heap serves the other kinds (io/bpe_*.c): SentencePiece by score over the text spans of
 * the symbols (TOK_MERGE_SPANS, as llama.cpp), and Hugging Face BPE by merge rank over id pairs
 * (TOK_MERGE_RANKS); only the price of a pair changes. This file also dispatches cloq_tok_load
 * on the file's first bytes: "GGUF" (io/gguf.c), '{' (tokenizer.json, io/bpe_*.c), else llama2.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_tok.h"
#include "cloq_gguf.h"
#include "cloq_data.h"
#include "tok_internal.h"

/* run.c's starting best_score: a merge must score strictly above it to be taken */
#define MERGE_FLOOR (-1e10f)

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* The lowest id whose piece is s[0..n), or -1 (run.c's str_lookup). */
int32_t cloq_tok__lookup(const cloq_tok *t, const char *s, size_t n) {
  for (uint64_t h = hash_bytes(s, n) & t->mask;; h = (h + 1) & t->mask) {
    int32_t id = t->slots[h];
    if (id < 0) return -1;
    if ((size_t)t->plen[id] == n && !memcmp(t->piece[id], s, n)) return id;
  }
}

int cloq_tok__build_index(cloq_tok *t) {
  uint64_t cap = 16;
  while (cap < 2 * (uint64_t)t->vocab_size) cap *= 2;
  free(t->slots);
  CLOQ_ALLOC(t->slots, (int64_t)cap, "tokenizer hash table");
  for (uint64_t i = 0; i < cap; i++) t->slots[i] = -1;
  t->mask = cap - 1;
  t->split_at_spaces = 1;
  t->maxplen = 0;
  for (int32_t id = 0; id < (int32_t)t->vocab_size; id++) {
    const char *p = t->piece[id];
    size_t n = (size_t)t->plen[id];
    if (t->plen[id] > t->maxplen) t->maxplen = t->plen[id];
    if (t->in_model && !t->in_model[id]) continue;
    if (n == 0 || memchr(p + 1, ' ', n - 1)) t->split_at_spaces = 0;
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
  t->space_id = cloq_tok__lookup(t, " ", 1);
  return CLOQ_OK;
}

/* The number of (score, len, bytes) records after the header: the vocabulary size of a llama2.c
 * file, for callers that pass vocab_size <= 0. */
static int count_records(const char *path, const unsigned char *d, size_t size, int64_t *n) {
  CLOQ_CHECK(size >= 4, "%s: truncated: %zu bytes, no max_token_length", path, size);
  size_t pos = 4;
  int64_t k = 0;
  while (pos < size) {
    CLOQ_CHECK(size - pos >= 8, "%s: truncated record after token %lld", path, (long long)k);
    int32_t len;
    memcpy(&len, d + pos + 4, 4);
    pos += 8;
    CLOQ_CHECK(len >= 0 && (size_t)len <= size - pos,
               "%s: token %lld: length %d runs past the end of the file", path, (long long)k, len);
    pos += (size_t)len;
    k++;
  }
  *n = k;
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
    CLOQ_CHECK(t->score[i] == t->score[i], "%s: the score of token %lld is NaN (corrupt file)",
               path, (long long)i);
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
  return cloq_tok__build_index(t);
}

static int load_llama2c(const char *path, int64_t vocab_size, const char *buf, size_t size,
                        cloq_tok **out) {
  if (vocab_size <= 0) CLOQ_CALL(count_records(path, (const unsigned char *)buf, size, &vocab_size));
  CLOQ_CHECK(vocab_size >= 259 && vocab_size <= INT32_MAX,
             "%s: vocab_size %lld: must be in 259..2^31-1 (ids 3..258 are the byte pieces)", path,
             (long long)vocab_size);
  cloq_tok *t = calloc(1, sizeof *t);
  CLOQ_CHECK(t, "%s: out of memory", path);
  t->kind = CLOQ_TOK_LLAMA2C;
  t->merge_mode = TOK_MERGE_PIECES;
  t->vocab_size = vocab_size;
  t->bos_id = 1;
  t->eos_id = 2;
  t->unk_id = 0;
  t->pad_id = -1;
  t->add_bos = 1;
  int rc = parse_tok(t, path, (const unsigned char *)buf, size);
  if (rc != CLOQ_OK) {
    cloq_tok_free(&t);
    return rc;
  }
  *out = t;
  return CLOQ_OK;
}

/* Which reader a file needs, from its first bytes: 'g' GGUF, 'j' tokenizer.json, 'l' llama2.c. */
static int sniff(const char *path, char *what) {
  FILE *f = fopen(path, "rb");
  CLOQ_CHECK(f, "%s: cannot open", path);
  unsigned char head[256];
  size_t n = fread(head, 1, sizeof head, f);
  fclose(f);
  *what = 'l';
  if (n >= 4 && !memcmp(head, "GGUF", 4)) {
    *what = 'g';
    return CLOQ_OK;
  }
  size_t i = 0;
  while (i < n && (head[i] == ' ' || head[i] == '\t' || head[i] == '\n' || head[i] == '\r')) i++;
  if (i < n && head[i] == '{') *what = 'j';
  return CLOQ_OK;
}

int cloq_tok_load(const char *path, int64_t vocab_size, cloq_tok **out) {
  *out = NULL;
  char what;
  CLOQ_CALL(sniff(path, &what));
  if (what == 'g') return cloq_gguf_tok_load(path, vocab_size, out);
  char *buf;
  size_t size;
  CLOQ_CALL(cloq_read_file(path, &buf, &size));
  int rc = what == 'j' ? cloq_tok__load_json(path, buf, size, out)
                       : load_llama2c(path, vocab_size, buf, size, out);
  free(buf);
  if (rc == CLOQ_OK && what == 'j' && vocab_size > 0 && (*out)->vocab_size > vocab_size) {
    rc = CLOQ_FAIL("%s: the tokenizer has %lld tokens, more than the model's vocab_size %lld",
                   path, (long long)(*out)->vocab_size, (long long)vocab_size);
    cloq_tok_free(out);
  }
  return rc;
}

void cloq_tok_free(cloq_tok **pt) {
  if (!pt || !*pt) return;
  cloq_tok *t = *pt;
  cloq_tok__free_hf(t);
  free(t->piece);
  free(t->plen);
  free(t->score);
  free(t->blob);
  free(t->slots);
  free(t);
  *pt = NULL;
}

int cloq_tok_kind(const cloq_tok *t) { return t->kind; }
int64_t cloq_tok_size(const cloq_tok *t) { return t->vocab_size; }
int cloq_tok_add_bos(const cloq_tok *t) { return t->add_bos; }
int32_t cloq_tok_bos_id(const cloq_tok *t) { return t->bos_id; }

const char *cloq_tok_piece(const cloq_tok *t, int32_t id) {
  return id >= 0 && id < t->vocab_size ? t->piece[id] : NULL;
}

const char *cloq_tok_decode(const cloq_tok *t, int32_t prev, int32_t id, size_t *len) {
  *len = 0;
  if (id < 0 || id >= t->vocab_size) return NULL;
  if (t->kind != CLOQ_TOK_LLAMA2C) {
    const char *p = t->dec + t->dec_off[id];
    size_t n = (size_t)t->dec_len[id];
    /* the Strip(1 left) of the Llama 2 decoder: the space that the prepended U+2581 became */
    if (t->kind == CLOQ_TOK_SPM && (t->prepend || t->meta_scheme) && prev >= 0 &&
        prev == t->bos_id && n > 0 &&
        p[0] == ' ') {
      p++;
      n--;
    }
    *len = n;
    return p;
  }
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

int cloq_tok_splits_at_spaces(const cloq_tok *t) {
  return t->kind == CLOQ_TOK_LLAMA2C && t->split_at_spaces;
}

/* ---- the merge core --------------------------------------------------------------------------- */

int cloq_tok__merger_reserve(tok_merger *m, int64_t n) {
  if (n <= m->cap) return CLOQ_OK;
  int64_t c = m->cap ? m->cap : 64;
  while (c < n) c *= 2;
  int32_t *tok = realloc(m->tok, (size_t)c * sizeof *tok);
  if (tok) m->tok = tok;
  int64_t *nx = realloc(m->next, (size_t)c * sizeof *nx);
  if (nx) m->next = nx;
  int64_t *pv = realloc(m->prev, (size_t)c * sizeof *pv);
  if (pv) m->prev = pv;
  CLOQ_CHECK(tok && nx && pv, "tokenizer: out of memory (%lld symbols)", (long long)c);
  if (m->t->merge_mode == TOK_MERGE_SPANS) {
    int64_t *off = realloc(m->off, (size_t)c * sizeof *off);
    if (off) m->off = off;
    int32_t *sl = realloc(m->slen, (size_t)c * sizeof *sl);
    if (sl) m->slen = sl;
    CLOQ_CHECK(off && sl, "tokenizer: out of memory (%lld symbols)", (long long)c);
  }
  if (!m->buf && m->t->merge_mode == TOK_MERGE_PIECES) {
    m->buf = malloc(2 * (size_t)m->t->maxplen + 1);
    CLOQ_CHECK(m->buf, "tokenizer: out of memory");
  }
  m->cap = c;
  return CLOQ_OK;
}

void cloq_tok__merger_free(tok_merger *m) {
  free(m->tok);
  free(m->next);
  free(m->prev);
  free(m->off);
  free(m->slen);
  free(m->heap);
  free(m->buf);
  memset(m, 0, sizeof *m);
}

/* a pops before b: higher key (score, or minus rank), then further left */
static int before(const tok_cand *a, const tok_cand *b) {
  return a->key > b->key || (a->key == b->key && a->left < b->left);
}

static int heap_push(tok_merger *m, const tok_cand *c) {
  if (m->nheap == m->capheap) {
    int64_t nc = m->capheap ? 2 * m->capheap : 64;
    tok_cand *g = realloc(m->heap, (size_t)nc * sizeof *g);
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

static tok_cand heap_pop(tok_merger *m) {
  tok_cand top = m->heap[0];
  tok_cand last = m->heap[--m->nheap];
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

/* The rank index of the pair (a, b) in t's merges, or -1. */
static int64_t pair_rank(const cloq_tok *t, int32_t a, int32_t b) {
  if (!t->mkey || a < 0 || b < 0) return -1;
  uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  uint64_t h = key * 0x9e3779b97f4a7c15ull;
  for (h = (h ^ (h >> 29)) & t->mmask;; h = (h + 1) & t->mmask) {
    if (t->mkey[h] == 0) return -1;
    if (t->mkey[h] == key) return t->mrank[h];
  }
}

/* Pushes the pair (l, r) if it can merge: llama2.c, when the concatenated pieces are a piece that
 * run.c would accept; by score, when the text both cover is a piece; by rank, when the pair is in
 * the merges. */
static int consider(tok_merger *m, int64_t l, int64_t r) {
  if (l < 0 || r < 0) return CLOQ_OK;
  const cloq_tok *t = m->t;
  int32_t a = m->tok[l], b = m->tok[r];
  tok_cand c = {0, -1, a, b, l, r};
  if (t->merge_mode == TOK_MERGE_PIECES) {
    size_t la = (size_t)t->plen[a], lb = (size_t)t->plen[b];
    memcpy(m->buf, t->piece[a], la);
    memcpy(m->buf + la, t->piece[b], lb);
    int32_t id = cloq_tok__lookup(t, m->buf, la + lb);
    if (id < 0 || !(t->score[id] > MERGE_FLOOR)) return CLOQ_OK; /* NaN scores never win either */
    c.key = t->score[id];
    c.id = id;
  } else if (t->merge_mode == TOK_MERGE_SPANS) {
    int32_t id = cloq_tok__lookup(t, m->text + m->off[l], (size_t)m->slen[l] + (size_t)m->slen[r]);
    if (id < 0 || t->score[id] != t->score[id]) return CLOQ_OK;
    c.key = t->score[id];
    c.id = id;
  } else {
    int64_t rank = pair_rank(t, a, b);
    if (rank < 0) return CLOQ_OK;
    c.key = -(double)rank;
    c.id = t->merge_new[rank];
  }
  return heap_push(m, &c);
}

int cloq_tok__merge_range(tok_merger *m, int64_t lo, int64_t hi) {
  for (int64_t i = lo; i < hi; i++) {
    m->prev[i] = i > lo ? i - 1 : -1;
    m->next[i] = i + 1 < hi ? i + 1 : -1;
  }
  m->nheap = 0;
  for (int64_t i = lo; i + 1 < hi; i++) CLOQ_CALL(consider(m, i, i + 1));
  while (m->nheap > 0) {
    tok_cand c = heap_pop(m);
    if (m->tok[c.left] != c.a || m->next[c.left] != c.right || m->tok[c.right] != c.b) continue;
    m->tok[c.left] = c.id;
    m->tok[c.right] = -1;
    if (m->slen) m->slen[c.left] += m->slen[c.right];
    int64_t nx = m->next[c.right];
    m->next[c.left] = nx;
    if (nx >= 0) m->prev[nx] = c.left;
    CLOQ_CALL(consider(m, m->prev[c.left], c.left));
    CLOQ_CALL(consider(m, c.left, nx));
  }
  return CLOQ_OK;
}

/* ---- llama2.c encode -------------------------------------------------------------------------- */

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
    int32_t id = cloq_tok__lookup(t, cp, cl);
    if (id >= 0)
      tok[m++] = id;
    else
      for (size_t k = 0; k < cl; k++) tok[m++] = (unsigned char)cp[k] + 3;
    cl = 0;
  }
  return m;
}

static int encode_into(const cloq_tok *t, tok_merger *m, const char *text, size_t len, int bos,
                       int64_t *n) {
  int64_t cnt = initial_symbols(t, text, len, bos, m->tok);
  if (t->split_at_spaces) {
    int64_t lo = 0;
    for (int64_t i = 1; i <= cnt; i++)
      if (i == cnt || t->piece[m->tok[i]][0] == ' ') {
        CLOQ_CALL(cloq_tok__merge_range(m, lo, i));
        lo = i;
      }
  } else {
    CLOQ_CALL(cloq_tok__merge_range(m, 0, cnt));
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
  CLOQ_CHECK(len <= (size_t)INT64_MAX / 16 - 8, "tokenizer: text of %zu bytes is too long", len);
  if (t->kind != CLOQ_TOK_LLAMA2C) return cloq_tok__encode_hf(t, text, len, bos, ids, n);
  tok_merger m = {0};
  m.t = t;
  int rc = cloq_tok__merger_reserve(&m, (int64_t)len + 2);
  if (rc == CLOQ_OK) rc = encode_into(t, &m, text, len, bos, n);
  int32_t *tok = m.tok;
  m.tok = NULL;
  cloq_tok__merger_free(&m);
  if (rc != CLOQ_OK) {
    free(tok);
    *n = 0;
    return rc;
  }
  int32_t *shrunk = realloc(tok, (size_t)(*n > 0 ? *n : 1) * sizeof *shrunk);
  *ids = shrunk ? shrunk : tok;
  return CLOQ_OK;
}
