/* test_tokenizer.c: the llama2.c tokenizer against the goldens of reference_outputs.json and
 * against a literal port of llama2.c run.c `encode` (the quadratic merge loop, kept here as the
 * reference), on WikiText-2, on random bytes (invalid UTF-8 included), and on a vocabulary with
 * spaces inside pieces, which forces the global (non-chunked) merge path.
 */
#include "test_io.h"

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

int run_tokenizer_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tok_story_golden),        cmocka_unit_test(test_tok_greedy_decode),
      cmocka_unit_test(test_tok_wiki_vs_reference),   cmocka_unit_test(test_tok_random_vs_reference),
      cmocka_unit_test(test_tok_global_path),         cmocka_unit_test(test_tok_wiki_full),
      cmocka_unit_test(test_tok_load_errors),
  };
  return cmocka_run_group_tests_name("io/tokenizer", tests, NULL, NULL);
}
