/* test_tokenizer.c: the llama2.c tokenizer against the goldens of reference_outputs.json and
 * against a literal port of llama2.c run.c `encode` (the quadratic merge loop, kept here as the
 * reference), on WikiText-2, on random bytes (invalid UTF-8 included), and on a vocabulary with
 * spaces inside pieces, which forces the global (non-chunked) merge path. Then the byte-level BPE
 * and SentencePiece kinds (io/bpe_*.c) on small hand-made vocabularies: merge rank and score order,
 * leftmost ties, byte fallback, added tokens, the pre-tokenizer regexes, tokenizer.json errors and
 * cloq_tok_write_hf read back. tests/e2e/test_tokenizers.py compares with `tokenizers` itself.
 */
#include "test_io.h"
#include "cloq_tok.h"
#include "cloq_data.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the whole of wiki.test.raw must encode in well under this (run.c's loop takes minutes) */
#define WIKI_ENCODE_MAX_SECONDS 30.0
#define WIKI_PREFIX_BYTES 20000     /* compared against the reference (score-cached) loop */
#ifndef WIKI_LITERAL_BYTES
#define WIKI_LITERAL_BYTES 3000 /* compared against the literal run.c loop */
#endif
#define RANDOM_STRINGS 300

/* ---- the reference: llama2.c run.c, build_tokenizer + encode, kept as close as possible ---- */

typedef struct {
  const char *str;
  int id;
} ref_index;

typedef struct {
  char **vocab;
  float *vocab_scores;
  ref_index *sorted_vocab;
  int vocab_size;
  unsigned int max_token_length;
} ref_tok;

static int ref_compare_tokens(const void *a, const void *b) {
  return strcmp(((const ref_index *)a)->str, ((const ref_index *)b)->str);
}

static void ref_build(ref_tok *t, const char *path, int vocab_size) {
  t->vocab_size = vocab_size;
  t->vocab = malloc((size_t)vocab_size * sizeof(char *));
  t->vocab_scores = malloc((size_t)vocab_size * sizeof(float));
  FILE *file = fopen(path, "rb");
  assert_non_null(file);
  assert_int_equal(fread(&t->max_token_length, sizeof(int), 1, file), 1);
  int len;
  for (int i = 0; i < vocab_size; i++) {
    assert_int_equal(fread(t->vocab_scores + i, sizeof(float), 1, file), 1);
    assert_int_equal(fread(&len, sizeof(int), 1, file), 1);
    t->vocab[i] = malloc((size_t)len + 1);
    assert_int_equal(fread(t->vocab[i], (size_t)len, 1, file), len > 0 ? 1 : 0);
    t->vocab[i][len] = '\0';
  }
  fclose(file);
  t->sorted_vocab = malloc((size_t)vocab_size * sizeof(ref_index));
  for (int i = 0; i < vocab_size; i++) {
    t->sorted_vocab[i].str = t->vocab[i];
    t->sorted_vocab[i].id = i;
  }
  qsort(t->sorted_vocab, (size_t)vocab_size, sizeof(ref_index), ref_compare_tokens);
}

static void ref_free(ref_tok *t) {
  for (int i = 0; i < t->vocab_size; i++) free(t->vocab[i]);
  free(t->vocab);
  free(t->vocab_scores);
  free(t->sorted_vocab);
}

static int ref_str_lookup(const char *str, const ref_index *sorted_vocab, int vocab_size) {
  ref_index tok = {.str = str};
  const ref_index *res =
      bsearch(&tok, sorted_vocab, (size_t)vocab_size, sizeof(ref_index), ref_compare_tokens);
  return res != NULL ? res->id : -1;
}

/* run.c encode up to (not including) the merge loop: BOS, dummy prefix, code points / bytes. */
static void ref_initial(const ref_tok *t, const char *text, int bos, char *str_buffer, int *tokens,
                        int *n_tokens) {
  size_t str_len = 0;
  *n_tokens = 0;
  if (bos) tokens[(*n_tokens)++] = 1;
  if (text[0] != '\0') {
    int dummy_prefix = ref_str_lookup(" ", t->sorted_vocab, t->vocab_size);
    tokens[(*n_tokens)++] = dummy_prefix;
  }
  for (const char *c = text; *c != '\0'; c++) {
    if ((*c & 0xC0) != 0x80) str_len = 0;
    str_buffer[str_len++] = *c;
    str_buffer[str_len] = '\0';
    if ((*(c + 1) & 0xC0) == 0x80 && str_len < 4) continue;
    int id = ref_str_lookup(str_buffer, t->sorted_vocab, t->vocab_size);
    if (id != -1) {
      tokens[(*n_tokens)++] = id;
    } else {
      for (size_t i = 0; i < str_len; i++) tokens[(*n_tokens)++] = (unsigned char)str_buffer[i] + 3;
    }
    str_len = 0;
  }
}

/* run.c encode, literally: every pass rebuilds and looks up every adjacent pair. */
static void ref_encode(const ref_tok *t, const char *text, int bos, int *tokens, int *n_tokens) {
  size_t cap = t->max_token_length * 2 + 1 + 2;
  char *str_buffer = malloc(cap);
  ref_initial(t, text, bos, str_buffer, tokens, n_tokens);
  while (1) {
    float best_score = -1e10f;
    int best_id = -1;
    int best_idx = -1;
    for (int i = 0; i < (*n_tokens - 1); i++) {
      snprintf(str_buffer, cap, "%s%s", t->vocab[tokens[i]], t->vocab[tokens[i + 1]]);
      int id = ref_str_lookup(str_buffer, t->sorted_vocab, t->vocab_size);
      if (id != -1 && t->vocab_scores[id] > best_score) {
        best_score = t->vocab_scores[id];
        best_id = id;
        best_idx = i;
      }
    }
    if (best_idx == -1) break;
    tokens[best_idx] = best_id;
    for (int i = best_idx + 1; i < (*n_tokens - 1); i++) tokens[i] = tokens[i + 1];
    (*n_tokens)--;
  }
  free(str_buffer);
}

/* The same loop with one change: the merge id of each adjacent pair is remembered and only the
 * two pairs next to a merge are looked up again. The scan (best score, leftmost) is untouched,
 * so it is still quadratic but fast enough for 20 KB; it is itself checked against ref_encode. */
static int ref_pair(const ref_tok *t, char *buf, size_t cap, int a, int b) {
  snprintf(buf, cap, "%s%s", t->vocab[a], t->vocab[b]);
  return ref_str_lookup(buf, t->sorted_vocab, t->vocab_size);
}

static void ref_encode_cached(const ref_tok *t, const char *text, int bos, int *tokens,
                              int *n_tokens) {
  size_t cap = t->max_token_length * 2 + 1 + 2;
  char *str_buffer = malloc(cap);
  ref_initial(t, text, bos, str_buffer, tokens, n_tokens);
  int n = *n_tokens;
  int *pair = malloc(((size_t)n + 1) * sizeof *pair);
  for (int i = 0; i < n - 1; i++) pair[i] = ref_pair(t, str_buffer, cap, tokens[i], tokens[i + 1]);
  while (1) {
    float best_score = -1e10f;
    int best_id = -1;
    int best_idx = -1;
    for (int i = 0; i < n - 1; i++) {
      int id = pair[i];
      if (id != -1 && t->vocab_scores[id] > best_score) {
        best_score = t->vocab_scores[id];
        best_id = id;
        best_idx = i;
      }
    }
    if (best_idx == -1) break;
    tokens[best_idx] = best_id;
    memmove(tokens + best_idx + 1, tokens + best_idx + 2,
            (size_t)(n - best_idx - 2) * sizeof *tokens);
    memmove(pair + best_idx + 1, pair + best_idx + 2, (size_t)(n > best_idx + 2 ? n - best_idx - 3 : 0) * sizeof *pair);
    n--;
    if (best_idx > 0)
      pair[best_idx - 1] = ref_pair(t, str_buffer, cap, tokens[best_idx - 1], tokens[best_idx]);
    if (best_idx < n - 1)
      pair[best_idx] = ref_pair(t, str_buffer, cap, tokens[best_idx], tokens[best_idx + 1]);
  }
  *n_tokens = n;
  free(pair);
  free(str_buffer);
}

/* ---- helpers ---------------------------------------------------------------------------------- */

static void check_ids(const char *what, const int32_t *want, int64_t nwant, const int32_t *got,
                      int64_t ngot) {
  int64_t n = nwant < ngot ? nwant : ngot;
  for (int64_t i = 0; i < n; i++)
    if (want[i] != got[i]) {
      print_error("%s: first difference at token %lld of %lld/%lld: expected id %d, got %d\n", what,
                  (long long)i, (long long)nwant, (long long)ngot, want[i], got[i]);
      fail();
    }
  if (nwant != ngot) {
    print_error("%s: expected %lld tokens, got %lld\n", what, (long long)nwant, (long long)ngot);
    fail();
  }
}

