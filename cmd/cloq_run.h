/* cloq_run: what `cloq init`, `cloq sweep` and `cloq eval` share: a run's context on every rank
 * (config, checkpoint, block plan, rank 0's samples and embedding table, the worker), its first
 * phases and the step outcome macro. */
#ifndef CLOQ_RUN_H
#define CLOQ_RUN_H

#include <mpi.h>
#include <stdint.h>

#include "cloq_calib.h"
#include "cloq_cli.h"
#include "cloq_config.h"
#include "cloq_ckpt.h"
#include "cloq_mpi.h"
#include "cloq_plan.h"
#include "cloq_worker.h"

/* MPI tags of the commands' own messages (the stream and the block init have theirs). */
enum { TAG_PROGRESS = 21, TAG_SEQ = 22 };

typedef struct {
  MPI_Comm comm;
  int rank, size;
  cloq_model *model;    /* config and checkpoint, recognized and read once */
  cloq_config cfg;      /* model->cfg */
  cloq_ckpt *st;          /* model->st (owned by model) */
  cloq_plan plan;
  float *embed;         /* rank 0: (vocab, dim) */
  cloq_samples samples; /* rank 0 */
  cloq_worker *w;       /* ranks in the chain that own blocks, or the last one */
  /* eval sink state */
  double nll;
  int64_t count;
  float *logits;
  int64_t nlog;
  /* eval --kl: w2 holds the quantized blocks; even samples run the full-precision model (w),
   * odd ones the quantized model (w2) on the same tokens */
  cloq_worker *w2;
  int kl;
  double nll_fp, kl_sum;
  int64_t count_fp, kl_count;
  float *lg_fp, *lg_q;  /* (max_t, vocab) logits of the current pair */
} run_ctx;


/* Every rank's outcome of a phase: on any failure, the lowest failing rank prints its line and
 * every rank jumps to its `fail:` label (needs a run_ctx `c`). */
#define AGREE(expr)                                                                                \
  do {                                                                                             \
    if (cloq_mpi_report(c.comm, (expr)) != CLOQ_OK) goto fail;                                    \
  } while (0)



/* Not collective. Frees what the context holds; accepts a partly filled one. */
void cloq_run_free(run_ctx *c);
/* Not collective (every rank, the same inputs): config, checkpoint header, block plan. */
int cloq_run_load_model(const cloq_opts *o, run_ctx *c);
/* Not collective (rank 0; the others return at once): the samples (eval: evaluation data, else
 * calibration) checked against the model's limits, and the embedding table. */
int cloq_run_load_samples(const cloq_opts *o, run_ctx *c, int eval);
/* Collective. Rank 0's sample statistics on every rank: {n, max_t, total, seqlen}. */
int cloq_run_bcast_stats(run_ctx *c, int64_t v[4]);
/* The stream's source on rank 0 (cloq_source_fn): sample s of c->samples. */
int cloq_run_source(void *ctx, int64_t s, const int32_t **ids, int64_t *t);
/* Collective. Peak resident memory of every rank, printed by rank 0. */
void cloq_run_report_rss(MPI_Comm comm, int rank, int size);

#endif
