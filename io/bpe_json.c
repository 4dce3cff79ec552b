/* bpe_json.c: reading tokenizer.json (normalizer, pre-tokenizer, model, post-processor, added tokens) into a tokenizer; see bpe_vocab.c for the pipeline. */
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
         jstr(n, "content") && !strcmp(jstr(n, "content"), cloq_bpe__space_mark);
}

static int is_prepend_mark(const json_t *n) {
  return !strcmp(jtype(n), "Prepend") && jstr(n, "prepend") &&
         !strcmp(jstr(n, "prepend"), cloq_bpe__space_mark);
}

/* normalizer: null; NFC (Qwen2, Qwen2.5, Qwen3); Llama 2's Sequence[Prepend(U+2581), Replace(' ',
 * U+2581)] (either order, or the Replace alone); a Sequence of these, each at most once (NFC
 * commutes with the other two, so its place in the Sequence does not matter). NFKC, NFD, NFKD,
 * Lowercase, Strip, ... are refused by name. */
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
    else if (!strcmp(jtype(e), "NFC") && !t->nfc) t->nfc = 1;
    else
      return CLOQ_FAIL("%s: normalizer %s%s is not supported (only NFC and Llama 2's "
                       "Prepend(\"\xe2\x96\x81\") and Replace(\" \", \"\xe2\x96\x81\") are, each "
                       "once)", path, jtype(e), seq ? " inside a Sequence" : "");
  }
  CLOQ_CHECK(t->replace_space || !t->prepend, "%s: normalizer Prepend without Replace(\" \", "
             "\"\xe2\x96\x81\") is not supported", path);
  return CLOQ_OK;
}

/* pre_tokenizer: ByteLevel (gpt2); Sequence[Digits(individual_digits), ByteLevel] (smollm);
 * Sequence[Split(Llama 3, Qwen2 or Qwen 3.5 regex, Isolated), ByteLevel(use_regex false)]
 * (llama-bpe, qwen2, qwen35);
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
    CLOQ_CHECK(rep && !strcmp(rep, cloq_bpe__space_mark), "%s: pre_tokenizer Metaspace with replacement "
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
  int digits = 0, split = 0; /* split: TOK_PRE_GPT2, _LLAMA3, _QWEN2, _QWEN35 (its regex) */
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
      if (!strcmp(re, cloq_bpe__hf_llama3)) split = TOK_PRE_LLAMA3;
      else if (!strcmp(re, cloq_bpe__hf_qwen2)) split = TOK_PRE_QWEN2;
      else if (!strcmp(re, cloq_bpe__hf_qwen35)) split = TOK_PRE_QWEN35;
      else if (!strcmp(re, cloq_bpe__hf_gpt2)) split = TOK_PRE_GPT2;
      else
        return CLOQ_FAIL("%s: pre_tokenizer Split regex \"%.60s%s\" is not supported (the GPT-2, "
                         "Llama 3, Qwen2 and Qwen 3.5 patterns are)", path, re,
                         strlen(re) > 60 ? "..." : "");
    } else if (!strcmp(ty, "ByteLevel")) {
      *byte_level = 1;
      t->pre_prefix_space = jbool(e, "add_prefix_space", 1);
      int use_regex = jbool(e, "use_regex", 1);
      if (split) {
        CLOQ_CHECK(split != TOK_PRE_GPT2 || !t->pre_prefix_space, "%s: pre_tokenizer "
                   "Split(GPT-2 regex) + ByteLevel(add_prefix_space) is not supported", path);
        CLOQ_CHECK(!use_regex, "%s: pre_tokenizer Split followed by ByteLevel with use_regex is "
                   "not supported", path);
        CLOQ_CALL(cloq_bpe__setup_pre(t, split, path));
      } else if (digits) {
        CLOQ_CHECK(use_regex && digits == 1, "%s: pre_tokenizer Digits(individual_digits=%s) + "
                   "ByteLevel(use_regex=%s) is not supported", path, digits == 1 ? "true" : "false",
                   use_regex ? "true" : "false");
        CLOQ_CALL(cloq_bpe__setup_pre(t, TOK_PRE_SMOLLM, path));
      } else {
        CLOQ_CHECK(use_regex, "%s: pre_tokenizer ByteLevel without use_regex is not supported",
                   path);
        CLOQ_CALL(cloq_bpe__setup_pre(t, TOK_PRE_GPT2, path));
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
  if (rc == CLOQ_OK) rc = cloq_bpe__set_pieces(t, n, pieces, lens);
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
      CLOQ_CALL(cloq_bpe__add_merge(t, r, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), path));
    } else {
      const char *l = json_string_value(json_array_get(m, 0));
      const char *rr = json_string_value(json_array_get(m, 1));
      CLOQ_CHECK(json_is_array(m) && json_array_size(m) == 2 && l && rr,
                 "%s: model.merges[%lld] is neither \"left right\" nor [left, right]", path,
                 (long long)r);
      CLOQ_CALL(cloq_bpe__add_merge(t, r, l, strlen(l), rr, strlen(rr), path));
    }
  }
  CLOQ_CALL(cloq_bpe__build_merge_index(t));
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

  /* the kind: ByteLevel pre-tokenizer, or Llama 2's normalizer and no pre-tokenizer (NFC goes
   * with any of them) */
  int byte_level;
  CLOQ_CALL(parse_normalizer(t, json_object_get(root, "normalizer"), path));
  CLOQ_CALL(parse_pre(t, json_object_get(root, "pre_tokenizer"), path, &byte_level));
  if (byte_level) {
    CLOQ_CHECK(!t->replace_space, "%s: Llama 2's normalizer together with a ByteLevel "
               "pre_tokenizer is not supported", path);
    t->kind = CLOQ_TOK_BPE;
  } else if (t->meta) {
    CLOQ_CHECK(!t->replace_space, "%s: Llama 2's normalizer together with a Metaspace "
               "pre_tokenizer is not supported", path);
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
  CLOQ_CALL(cloq_bpe__finish(t));

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
  cloq_tok *t = cloq_bpe__new_tok(CLOQ_TOK_BPE);
  int rc = t ? parse_json(t, root, path) : CLOQ_FAIL("%s: out of memory", path);
  json_decref(root);
  if (rc != CLOQ_OK) {
    cloq_tok_free(&t);
    return rc;
  }
  *out = t;
  return CLOQ_OK;
}