/* The fast encoder against the reference (literal or cached) on one C string. */
static void compare_with_ref(const cloq_tok *tok, const ref_tok *ref, const char *text, int bos,
                             int literal, const char *what) {
  size_t len = strlen(text);
  int *rt = malloc((len + 3) * sizeof *rt);
  int rn;
  if (literal)
    ref_encode(ref, text, bos, rt, &rn);
  else
    ref_encode_cached(ref, text, bos, rt, &rn);
  int32_t *want = malloc((len + 3) * sizeof *want);
  for (int i = 0; i < rn; i++) want[i] = rt[i];
  int32_t *ids;
  int64_t n;
  CHECK_OK(cloq_tok_encode(tok, text, len, bos, &ids, &n));
  check_ids(what, want, rn, ids, n);
  free(ids);
  free(want);
  free(rt);
}

static char *read_text(const char *rel, size_t *len) {
  char *p = asset_path(rel), *buf;
  CHECK_OK(cloq_read_file(p, &buf, len));
  free(p);
  return buf;
}

static cloq_tok *load_tok512(void) {
  char *p = asset_path("stories260K/tok512.bin");
  cloq_tok *t;
  CHECK_OK(cloq_tok_load(p, 512, &t));
  free(p);
  return t;
}

static json_t *load_reference(void) {
  char *p = asset_path("stories260K/reference_outputs.json");
  json_error_t err;
  json_t *r = json_load_file(p, 0, &err);
  if (!r) {
    print_error("%s: %s\n", p, err.text);
    fail();
  }
  free(p);
  return r;
}

static int32_t *json_ids(json_t *arr, int64_t *n) {
  assert_true(json_is_array(arr));
  *n = (int64_t)json_array_size(arr);
  int32_t *v = malloc((size_t)(*n > 0 ? *n : 1) * sizeof *v);
  for (int64_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
  return v;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_tok_story_golden(void **state) {
  (void)state;
  cloq_tok *tok = load_tok512();
  assert_int_equal(cloq_tok_splits_at_spaces(tok), 1);
  json_t *r = load_reference();
  const char *text = json_string_value(json_object_get(r, "story_text"));
  assert_non_null(text);
  int64_t nwant;
  int32_t *want = json_ids(json_object_get(r, "story_ids"), &nwant);
  int32_t *ids;
  int64_t n;
  CHECK_OK(cloq_tok_encode(tok, text, strlen(text), 1, &ids, &n));
  check_ids("story_text", want, nwant, ids, n);
  printf("    story_text: %zu bytes -> %lld tokens (with BOS), equal to story_ids\n", strlen(text),
         (long long)n);
  free(ids);
  /* without BOS: the same ids minus the first */
  CHECK_OK(cloq_tok_encode(tok, text, strlen(text), 0, &ids, &n));
  check_ids("story_text without BOS", want + 1, nwant - 1, ids, n);
  free(ids);
  /* empty text: BOS alone, or nothing (no dummy prefix) */
  CHECK_OK(cloq_tok_encode(tok, "", 0, 1, &ids, &n));
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], 1);
  free(ids);
  CHECK_OK(cloq_tok_encode(tok, "", 0, 0, &ids, &n));
  assert_int_equal(n, 0);
  free(ids);
  free(want);
  json_decref(r);
  cloq_tok_free(&tok);
  assert_null(tok);
  cloq_tok_free(&tok);
}

/* greedy_from_bos_text is the plain concatenation of the pieces after BOS: it keeps the dummy
 * prefix's leading space and the byte piece "<0x0A>" as written. Decoding as run.c does (strip
 * the space after BOS, turn <0xNN> into the byte) must give the same text with those two
 * changes. */
static void test_tok_greedy_decode(void **state) {
  (void)state;
  cloq_tok *tok = load_tok512();
  json_t *r = load_reference();
  const char *golden = json_string_value(json_object_get(r, "greedy_from_bos_text"));
  assert_non_null(golden);
  int64_t n;
  int32_t *ids = json_ids(json_object_get(r, "greedy_from_bos_ids"), &n);
  assert_int_equal(ids[0], 1);
  size_t cap = 16 * (size_t)n + 1, k = 0, d = 0;
  char *cat = calloc(cap, 1), *dec = calloc(cap, 1);
  for (int64_t i = 1; i < n; i++) {
    const char *p = cloq_tok_piece(tok, ids[i]);
    assert_non_null(p);
    k += (size_t)snprintf(cat + k, cap - k, "%s", p);
    size_t len;
    const char *b = cloq_tok_decode(tok, ids[i - 1], ids[i], &len);
    assert_non_null(b);
    memcpy(dec + d, b, len);
    d += len;
  }
  assert_string_equal(cat, golden);
  assert_non_null(strstr(golden, "<0x0A>"));
  /* expected decode: golden without its first ' ', each "<0x0A>" a newline */
  char *want = calloc(cap, 1);
  size_t w = 0;
  assert_int_equal(golden[0], ' ');
  for (const char *g = golden + 1; *g;) {
    if (!strncmp(g, "<0x0A>", 6)) {
      want[w++] = '\n';
      g += 6;
    } else {
      want[w++] = *g++;
    }
  }
  assert_int_equal(d, w);
  assert_memory_equal(dec, want, w);
  /* the byte pieces */
  assert_string_equal(cloq_tok_piece(tok, 13), "<0x0A>");
  size_t len;
  const char *b = cloq_tok_decode(tok, 5, 3, &len);
  assert_int_equal(len, 1);
  assert_int_equal(b[0], '\0');
  assert_null(cloq_tok_piece(tok, 512));
  assert_null(cloq_tok_piece(tok, -1));
  assert_null(cloq_tok_decode(tok, 1, 512, &len));
  free(want);
  free(cat);
  free(dec);
  free(ids);
  json_decref(r);
  cloq_tok_free(&tok);
}

static void test_tok_wiki_vs_reference(void **state) {
  (void)state;
  cloq_tok *tok = load_tok512();
  ref_tok ref;
  char *tp = asset_path("stories260K/tok512.bin");
  ref_build(&ref, tp, 512);
  free(tp);
  size_t len;
  char *text = read_text("wikitext-2/wiki.test.raw", &len);
  assert_true(len > WIKI_PREFIX_BYTES);
  /* the cached reference against the literal one first, then the encoder against both */
  char save = text[WIKI_LITERAL_BYTES];
  text[WIKI_LITERAL_BYTES] = '\0';
  {
    int *a = malloc((WIKI_LITERAL_BYTES + 3) * sizeof *a), *b = malloc((WIKI_LITERAL_BYTES + 3) * sizeof *b);
    int na, nb;
    double t0 = now_seconds();
    ref_encode(&ref, text, 1, a, &na);
    double t1 = now_seconds();
    ref_encode_cached(&ref, text, 1, b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na * sizeof *a);
    printf("    literal run.c loop on %d bytes: %d tokens in %.2f s\n", WIKI_LITERAL_BYTES, na,
           t1 - t0);
    free(a);
    free(b);
  }
  compare_with_ref(tok, &ref, text, 1, 1, "wiki.test.raw prefix (literal run.c)");
  text[WIKI_LITERAL_BYTES] = save;
  save = text[WIKI_PREFIX_BYTES];
  text[WIKI_PREFIX_BYTES] = '\0';
  double t0 = now_seconds();
  compare_with_ref(tok, &ref, text, 1, 0, "wiki.test.raw prefix (cached run.c)");
  printf("    first %d bytes of wiki.test.raw equal the reference (%.2f s)\n", WIKI_PREFIX_BYTES,
         now_seconds() - t0);
  text[WIKI_PREFIX_BYTES] = save;
  free(text);
  ref_free(&ref);
  cloq_tok_free(&tok);
}

