/* cloq_run: see cloq_run.h. */
#include "cloq_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cloq_err.h"

void cloq_run_free(run_ctx *c) {
  cloq_worker_destroy(&c->w);
  cloq_worker_destroy(&c->w2);
  free(c->lg_fp);
  free(c->lg_q);
  cloq_samples_free(&c->samples);
  free(c->embed);
  free(c->logits);
  cloq_model_close(&c->model);
  c->st = NULL;
  cloq_plan_free(&c->plan);
}

/* Phase 1 on every rank: config, checkpoint header, plan. */
int cloq_run_load_model(const cloq_opts *o, run_ctx *c) {
  CLOQ_CALL(cloq_model_open(o->model, &c->model));
  c->cfg = c->model->cfg;
  c->st = c->model->st;
  CLOQ_CALL(cloq_plan_make(c->comm, c->cfg.n_layers, &c->plan));
  return CLOQ_OK;
}

/* Phase 2 on rank 0: samples and the embedding table. */
int cloq_run_load_samples(const cloq_opts *o, run_ctx *c, int eval) {
  if (c->rank != 0) return CLOQ_OK;
  const int64_t max_pos = c->cfg.max_pos;
  /* positions beyond the model's trained range (RoPE extrapolation) are refused, as sample does */
  CLOQ_CHECK(o->seqlen <= max_pos, "--seqlen %lld exceeds the model's max_position_embeddings %lld",
             (long long)o->seqlen, (long long)max_pos);
  if (eval) CLOQ_CALL(cloq_samples_eval(o, c->model, &c->samples));
  else CLOQ_CALL(cloq_samples_calib(o, c->model, &c->samples));
  for (int64_t s = 0; s < c->samples.n; s++)
    CLOQ_CHECK(c->samples.len[s] <= max_pos,
               "%s line %lld has %lld tokens, more than the model's max_position_embeddings %lld",
               eval ? o->data : o->calib, (long long)s + 1, (long long)c->samples.len[s],
               (long long)max_pos);
  int64_t n;
  CLOQ_CALL(cloq_mul64(c->cfg.vocab_size, c->cfg.dim, &n));
  CLOQ_ALLOC(c->embed, n, "embedding table");
  int64_t shape[2] = {c->cfg.vocab_size, c->cfg.dim};
  CLOQ_CALL(cloq_ckpt_read_f32(c->st, "model.embed_tokens.weight", 2, shape, c->embed));
  return CLOQ_OK;
}

/* Share rank 0's sample statistics: {n, max_t, total, seqlen}. Collective. */
int cloq_run_bcast_stats(run_ctx *c, int64_t v[4]) {
  if (c->rank == 0) {
    v[0] = c->samples.n;
    v[1] = c->samples.max_t;
    v[2] = c->samples.total;
    v[3] = c->samples.seqlen;
  }
  CLOQ_MPI(MPI_Bcast(v, 4, MPI_INT64_T, 0, c->comm));
  return CLOQ_OK;
}

int cloq_run_source(void *ctx, int64_t s, const int32_t **ids, int64_t *t) {
  run_ctx *c = ctx;
  if (c->kl) s /= 2; /* each sample twice: full precision, then quantized */
  *ids = c->samples.ids[s];
  *t = c->samples.len[s];
  return CLOQ_OK;
}

/* Peak resident memory of every rank, printed by rank 0. Collective. */
void cloq_run_report_rss(MPI_Comm comm, int rank, int size) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double mine = (double)ru.ru_maxrss / 1024.0, *all = rank == 0 ? calloc(size, sizeof *all) : NULL;
  /* a failure loses only this line (recorded) */
  int e = CLOQ_MPI_RC(MPI_Gather(&mine, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, 0, comm));
  if (rank == 0 && all && e == CLOQ_OK) {
    printf("peak RSS (MiB):");
    for (int i = 0; i < size; i++) printf(" rank %d %.1f%s", i, all[i], i + 1 < size ? "," : "\n");
    fflush(stdout);
  }
  free(all);
}

