/* cloq_cmd: the `init` and `eval` commands. Both are collective over comm and proceed in phases;
 * after each phase every rank agrees on the outcome (cloq_agree), so a failure on any rank ends
 * the run on all of them with one error line and no rank left waiting.
 *
 * init:  load (each rank its blocks) -> rank 0 draws calibration samples -> store layout
 *        (collective) -> calibration stream through the chain (Gram matrices in float64) ->
 *        each owner quantizes and initializes its blocks, writing independently -> finish.
 * eval:  load -> (store: replace owned weights by (codes - zeros) * scales + B A) -> stream ->
 *        the last rank applies the head and sums the NLL -> rank 0 prints `ppl`.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "cloq_blockinit.h"
#include "cloq_driver.h"
#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_linalg.h"
#include "cloq_store.h"
#include "cloq_stream.h"

enum { TAG_PROGRESS = 21 };

typedef struct {
  MPI_Comm comm;
  int rank, size;
  cloq_config cfg;
  cloq_st *st;
  cloq_plan plan;
  float *embed;         /* rank 0: (vocab, dim) */
  cloq_samples samples; /* rank 0 */
  cloq_worker *w;       /* ranks in the chain that own blocks, or the last one */
  /* eval sink state */
  double nll;
  int64_t count;
  float *logits;
  int64_t nlog;
} run_ctx;

static void ctx_free(run_ctx *c) {
  cloq_worker_destroy(&c->w);
  cloq_samples_free(&c->samples);
  free(c->embed);
  free(c->logits);
  cloq_st_close(&c->st);
  cloq_plan_free(&c->plan);
}

/* Phase 1 on every rank: config, checkpoint header, plan. */
static int load_model(const cloq_opts *o, run_ctx *c) {
  CLOQ_CALL(cloq_config_read(o->model, &c->cfg));
  CLOQ_CALL(cloq_st_open(o->model, &c->st));
  CLOQ_CALL(cloq_plan_make(c->comm, c->cfg.n_layers, &c->plan));
  return CLOQ_OK;
}

static int check_rank(const cloq_opts *o, const cloq_config *cfg) {
  for (int m = 0; m < CLOQ_NMOD; m++) {
    int64_t no, ni;
    cloq_module_shape(cfg, m, &no, &ni);
    int64_t lim = no < ni ? no : ni;
    CLOQ_CHECK(o->rank <= lim, "--rank %lld exceeds min(n_out, n_in) = %lld of %s (%lld x %lld)",
               (long long)o->rank, (long long)lim, cloq_module_name[m], (long long)no,
               (long long)ni);
  }
  return CLOQ_OK;
}

/* Phase 2 on rank 0: samples and the embedding table. */
static int load_samples(const cloq_opts *o, run_ctx *c, int eval) {
  if (c->rank != 0) return CLOQ_OK;
  if (eval) CLOQ_CALL(cloq_samples_eval(o, &c->cfg, &c->samples));
  else CLOQ_CALL(cloq_samples_calib(o, &c->cfg, &c->samples));
  int64_t n;
  CLOQ_CALL(cloq_mul64(c->cfg.vocab_size, c->cfg.dim, &n));
  CLOQ_ALLOC(c->embed, n, "embedding table");
  int64_t shape[2] = {c->cfg.vocab_size, c->cfg.dim};
  CLOQ_CALL(cloq_st_read_f32(c->st, "model.embed_tokens.weight", 2, shape, c->embed));
  return CLOQ_OK;
}

/* Share rank 0's sample statistics: {n, max_t, total, seqlen}. Collective. */
static void bcast_stats(run_ctx *c, int64_t v[4]) {
  if (c->rank == 0) {
    v[0] = c->samples.n;
    v[1] = c->samples.max_t;
    v[2] = c->samples.total;
    v[3] = c->samples.seqlen;
  }
  MPI_Bcast(v, 4, MPI_INT64_T, 0, c->comm);
}

static int source(void *ctx, int64_t s, const int32_t **ids, int64_t *t) {
  run_ctx *c = ctx;
  *ids = c->samples.ids[s];
  *t = c->samples.len[s];
  return CLOQ_OK;
}

