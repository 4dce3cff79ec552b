/* cloq_modinit: see cloq_modinit.h. The math is linalg/'s (cloq_proj_*, cloq_lora_split, the
 * quantizers); this file sequences it for one module over a sweep and owns the buffers. */
#include "cloq_modinit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cloq_clock.h"
#include "cloq_err.h"

static int64_t n_solve, n_quant; /* this process's work, for the end-of-run summary */

void cloq_module_counts(int64_t *nsolve, int64_t *nquant) {
  *nsolve = n_solve;
  *nquant = n_quant;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int64_t cloq_init_max_rank(const cloq_init_params *ip) {
  int64_t r = 0;
  for (int i = 0; i < ip->nranks; i++)
    if (ip->ranks[i] > r) r = ip->ranks[i];
  return r;
}

static int local_solve(void *ctx, const double *E, int64_t n_out, int64_t n_in,
                       const cloq_hfactor *f, int64_t r, double *V, double *lam, double *trace) {
  return cloq_dev_proj_solve((cloq_dev *)ctx, E, n_out, n_in, f, r, V, lam, trace);
}

cloq_solver cloq_solver_local(cloq_dev *dev) {
  cloq_solver s = {.solve = local_solve, .ctx = dev};
  return s;
}

/* Buffers of one module's work. */
typedef struct {
  double *E, *E1, *F, *V, *V1, *lam, *cap, *cap1;
  float *Q, *Wmagr, *Tgt;
  double trace, trace1; /* ||E C||^2 of the current iterate and of the one kept aside */
  cloq_qmodule best; /* LoftQ, CLoQ's alternation: the best iterate so far, when it is not the
                      * current one */
} bufs;

static void bufs_free(bufs *mb) {
  free(mb->E), free(mb->E1), free(mb->F), free(mb->V), free(mb->V1), free(mb->lam);
  free(mb->cap), free(mb->cap1), free(mb->Q), free(mb->Wmagr), free(mb->Tgt);
  cloq_qmodule_free(&mb->best);
}

/* Allocates dst with the shapes of q; 0 when out of memory (the message is set). */
static int qmodule_like(cloq_qmodule *dst, const cloq_qmodule *q) {
  *dst = *q;
  dst->codes = NULL, dst->scales = dst->zeros = dst->A = dst->B = NULL;
  dst->basis = NULL, dst->captured = NULL; /* q's (a --rank-budget run), not dst's to free */
  int64_t ng = q->n_out * q->n_groups;
  return CLOQ_TRY_ALLOC(dst->codes, q->n_out * q->n_in, "best codes") &&
         CLOQ_TRY_ALLOC(dst->scales, ng, "best scales") &&
         CLOQ_TRY_ALLOC(dst->zeros, ng, "best zeros") &&
         CLOQ_TRY_ALLOC(dst->A, q->rank * q->n_in, "best A") &&
         CLOQ_TRY_ALLOC(dst->B, q->n_out * q->rank, "best B");
}

/* The quantization (codes, scales, zeros) of q into dst, allocated alike. */
static void quant_copy(cloq_qmodule *dst, const cloq_qmodule *q) {
  int64_t ng = q->n_out * q->n_groups;
  memcpy(dst->codes, q->codes, (size_t)(q->n_out * q->n_in) * sizeof *q->codes);
  memcpy(dst->scales, q->scales, (size_t)ng * sizeof *q->scales);
  memcpy(dst->zeros, q->zeros, (size_t)ng * sizeof *q->zeros);
}

/* Copies the arrays of q at rank r (A (r, n_in), B (n_out, r)) into dst, allocated alike. */
static void qmodule_copy(cloq_qmodule *dst, const cloq_qmodule *q, int64_t r) {
  quant_copy(dst, q);
  memcpy(dst->A, q->A, (size_t)(r * q->n_in) * sizeof *q->A);
  memcpy(dst->B, q->B, (size_t)(q->n_out * r) * sizeof *q->B);
}

/* The quantizer of the run on target T (n_out, n_in): RTN, or GPTQ or COMQ with the input's Gram
 * matrix H. Counted once per call. */
static int quantize(const cloq_modjob *j, const float *T, int bits, cloq_qmodule *q) {
  const cloq_init_params *ip = j->ip;
  n_quant++;
  int rc;
  if (ip->quantizer == CLOQ_QUANT_GPTQ) {
    cloq_gptq_params gp = {.bits = bits, .group_size = ip->group_size, .damp = ip->damp,
                           .act_order = ip->act_order, .block = ip->gptq_block};
    rc = cloq_dev_quant_gptq(ip->dev, T, q->n_out, q->n_in, j->H, &gp, q->codes, q->scales,
                             q->zeros);
  } else if (ip->quantizer == CLOQ_QUANT_COMQ) { /* the CPU's, on every device */
    cloq_comq_params cp = {.bits = bits, .group_size = ip->group_size, .damp = ip->damp,
                           .iters = ip->comq_iters, .init = ip->comq_init,
                           .act_order = ip->act_order, .block = ip->gptq_block};
    rc = cloq_quant_comq(T, q->n_out, q->n_in, j->H, &cp, q->codes, q->scales, q->zeros, NULL);
  } else {
    rc = cloq_dev_quant_rtn(ip->dev, T, q->n_out, q->n_in, bits, ip->group_size, q->codes,
                            q->scales, q->zeros);
  }
  if (rc != CLOQ_OK)
    return CLOQ_FAIL("block %lld %s: quantization failed: %s", (long long)j->b,
                     cloq_module_name[j->m], cloq_err_msg());
  return CLOQ_OK;
}

/* E = W - dequant(q) in float64; Q is scratch (n_out, n_in). */
static void quant_error(const cloq_qmodule *q, int64_t gs, const float *W, float *Q, double *E) {
  int64_t n = q->n_out * q->n_in;
  cloq_dequant(q->codes, q->scales, q->zeros, q->n_out, q->n_in, gs, Q);
  for (int64_t i = 0; i < n; i++) E[i] = (double)W[i] - (double)Q[i];
}

static double sumsq(const double *x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
  return s;
}

/* ||E C||_F^2 (the objective of Q alone) into *trace, F = E C left in mb->F. */
static int weighted_trace(const cloq_modjob *j, const double *E, int64_t no, int64_t ni, bufs *mb,
                          double *trace) {
  CLOQ_CALL(cloq_proj_apply(E, no, ni, j->f, mb->F));
  *trace = sumsq(mb->F, no * ni);
  return CLOQ_OK;
}

/* The top-r basis V of E for the run's init, with what it captures of the calibrated objective:
 * *trace = ||E C||^2 and cap[i] = ||v_i^T E C||^2, so that the objective of rank k is trace minus
 * the first k of cap. CLoQ: the solve on E C gives all three (cap = lam); svd: the solve on E,
 * then F = E C and cap from V. */
static int basis(const cloq_modjob *j, const double *E, int64_t no, int64_t ni, int64_t r,
                 double *V, double *cap, double *trace, bufs *mb) {
  n_solve++;
  int rc = j->solver.solve(j->solver.ctx, E, no, ni,
                           j->ip->init == CLOQ_INIT_CLOQ ? j->f : NULL, r, V, cap, trace);
  if (rc == CLOQ_OK && j->ip->init != CLOQ_INIT_CLOQ) {
    rc = weighted_trace(j, E, no, ni, mb, trace);
    if (rc == CLOQ_OK) rc = cloq_proj_captured(V, no, r, mb->F, ni, cap);
  }
  if (rc != CLOQ_OK)
    return CLOQ_FAIL("block %lld %s: the top-%lld solve: %s", (long long)j->b,
                     cloq_module_name[j->m], (long long)r, cloq_err_msg());
  return CLOQ_OK;
}

/* The objectives of an iterative init's iterates, and which one was kept (0-based). */
typedef struct {
  int n, chosen;
  double obj[CLOQ_MAX_ITERS + 1];
} history;

static int emit(const cloq_modjob *j, int c, cloq_qmodule *q, int64_t r, double obj,
                double obj0, const history *h) {
  cloq_qmodule out = *q;
  out.rank = r;
  out.objective = obj;
  out.objective_zero = obj0;
  out.n_iter = h ? h->n : 0;
  out.iter_chosen = h ? h->chosen + 1 : 0;
  if (h) memcpy(out.iter_obj, h->obj, (size_t)h->n * sizeof *h->obj);
  return j->emit(j->emit_ctx, c, &out);
}

/* B A of the float32 factors at rank r subtracted from Wq: the next quantizer's target. */
static void target_minus_lora(const float *Wq, const cloq_qmodule *q, int64_t r, float *Tgt) {
  int64_t no = q->n_out, ni = q->n_in;
  memcpy(Tgt, Wq, (size_t)(no * ni) * sizeof *Tgt);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)no, (int)ni, (int)r, -1.0f, q->B,
              (int)r, q->A, (int)ni, 1.0f, Tgt, (int)ni);
}


