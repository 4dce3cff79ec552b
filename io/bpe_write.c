/* bpe_write.c: writing a tokenizer back as a Hugging Face tokenizer.json (and its companions) that `tokenizers` loads to the same ids. */
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
        memcpy(o + k, cloq_bpe__space_mark, 3);
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
    for (size_t k = cloq_bpe__char_len(p, len); k < len; k += cloq_bpe__char_len(p + k, len - k)) {
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

/* The normalizer n (owned) with NFC in front: {"type": "NFC"} alone when n is null (Qwen2's
 * tokenizer.json), else Sequence[NFC, ...]. NULL when out of memory. */
static json_t *with_nfc(json_t *n) {
  json_t *nfc = json_pack("{s:s}", "type", "NFC");
  if (!n || !nfc) {
    json_decref(n);
    json_decref(nfc);
    return NULL;
  }
  if (json_is_null(n)) return nfc;
  json_t *list = json_object_get(n, "normalizers");
  if (!list) return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "normalizers", nfc, n);
  if (json_array_insert_new(list, 0, nfc) != 0) {
    json_decref(n);
    return NULL;
  }
  return n;
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
                               "content", cloq_bpe__space_mark);
      normalizer = prepend ? json_pack("{s:s, s:[{s:s, s:s}, o]}", "type", "Sequence",
                                       "normalizers", "type", "Prepend", "prepend", cloq_bpe__space_mark, repl)
                           : repl;
      pre = json_null();
      if (t->meta) {
        static const char *const schemes[3] = {"never", "first", "always"};
        json_decref(normalizer);
        normalizer = json_null();
        pre = json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", cloq_bpe__space_mark,
                        "prepend_scheme", schemes[t->meta_scheme], "split", t->meta_split);
      }
      decoder = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]}", "type", "Sequence",
                          "decoders", "type", "Replace", "pattern", "String", cloq_bpe__space_mark,
                          "content", " ", "type", "ByteFallback", "type", "Fuse");
      if (prepend)
        json_array_append_new(json_object_get(decoder, "decoders"),
                              json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ",
                                        "start", 1, "stop", 0));
    } else {
      normalizer = json_null();
      /* the Split regex of llama-bpe, qwen2, qwen35 (ByteLevel then runs without its own) */
      const char *split = t->pre == TOK_PRE_LLAMA3   ? cloq_bpe__hf_llama3
                          : t->pre == TOK_PRE_QWEN2  ? cloq_bpe__hf_qwen2
                          : t->pre == TOK_PRE_QWEN35 ? cloq_bpe__hf_qwen35
                                                     : NULL;
      json_t *bl = bytelevel_json(t->pre_prefix_space, split == NULL);
      if (t->pre == TOK_PRE_SMOLLM)
        pre = json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type",
                        "Digits", "individual_digits", 1, bl);
      else if (split)
        pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                        "pretokenizers", "type", "Split", "pattern", "Regex", split, "behavior",
                        "Isolated", "invert", 0, bl);
      else
        pre = bl;
      decoder = bytelevel_json(1, 1);
    }
    if (t->nfc) normalizer = with_nfc(normalizer);
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