static int sink_nll(void *ctx, int64_t s, const float *x, const int32_t *ids, int64_t t) {
  run_ctx *c = ctx;
  return cloq_worker_nll(c->w, x, ids, t, &c->nll, &c->count, s == 0 ? c->logits : NULL,
                         c->nlog);
}

static const char *const stage_names[CLOQ_NST] = {"eig", "quant", "init", "write"};

/* One line per finished block; `done` counts the blocks reported so far (this one included),
 * and the ETA assumes the remaining blocks take as long as the average one so far since t_init
 * (owners work concurrently, so this is the time until the last report, not a sum). */
static void print_progress(const double *v, int64_t n_layers, int64_t done, double t0,
                           double t_init) {
  double now = cloq_now();
  printf("block %lld/%lld (rank %d): forward+gram %.3f s", (long long)v[0] + 1,
         (long long)n_layers, (int)v[2], v[3]);
  for (int i = 0; i < CLOQ_NST; i++) printf(", %s %.3f s", stage_names[i], v[4 + i]);
  printf("  [%lld/%lld done, %.1f s, ETA %.1f s]\n", (long long)done, (long long)n_layers,
         now - t0, (now - t_init) / (double)done * (double)(n_layers - done));
  fflush(stdout);
}

/* Phase 6: initialize owned blocks; rank 0 prints one line per block as owners report. */
static int init_blocks(const cloq_opts *o, run_ctx *c, cloq_store *store, double t0) {
  cloq_init_params ip = {.bits = o->bits,
                         .group_size = o->group_size,
                         .rank = o->rank,
                         .init = !strcmp(o->init, "zero")  ? CLOQ_INIT_ZERO
                                 : !strcmp(o->init, "svd") ? CLOQ_INIT_SVD
                                                           : CLOQ_INIT_CLOQ,
                         .damp = o->damp,
                         .seed = (uint64_t)o->seed};
  int rc = CLOQ_OK;
  int64_t done = 0;
  double t_init = cloq_now();
  for (int64_t b = c->plan.b0; b < c->plan.b1; b++) {
    double v[4 + CLOQ_NST] = {(double)b, 0, (double)c->rank, 0};
    if (rc == CLOQ_OK) {
      v[3] = cloq_worker_forward_seconds(c->w, b);
      rc = cloq_block_init(c->w, &c->cfg, b, &ip, store, v + 4);
    }
    v[1] = rc == CLOQ_OK;
    if (c->rank == 0) {
      if (rc == CLOQ_OK) print_progress(v, c->cfg.n_layers, ++done, t0, t_init);
    } else {
      MPI_Send(v, 4 + CLOQ_NST, MPI_DOUBLE, 0, TAG_PROGRESS, c->comm);
    }
  }
  if (c->rank == 0) {
    int64_t others = c->cfg.n_layers - (c->plan.b1 - c->plan.b0);
    for (int64_t i = 0; i < others; i++) {
      double v[4 + CLOQ_NST];
      MPI_Recv(v, 4 + CLOQ_NST, MPI_DOUBLE, MPI_ANY_SOURCE, TAG_PROGRESS, c->comm,
               MPI_STATUS_IGNORE);
      if (v[1] != 0) print_progress(v, c->cfg.n_layers, ++done, t0, t_init);
    }
  }
  return rc;
}

#define AGREE(expr)                                                                                \
  do {                                                                                             \
    if (cloq_agree(c.comm, (expr)) != CLOQ_OK) goto fail;                                          \
  } while (0)

