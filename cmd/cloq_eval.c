/* cloq_eval: `cloq eval`, collective over comm: load -> (store: replace owned weights by
 * (codes - zeros) * scales + B A) -> stream -> the last rank applies the head and sums the NLL
 * (and, with --kl, the KL divergence from the full-precision model on the same tokens) -> rank 0
 * prints `ppl`. After each phase every rank agrees on the outcome (AGREE). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_cmd.h"
#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_linalg.h"
#include "cloq_run.h"
#include "cloq_store.h"
#include "cloq_producer.h"

static int sink_nll(void *ctx, int64_t s, const float *x, const int32_t *ids, int64_t t) {
  run_ctx *c = ctx;
  if (!c->kl)
    return cloq_worker_nll(c->w, x, ids, t, &c->nll, &c->count, s == 0 ? c->logits : NULL,
                           c->nlog);
  /* the head is not quantized: the full-precision worker's serves both models */
  if (s % 2 == 0) return cloq_worker_nll(c->w, x, ids, t, &c->nll_fp, &c->count_fp, c->lg_fp, t);
  CLOQ_CALL(cloq_worker_nll(c->w, x, ids, t, &c->nll, &c->count, c->lg_q, t));
  if (s == 1 && c->logits)
    memcpy(c->logits, c->lg_q, (size_t)((c->nlog < t ? c->nlog : t) * c->cfg.vocab_size) * sizeof(float));
  /* KL(p_fp || p_q) at every predicting position, float64 log-softmax */
  int64_t V = c->cfg.vocab_size;
  for (int64_t i = 0; i + 1 < t; i++) {
    const float *a = c->lg_fp + i * V, *b = c->lg_q + i * V;
    double ma = a[0], mb = b[0], za = 0, zb = 0, dot = 0;
    for (int64_t j = 1; j < V; j++) {
      ma = a[j] > ma ? a[j] : ma;
      mb = b[j] > mb ? b[j] : mb;
    }
    for (int64_t j = 0; j < V; j++) {
      double ea = exp((double)a[j] - ma);
      za += ea;
      zb += exp((double)b[j] - mb);
      dot += ea * (((double)a[j] - ma) - ((double)b[j] - mb));
    }
    /* sum_j p_j (la_j - lb_j) with la = a - ma - log za, lb = b - mb - log zb */
    double kl = dot / za - log(za) + log(zb);
    CLOQ_CHECK(isfinite(kl), "non-finite KL divergence at position %lld", (long long)i);
    c->kl_sum += kl > 0 ? kl : 0.0; /* rounding can give -1e-17 for identical rows */
    c->kl_count++;
  }
  return CLOQ_OK;
}

/* Replace this rank's block weights (of c->w2 when comparing with --kl) by the store's
 * effective weights (the store validates what it reads: codes, scales, zeros, factors). */