/* LoftQ for bits setting ib and every rank to do: for each rank r, L = 0, then T times
 * Q = quant(W' - L), L = [W - Q]_r; the store holds the iterate (Q and factors) of the lowest
 * calibrated objective, the last one on ties: the alternation is not monotone in that objective
 * (with GPTQ, hundreds of steps can end far above the zero init). The first alternation is the
 * same for every rank (L = 0): its quantization and basis are computed once, at the largest rank,
 * so T = 1 is the svd init. Later alternations solve at rank r. */
static int loftq_bits(const cloq_modjob *j, int ib, const float *Wq, bufs *mb, cloq_qmodule *q) {
  const cloq_init_params *ip = j->ip;
  int64_t no = q->n_out, ni = q->n_in, nn = no * ni;
  int64_t rs = cloq_proj_solve_rank(cloq_init_max_rank(ip), no, ni);
  int bits = ip->bits[ib], iters = ip->loftq_iters;
  double t0 = cloq_now(), obj0 = 0, trace = 0;
  CLOQ_CALL(quantize(j, Wq, bits, q));
  quant_error(q, ip->group_size, j->W, mb->Q, mb->E);
  double t1 = cloq_now();
  j->sec[CLOQ_ST_QUANT] += t1 - t0;
  CLOQ_CALL(basis(j, mb->E, no, ni, rs, mb->V1, mb->cap1, &obj0, mb));
  if (iters > 1) memcpy(mb->E1, mb->E, (size_t)nn * sizeof *mb->E1);
  j->sec[CLOQ_ST_INIT] += cloq_now() - t1;
  for (int ir = 0; ir < ip->nranks; ir++) {
    int c = ib * ip->nranks + ir;
    int64_t r = ip->ranks[ir];
    if (!j->todo[c]) continue;
    double t2 = cloq_now();
    const double *E1 = iters > 1 ? mb->E1 : mb->E;
    CLOQ_CALL(cloq_lora_split(mb->V1, E1, no, ni, rs, r, q->A, q->B));
    double best = cloq_proj_objective(obj0, mb->cap1, r, min64(no, ni));
    int cur_best = 1; /* the best iterate is q itself, not mb->best */
    for (int t = 1; t < iters; t++) {
      /* target W' - L with L = B A (the float32 factors the store holds) */
      target_minus_lora(Wq, q, r, mb->Tgt);
      if (cur_best) qmodule_copy(&mb->best, q, r), cur_best = 0;
      double t3 = cloq_now();
      CLOQ_CALL(quantize(j, mb->Tgt, bits, q));
      j->sec[CLOQ_ST_QUANT] += cloq_now() - t3;
      quant_error(q, ip->group_size, j->W, mb->Q, mb->E);
      const int64_t rr = cloq_proj_solve_rank(r, no, ni);
      CLOQ_CALL(basis(j, mb->E, no, ni, rr, mb->V, mb->cap, &trace, mb));
      CLOQ_CALL(cloq_lora_split(mb->V, mb->E, no, ni, rr, r, q->A, q->B));
      double obj = cloq_proj_objective(trace, mb->cap, r, min64(no, ni));
      if (obj <= best) best = obj, cur_best = 1;
    }
    if (!cur_best) qmodule_copy(q, &mb->best, r);
    double obj = best;
    j->sec[CLOQ_ST_INIT] += cloq_now() - t2;
    CLOQ_CALL(emit(j, c, q, r, obj, obj0, NULL));
  }
  return CLOQ_OK;
}

