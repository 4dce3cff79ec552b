/* cloq_calib: see cloq_calib.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_calib.h"
#include "cloq_err.h"
#include "cloq_linalg.h"

int64_t cloq_default_seqlen(const cloq_opts *o, const cloq_config *cfg) {
  if (o->seqlen > 0) return o->seqlen;
  return cfg->max_pos < 2048 ? cfg->max_pos : 2048;
}

static int tokenize_file(const cloq_tok *tok, const char *file, cloq_samples *out) {
  char *text = NULL;
  size_t len = 0;
  int rc = cloq_read_file(file, &text, &len);
  if (rc == CLOQ_OK && len == 0) rc = CLOQ_FAIL("%s is empty", file);
  const char *nul = rc == CLOQ_OK ? memchr(text, 0, len) : NULL;
  if (nul)
    rc = CLOQ_FAIL("%s: a NUL byte at offset %lld: not a text file", file,
                   (long long)(nul - text));
  if (rc == CLOQ_OK)
    rc = cloq_tok_encode(tok, text, len, cloq_tok_add_bos(tok), &out->tokens, &out->ntokens);
  free(text);
  return rc;
}

/* The token stream of a JSON Lines file being built, record by record. */
typedef struct {
  const cloq_tok *tok;
  cloq_samples *out;
  int64_t cap;
} jsonl_stream;

/* Appends one record's tokens ([BOS +] its text, as a text file of that text) to the stream. */
static int append_record(void *ctx, const char *text, size_t len, int64_t line) {
  jsonl_stream *s = ctx;
  cloq_samples *out = s->out;
  if (len == 0) return CLOQ_OK; /* no text: no document (WikiText's blank rows), not a lone BOS */
  int32_t *ids = NULL;
  int64_t n = 0;
  CLOQ_CALL(cloq_tok_encode(s->tok, text, len, cloq_tok_add_bos(s->tok), &ids, &n));
  int rc = CLOQ_OK;
  if (out->ntokens + n > s->cap) {
    int64_t cap = s->cap ? s->cap : 1 << 16;
    while (cap < out->ntokens + n) cap *= 2;
    int32_t *g = realloc(out->tokens, (size_t)cap * sizeof *g);
    if (g) {
      out->tokens = g;
      s->cap = cap;
    } else {
      rc = CLOQ_FAIL("line %lld: out of memory for %lld tokens", (long long)line, (long long)cap);
    }
  }
  if (rc == CLOQ_OK) {
    memcpy(out->tokens + out->ntokens, ids, (size_t)n * sizeof *ids);
    out->ntokens += n;
    out->ndocs++;
  }
  free(ids);
  return rc;
}

/* The token stream of file: a text file is one document, [BOS +] its whole text; a JSON Lines
 * file is one document per record, each record's field tokenized the same way and the records'
 * tokens concatenated in file order (records whose field is "" add nothing). */
static int tokenize_source(const cloq_opts *o, const cloq_model *m, const char *file,
                           const char *format, const char *field, cloq_samples *out) {
  cloq_tok *tok = NULL;
  CLOQ_CALL(cloq_model_tokenizer(m, o->tokenizer, &tok));
  int rc;
  if (!strcmp(format, "jsonl")) {
    jsonl_stream s = {.tok = tok, .out = out};
    rc = cloq_jsonl_read(file, field, append_record, &s, &out->nrecords);
    if (rc == CLOQ_OK && out->ndocs == 0)
      rc = CLOQ_FAIL("%s: the field \"%s\" is empty in all %lld records: no text", file, field,
                     (long long)out->nrecords);
  } else {
    rc = tokenize_file(tok, file, out);
    out->nrecords = out->ndocs = 1;
  }
  cloq_tok_free(&tok);
  return rc;
}

static int alloc_views(cloq_samples *out, int64_t n) {
  out->n = n;
  CLOQ_ALLOC(out->len, n, "samples");
  CLOQ_ALLOC(out->ids, n, "samples");
  return CLOQ_OK;
}