static uint64_t rng_s = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) { /* splitmix64: reproducible */
  uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* A random NUL-free string of kind k: 0 any bytes (mostly invalid UTF-8), 1 English-like ASCII
 * with many spaces and repeats, 2 valid UTF-8 mixed with stray continuation and lead bytes,
 * 3 a tiny alphabet (long runs of the same pair: leftmost-on-ties matters). */
static void random_text(char *buf, size_t len, int k) {
  static const char *const words[] = {"the ", "a ", "and", " ", "  ", "Lily", "e", "t", "he",
                                      "\n", ".", ",", "ing ", "was", "\"", "Ö", "日本", "é"};
  static const char *const utf[] = {"é", "ü", "日", "本", "€", "😀", "\xc3", "\xa9", "\x80\x80",
                                    "\xf0\x9f\x98", "a", " ", "\xed\xa0\x80", "\xff"};
  size_t i = 0;
  while (i < len) {
    const char *w;
    char one[2] = {0, 0};
    if (k == 0) {
      one[0] = (char)(1 + rnd() % 255);
      w = one;
    } else if (k == 1) {
      w = words[rnd() % (sizeof words / sizeof words[0])];
    } else if (k == 2) {
      w = utf[rnd() % (sizeof utf / sizeof utf[0])];
    } else {
      one[0] = "ab  e"[rnd() % 5];
      w = one;
    }
    size_t wl = strlen(w);
    if (i + wl > len) break;
    memcpy(buf + i, w, wl);
    i += wl;
  }
  buf[i] = '\0';
}

static void random_vs_reference(const cloq_tok *tok, const ref_tok *ref, const char *label) {
  char buf[512], what[128];
  for (int s = 0; s < RANDOM_STRINGS; s++) {
    int k = s % 4;
    size_t len = rnd() % 300;
    random_text(buf, len, k);
    snprintf(what, sizeof what, "%s: random string %d (kind %d, %zu bytes)", label, s, k,
             strlen(buf));
    compare_with_ref(tok, ref, buf, s % 3 != 0, 1, what);
  }
}

static void test_tok_random_vs_reference(void **state) {
  (void)state;
  cloq_tok *tok = load_tok512();
  ref_tok ref;
  char *tp = asset_path("stories260K/tok512.bin");
  ref_build(&ref, tp, 512);
  free(tp);
  random_vs_reference(tok, &ref, "tok512");
  printf("    %d random strings equal the literal run.c encode\n", RANDOM_STRINGS);
  ref_free(&ref);
  cloq_tok_free(&tok);
}

/* Writes a tokenizer file: tok512.bin's pieces with replacements, plus extra pieces at the end. */
static void write_vocab(const char *path, int n_repl, const int *repl_id, const char *const *repl,
                        const float *repl_score, int n_extra, const char *const *extra,
                        const float *extra_score) {
  char *tp = asset_path("stories260K/tok512.bin");
  ref_tok base;
  ref_build(&base, tp, 512);
  free(tp);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  int maxlen = 0;
  for (int i = 0; i < 512 + n_extra; i++) {
    const char *p = i < 512 ? base.vocab[i] : extra[i - 512];
    for (int r = 0; r < n_repl; r++)
      if (repl_id[r] == i) p = repl[r];
    if ((int)strlen(p) > maxlen) maxlen = (int)strlen(p);
  }
  fwrite(&maxlen, 4, 1, f);
  for (int i = 0; i < 512 + n_extra; i++) {
    const char *p = i < 512 ? base.vocab[i] : extra[i - 512];
    float sc = i < 512 ? base.vocab_scores[i] : extra_score[i - 512];
    for (int r = 0; r < n_repl; r++)
      if (repl_id[r] == i) {
        p = repl[r];
        sc = repl_score[r];
      }
    int l = (int)strlen(p);
    fwrite(&sc, 4, 1, f);
    fwrite(&l, 4, 1, f);
    fwrite(p, 1, (size_t)l, f);
  }
  assert_int_equal(fclose(f), 0);
  ref_free(&base);
}

/* A vocabulary whose pieces hold spaces after their first byte: chunking would be wrong, so the
 * encoder must take the global heap and still equal run.c. Scores are tied on purpose. */
static void test_tok_global_path(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  char *path = join_path(dir, "spaces.bin");
  enum { NR = 12 };
  const int ids[NR] = {500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511};
  const char *pieces[NR] = {"e t", "e a", ". T", ", a", "  ", "e  ", "d a",
                            "s t", "a b", "b a", " a b", "the a"};
  const float scores[NR] = {5, 5, 5, 5, 5, 4, 5, 5, 6, 6, 6, 5};
  write_vocab(path, NR, ids, pieces, scores, 0, NULL, NULL);
  cloq_tok *tok;
  CHECK_OK(cloq_tok_load(path, 512, &tok));
  assert_int_equal(cloq_tok_splits_at_spaces(tok), 0);
  ref_tok ref;
  ref_build(&ref, path, 512);
  random_vs_reference(tok, &ref, "spaces vocabulary");
  size_t len;
  char *text = read_text("wikitext-2/wiki.test.raw", &len);
  text[WIKI_PREFIX_BYTES / 2] = '\0';
  compare_with_ref(tok, &ref, text, 1, 0, "spaces vocabulary: wiki.test.raw prefix");
  printf("    global merge path equals run.c on %d random strings and %d bytes of wiki\n",
         RANDOM_STRINGS, WIKI_PREFIX_BYTES / 2);
  free(text);
  ref_free(&ref);
  cloq_tok_free(&tok);
  rm_dir(dir);
  free(path);
  free(dir);
}

/* The whole of wiki.test.raw: timed, and the chunked path checked against the global path on a
 * vocabulary that is tok512 plus one unreachable piece holding a space (which disables chunking
 * but cannot change any encoding: "\x01" is never a symbol, byte 1 is the piece <0x01>). */
static void test_tok_wiki_full(void **state) {
  (void)state;
  cloq_tok *tok = load_tok512();
  size_t len;
  char *text = read_text("wikitext-2/wiki.test.raw", &len);
  int32_t *ids;
  int64_t n;
  double t0 = now_seconds();
  CHECK_OK(cloq_tok_encode(tok, text, len, 1, &ids, &n));
  double dt = now_seconds() - t0;
  printf("    wiki.test.raw: %zu bytes -> %lld tokens with BOS in %.3f s (chunked path)\n", len,
         (long long)n, dt);
  assert_true(n > 1);
  assert_int_equal(ids[0], 1);
  if (dt > WIKI_ENCODE_MAX_SECONDS) {
    print_error("encode took %.1f s, expected under %.1f s\n", dt, WIKI_ENCODE_MAX_SECONDS);
    fail();
  }

  char *dir = make_tmpdir();
  char *path = join_path(dir, "tok513.bin");
  const char *extra[1] = {"\x01 \x01"};
  const float escore[1] = {100.0f};
  write_vocab(path, 0, NULL, NULL, NULL, 1, extra, escore);
  cloq_tok *g;
  CHECK_OK(cloq_tok_load(path, 513, &g));
  assert_int_equal(cloq_tok_splits_at_spaces(g), 0);
  int32_t *gids;
  int64_t gn;
  t0 = now_seconds();
  CHECK_OK(cloq_tok_encode(g, text, len, 1, &gids, &gn));
  printf("    same text through the global heap: %lld tokens in %.3f s\n", (long long)gn,
         now_seconds() - t0);
  check_ids("wiki.test.raw chunked vs global", gids, gn, ids, n);
  free(gids);
  cloq_tok_free(&g);
  rm_dir(dir);
  free(path);
  free(dir);
  free(ids);
  free(text);
  cloq_tok_free(&tok);
}

static void test_tok_load_errors(void **state) {
  (void)state;
  char *tp = asset_path("stories260K/tok512.bin");
  cloq_tok *t;
  EXPECT_FAIL(cloq_tok_load(tp, 511, &t), "vocab_size does not match");
  assert_null(t);
  EXPECT_FAIL(cloq_tok_load(tp, 513, &t), "truncated");
  EXPECT_FAIL(cloq_tok_load(tp, 100, &t), "vocab_size 100");
  free(tp);
  char *dir = make_tmpdir();
  char *path = join_path(dir, "bad.bin");
  const int id[1] = {13};
  const char *p[1] = {"\n"};
  const float sc[1] = {0};
  write_vocab(path, 1, id, p, sc, 0, NULL, NULL);
  EXPECT_FAIL(cloq_tok_load(path, 512, &t), "expected \"<0x0A>\"");
  write_bytes(path, "ab", 2);
  EXPECT_FAIL(cloq_tok_load(path, 512, &t), "truncated");
  free(path);
  path = join_path(dir, "missing.bin");
  EXPECT_FAIL(cloq_tok_load(path, 512, &t), "cannot open");
  free(path);
  rm_dir(dir);
  free(dir);
}

/* ---- tokenizers beyond llama2.c (io/bpe_*.c) ----------------------------------------------------
 * Small hand-made vocabularies; every expected id list below was also checked against the
 * Hugging Face `tokenizers` library (0.23) when it was written. */

#define SPACE_MARK "\xe2\x96\x81" /* U+2581 */

/* GPT-2 bytes_to_unicode as the Python reference writes it (independent of io/bpe_*.c): the byte
 * b is the character out[b] (UTF-8). */
static void bytes_to_unicode(char out[256][4]) {
  int cs[256], is_printable[256] = {0}, n = 0;
  for (int b = 0; b < 256; b++)
    is_printable[b] = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
  for (int b = 0; b < 256; b++) cs[b] = is_printable[b] ? b : 256 + n++;
  for (int b = 0; b < 256; b++) {
    int c = cs[b];
    memset(out[b], 0, 4);
    if (c < 0x80) {
      out[b][0] = (char)c;
    } else {
      out[b][0] = (char)(0xC0 | (c >> 6));
      out[b][1] = (char)(0x80 | (c & 63));
    }
  }
}

/* A byte-level vocabulary: id b is byte b's character (so ids of unmerged text are its bytes),
 * then the extra pieces from id 256 on. */
static cloq_tok *byte_vocab(const char *pre, int n_extra, const char *const *extra,
                            const int32_t *extra_types, int n_merges, const char *const *merges) {
  static char alpha[256][4];
  bytes_to_unicode(alpha);
  const char *tokens[300];
  int32_t types[300];
  assert_true(n_extra <= 44);
  for (int b = 0; b < 256; b++) {
    tokens[b] = alpha[b];
    types[b] = 1;
  }
  for (int i = 0; i < n_extra; i++) {
    tokens[256 + i] = extra[i];
    types[256 + i] = extra_types ? extra_types[i] : 1;
  }
  cloq_tok_vocab v = {.kind = CLOQ_TOK_BPE, .n_tokens = 256 + n_extra, .tokens = tokens,
                      .types = types, .n_merges = n_merges, .merges = merges, .pre = pre,
                      .bos_id = -1, .eos_id = -1, .unk_id = -1, .pad_id = -1};
  cloq_tok *t;
  CHECK_OK(cloq_tok_from_vocab(&v, &t));
  assert_int_equal(cloq_tok_kind(t), CLOQ_TOK_BPE);
  assert_int_equal(cloq_tok_size(t), 256 + n_extra);
  return t;
}

/* encode text (C string) and compare with want[0..nwant) */
static void expect_ids(const cloq_tok *t, const char *text, int bos, const int32_t *want,
                       int64_t nwant) {
  int32_t *ids;
  int64_t n;
  CHECK_OK(cloq_tok_encode(t, text, strlen(text), bos, &ids, &n));
  char what[160];
  snprintf(what, sizeof what, "encode \"%.60s\"", text);
  check_ids(what, want, nwant, ids, n);
  free(ids);
}
#define EXPECT_IDS(t, text, bos, ...)                                                              \
  do {                                                                                             \
    const int32_t want_[] = {__VA_ARGS__};                                                         \
    expect_ids(t, text, bos, want_, (int64_t)(sizeof want_ / sizeof want_[0]));                    \
  } while (0)

/* The pre-tokenizer pieces of text, joined with '|', against want. */
static void expect_split(const cloq_tok *t, const char *text, const char *want) {
  int64_t *lens, n;
  CHECK_OK(cloq_tok_split(t, text, strlen(text), &lens, &n));
  char got[512];
  size_t k = 0, pos = 0;
  for (int64_t i = 0; i < n; i++) {
    if (i) got[k++] = '|';
    memcpy(got + k, text + pos, (size_t)lens[i]);
    k += (size_t)lens[i];
    pos += (size_t)lens[i];
  }
  got[k] = '\0';
  if (strcmp(got, want)) {
    print_error("split \"%s\": expected \"%s\", got \"%s\"\n", text, want, got);
    fail();
  }
  free(lens);
}

/* Merge rank decides, not position; equal ranks go leftmost; pieces never merge across the
 * pre-tokenizer's splits; bytes that are not UTF-8 are pieces of their own. */
static void test_bpe_rank_order(void **state) {
  (void)state;
  const char *extra[] = {"aa", "bc", "ab", "abc"};
  const char *merges[] = {"a a", "b c", "a b", "a bc"};
  cloq_tok *t = byte_vocab("gpt2", 4, extra, NULL, 4, merges);
  EXPECT_IDS(t, "aaa", 0, 256, 'a');             /* a a twice at equal rank: the left one */
  EXPECT_IDS(t, "aaaa", 0, 256, 256);
  EXPECT_IDS(t, "abc", 0, 259);                  /* b c (rank 1) before a b (rank 2), then a bc */
  EXPECT_IDS(t, "ab", 0, 258);
  EXPECT_IDS(t, "abab", 0, 258, 258);
  EXPECT_IDS(t, "cab", 0, 'c', 258);
  EXPECT_IDS(t, "aa aa", 0, 256, ' ', 256);      /* " aa" is a piece: Ġ a a, no Ġ merge */
  EXPECT_IDS(t, "a\xff" "b\xc3", 0, 'a', 0xFF, 'b', 0xC3); /* invalid UTF-8: one piece a byte */
  expect_split(t, "a\xff" "b\xc3", "a|\xff|b|\xc3");
  int32_t *ids;
  int64_t n;
  CHECK_OK(cloq_tok_encode(t, "", 0, 1, &ids, &n)); /* no BOS id: nothing, even with bos */
  assert_int_equal(n, 0);
  free(ids);
  assert_int_equal(cloq_tok_add_bos(t), 0);
  assert_int_equal(cloq_tok_bos_id(t), -1);
  /* decode: the byte alphabet back to bytes; pieces as stored */
  size_t len;
  const char *b = cloq_tok_decode(t, -1, ' ', &len);
  assert_int_equal(len, 1);
  assert_int_equal(b[0], ' ');
  assert_string_equal(cloq_tok_piece(t, ' '), "\xc4\xa0"); /* Ġ */
  b = cloq_tok_decode(t, -1, 0, &len);
  assert_int_equal(len, 1);
  assert_int_equal(b[0], '\0');
  b = cloq_tok_decode(t, -1, 259, &len);
  assert_int_equal(len, 3);
  assert_memory_equal(b, "abc", 3);
  assert_null(cloq_tok_decode(t, -1, 260, &len));
  cloq_tok_free(&t);
}

/* The pre-tokenizers, piece for piece (expected pieces from `tokenizers`). \s+(?!\S) leaves the
 * last white space of a run to the word after it; Oniguruma's \s is White_Space (U+3000 yes,
 * U+180E no); digits go alone in smollm and by three in llama-bpe. */
static void test_bpe_pretokenizers(void **state) {
  (void)state;
  cloq_tok *g = byte_vocab("gpt2", 0, NULL, NULL, 0, NULL);
  cloq_tok *s = byte_vocab("smollm", 0, NULL, NULL, 0, NULL);
  cloq_tok *l = byte_vocab("llama-bpe", 0, NULL, NULL, 0, NULL);
  static const char *const cases[][4] = {
      /* text, gpt2, smollm, llama-bpe */
      {"Hello world", "Hello| world", "Hello| world", "Hello| world"},
      {"a  b", "a| | b", "a| | b", "a| | b"},
      {"a \n\n b", "a| \n\n| b", "a| \n\n| b", "a| \n\n| b"},
      {"x  ", "x|  ", "x|  ", "x|  "},
      {"I'm 12", "I|'m| 12", "I|'m| |1|2", "I|'m| |12"},
      {"it'S 2024!", "it|'|S| 2024|!", "it|'|S| |2|0|2|4|!", "it|'S| |202|4|!"},
      {"a1b", "a|1|b", "a|1|b", "a|1|b"},
      {"  12 x", " | 12| x", "  |1|2| x", " | |12| x"},
      {"\xe3\x80\x80\xe1\xa0\x8e x", "\xe3\x80\x80|\xe1\xa0\x8e| x", "\xe3\x80\x80|\xe1\xa0\x8e| x",
       "\xe3\x80\x80|\xe1\xa0\x8e| x"},
      {"don't\r\nstop", "don|'t|\r|\n|stop", "don|'t|\r|\n|stop", "don|'t|\r\n|stop"},
      {"12345 abc", "12345| abc", "1|2|3|4|5| abc", "123|45| abc"},
      {"Hello\n\nworld", "Hello|\n|\n|world", "Hello|\n|\n|world", "Hello|\n\n|world"},
      {"x\n  y", "x|\n | y", "x|\n | y", "x|\n| | y"},
      {"", "", "", ""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    expect_split(g, cases[i][0], cases[i][1]);
    expect_split(s, cases[i][0], cases[i][2]);
    expect_split(l, cases[i][0], cases[i][3]);
  }
  /* qwen2: Llama 3's pattern with single digits; qwen35: marks (\p{M}) join the letters before
   * them and leave the punctuation runs (U+0897 and U+113B8 are marks of Unicode 16 that PCRE2
   * 10.42 does not know) */
  cloq_tok *q2 = byte_vocab("qwen2", 0, NULL, NULL, 0, NULL);
  cloq_tok *q35 = byte_vocab("qwen35", 0, NULL, NULL, 0, NULL);
  static const char *const qcases[][3] = {
      /* text, qwen2, qwen35 */
      {"it'S 2024!", "it|'S| |2|0|2|4|!", "it|'S| |2|0|2|4|!"},
      {"  12 x", " | |1|2| x", " | |1|2| x"},
      {"don't\r\nstop", "don|'t|\r\n|stop", "don|'t|\r\n|stop"},
      {"re\xcc\x81sume\xcc\x81", "re|\xcc\x81sume|\xcc\x81", "re\xcc\x81sume\xcc\x81"},
      {"!\xcc\x81?", "!\xcc\x81?", "!\xcc\x81|?"},
      {" \xcc\x81\xcc\x82 x", " \xcc\x81\xcc\x82| x", " \xcc\x81\xcc\x82| x"},
      {"\xe0\xa4\x95\xe0\xa5\x8d\xe0\xa4\xb7\xe0\xa4\xbf",
       "\xe0\xa4\x95|\xe0\xa5\x8d\xe0\xa4\xb7|\xe0\xa4\xbf",
       "\xe0\xa4\x95\xe0\xa5\x8d\xe0\xa4\xb7\xe0\xa4\xbf"},
      {"x\xe0\xa2\x97y \xf0\x91\x8e\xb8", "x|\xe0\xa2\x97y| \xf0\x91\x8e\xb8",
       "x\xe0\xa2\x97y| \xf0\x91\x8e\xb8"},
  };
  for (size_t i = 0; i < sizeof qcases / sizeof qcases[0]; i++) {
    expect_split(q2, qcases[i][0], qcases[i][1]);
    expect_split(q35, qcases[i][0], qcases[i][2]);
  }
  cloq_tok_free(&q2);
  cloq_tok_free(&q35);
  /* the pieces go to the model separately: no merge across them */
  cloq_tok_free(&g);
  cloq_tok_free(&s);
  cloq_tok_free(&l);
  const char *extra[] = {"12", "\xc4\xa0" "1"};
  const char *merges[] = {"1 2", "\xc4\xa0 1"};
  g = byte_vocab("gpt2", 2, extra, NULL, 2, merges);
  s = byte_vocab("smollm", 2, extra, NULL, 2, merges);
  EXPECT_IDS(g, " 12", 0, ' ', 256); /* "1 2" (rank 0) before "Ġ 1" (rank 1) */
  EXPECT_IDS(g, " 1", 0, 257);
  EXPECT_IDS(s, " 12", 0, ' ', '1', '2'); /* smollm: " ", "1", "2" are separate pieces */
  EXPECT_IDS(s, " 1", 0, ' ', '1');
  cloq_tok_free(&g);
  cloq_tok_free(&s);
  cloq_tok *e;
  cloq_tok_vocab v = {.kind = CLOQ_TOK_BPE, .n_tokens = 1, .tokens = (const char *[]){"a"},
                      .pre = "deepseek-coder", .bos_id = -1, .eos_id = -1, .unk_id = -1,
                      .pad_id = -1};
  EXPECT_FAIL(cloq_tok_from_vocab(&v, &e), "\"deepseek-coder\" is not supported");
  assert_null(e);
  v.pre = "gpt2";
  v.name = "model.gguf";
  v.n_merges = 1;
  v.merges = (const char *[]){"a z"};
  EXPECT_FAIL(cloq_tok_from_vocab(&v, &e), "model.gguf: merge 0 (\"a\" \"z\"): \"z\" is not in");
  v.n_merges = 0;
  v.add_bos = 1;
  EXPECT_FAIL(cloq_tok_from_vocab(&v, &e), "model.gguf: add_bos is set but there is no bos id");
}

/* Writes a tokenizer.json built by the caller and loads it. */
static cloq_tok *load_json_tok(json_t *root, const char *dir, const char *name) {
  char *path = join_path(dir, name);
  assert_int_equal(json_dump_file(root, path, 0), 0);
  json_decref(root);
  cloq_tok *t;
  CHECK_OK(cloq_tok_load(path, 0, &t));
  free(path);
  return t;
}

static json_t *added_tok(int id, const char *content, int special, int normalized, int lstrip,
                         int rstrip, int single_word) {
  return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                   "special", special, "normalized", normalized, "lstrip", lstrip, "rstrip",
                   rstrip, "single_word", single_word);
}

/* Added tokens: found before the pre-tokenizer, leftmost-longest, with lstrip/rstrip/single_word
 * as `tokenizers` applies them (a byte-level tokenizer.json, no merges: ids are bytes). */
static void test_bpe_added_tokens(void **state) {
  (void)state;
  char alpha[256][4];
  bytes_to_unicode(alpha);
  json_t *vocab = json_object();
  for (int b = 0; b < 256; b++) json_object_set_new(vocab, alpha[b], json_integer(b));
  json_object_set_new(vocab, "<m>", json_integer(256));
  json_object_set_new(vocab, "<w>", json_integer(257));
  json_object_set_new(vocab, "hey", json_integer(258));
  json_object_set_new(vocab, "<m>x", json_integer(259));
  json_t *added = json_pack("[o, o, o, o]", added_tok(256, "<m>", 0, 0, 1, 1, 0),
                            added_tok(257, "<w>", 0, 0, 0, 0, 1), added_tok(258, "hey", 0, 1, 0, 0, 0),
                            added_tok(259, "<m>x", 1, 0, 0, 0, 0));
  json_t *root = json_pack(
      "{s:o, s:n, s:{s:s, s:b, s:b}, s:n, s:{s:s, s:o, s:[]}}", "added_tokens", added,
      "normalizer", "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 1,
      "post_processor", "model", "type", "BPE", "vocab", vocab, "merges");
  char *dir = make_tmpdir();
  cloq_tok *t = load_json_tok(root, dir, "tokenizer.json");
  assert_int_equal(cloq_tok_kind(t), CLOQ_TOK_BPE);
  EXPECT_IDS(t, "a <m> b", 1, 'a', 256, 'b');         /* lstrip + rstrip take the spaces */
  EXPECT_IDS(t, "a\t <m>\n b", 1, 'a', 256, 'b');
  EXPECT_IDS(t, "x<w>y", 1, 'x', '<', 'w', '>', 'y'); /* single_word: not inside a word */
  EXPECT_IDS(t, "x <w> y", 1, 'x', ' ', 257, ' ', 'y');
  EXPECT_IDS(t, "<w>", 1, 257);
  EXPECT_IDS(t, "\xc3\xa9<w>", 1, 0xC3, 0xA9, '<', 'w', '>'); /* é is a word character */
  EXPECT_IDS(t, "heyhey", 1, 258, 258);
  EXPECT_IDS(t, "a <m>x b", 1, 'a', ' ', 259, ' ', 'b'); /* the longest match wins */
  EXPECT_IDS(t, "<m><m>", 1, 256, 256);
  int64_t *lens, n;
  CHECK_OK(cloq_tok_split(t, "a <m> b", 7, &lens, &n));
  assert_int_equal(n, 3);
  assert_int_equal(lens[1], 5); /* " <m> " */
  free(lens);
  cloq_tok_free(&t);
  rm_dir(dir);
  free(dir);

  /* GGUF-style vocabularies: control (3) and user-defined (4) tokens are added tokens */
  const char *extra[] = {"<|x|>", "<|x|>y", "<u>"};
  const int32_t types[] = {3, 3, 4};
  t = byte_vocab("gpt2", 3, extra, types, 0, NULL);
  EXPECT_IDS(t, "a<|x|>yb<|x|>", 0, 'a', 257, 'b', 256);
  EXPECT_IDS(t, "<u><|x", 0, 258, '<', '|', 'x');
  cloq_tok_free(&t);
}

/* SentencePiece by score, as llama.cpp: the merged piece's score decides, leftmost on ties;
 * unknown characters may still merge by their text, else become <0xNN> bytes; control tokens
 * in the text are split out and the next segment gets its own U+2581. */
static void test_spm_by_score(void **state) {
  (void)state;
  const char *tokens[266];
  float scores[266];
  int32_t types[266];
  char bytes[256][8];
  tokens[0] = "<unk>";
  tokens[1] = "<s>";
  tokens[2] = "</s>";
  for (int b = 0; b < 256; b++) {
    snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
    tokens[3 + b] = bytes[b];
  }
  const char *rest[] = {SPACE_MARK, "a", "b", SPACE_MARK "a", "ab", "aa", "\xc3\xa9" "a"};
  for (int i = 0; i < 7; i++) tokens[259 + i] = rest[i];
  for (int i = 0; i < 266; i++) {
    scores[i] = i < 259 ? 0.0f : -(float)(i - 258);
    types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
  }
  cloq_tok_vocab v = {.kind = CLOQ_TOK_SPM, .n_tokens = 266, .tokens = tokens, .scores = scores,
                      .types = types, .bos_id = 1, .eos_id = 2, .unk_id = 0, .pad_id = -1,
                      .add_bos = 1, .add_space_prefix = 1};
  cloq_tok *t;
  CHECK_OK(cloq_tok_from_vocab(&v, &t));
  assert_int_equal(cloq_tok_kind(t), CLOQ_TOK_SPM);
  assert_int_equal(cloq_tok_add_bos(t), 1);
  assert_int_equal(cloq_tok_bos_id(t), 1);
  EXPECT_IDS(t, "ab", 1, 1, 262, 261);           /* ▁a (-4) before ab (-5) */
  EXPECT_IDS(t, "bab", 1, 1, 259, 261, 263);
  EXPECT_IDS(t, "baaa", 1, 1, 259, 261, 264, 260); /* aa twice at equal score: the left one */
  EXPECT_IDS(t, "\xc3\xa9", 1, 1, 259, 3 + 0xC3, 3 + 0xA9); /* byte fallback */
  EXPECT_IDS(t, "\xc3\xa9" "a", 1, 1, 259, 265); /* é is no piece, éa is */
  EXPECT_IDS(t, "b<s>b", 1, 1, 259, 261, 1, 259, 261);
  EXPECT_IDS(t, "", 1, 1);
  int32_t *ids;
  int64_t n;
  CHECK_OK(cloq_tok_encode(t, "", 0, 0, &ids, &n));
  assert_int_equal(n, 0);
  free(ids);
  size_t len;
  const char *d = cloq_tok_decode(t, 1, 262, &len); /* after BOS the prefix space goes */
  assert_int_equal(len, 1);
  assert_memory_equal(d, "a", 1);
  d = cloq_tok_decode(t, 260, 262, &len);
  assert_int_equal(len, 2);
  assert_memory_equal(d, " a", 2);
  d = cloq_tok_decode(t, 260, 3 + 'A', &len);
  assert_int_equal(len, 1);
  assert_int_equal(d[0], 'A');
  assert_string_equal(cloq_tok_piece(t, 262), SPACE_MARK "a");
  /* written as tokenizer.json (merges made from the scores) and read back: merges by rank then,
   * with the same ids wherever llama.cpp's unknown-character merge (é + a) does not come in */
  char *dir = make_tmpdir();
  CHECK_OK(cloq_tok_write_hf(t, dir));
  char *tj = join_path(dir, "tokenizer.json");
  cloq_tok *back;
  CHECK_OK(cloq_tok_load(tj, 266, &back));
  assert_int_equal(cloq_tok_kind(back), CLOQ_TOK_SPM);
  const char *samples[] = {"ab", "bab", "baaa", "\xc3\xa9", "b<s>b", "", " a  b aab ", "<unk></s>"};
  for (int i = 0; i < 8; i++) {
    int32_t *a, *b;
    int64_t na, nb;
    CHECK_OK(cloq_tok_encode(t, samples[i], strlen(samples[i]), 1, &a, &na));
    CHECK_OK(cloq_tok_encode(back, samples[i], strlen(samples[i]), 1, &b, &nb));
    check_ids("SPM by score written and read back", a, na, b, nb);
    free(a);
    free(b);
  }
  EXPECT_IDS(back, "\xc3\xa9" "a", 1, 1, 259, 3 + 0xC3, 3 + 0xA9, 260);
  cloq_tok_free(&back);
  free(tj);
  rm_dir(dir);
  free(dir);
  cloq_tok_free(&t);
}

static json_t *llama2_json(const char *const *merges, int n_merges) {
  json_t *vocab = json_object();
  json_object_set_new(vocab, "<unk>", json_integer(0));
  json_object_set_new(vocab, "<s>", json_integer(1));
  json_object_set_new(vocab, "</s>", json_integer(2));
  for (int b = 0; b < 256; b++) {
    char s[8];
    snprintf(s, sizeof s, "<0x%02X>", b);
    json_object_set_new(vocab, s, json_integer(3 + b));
  }
  const char *rest[] = {SPACE_MARK, "a", "b", SPACE_MARK "a", "ab", "aa", "\xc3\xa9" "a"};
  for (int i = 0; i < 7; i++) json_object_set_new(vocab, rest[i], json_integer(259 + i));
  json_t *m = json_array();
  for (int i = 0; i < n_merges; i++) json_array_append_new(m, json_string(merges[i]));
  json_t *added = json_pack("[o, o, o]", added_tok(0, "<unk>", 1, 0, 0, 0, 0),
                            added_tok(1, "<s>", 1, 0, 0, 0, 0), added_tok(2, "</s>", 1, 0, 0, 0, 0));
  return json_pack(
      "{s:o, s:{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}, s:n, "
      "s:{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}, "
      "s:{s:s, s:s, s:b, s:b, s:o, s:o}}",
      "added_tokens", added, "normalizer", "type", "Sequence", "normalizers", "type", "Prepend",
      "prepend", SPACE_MARK, "type", "Replace", "pattern", "String", " ", "content", SPACE_MARK,
      "pre_tokenizer", "post_processor", "type", "TemplateProcessing", "single", "SpecialToken",
      "id", "<s>", "type_id", 0, "Sequence", "id", "A", "type_id", 0, "special_tokens", "<s>", "id",
      "<s>", "ids", 1, "tokens", "<s>", "model", "type", "BPE", "unk_token", "<unk>", "fuse_unk", 1,
      "byte_fallback", 1, "vocab", vocab, "merges", m);
}

/* Llama 2's tokenizer.json: merges by rank, byte fallback, U+2581 prepended to each segment
 * between added tokens, BOS from the TemplateProcessing post-processor. */
static void test_spm_json_rank(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  const char *m1[] = {SPACE_MARK " a", "a b", "a a"};
  cloq_tok *t = load_json_tok(llama2_json(m1, 3), dir, "tokenizer.json");
  assert_int_equal(cloq_tok_kind(t), CLOQ_TOK_SPM);
  assert_int_equal(cloq_tok_add_bos(t), 1);
  assert_int_equal(cloq_tok_bos_id(t), 1);
  EXPECT_IDS(t, "ab", 1, 1, 262, 261);
  EXPECT_IDS(t, "baaa", 1, 1, 259, 261, 264, 260);
  EXPECT_IDS(t, "\xc3\xa9" "a", 1, 1, 259, 3 + 0xC3, 3 + 0xA9, 260); /* é: bytes, no merge */
  EXPECT_IDS(t, "a<s>a", 1, 1, 262, 1, 262);
  EXPECT_IDS(t, "a b", 1, 1, 262, 259, 261);
  EXPECT_IDS(t, " a", 1, 1, 259, 262);
  EXPECT_IDS(t, "", 1, 1);
  cloq_tok_free(&t);
  const char *m2[] = {"a b", SPACE_MARK " a", "a a"}; /* the same merges, ranks swapped */
  t = load_json_tok(llama2_json(m2, 3), dir, "tokenizer.json");
  EXPECT_IDS(t, "ab", 1, 1, 259, 263);
  cloq_tok_free(&t);
  rm_dir(dir);
  free(dir);
}

/* Metaspace instead of the normalizer (transformers' legacy=False conversions): U+2581 prepended
 * only to the piece that starts the text ("first"), to every piece ("always") or never; a piece
 * that already starts with U+2581 or ' ' gets none. */
static void test_spm_metaspace(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  static const char *const schemes[3] = {"first", "always", "never"};
  for (int k = 0; k < 3; k++)
    for (int split = 0; split < 2; split++) {
      json_t *root = json_pack(
          "{s:[o, o, o], s:n, s:{s:s, s:s, s:s, s:b}, s:{s:s, s:s, s:{s:i, s:i, s:i, s:i, s:i, "
          "s:i, s:i, s:i}, s:[s]}}",
          "added_tokens", added_tok(0, "<unk>", 1, 0, 0, 0, 0), added_tok(1, "<s>", 1, 0, 0, 0, 0),
          added_tok(2, "</s>", 1, 0, 0, 0, 0), "normalizer", "pre_tokenizer", "type", "Metaspace",
          "replacement", SPACE_MARK, "prepend_scheme", schemes[k], "split", split, "model", "type",
          "BPE", "unk_token", "<unk>", "vocab", "<unk>", 0, "<s>", 1, "</s>", 2, SPACE_MARK, 3, "a",
          4, "b", 5, SPACE_MARK "a", 6, SPACE_MARK SPACE_MARK, 7, "merges", SPACE_MARK " a");
      cloq_tok *t = load_json_tok(root, dir, "tokenizer.json");
      assert_int_equal(cloq_tok_kind(t), CLOQ_TOK_SPM);
      assert_int_equal(cloq_tok_add_bos(t), 0);
      if (k == 2) EXPECT_IDS(t, "a b", 0, 4, 3, 5);
      else EXPECT_IDS(t, "a b", 0, 6, 3, 5);
      EXPECT_IDS(t, " a", 0, 6);
      EXPECT_IDS(t, SPACE_MARK "a", 0, 6);
      EXPECT_IDS(t, "<s> a", 0, 1, 6);
      if (k == 1) {
        EXPECT_IDS(t, "<s>a", 0, 1, 6);
        EXPECT_IDS(t, "a<s>a", 0, 6, 1, 6);
      } else {
        EXPECT_IDS(t, "<s>a", 0, 1, 4);
        EXPECT_IDS(t, "a<s>a", 0, k == 0 ? 6 : 4, 1, 4);
      }
      if (k == 2) EXPECT_IDS(t, "a  b", 0, 4, 3, 3, 5);
      else EXPECT_IDS(t, "a  b", 0, 6, 3, 3, 5);
      cloq_tok_free(&t);
    }
  rm_dir(dir);
  free(dir);
}

static void write_text_file(const char *path, const char *text) {
  write_bytes(path, text, strlen(text));
}

/* The NFC normalizer (Qwen2's tokenizer.json): applied to the text between the added tokens that
 * are not normalized, before the normalized ones are looked for (their patterns are normalized
 * too) and before the pre-tokenizer; the pieces that cloq_tok_split gives are those of the
 * normalized text; Metaspace "first" still prepends at the start of the text; cloq_tok_write_hf
 * writes it back. The ids were checked with `tokenizers` 0.23.3. */
static void test_bpe_nfc(void **state) {
  (void)state;
  char alpha[256][4];
  bytes_to_unicode(alpha);
  json_t *vocab = json_object();
  for (int b = 0; b < 256; b++) json_object_set_new(vocab, alpha[b], json_integer(b));
  json_t *added = json_pack("[o, o]", added_tok(256, "<e\xcc\x81>", 1, 0, 0, 0, 0),
                            added_tok(257, "o\xcc\x88", 0, 1, 0, 0, 0));
  json_t *root = json_pack(
      "{s:o, s:{s:s}, s:{s:s, s:b, s:b}, s:n, s:{s:s, s:o, s:[]}}", "added_tokens", added,
      "normalizer", "type", "NFC", "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0,
      "use_regex", 1, "post_processor", "model", "type", "BPE", "vocab", vocab, "merges");
  char *dir = make_tmpdir();
  char *path = join_path(dir, "tokenizer.json");
  assert_int_equal(json_dump_file(root, path, 0), 0);
  json_decref(root);
  cloq_tok *t;
  CHECK_OK(cloq_tok_load(path, 0, &t));
  EXPECT_IDS(t, "e\xcc\x81", 0, 0xC3, 0xA9);                /* e U+0301: the bytes of U+00E9 */
  EXPECT_IDS(t, "\xe2\x84\xab", 0, 0xC3, 0x85);             /* U+212B: those of U+00C5 */
  EXPECT_IDS(t, "A\xcc\x8a\xcc\xa3", 0, 0xE1, 0xBA, 0xA0, 0xCC, 0x8A); /* U+1EA0 U+030A */
  EXPECT_IDS(t, "<e\xcc\x81>", 0, 256);                     /* raw: found before NFC */
  EXPECT_IDS(t, "<\xc3\xa9>", 0, '<', 0xC3, 0xA9, '>');
  EXPECT_IDS(t, "o\xcc\x88", 0, 257);                       /* normalized: found after NFC */
  EXPECT_IDS(t, "\xc3\xb6", 0, 257);
  int64_t *lens, n;
  CHECK_OK(cloq_tok_split(t, "e\xcc\x81 x", 5, &lens, &n)); /* pieces of the NFC text: é| x */
  assert_int_equal(n, 2);
  assert_int_equal(lens[0], 2);
  assert_int_equal(lens[1], 2);
  free(lens);
  int32_t *ids;
  EXPECT_FAIL(cloq_tok_encode(t, "<e\xcc\x81>a\xe1\xb7\xb6\xcc\x81", 11, 0, &ids, &n),
              "U+1DF6 at byte 6");
  /* written back: {"type": "NFC"}, and the same ids */
  CHECK_OK(cloq_tok_write_hf(t, dir));
  json_t *w = json_load_file(path, 0, NULL);
  assert_non_null(w);
  assert_string_equal(json_string_value(json_object_get(json_object_get(w, "normalizer"), "type")),
                      "NFC");
  json_decref(w);
  cloq_tok *back;
  CHECK_OK(cloq_tok_load(path, 0, &back));
  EXPECT_IDS(back, "e\xcc\x81<e\xcc\x81>o\xcc\x88", 0, 0xC3, 0xA9, 256, 257);
  cloq_tok_free(&back);
  cloq_tok_free(&t);

  /* Sequence[NFC] is NFC; other normalizers are refused by name */
  static const char *const norms[][2] = {
      {"{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}]}", NULL},
      {"{\"type\": \"NFD\"}", "normalizer NFD is not supported"},
      {"{\"type\": \"NFKC\"}", "normalizer NFKC is not supported"},
      {"{\"type\": \"Lowercase\"}", "normalizer Lowercase is not supported"},
      {"{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"NFKD\"}]}",
       "normalizer NFKD inside a Sequence is not supported"},
      {"{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"NFC\"}]}",
       "normalizer NFC inside a Sequence is not supported"},
  };
  for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++) {
    char buf[512];
    snprintf(buf, sizeof buf, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": "
             "[]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"normalizer\": %s}", norms[i][0]);
    write_text_file(path, buf);
    if (norms[i][1]) {
      EXPECT_FAIL(cloq_tok_load(path, 0, &t), norms[i][1]);
    } else {
      CHECK_OK(cloq_tok_load(path, 0, &t));
      EXPECT_IDS(t, "a", 0, 0);
      cloq_tok_free(&t);
    }
  }

  /* NFC + Metaspace(first): the prepend still happens at the start of the (normalized) text,
   * not after an added token */
  root = json_pack(
      "{s:[o, o], s:{s:s}, s:{s:s, s:s, s:s, s:b}, s:{s:s, s:s, s:{s:i, s:i, s:i, s:i, s:i, "
      "s:i}, s:[]}}",
      "added_tokens", added_tok(0, "<unk>", 1, 0, 0, 0, 0), added_tok(5, "<m>", 1, 0, 0, 0, 0),
      "normalizer", "type", "NFC", "pre_tokenizer", "type", "Metaspace", "replacement",
      SPACE_MARK, "prepend_scheme", "first", "split", 1, "model", "type", "BPE", "unk_token",
      "<unk>", "vocab", "<unk>", 0, SPACE_MARK, 1, "\xc3\xa9", 2, "e", 3, "\xcc\x81", 4, "<m>", 5,
      "merges");
  t = load_json_tok(root, dir, "tokenizer.json");
  assert_int_equal(cloq_tok_kind(t), CLOQ_TOK_SPM);
  EXPECT_IDS(t, "e\xcc\x81 e\xcc\x81", 0, 1, 2, 1, 2);
  EXPECT_IDS(t, "<m>e\xcc\x81", 0, 5, 2);
  CHECK_OK(cloq_tok_write_hf(t, dir));
  CHECK_OK(cloq_tok_load(path, 0, &back));
  EXPECT_IDS(back, "e\xcc\x81 e\xcc\x81<m>e\xcc\x81", 0, 1, 2, 1, 2, 5, 2);
  cloq_tok_free(&back);
  cloq_tok_free(&t);

  /* Llama 2's Prepend + Replace with NFC after them (it commutes with them): é is not a piece,
   * so its bytes; written back as Sequence[NFC, Prepend, Replace] */
  const char *m[] = {SPACE_MARK " a", "a b", "a a"};
  root = llama2_json(m, 3);
  json_array_append_new(json_object_get(json_object_get(root, "normalizer"), "normalizers"),
                        json_pack("{s:s}", "type", "NFC"));
  t = load_json_tok(root, dir, "tokenizer.json");
  EXPECT_IDS(t, "e\xcc\x81" "a", 1, 1, 259, 3 + 0xC3, 3 + 0xA9, 260);
  CHECK_OK(cloq_tok_write_hf(t, dir));
  w = json_load_file(path, 0, NULL);
  assert_non_null(w);
  json_t *wn = json_object_get(json_object_get(w, "normalizer"), "normalizers");
  assert_int_equal(json_array_size(wn), 3);
  assert_string_equal(json_string_value(json_object_get(json_array_get(wn, 0), "type")), "NFC");
  json_decref(w);
  CHECK_OK(cloq_tok_load(path, 0, &back));
  EXPECT_IDS(back, "e\xcc\x81" "a", 1, 1, 259, 3 + 0xC3, 3 + 0xA9, 260);
  cloq_tok_free(&back);
  cloq_tok_free(&t);
  free(path);
  rm_dir(dir);
  free(dir);
}