/* QuAILoRA at rank r from the svd init in q's factors: the refined, balanced factors in q, the
 * objective of each iterate in *h (monotone: the last is kept). */
static int quailora(const cloq_modjob *j, const double *E, int64_t r, cloq_qmodule *q,
                    history *h) {
  int k = j->ip->quailora_iters;
  h->n = k + 1, h->chosen = k;
  if (cloq_lora_quailora(E, q->n_out, q->n_in, j->H, j->ip->damp, r, k, q->A, q->B, h->obj) !=
      CLOQ_OK)
    return CLOQ_FAIL("block %lld %s: QuAILoRA at rank %lld: %s", (long long)j->b,
                     cloq_module_name[j->m], (long long)r, cloq_err_msg());
  return CLOQ_OK;
}

/* The factors of rank r from the basis in mb (solved at rank rs; zero: seeded A, B = 0), and
 * their objective. */
static int rank_factors(const cloq_modjob *j, int64_t r, int64_t rs, double obj0, bufs *mb,
                        cloq_qmodule *q, double *obj, history *h) {
  const cloq_init_params *ip = j->ip;
  int64_t no = q->n_out, ni = q->n_in;
  if (ip->init == CLOQ_INIT_ZERO) { /* the product is 0 whatever A holds */
    cloq_lora_zero(no, ni, r, cloq_seed_mix(ip->seed, (uint64_t)j->b, (uint64_t)j->m), q->A, q->B);
    *obj = obj0;
    return CLOQ_OK;
  }
  if (cloq_lora_split(mb->V, mb->E, no, ni, rs, r, q->A, q->B) != CLOQ_OK)
    return CLOQ_FAIL("block %lld %s: %s", (long long)j->b, cloq_module_name[j->m],
                     cloq_err_msg());
  *obj = cloq_proj_objective(mb->trace, mb->cap, r, min64(no, ni));
  if (ip->init != CLOQ_INIT_QUAILORA) return CLOQ_OK;
  CLOQ_CALL(quailora(j, mb->E, r, q, h));
  *obj = h->obj[h->n - 1];
  return CLOQ_OK;
}