static void finish_stats(cloq_samples *out) {
  out->max_t = out->total = 0;
  for (int64_t s = 0; s < out->n; s++) {
    out->total += out->len[s];
    if (out->len[s] > out->max_t) out->max_t = out->len[s];
  }
}

static int from_token_file(const char *file, const cloq_config *cfg, int64_t limit, int64_t minlen,
                           cloq_samples *out) {
  CLOQ_CALL(cloq_seqs_read_tokens(file, cfg->vocab_size, &out->seqs));
  int64_t n = out->seqs.n;
  if (limit > 0 && limit < n) n = limit;
  CLOQ_CALL(alloc_views(out, n));
  for (int64_t s = 0; s < n; s++) {
    CLOQ_CHECK(out->seqs.len[s] >= minlen, "%s: sequence %lld has %lld tokens, fewer than %lld",
               file, (long long)s + 1, (long long)out->seqs.len[s], (long long)minlen);
    out->len[s] = out->seqs.len[s];
    out->ids[s] = out->seqs.ids[s];
  }
  finish_stats(out);
  return CLOQ_OK;
}

int cloq_samples_calib(const cloq_opts *o, const cloq_model *m, cloq_samples *out) {
  const cloq_config *cfg = &m->cfg;
  memset(out, 0, sizeof *out);
  if (!strcmp(o->calib_format, "tokens"))
    return from_token_file(o->calib, cfg, o->nsamples, 1, out);
  int64_t L = cloq_default_seqlen(o, cfg);
  out->seqlen = L;
  CLOQ_CALL(tokenize_source(o, m, o->calib, o->calib_format, o->calib_field, out));
  CLOQ_CHECK(out->ntokens >= L,
             "calibration text %s has %lld tokens, fewer than --seqlen %lld: too short",
             o->calib, (long long)out->ntokens, (long long)L);
  CLOQ_CALL(alloc_views(out, o->nsamples));
  /* GPTQ draws start positions uniformly; ours come from a portable generator so the windows
   * depend only on --seed. */
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix((uint64_t)o->seed, 0x63616c6962ULL, 0));
  uint64_t span = (uint64_t)(out->ntokens - L + 1);
  for (int64_t s = 0; s < out->n; s++) {
    int64_t start = (int64_t)(cloq_rng_u64(&g) % span);
    out->ids[s] = out->tokens + start;
    out->len[s] = L;
  }
  finish_stats(out);
  return CLOQ_OK;
}

int cloq_samples_eval(const cloq_opts *o, const cloq_model *m, cloq_samples *out) {
  const cloq_config *cfg = &m->cfg;
  memset(out, 0, sizeof *out);
  if (!strcmp(o->data_format, "tokens")) return from_token_file(o->data, cfg, o->limit, 2, out);
  int64_t L = cloq_default_seqlen(o, cfg);
  CLOQ_CHECK(L >= 2, "--seqlen must be at least 2 for evaluation");
  out->seqlen = L;
  CLOQ_CALL(tokenize_source(o, m, o->data, o->data_format, o->data_field, out));
  int64_t nw = out->ntokens / L;
  CLOQ_CHECK(nw >= 1, "evaluation text %s has %lld tokens, fewer than one window of %lld",
             o->data, (long long)out->ntokens, (long long)L);
  if (o->limit > 0 && o->limit < nw) nw = o->limit;
  CLOQ_CALL(alloc_views(out, nw));
  for (int64_t s = 0; s < nw; s++) {
    out->ids[s] = out->tokens + s * L;
    out->len[s] = L;
  }
  finish_stats(out);
  return CLOQ_OK;
}

void cloq_samples_free(cloq_samples *s) {
  free(s->len);
  free(s->ids);
  free(s->tokens);
  if (s->seqs.ids) cloq_seqs_free(&s->seqs);
  memset(s, 0, sizeof *s);
}
