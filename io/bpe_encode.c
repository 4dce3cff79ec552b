/* bpe_encode.c: encoding text as `tokenizers` (Tokenizer::encode) does: added tokens, normalizer, pre-tokenizer, the model, BOS; see bpe_vocab.c for the pipeline. */
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
  const char *text0;   /* the text being encoded */
  const char *first;   /* where it starts after the normalizer (Metaspace "first" prepends only
                          there: `tokenizers` asks for original offset 0) */
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
    size_t cl = cloq_bpe__char_len(w + i, n - i);
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
    size_t cl = cloq_bpe__char_len(w + i, n - i);
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
  for (size_t i = 0; i < n; i++) k += cloq_bpe__put_utf8((uint32_t)cloq_bpe__bl_cp((unsigned char)w[i]), s->wbuf + k);
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
      start = b + cloq_bpe__char_len(str + b, n - b);
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
 * (ByteLevel is the last regex for gpt2 and smollm, after the Split for llama-bpe, qwen2 and
 * qwen35). */
static int pre_split(enc *s, int step, const char *str, size_t n) {
  const cloq_tok *t = s->t;
  int split_first = t->pre == TOK_PRE_LLAMA3 || t->pre == TOK_PRE_QWEN2 || t->pre == TOK_PRE_QWEN35;
  int bl_step = split_first ? t->n_re : t->n_re - 1;
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
  int pre = t->meta_scheme == 2 || (t->meta_scheme == 1 && str == s->first);
  if (pre && !(str[0] == ' ' || (n >= 3 && !memcmp(str, cloq_bpe__space_mark, 3)))) {
    memcpy(w, cloq_bpe__space_mark, 3);
    k = 3;
  }
  for (size_t i = 0; i < n; i++) {
    if (str[i] == ' ') {
      memcpy(w + k, cloq_bpe__space_mark, 3);
      k += 3;
    } else {
      w[k++] = str[i];
    }
  }
  if (!t->meta_split) return spm_model(s, w, k);
  /* hf_word and spm_word do not touch wbuf: the pieces can stay in it */
  size_t start = 0;
  for (size_t i = 1; i + 3 <= k; i++)
    if (!memcmp(w + i, cloq_bpe__space_mark, 3)) {
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
          uint32_t cp = cloq_bpe__decode_cp(text + b, ns - b);
          if (cp == UINT32_MAX || !cloq_bpe__is_ws(cp)) break;
          ns = b;
        }
        start = ns > start_offset ? ns : start_offset;
      }
      if (a->rstrip)
        while (stop < len) {
          size_t cl = cloq_bpe__char_len(text + stop, len - stop);
          uint32_t cp = cloq_bpe__decode_cp(text + stop, cl);
          if (cp == UINT32_MAX || !cloq_bpe__is_ws(cp)) break;
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

/* A raw-text segment between added tokens: normalize, then the normalized added tokens (the
 * pieces that follow are those of the normalized text). */
static int enc_segment(enc *s, const char *seg, size_t n) {
  const cloq_tok *t = s->t;
  if (!cloq_bpe__has_normalizer(t)) return split_added(s, 1, seg, n);
  char *norm;
  size_t nl;
  CLOQ_CALL(cloq_bpe__normalize(t, seg, n, (size_t)(seg - s->text0), &norm, &nl));
  const char *first = s->first;
  if (seg == s->text0) s->first = norm;
  int rc = split_added(s, 1, norm, nl);
  s->first = first;
  free(norm);
  return rc;
}

static int run(enc *s, const char *text, size_t len, int bos) {
  const cloq_tok *t = s->t;
  s->text0 = s->first = text;
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