/* A --rank-budget result's basis (the leading r columns of mb->V, solved at rank rs) and captured
 * values. */
static void keep_basis(cloq_qmodule *q, const bufs *mb, int64_t r, int64_t rs) {
  int64_t no = q->n_out;
  for (int64_t i = 0; i < no; i++)
    for (int64_t k = 0; k < r; k++) q->basis[i * r + k] = (float)mb->V[i * rs + k];
  memcpy(q->captured, mb->cap, (size_t)r * sizeof *q->captured);
}

/* Every rank of bits setting ib from the quantization and basis in q and mb. */
static int emit_ranks(const cloq_modjob *j, int ib, double obj0, bufs *mb, cloq_qmodule *q,
                      const history *alt) {
  const cloq_init_params *ip = j->ip;
  int64_t rs = cloq_proj_solve_rank(cloq_init_max_rank(ip), q->n_out, q->n_in);
  for (int ir = 0; ir < ip->nranks; ir++) {
    int c = ib * ip->nranks + ir;
    int64_t r = ip->ranks[ir];
    if (!j->todo[c]) continue;
    double t0 = cloq_now(), obj = obj0;
    history h = {0};
    CLOQ_CALL(rank_factors(j, r, rs, obj0, mb, q, &obj, &h));
    if (q->basis) keep_basis(q, mb, r, rs);
    j->sec[CLOQ_ST_INIT] += cloq_now() - t0;
    CLOQ_CALL(emit(j, c, q, r, obj, obj0, alt ? alt : h.n ? &h : NULL));
  }
  return CLOQ_OK;
}

static int module_bits(const cloq_modjob *j, int ib, const float *Wq, bufs *mb, cloq_qmodule *q) {
  const cloq_init_params *ip = j->ip;
  int64_t no = q->n_out, ni = q->n_in;
  int64_t rs = cloq_proj_solve_rank(cloq_init_max_rank(ip), no, ni);
  double t0 = cloq_now();
  CLOQ_CALL(quantize(j, Wq, ip->bits[ib], q));
  quant_error(q, ip->group_size, j->W, mb->Q, mb->E);
  double t1 = cloq_now();
  j->sec[CLOQ_ST_QUANT] += t1 - t0;
  if (ip->init == CLOQ_INIT_ZERO) {
    if (weighted_trace(j, mb->E, no, ni, mb, &mb->trace) != CLOQ_OK)
      return CLOQ_FAIL("block %lld %s: objective: %s", (long long)j->b, cloq_module_name[j->m],
                       cloq_err_msg());
  } else {
    CLOQ_CALL(basis(j, mb->E, no, ni, rs, mb->V, mb->cap, &mb->trace, mb));
  }
  j->sec[CLOQ_ST_INIT] += cloq_now() - t1;
  return emit_ranks(j, ib, mb->trace, mb, q, NULL);
}