int cloq_cmd_init(const cloq_opts *o, MPI_Comm comm) {
  run_ctx c = {.comm = comm};
  cloq_store *store = NULL;
  MPI_Comm_rank(comm, &c.rank);
  MPI_Comm_size(comm, &c.size);
  double t0 = cloq_now();
  int rc = access(o->out, F_OK) == 0 && !o->force
               ? CLOQ_FAIL("output %s exists (use --force to overwrite it)", o->out)
               : CLOQ_OK;
  if (rc == CLOQ_OK) rc = load_model(o, &c);
  if (rc == CLOQ_OK) rc = check_rank(o, &c.cfg);
  AGREE(rc);
  AGREE(load_samples(o, &c, 0));
  int64_t stats[4];
  bcast_stats(&c, stats);
  if (c.rank == 0) {
    printf("cloq init: %s: %lld blocks, d %lld, mlp %lld, heads %lld/%lld; %d rank(s)\n",
           o->model, (long long)c.cfg.n_layers, (long long)c.cfg.dim, (long long)c.cfg.hidden_dim,
           (long long)c.cfg.n_heads, (long long)c.cfg.n_kv_heads, c.size);
    printf("settings: quantizer %s, bits %d, group %lld, init %s, rank %lld, damp %g, seed %lld\n",
           o->quantizer, o->bits, (long long)o->group_size, o->init, (long long)o->rank, o->damp,
           (long long)o->seed);
    printf("calibration: %lld samples, %lld tokens from %s (%s)\n", (long long)stats[0],
           (long long)stats[2], o->calib, o->calib_format);
    fflush(stdout);
  }
  cloq_store_meta meta = {.bits = o->bits,
                          .group_size = o->group_size,
                          .rank = o->rank,
                          .damp = o->damp,
                          .seed = o->seed,
                          .nsamples = stats[0],
                          .seqlen = stats[3],
                          .calib_tokens = stats[2],
                          .nranks = c.size};
  snprintf(meta.model, sizeof meta.model, "%s", o->model);
  snprintf(meta.calib, sizeof meta.calib, "%s", o->calib);
  snprintf(meta.calib_format, sizeof meta.calib_format, "%s", o->calib_format);
  snprintf(meta.init, sizeof meta.init, "%s", o->init);
  snprintf(meta.quantizer, sizeof meta.quantizer, "%s", o->quantizer);
  AGREE(cloq_store_create(comm, o->out, o->force, &c.cfg, &meta, &store));

  rc = CLOQ_OK;
  if (c.plan.b1 > c.plan.b0) {
    cloq_worker_params wp = {.b0 = c.plan.b0, .b1 = c.plan.b1, .gram = !strcmp(o->init, "cloq"),
                             .max_t = stats[1]};
    rc = cloq_worker_create(&c.cfg, c.st, &wp, &c.w);
  }
  AGREE(rc);
  double ts = cloq_now();
  AGREE(cloq_stream_run(&c.plan, c.w, c.cfg.dim, c.cfg.vocab_size, c.embed, stats[0], source,
                        NULL, &c, 1));
  if (c.rank == 0) {
    printf("calibration pass: %.2f s\n", cloq_now() - ts);
    fflush(stdout);
  }
  AGREE(init_blocks(o, &c, store, t0));
  AGREE(cloq_store_finish(&store));
  if (c.rank == 0) printf("wrote %s in %.2f s\n", o->out, cloq_now() - t0);
  ctx_free(&c);
  return CLOQ_OK;
fail:
  cloq_store_abandon(&store);
  ctx_free(&c);
  return CLOQ_ERR;
}

/* Every value of n finite, else an error naming the block, module and array. */
static int check_finite_f(const float *v, int64_t n, int64_t b, int m, const char *what) {
  for (int64_t i = 0; i < n; i++)
    CLOQ_CHECK(isfinite(v[i]), "store: non-finite %s in block %lld %s", what, (long long)b,
               cloq_module_name[m]);
  return CLOQ_OK;
}

static int apply_module(run_ctx *c, cloq_store *s, const cloq_store_meta *meta, int64_t b,
                        int m, cloq_qmodule *q) {
  CLOQ_CALL(cloq_store_read_module(s, b, m, q));
  int64_t no = q->n_out, ni = q->n_in, ng = q->n_groups, r = q->rank;
  CLOQ_CALL(check_finite_f(q->scales, no * ng, b, m, "scale"));
  CLOQ_CALL(check_finite_f(q->zeros, no * ng, b, m, "zero"));
  CLOQ_CALL(check_finite_f(q->A, r * ni, b, m, "LoRA factor"));
  CLOQ_CALL(check_finite_f(q->B, no * r, b, m, "LoRA factor"));
  float *W = cloq_worker_block(c->w, b)->w[m];
  cloq_dequant(q->codes, q->scales, q->zeros, no, ni, meta->group_size, W);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)no, (int)ni, (int)r, 1.0f, q->B,
              (int)r, q->A, (int)ni, 1.0f, W, (int)ni);
  return CLOQ_OK;
}