static void test_tok_json_errors(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  char *path = join_path(dir, "tokenizer.json");
  cloq_tok *t;
  write_text_file(path, "{\"model\": {\"type\": \"BPE\", ");
  EXPECT_FAIL(cloq_tok_load(path, 0, &t), "malformed JSON");
  assert_null(t);
  write_text_file(path, "  {\"version\": \"1.0\"}");
  EXPECT_FAIL(cloq_tok_load(path, 0, &t), "no \"model\"");
  write_text_file(path, "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
  EXPECT_FAIL(cloq_tok_load(path, 0, &t), "model type Unigram");
  write_text_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                        "\"merges\": [\"a c\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
  EXPECT_FAIL(cloq_tok_load(path, 0, &t), "\"c\" is not in the vocabulary");
  write_text_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                        "\"merges\": [[\"a\", \"b\"]]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
  EXPECT_FAIL(cloq_tok_load(path, 0, &t), "\"ab\" is not in the vocabulary");
  write_text_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2}, "
                        "\"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
  EXPECT_FAIL(cloq_tok_load(path, 0, &t), "id 1 has no piece");
  write_text_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                        "\"pre_tokenizer\": {\"type\": \"Whitespace\"}}");
  EXPECT_FAIL(cloq_tok_load(path, 0, &t), "pre_tokenizer Whitespace is not supported");
  write_text_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                        "\"normalizer\": {\"type\": \"NFKC\"}}");
  EXPECT_FAIL(cloq_tok_load(path, 0, &t), "normalizer NFKC is not supported");
  write_text_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                        "\"pre_tokenizer\": null}");
  EXPECT_FAIL(cloq_tok_load(path, 0, &t), "neither a ByteLevel pre_tokenizer");
  write_text_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}, "
                        "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
  EXPECT_FAIL(cloq_tok_load(path, 1, &t), "more than the model's vocab_size 1");
  CHECK_OK(cloq_tok_load(path, 2, &t));
  cloq_tok_free(&t);
  free(path);
  rm_dir(dir);
  free(dir);
}