/* Keeps the current iterate of the alternation (quantization, basis, objective) aside. */
static void keep_iterate(const cloq_qmodule *q, int64_t rs, bufs *mb) {
  quant_copy(&mb->best, q);
  memcpy(mb->V1, mb->V, (size_t)(q->n_out * rs) * sizeof *mb->V);
  memcpy(mb->cap1, mb->cap, (size_t)rs * sizeof *mb->cap);
  mb->trace1 = mb->trace;
}

/* Brings the iterate kept aside back as the current one. */
static void restore_iterate(const cloq_modjob *j, cloq_qmodule *q, int64_t rs, bufs *mb) {
  quant_copy(q, &mb->best);
  memcpy(mb->V, mb->V1, (size_t)(q->n_out * rs) * sizeof *mb->V);
  memcpy(mb->cap, mb->cap1, (size_t)rs * sizeof *mb->cap);
  mb->trace = mb->trace1;
  quant_error(q, j->ip->group_size, j->W, mb->Q, mb->E);
}

/* A smaller rank of a sweep's alternation: the best iterate at its own rank (quantization and
 * factors, rank r), its objectives, and the iterate it is. */
typedef struct {
  cloq_qmodule q;
  double best;
  history h;
} rank_best;

/* CLoQ with T = cloq_iters > 1 for bits setting ib (see cloq_modinit.h): T iterates
 * Q_t = quant(W' - L_(t-1)), L_t = CLoQ(W - Q_t) at the largest rank; the largest rank keeps the
 * lowest objective there (the later on ties). Each smaller rank r of a sweep keeps the iterate of
 * the lowest objective at r (trace - its top r eigenvalues, from the same solve), split at r when
 * it is found, so it is never above T = 1 at its own rank either. objective_zero is the first
 * iterate's (quant(W'), as for LoftQ), so ratios compare with T = 1. */
static int cloq_alt_bits(const cloq_modjob *j, int ib, const float *Wq, bufs *mb,
                         cloq_qmodule *q) {
  const cloq_init_params *ip = j->ip;
  int64_t no = q->n_out, ni = q->n_in, rmax = cloq_init_max_rank(ip), side = min64(no, ni);
  int64_t rs = cloq_proj_solve_rank(rmax, no, ni);
  history h = {.n = ip->cloq_iters};
  rank_best rb[CLOQ_MAX_RANKS] = {0};
  int rc = CLOQ_OK;
  for (int ir = 0; ir < ip->nranks && rc == CLOQ_OK; ir++) {
    rb[ir].best = INFINITY;
    rb[ir].h.n = h.n;
    if (j->todo[ib * ip->nranks + ir] && ip->ranks[ir] < rmax && !qmodule_like(&rb[ir].q, q))
      rc = CLOQ_ERR;
  }
  double best = INFINITY, obj0 = 0;
  int cur_best = 0; /* the kept iterate is the current one, not mb->best */
  for (int t = 0; t < h.n && rc == CLOQ_OK; t++) {
    double t0 = cloq_now();
    const float *tgt = Wq;
    if (t > 0) {
      if ((rc = cloq_lora_split(mb->V, mb->E, no, ni, rs, rmax, q->A, q->B)) != CLOQ_OK) break;
      target_minus_lora(Wq, q, rmax, mb->Tgt);
      tgt = mb->Tgt;
      if (cur_best) keep_iterate(q, rs, mb), cur_best = 0;
    }
    if ((rc = quantize(j, tgt, ip->bits[ib], q)) != CLOQ_OK) break;
    quant_error(q, ip->group_size, j->W, mb->Q, mb->E);
    double t1 = cloq_now();
    j->sec[CLOQ_ST_QUANT] += t1 - t0;
    if ((rc = basis(j, mb->E, no, ni, rs, mb->V, mb->cap, &mb->trace, mb)) != CLOQ_OK) break;
    if (t == 0) obj0 = mb->trace;
    h.obj[t] = cloq_proj_objective(mb->trace, mb->cap, rmax, side);
    if (h.obj[t] <= best) best = h.obj[t], h.chosen = t, cur_best = 1;
    for (int ir = 0; ir < ip->nranks && rc == CLOQ_OK; ir++) {
      rank_best *k = &rb[ir];
      if (!k->q.codes) continue;
      int64_t r = ip->ranks[ir];
      k->h.obj[t] = cloq_proj_objective(mb->trace, mb->cap, r, side);
      if (k->h.obj[t] > k->best) continue;
      k->best = k->h.obj[t], k->h.chosen = t;
      quant_copy(&k->q, q);
      double obj;
      history none = {0};
      rc = rank_factors(j, r, rs, obj0, mb, &k->q, &obj, &none);
    }
    j->sec[CLOQ_ST_INIT] += cloq_now() - t1;
  }
  if (rc == CLOQ_OK && !cur_best) restore_iterate(j, q, rs, mb);
  /* every rank in the sweep's order (a remote owner receives them so): the largest from q */
  for (int ir = 0; ir < ip->nranks && rc == CLOQ_OK; ir++) {
    int c = ib * ip->nranks + ir;
    int64_t r = ip->ranks[ir];
    if (!j->todo[c]) continue;
    if (rb[ir].q.codes) {
      rc = emit(j, c, &rb[ir].q, r, rb[ir].best, obj0, &rb[ir].h);
      continue;
    }
    double t2 = cloq_now(), obj = obj0;
    history none = {0};
    if ((rc = rank_factors(j, r, rs, obj0, mb, q, &obj, &none)) != CLOQ_OK) break;
    if (q->basis) keep_basis(q, mb, r, rs);
    j->sec[CLOQ_ST_INIT] += cloq_now() - t2;
    rc = emit(j, c, q, r, obj, obj0, &h);
  }
  for (int ir = 0; ir < ip->nranks; ir++) cloq_qmodule_free(&rb[ir].q);
  return rc;
}