static int apply_store(run_ctx *c, cloq_store *s, const cloq_store_meta *meta) {
  for (int64_t b = c->plan.b0; b < c->plan.b1; b++)
    for (int m = 0; m < CLOQ_NMOD; m++) {
      cloq_qmodule q;
      CLOQ_CALL(cloq_qmodule_alloc(&c->cfg, b, m, meta->group_size, meta->rank, &q));
      int rc = cloq_store_read_module(s, b, m, &q);
      if (rc == CLOQ_OK) cloq_worker_apply_qmodule(c->kl ? c->w2 : c->w, b, m, &q, meta->group_size);
      cloq_qmodule_free(&q);
      CLOQ_CALL(rc);
      if (m == CLOQ_NMOD - 1) CLOQ_CALL(cloq_worker_weights_changed(c->kl ? c->w2 : c->w, b));
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
  run_ctx c = {.comm = comm, .kl = o->kl};
  cloq_store *store = NULL;
  CLOQ_MPI(MPI_Comm_rank(comm, &c.rank));
  CLOQ_MPI(MPI_Comm_size(comm, &c.size));
  double t0 = cloq_now();
  AGREE(cloq_run_load_model(o, &c));
  AGREE(cloq_run_load_samples(o, &c, 1));
  int64_t stats[4];
  AGREE(cloq_run_bcast_stats(&c, stats));
  int rc = CLOQ_OK;
  int has_w = c.plan.b1 > c.plan.b0 || c.rank == c.plan.last;
  if (has_w) {
    cloq_worker_params wp = {.b0 = c.plan.b0, .b1 = c.plan.b1, .head = c.rank == c.plan.last,
                             .max_t = stats[1], .dev = o->dev};
    rc = cloq_worker_create(&c.cfg, c.st, &wp, &c.w);
    if (rc == CLOQ_OK && c.kl) {
      wp.head = 0;
      rc = cloq_worker_create(&c.cfg, c.st, &wp, &c.w2);
    }
  }
  if (rc == CLOQ_OK && c.kl && c.rank == c.plan.last) {
    int64_t n;
    rc = cloq_mul64(stats[1], c.cfg.vocab_size, &n);
    if (rc == CLOQ_OK && (!(c.lg_fp = cloq_calloc_checked(n, sizeof(float))) ||
                          !(c.lg_q = cloq_calloc_checked(n, sizeof(float)))))
      rc = CLOQ_FAIL("out of memory for two sequences' logits (%lld x %lld floats each)",
                     (long long)stats[1], (long long)c.cfg.vocab_size);
  }
  if (rc == CLOQ_OK && c.rank == c.plan.last && o->dump_logits) {
    c.nlog = o->dump_positions > 0 ? o->dump_positions : 3;
    c.logits = cloq_calloc_checked(c.nlog * c.cfg.vocab_size, sizeof(float));
    if (!c.logits) rc = CLOQ_FAIL("out of memory for logits");
  }
  AGREE(rc);
  cloq_store_meta meta;
  if (o->store) {
    AGREE(cloq_store_open(o->store, &c.cfg, &meta, &store));
    AGREE(has_w ? apply_store(&c, store, &meta) : CLOQ_OK);
    cloq_store_close(&store);
  }
  if (c.rank == 0) {
    printf("cloq eval: %s%s%s: %lld sequences, %lld tokens (%s)\n", o->model,
           o->store ? " + " : "", o->store ? o->store : "", (long long)stats[0],
           (long long)stats[2], o->data);
    fflush(stdout);
  }
  AGREE(cloq_stream_run_pair(&c.plan, c.w, c.w2, c.cfg.dim, c.cfg.vocab_size, c.embed,
                             c.kl ? 2 * stats[0] : stats[0], cloq_run_source, sink_nll, &c, 0));
  if (c.rank == c.plan.last && o->dump_logits)
    rc = dump_logits(o->dump_logits, c.logits, c.nlog, c.cfg.vocab_size);
  AGREE(rc);
  double v[6] = {c.nll, (double)c.count, c.nll_fp, (double)c.count_fp, c.kl_sum,
                 (double)c.kl_count}, tot[6];
  /* only the last rank holds non-zero values: the sum is exact and rank-count independent */
  AGREE(CLOQ_MPI_RC(MPI_Allreduce(v, tot, 6, MPI_DOUBLE, MPI_SUM, comm)));
  if (c.rank == 0) {
    double mean = tot[0] / tot[1];
    printf("eval: %.0f predicted tokens, mean nll %.6f, %.2f s\n", tot[1], mean, cloq_now() - t0);
    if (c.kl) {
      printf("ppl_fp %.6f\n", exp(tot[2] / tot[3]));
      printf("kl %.8f\n", tot[4] / tot[5]);
    }
    printf("ppl %.6f\n", exp(mean));
    fflush(stdout);
  }
  cloq_run_free(&c);
  return CLOQ_OK;
fail:
  cloq_store_close(&store);
  cloq_run_free(&c);
  return CLOQ_ERR;
}

