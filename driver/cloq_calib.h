/* cloq_calib: rank 0 reads the calibration or evaluation data and cuts it into the samples it
 * streams (calibration windows, evaluation windows or lines). Nothing here is collective. */
#ifndef CLOQ_CALIB_H
#define CLOQ_CALIB_H

#include <stdint.h>

#include "cloq_cli.h"
#include "cloq_config.h"
#include "cloq_data.h"
#include "model.h"

/* The samples rank 0 streams: views into `tokens` (text, jsonl) or the token file's lines. */
typedef struct {
  int64_t n;          /* samples */
  int64_t *len;       /* len[s] */
  int32_t **ids;      /* ids[s] (views) */
  int64_t max_t;      /* longest sample */
  int64_t total;      /* sum of len */
  int64_t seqlen;     /* window length used for text (0 for token files) */
  int32_t *tokens;    /* owned: the whole tokenized text (text, jsonl) */
  int64_t ntokens;
  int64_t nrecords;   /* jsonl: records read (text: 1) */
  int64_t ndocs;      /* jsonl: records with text, each a document in tokens (text: 1) */
  cloq_seqs seqs;     /* owned: token-file lines */
} cloq_samples;

/* Not collective (rank 0). Calibration windows: text is tokenized with BOS and nsamples windows
 * of seqlen tokens are drawn with the seed; jsonl: each record's field (o->calib_field) is
 * tokenized as a text file of that text would be, the records' tokens concatenated in file order
 * (empty fields skipped), and the windows drawn from that stream as from a text's; a token file
 * gives its first nsamples lines. */
int cloq_samples_calib(const cloq_opts *o, const cloq_model *m, cloq_samples *out);
/* Not collective (rank 0). Evaluation: text follows the GPTQ protocol (BOS + whole text,
 * non-overlapping windows of seqlen); jsonl: the stream of records built as for calibration
 * (o->data_field), cut the same way; a token file gives one sequence per line. */
int cloq_samples_eval(const cloq_opts *o, const cloq_model *m, cloq_samples *out);
void cloq_samples_free(cloq_samples *s);
/* The effective window length: --seqlen or min(2048, max_position_embeddings). */
int64_t cloq_default_seqlen(const cloq_opts *o, const cloq_config *cfg);

#endif