int cloq_module_init(const cloq_modjob *j, cloq_qmodule *q) {
  const cloq_init_params *ip = j->ip;
  int64_t no = q->n_out, ni = q->n_in, nn = no * ni;
  int64_t rmax = cloq_proj_solve_rank(cloq_init_max_rank(ip), no, ni);
  int loftq = ip->init == CLOQ_INIT_LOFTQ;
  int alt = ip->init == CLOQ_INIT_CLOQ && ip->cloq_iters > 1;
  bufs mb = {0};
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(mb.Q, nn, "dequantized weight") ||
      !CLOQ_TRY_ALLOC(mb.E, nn, "quantization error") ||
      /* CLoQ's solve forms E C itself and returns the objectives */
      (ip->init != CLOQ_INIT_CLOQ && !CLOQ_TRY_ALLOC(mb.F, nn, "E C (objectives)")) ||
      !CLOQ_TRY_ALLOC(mb.V, no * rmax, "basis V") || !CLOQ_TRY_ALLOC(mb.cap, rmax, "eigenvalues") ||
      ((loftq || alt) && (!CLOQ_TRY_ALLOC(mb.Tgt, nn, "alternation target") ||
                          !CLOQ_TRY_ALLOC(mb.V1, no * rmax, "kept basis") ||
                          !CLOQ_TRY_ALLOC(mb.cap1, rmax, "kept eigenvalues"))) ||
      (loftq && ip->loftq_iters > 1 &&
       (!CLOQ_TRY_ALLOC(mb.E1, nn, "LoftQ first error") || !qmodule_like(&mb.best, q))) ||
      (alt && !qmodule_like(&mb.best, q)) ||
      (ip->magr && !CLOQ_TRY_ALLOC(mb.Wmagr, nn, "MagR weight")))
    goto done;
  const float *Wq = j->W;
  if (ip->magr) {
    double t0 = cloq_now();
    int r2 = cloq_magr(j->W, no, ni, j->H, ip->magr_alpha, ip->magr_iters, ip->group_size,
                       mb.Wmagr);
    j->sec[CLOQ_ST_QUANT] += cloq_now() - t0;
    if (r2 != CLOQ_OK) {
      (void)CLOQ_FAIL("block %lld %s: MagR: %s", (long long)j->b, cloq_module_name[j->m],
                      cloq_err_msg());
      goto done;
    }
    Wq = mb.Wmagr;
  }
  for (int ib = 0; ib < ip->nbits; ib++)
    if ((loftq ? loftq_bits(j, ib, Wq, &mb, q)
         : alt ? cloq_alt_bits(j, ib, Wq, &mb, q)
               : module_bits(j, ib, Wq, &mb, q)) != CLOQ_OK)
      goto done;
  rc = CLOQ_OK;
done:
  bufs_free(&mb);
  return rc;
}