/* cloq_tok_write_hf, read back by cloq: the llama2.c vocabulary as a Llama 2 tokenizer.json
 * encodes WikiText as the llama2.c encoder does (the e2e test checks the same files with
 * `tokenizers` and transformers); a byte-level one round-trips. */
static void test_tok_write_hf(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  cloq_tok *l2c = load_tok512();
  CHECK_OK(cloq_tok_write_hf(l2c, dir));
  char *tj = join_path(dir, "tokenizer.json"), *tc = join_path(dir, "tokenizer_config.json");
  char *tm = join_path(dir, "special_tokens_map.json"), *tmp = join_path(dir, "tokenizer.json.tmp");
  cloq_tok *back;
  CHECK_OK(cloq_tok_load(tj, 512, &back));
  assert_int_equal(cloq_tok_kind(back), CLOQ_TOK_SPM);
  assert_int_equal(cloq_tok_size(back), 512);
  assert_int_equal(cloq_tok_add_bos(back), 1);
  assert_string_equal(cloq_tok_piece(back, 1), "<s>");
  assert_string_equal(cloq_tok_piece(back, 259), SPACE_MARK "t");
  json_error_t err;
  json_t *cfg = json_load_file(tc, 0, &err);
  assert_non_null(cfg);
  assert_string_equal(json_string_value(json_object_get(cfg, "bos_token")), "<s>");
  assert_string_equal(json_string_value(json_object_get(cfg, "tokenizer_class")),
                      "PreTrainedTokenizerFast");
  assert_true(json_is_true(json_object_get(cfg, "add_bos_token")));
  json_decref(cfg);
  json_t *map = json_load_file(tm, 0, &err);
  assert_non_null(map);
  assert_string_equal(json_string_value(json_object_get(map, "eos_token")), "</s>");
  json_decref(map);
  FILE *f = fopen(tmp, "rb");
  assert_null(f);
  size_t len;
  char *text = read_text("wikitext-2/wiki.test.raw", &len);
  len = WIKI_PREFIX_BYTES;
  int32_t *a, *b;
  int64_t na, nb;
  CHECK_OK(cloq_tok_encode(l2c, text, len, 1, &a, &na));
  CHECK_OK(cloq_tok_encode(back, text, len, cloq_tok_add_bos(back), &b, &nb));
  check_ids("tok512 written as tokenizer.json, read back", a, na, b, nb);
  printf("    tok512 -> tokenizer.json -> cloq: %lld ids of %d bytes of wiki equal\n",
         (long long)na, WIKI_PREFIX_BYTES);
  /* decode of the SPM form gives the llama2.c bytes */
  for (int64_t i = 1; i < na; i++) {
    size_t l1, l2;
    const char *d1 = cloq_tok_decode(l2c, a[i - 1], a[i], &l1);
    const char *d2 = cloq_tok_decode(back, b[i - 1], b[i], &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(d1, d2, l1);
  }
  free(a);
  free(b);
  cloq_tok_free(&back);

  /* a byte-level vocabulary with added tokens, written and read back */
  const char *extra[] = {"aa", "bc", "ab", "<|x|>"};
  const int32_t types[] = {1, 1, 1, 3};
  const char *merges[] = {"a a", "b c", "a b"};
  cloq_tok *g = byte_vocab("smollm", 4, extra, types, 3, merges);
  CHECK_OK(cloq_tok_write_hf(g, dir));
  CHECK_OK(cloq_tok_load(tj, 0, &back));
  assert_int_equal(cloq_tok_kind(back), CLOQ_TOK_BPE);
  const char *samples[] = {"aaa abc 123<|x|>bcab", "  \n\n x", ""};
  for (int i = 0; i < 3; i++) {
    CHECK_OK(cloq_tok_encode(g, samples[i], strlen(samples[i]), 0, &a, &na));
    CHECK_OK(cloq_tok_encode(back, samples[i], strlen(samples[i]), 0, &b, &nb));
    check_ids("byte-level tokenizer written and read back", a, na, b, nb);
    free(a);
    free(b);
  }
  cloq_tok_free(&back);
  cloq_tok_free(&g);
  char *missing = join_path(dir, "no-such-dir");
  EXPECT_FAIL(cloq_tok_write_hf(l2c, missing), "no-such-dir/tokenizer.json.tmp");
  free(missing);
  cloq_tok_free(&l2c);
  free(text);
  free(tj);
  free(tc);
  free(tm);
  free(tmp);
  rm_dir(dir);
  free(dir);
}

/* llama2.c files without a known vocab_size: as many tokens as the file holds */
static void test_tok_llama2c_any_size(void **state) {
  (void)state;
  char *p = asset_path("stories260K/tok512.bin");
  cloq_tok *t;
  CHECK_OK(cloq_tok_load(p, 0, &t));
  assert_int_equal(cloq_tok_size(t), 512);
  assert_int_equal(cloq_tok_kind(t), CLOQ_TOK_LLAMA2C);
  assert_int_equal(cloq_tok_bos_id(t), 1);
  cloq_tok_free(&t);
  free(p);
}

int run_tokenizer_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tok_story_golden),        cmocka_unit_test(test_tok_greedy_decode),
      cmocka_unit_test(test_tok_wiki_vs_reference),   cmocka_unit_test(test_tok_random_vs_reference),
      cmocka_unit_test(test_tok_global_path),         cmocka_unit_test(test_tok_wiki_full),
      cmocka_unit_test(test_tok_load_errors),         cmocka_unit_test(test_bpe_rank_order),
      cmocka_unit_test(test_bpe_pretokenizers),       cmocka_unit_test(test_bpe_added_tokens),
      cmocka_unit_test(test_spm_by_score),            cmocka_unit_test(test_spm_json_rank),
      cmocka_unit_test(test_tok_json_errors),         cmocka_unit_test(test_tok_write_hf),
      cmocka_unit_test(test_tok_llama2c_any_size),    cmocka_unit_test(test_spm_metaspace),
      cmocka_unit_test(test_bpe_nfc),
  };
  return cmocka_run_group_tests_name("io/tokenizer", tests, NULL, NULL);
}