/* Replace this rank's block weights by the store's effective weights. */
static int apply_store(run_ctx *c, cloq_store *s, const cloq_store_meta *meta) {
  for (int64_t b = c->plan.b0; b < c->plan.b1; b++)
    for (int m = 0; m < CLOQ_NMOD; m++) {
      cloq_qmodule q;
      CLOQ_CALL(cloq_qmodule_alloc(&c->cfg, b, m, meta->group_size, meta->rank, &q));
      int rc = apply_module(c, s, meta, b, m, &q);
      cloq_qmodule_free(&q);
      CLOQ_CALL(rc);
    }
  return CLOQ_OK;
}

static int dump_logits(const char *path, const float *lg, int64_t rows, int64_t vocab) {
  FILE *f = fopen(path, "w");
  CLOQ_CHECK(f, "cannot write %s", path);
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < vocab; j++)
      fprintf(f, "%.9g%c", (double)lg[i * vocab + j], j + 1 == vocab ? '\n' : ' ');
  CLOQ_CHECK(fclose(f) == 0, "writing %s failed", path);
  return CLOQ_OK;
}

int cloq_cmd_eval(const cloq_opts *o, MPI_Comm comm) {
  run_ctx c = {.comm = comm};
  cloq_store *store = NULL;
  MPI_Comm_rank(comm, &c.rank);
  MPI_Comm_size(comm, &c.size);
  double t0 = cloq_now();
  AGREE(load_model(o, &c));
  AGREE(load_samples(o, &c, 1));
  int64_t stats[4];
  bcast_stats(&c, stats);
  int rc = CLOQ_OK;
  int has_w = c.plan.b1 > c.plan.b0 || c.rank == c.plan.last;
  if (has_w) {
    cloq_worker_params wp = {.b0 = c.plan.b0, .b1 = c.plan.b1, .head = c.rank == c.plan.last,
                             .max_t = stats[1]};
    rc = cloq_worker_create(&c.cfg, c.st, &wp, &c.w);
  }
  if (rc == CLOQ_OK && c.rank == c.plan.last && o->dump_logits) {
    c.nlog = 3;
    c.logits = cloq_calloc_checked(c.nlog * c.cfg.vocab_size, sizeof(float));
    if (!c.logits) rc = CLOQ_FAIL("out of memory for logits");
  }
  AGREE(rc);
  cloq_store_meta meta;
  if (o->store) {
    AGREE(cloq_store_open(comm, o->store, &c.cfg, &meta, &store));
    AGREE(has_w ? apply_store(&c, store, &meta) : CLOQ_OK);
    cloq_store_close(&store);
  }
  if (c.rank == 0) {
    printf("cloq eval: %s%s%s: %lld sequences, %lld tokens (%s)\n", o->model,
           o->store ? " + " : "", o->store ? o->store : "", (long long)stats[0],
           (long long)stats[2], o->data);
    fflush(stdout);
  }
  AGREE(cloq_stream_run(&c.plan, c.w, c.cfg.dim, c.cfg.vocab_size, c.embed, stats[0], source,
                        sink_nll, &c, 0));
  if (c.rank == c.plan.last && o->dump_logits)
    rc = dump_logits(o->dump_logits, c.logits, c.nlog, c.cfg.vocab_size);
  AGREE(rc);
  double v[2] = {c.nll, (double)c.count}, tot[2];
  /* only the last rank holds non-zero values: the sum is exact and rank-count independent */
  MPI_Allreduce(v, tot, 2, MPI_DOUBLE, MPI_SUM, comm);
  if (c.rank == 0) {
    double mean = tot[0] / tot[1];
    printf("eval: %.0f predicted tokens, mean nll %.6f, %.2f s\n", tot[1], mean, cloq_now() - t0);
    printf("ppl %.6f\n", exp(mean));
    fflush(stdout);
  }
  ctx_free(&c);
  return CLOQ_OK;
fail:
  cloq_store_close(&store);
  ctx_free(&c);
  return CLOQ_ERR;
}
