/* cloq_blockinit: see cloq_blockinit.h. The math lives in linalg/; this file sequences it per
 * block, decides where each piece runs, moves the data and owns the buffers. */
#include "cloq_blockinit.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cloq_backend.h"
#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_linalg.h"
#include "cloq_pdist.h"
#include "cloq_signal.h"
#include "cloq_stream.h"

enum { TAG_H = 41, TAG_RES = 42 };

static int64_t n_eig, n_rtn, n_svd; /* this rank's work, for the end-of-run summary */

void cloq_block_counts(int64_t counts[3]) {
  counts[0] = n_eig, counts[1] = n_rtn, counts[2] = n_svd;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int64_t cloq_init_max_rank(const cloq_init_params *ip) {
  int64_t r = 0;
  for (int i = 0; i < ip->nranks; i++)
    if (ip->ranks[i] > r) r = ip->ranks[i];
  return r;
}

static int big(const cloq_init_params *ip, int size, int64_t n) {
  return size > 1 && ip->dist_threshold > 0 && n >= ip->dist_threshold;
}

/* Whether unit `in` has a matrix for ScaLAPACK: the Gram matrix (CLoQ) or an SVD. */
static int unit_big(const cloq_config *cfg, const cloq_init_params *ip, int size, int in) {
  if (ip->init == CLOQ_INIT_CLOQ && big(ip, size, cloq_input_dim(cfg, in))) return 1;
  if (ip->init == CLOQ_INIT_ZERO || ip->init == CLOQ_INIT_LOFTQ) return 0; /* LoftQ: LAPACK */
  for (int m = 0; m < CLOQ_NMOD; m++) {
    if (cloq_module_input[m] != in) continue;
    int64_t no, ni;
    cloq_module_shape(cfg, m, &no, &ni);
    if (big(ip, size, min64(no, ni))) return 1;
  }
  return 0;
}

int cloq_block_needs_group(const cloq_config *cfg, const cloq_init_params *ip, int size) {
  for (int in = 0; in < CLOQ_NIN; in++)
    if (unit_big(cfg, ip, size, in)) return 1;
  return 0;
}

/* Large messages go in pieces below INT_MAX elements. */
static int send_big(const void *buf, int64_t n, MPI_Datatype t, size_t esz, int dest, int tag,
                    MPI_Comm comm) {
  const char *p = buf;
  for (int64_t off = 0; off < n; off += INT_MAX / 2) {
    int c = (int)min64(n - off, INT_MAX / 2);
    CLOQ_CHECK(MPI_Send(p + (size_t)off * esz, c, t, dest, tag, comm) == MPI_SUCCESS,
               "MPI_Send to rank %d failed", dest);
  }
  return CLOQ_OK;
}

static int recv_big(void *buf, int64_t n, MPI_Datatype t, size_t esz, int src, int tag,
                    MPI_Comm comm) {
  char *p = buf;
  for (int64_t off = 0; off < n; off += INT_MAX / 2) {
    int c = (int)min64(n - off, INT_MAX / 2);
    CLOQ_CHECK(MPI_Recv(p + (size_t)off * esz, c, t, src, tag, comm, MPI_STATUS_IGNORE) ==
                   MPI_SUCCESS,
               "MPI_Recv from rank %d failed", src);
  }
  return CLOQ_OK;
}

/* What a unit produces, per module and config, goes either to the owner's block files or, from
 * another rank, to the owner (a status int first, so a failure never leaves the owner waiting). */
typedef struct {
  const cloq_initctx *x;
  int64_t b;
  int owner;
  cloq_store_block **bw; /* owner: one writer per config (NULL where not todo) */
  const uint8_t *todo;   /* configs to produce (the same on every rank) */
  double *sec;
} sink;

/* Effective weight Q + B A into the owner's worker (sequential propagation). */
static void apply_module(const cloq_initctx *x, int64_t b, int m, const cloq_qmodule *q) {
  float *W = cloq_worker_block(x->w, b)->w[m];
  cloq_dequant(q->codes, q->scales, q->zeros, q->n_out, q->n_in, x->ip->group_size, W);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)q->n_out, (int)q->n_in,
              (int)q->rank, 1.0f, q->B, (int)q->rank, q->A, (int)q->n_in, 1.0f, W, (int)q->n_in);
}

static int owner_write(sink *k, int m, int c, const cloq_qmodule *q) {
  double t0 = cloq_now();
  CLOQ_CALL(cloq_store_block_write(k->bw[c], m, q));
  cloq_debug_kill_point("write", (long long)k->b, k->x->rank);
  if (c == 0 && k->x->apply) apply_module(k->x, k->b, m, q);
  k->sec[CLOQ_ST_WRITE] += cloq_now() - t0;
  return CLOQ_OK;
}

static int qmodule_send(const cloq_qmodule *q, int dest, MPI_Comm comm) {
  int64_t no = q->n_out, ni = q->n_in, ng = q->n_groups, r = q->rank;
  CLOQ_CALL(send_big(q->codes, no * ni, MPI_UINT8_T, 1, dest, TAG_RES, comm));
  CLOQ_CALL(send_big(q->scales, no * ng, MPI_FLOAT, 4, dest, TAG_RES, comm));
  CLOQ_CALL(send_big(q->zeros, no * ng, MPI_FLOAT, 4, dest, TAG_RES, comm));
  CLOQ_CALL(send_big(q->A, r * ni, MPI_FLOAT, 4, dest, TAG_RES, comm));
  CLOQ_CALL(send_big(q->B, no * r, MPI_FLOAT, 4, dest, TAG_RES, comm));
  double obj[2] = {q->objective, q->objective_zero};
  return send_big(obj, 2, MPI_DOUBLE, 8, dest, TAG_RES, comm);
}

static int qmodule_recv(cloq_qmodule *q, int src, MPI_Comm comm) {
  int64_t no = q->n_out, ni = q->n_in, ng = q->n_groups, r = q->rank;
  CLOQ_CALL(recv_big(q->codes, no * ni, MPI_UINT8_T, 1, src, TAG_RES, comm));
  CLOQ_CALL(recv_big(q->scales, no * ng, MPI_FLOAT, 4, src, TAG_RES, comm));
  CLOQ_CALL(recv_big(q->zeros, no * ng, MPI_FLOAT, 4, src, TAG_RES, comm));
  CLOQ_CALL(recv_big(q->A, r * ni, MPI_FLOAT, 4, src, TAG_RES, comm));
  CLOQ_CALL(recv_big(q->B, no * r, MPI_FLOAT, 4, src, TAG_RES, comm));
  double obj[2];
  CLOQ_CALL(recv_big(obj, 2, MPI_DOUBLE, 8, src, TAG_RES, comm));
  q->objective = obj[0], q->objective_zero = obj[1];
  return CLOQ_OK;
}

/* Emits one result from the rank that computed it. */
static int emit(sink *k, int m, int c, const cloq_qmodule *q) {
  const cloq_initctx *x = k->x;
  if (x->rank == k->owner) return owner_write(k, m, c, q);
  int ok = CLOQ_OK;
  MPI_Send(&ok, 1, MPI_INT, k->owner, TAG_RES, x->comm);
  return qmodule_send(q, k->owner, x->comm);
}

/* A unit computed on another rank stopped: tell the owner (one status int). */
static void emit_failure(sink *k) {
  int bad = CLOQ_ERR;
  MPI_Send(&bad, 1, MPI_INT, k->owner, TAG_RES, k->x->comm);
}

/* The weight of module m: the owner's copy, or read from the checkpoint (into *own). */
static int module_weight(const cloq_initctx *x, int64_t b, int m, const float **W, float **own) {
  *own = NULL;
  if (x->w && cloq_worker_block(x->w, b)) {
    *W = cloq_worker_block(x->w, b)->w[m];
    return CLOQ_OK;
  }
  int64_t no, ni, n;
  cloq_module_shape(x->cfg, m, &no, &ni);
  CLOQ_CALL(cloq_mul64(no, ni, &n));
  CLOQ_ALLOC(*own, n, "module weight");
  char name[256];
  snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)b, cloq_module_name[m]);
  int64_t shape[2] = {no, ni};
  CLOQ_CALL(cloq_st_read_f32(x->st, name, 2, shape, *own));
  *W = *own;
  return CLOQ_OK;
}

/* The quantizer of the run on target T (n_out, n_in): RTN, or GPTQ with the input's Gram matrix H
 * (full symmetric). Counted once per call. */
static int quantize(const cloq_init_params *ip, const float *T, int64_t no, int64_t ni, int bits,
                    const double *H, cloq_qmodule *q) {
  n_rtn++;
  if (ip->quantizer == CLOQ_QUANT_GPTQ) {
    cloq_gptq_params gp = {.bits = bits, .group_size = ip->group_size, .damp = ip->damp,
                           .act_order = ip->act_order, .block = ip->gptq_block};
    return cloq_dev_quant_gptq(ip->dev, T, no, ni, H, &gp, q->codes, q->scales, q->zeros);
  }
  return cloq_dev_quant_rtn(ip->dev, T, no, ni, bits, ip->group_size, q->codes, q->scales,
                            q->zeros);
}

/* E = W - dequant(q) in float64; Q is scratch (n_out, n_in). */
static void quant_error(const cloq_qmodule *q, int64_t gs, const float *W, float *Q, double *E) {
  int64_t n = q->n_out * q->n_in;
  cloq_dequant(q->codes, q->scales, q->zeros, q->n_out, q->n_in, gs, Q);
  for (int64_t i = 0; i < n; i++) E[i] = (double)W[i] - (double)Q[i];
}

/* Buffers of one module's work on the computing rank. */
typedef struct {
  double *Mat, *E, *P, *S, *Vt;
  float *Q, *Wown, *Wmagr, *Tgt;
} modbufs;

static void modbufs_free(modbufs *mb) {
  free(mb->Mat), free(mb->E), free(mb->P), free(mb->S), free(mb->Vt);
  free(mb->Q), free(mb->Wown), free(mb->Wmagr), free(mb->Tgt);
}

/* LoftQ for one bits setting and every rank to do: for each rank r, L = 0, then T times
 * Q = quant(W' - L), L = [W - Q]_r (truncated SVD, split as the svd init); the store holds the
 * last Q and the last factors. W' is W, or its MagR image. The first alternation is the same for
 * every rank (L = 0): its quantization and SVD are done once, so T = 1 equals the svd init. Every
 * later alternation re-quantizes all of q, so only the first SVD is kept for the next rank. */
static int loftq_bits(sink *k, int m, int ib, const float *W, const float *Wq, const double *H,
                      double shift, modbufs *mb, cloq_qmodule *q) {
  const cloq_init_params *ip = k->x->ip;
  int64_t no = q->n_out, ni = q->n_in, nn = no * ni, rmax = cloq_init_max_rank(ip);
  int bits = ip->bits[ib], iters = ip->loftq_iters;
  double t0 = cloq_now();
  CLOQ_CALL(quantize(ip, Wq, no, ni, bits, H, q));
  quant_error(q, ip->group_size, W, mb->Q, mb->E);
  double obj0 = cloq_objective_shifted(mb->E, NULL, NULL, no, ni, 0, H, shift);
  CLOQ_CHECK(isfinite(obj0), "objective: %s", cloq_err_msg());
  double t1 = cloq_now();
  k->sec[CLOQ_ST_QUANT] += t1 - t0;
  CLOQ_CALL(cloq_dev_svd_trunc(ip->dev, mb->E, no, ni, rmax, mb->P, mb->S, mb->Vt));
  n_svd++;
  k->sec[CLOQ_ST_INIT] += cloq_now() - t1;
  /* the first SVD: mb's buffers when nothing overwrites them (T = 1), else a copy */
  const double *P1 = mb->P, *S1 = mb->S, *Vt1 = mb->Vt;
  double *first = NULL;
  int rc = CLOQ_OK;
  if (iters > 1) {
    if (!CLOQ_TRY_ALLOC(first, (no + ni + 1) * rmax, "LoftQ first SVD")) return CLOQ_ERR;
    memcpy(first, mb->P, (size_t)(no * rmax) * sizeof *first);
    memcpy(first + no * rmax, mb->S, (size_t)rmax * sizeof *first);
    memcpy(first + (no + 1) * rmax, mb->Vt, (size_t)(rmax * ni) * sizeof *first);
    P1 = first, S1 = first + no * rmax, Vt1 = first + (no + 1) * rmax;
  }
  for (int ir = 0; ir < ip->nranks && rc == CLOQ_OK; ir++) {
    int c = ib * ip->nranks + ir;
    int64_t r = ip->ranks[ir];
    if (!k->todo[c]) continue;
    double t2 = cloq_now();
    rc = cloq_lora_svd_factors(P1, S1, Vt1, no, ni, rmax, r, q->A, q->B);
    for (int t = 1; t < iters && rc == CLOQ_OK; t++) {
      /* target W' - L with L = B A (the float32 factors the store holds) */
      memcpy(mb->Tgt, Wq, (size_t)nn * sizeof *mb->Tgt);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)no, (int)ni, (int)r, -1.0f, q->B,
                  (int)r, q->A, (int)ni, 1.0f, mb->Tgt, (int)ni);
      double t3 = cloq_now();
      rc = quantize(ip, mb->Tgt, no, ni, bits, H, q);
      k->sec[CLOQ_ST_QUANT] += cloq_now() - t3;
      if (rc != CLOQ_OK) break;
      quant_error(q, ip->group_size, W, mb->Q, mb->E);
      rc = cloq_dev_svd_trunc(ip->dev, mb->E, no, ni, rmax, mb->P, mb->S, mb->Vt);
      n_svd++;
      if (rc == CLOQ_OK) rc = cloq_lora_svd_factors(mb->P, mb->S, mb->Vt, no, ni, rmax, r, q->A, q->B);
    }
    cloq_qmodule out = *q;
    out.rank = r;
    if (rc == CLOQ_OK) { /* mb->E is W - Q of the last alternation */
      out.objective = cloq_objective_shifted(mb->E, q->A, q->B, no, ni, r, H, shift);
      out.objective_zero = obj0;
      if (!isfinite(out.objective)) rc = CLOQ_FAIL("objective: %s", cloq_err_msg());
    }
    k->sec[CLOQ_ST_INIT] += cloq_now() - t2;
    if (rc == CLOQ_OK) rc = emit(k, m, c, &out);
  }
  free(first);
  return rc;
}

/* Module m for every bits setting and rank. `coll`: the unit runs on all ranks of a group and
 * only the owner computes, except inside ScaLAPACK calls; otherwise this rank computes alone.
 * H: the input's symmetrized Gram matrix where this rank computes (the quantizer's, MagR's and
 * the objective's); s, U: its damped eigendecomposition (CLoQ; U only where computing). */
static int do_module(sink *k, int m, int coll, int prior, const double *H, const double *s,
                     const double *U) {
  const cloq_initctx *x = k->x;
  const cloq_init_params *ip = x->ip;
  int64_t b = k->b, rmax = cloq_init_max_rank(ip);
  int me = !coll || x->rank == k->owner; /* computes */
  int loftq = ip->init == CLOQ_INIT_LOFTQ, cloq = ip->init == CLOQ_INIT_CLOQ;
  cloq_qmodule q = {0};
  int64_t no, ni;
  cloq_module_shape(x->cfg, m, &no, &ni);
  int dist = coll && (ip->init == CLOQ_INIT_SVD || cloq) && big(ip, x->size, min64(no, ni));
  /* the matrix to decompose: E (n_out, n_in) for svd, M = R E^T (n_in, n_out) for CLoQ */
  int64_t rows = cloq ? ni : no, cols = cloq ? no : ni;
  modbufs mb = {0};
  const float *W = NULL, *Wq = NULL; /* the weight, and the quantizer's target (MagR'd) */
  double shift = 0;
  int rc = prior; /* after an earlier failure: only take part in the group's agreement */
  if (me && rc == CLOQ_OK) {
    rc = module_weight(x, b, m, &W, &mb.Wown);
    if (rc == CLOQ_OK) rc = cloq_qmodule_alloc(x->cfg, b, m, ip->group_size, rmax, &q);
    if (rc == CLOQ_OK && (!CLOQ_TRY_ALLOC(mb.Q, no * ni, "dequantized weight") ||
                          !CLOQ_TRY_ALLOC(mb.E, no * ni, "quantization error") ||
                          !CLOQ_TRY_ALLOC(mb.P, rows * rmax, "left singular vectors") ||
                          !CLOQ_TRY_ALLOC(mb.Vt, rmax * cols, "right singular vectors") ||
                          (cloq && !CLOQ_TRY_ALLOC(mb.Mat, ni * no, "CLoQ matrix M = R E^T")) ||
                          (loftq && !CLOQ_TRY_ALLOC(mb.Tgt, no * ni, "LoftQ target")) ||
                          (ip->magr && !CLOQ_TRY_ALLOC(mb.Wmagr, no * ni, "MagR weight"))))
      rc = CLOQ_ERR;
    if (rc == CLOQ_OK) shift = cloq_gram_shift(H, ni, ip->damp);
    Wq = W;
    if (rc == CLOQ_OK && ip->magr) {
      double t0 = cloq_now();
      rc = cloq_magr(W, no, ni, H, ip->magr_alpha, ip->magr_iters, ip->group_size, mb.Wmagr);
      k->sec[CLOQ_ST_QUANT] += cloq_now() - t0;
      Wq = mb.Wmagr;
    }
  }
  if (rc == CLOQ_OK && !CLOQ_TRY_ALLOC(mb.S, rmax, "singular values")) rc = CLOQ_ERR;
  for (int ib = 0; ib < ip->nbits; ib++) {
    if (loftq) { /* never collective: this rank alone */
      if (me && rc == CLOQ_OK) rc = loftq_bits(k, m, ib, W, Wq, H, shift, &mb, &q);
      if (rc != CLOQ_OK && !coll) break;
      continue;
    }
    double t0 = cloq_now(), obj0 = NAN;
    if (me && rc == CLOQ_OK) {
      rc = quantize(ip, Wq, no, ni, ip->bits[ib], H, &q);
      if (rc != CLOQ_OK)
        rc = CLOQ_FAIL("block %lld %s: quantization failed: %s", (long long)b,
                       cloq_module_name[m], cloq_err_msg());
      if (rc == CLOQ_OK) {
        quant_error(&q, ip->group_size, W, mb.Q, mb.E);
        obj0 = cloq_objective_shifted(mb.E, NULL, NULL, no, ni, 0, H, shift);
        if (!isfinite(obj0)) rc = CLOQ_FAIL("block %lld %s: objective: %s", (long long)b,
                                            cloq_module_name[m], cloq_err_msg());
      }
    }
    double t1 = cloq_now();
    k->sec[CLOQ_ST_QUANT] += t1 - t0;
    if (ip->init != CLOQ_INIT_ZERO) {
      if (me && rc == CLOQ_OK && cloq) rc = cloq_lora_cloq_matrix(mb.E, no, ni, s, U, mb.Mat);
      const double *A0 = cloq ? mb.Mat : mb.E;
      if (dist) {
        if (cloq_any_failed(x->comm, rc)) {
          rc = rc == CLOQ_OK ? CLOQ_STOPPED : rc;
          break;
        }
        rc = cloq_pdist_svd_trunc(x->comm, k->owner, A0, rows, cols, rmax, ip->dist_nb, mb.P, mb.S,
                                  mb.Vt);
        n_svd += x->rank == k->owner;
      } else if (me && rc == CLOQ_OK) {
        rc = cloq_dev_svd_trunc(ip->dev, A0, rows, cols, rmax, mb.P, mb.S, mb.Vt);
        n_svd++;
      }
    }
    k->sec[CLOQ_ST_INIT] += cloq_now() - t1;
    if (!me) continue;
    for (int ir = 0; ir < ip->nranks && rc == CLOQ_OK; ir++) {
      int c = ib * ip->nranks + ir;
      int64_t r = ip->ranks[ir];
      if (!k->todo[c]) continue;
      cloq_qmodule out = q;
      out.rank = r;
      double t2 = cloq_now();
      /* factors of rank r into the leading part of q.A / q.B (rank-r row-major layouts) */
      if (ip->init == CLOQ_INIT_ZERO)
        cloq_lora_zero(no, ni, r, cloq_seed_mix(ip->seed, (uint64_t)b, (uint64_t)m), q.A, q.B);
      else if (ip->init == CLOQ_INIT_SVD)
        rc = cloq_lora_svd_factors(mb.P, mb.S, mb.Vt, no, ni, rmax, r, q.A, q.B);
      else
        rc = cloq_lora_cloq_factors(s, U, no, ni, mb.P, mb.S, mb.Vt, rmax, r, q.A, q.B);
      out.objective_zero = obj0;
      /* the zero init's product is 0 whatever A holds */
      out.objective = ip->init == CLOQ_INIT_ZERO
                          ? obj0
                          : (rc == CLOQ_OK ? cloq_objective_shifted(mb.E, q.A, q.B, no, ni, r, H,
                                                                    shift)
                                           : NAN);
      if (rc == CLOQ_OK && !isfinite(out.objective))
        rc = CLOQ_FAIL("block %lld %s: objective: %s", (long long)b, cloq_module_name[m],
                       cloq_err_msg());
      k->sec[CLOQ_ST_INIT] += cloq_now() - t2;
      if (rc == CLOQ_OK) rc = emit(k, m, c, &out);
    }
    if (rc != CLOQ_OK && !coll) break;
  }
  modbufs_free(&mb);
  cloq_qmodule_free(&q);
  return rc;
}

/* One unit (input `in`): eigendecomposition, then its modules. coll: see do_module. H: the
 * symmetrized Gram matrix where this rank computes (CLoQ). */
static int do_unit(sink *k, int in, int coll, const double *H) {
  const cloq_initctx *x = k->x;
  const cloq_init_params *ip = x->ip;
  int64_t n = cloq_input_dim(x->cfg, in), nn = n * n;
  int me = !coll || x->rank == k->owner;
  double *s = NULL, *U = NULL;
  int rc = CLOQ_OK;
  if (ip->init == CLOQ_INIT_CLOQ) {
    if (!CLOQ_TRY_ALLOC(s, n, "eigenvalues") ||
        (me && !(U = cloq_calloc_checked(nn, sizeof *U))))
      rc = CLOQ_FAIL("out of memory for the eigenvectors of block %lld %s", (long long)k->b,
                     cloq_input_name[in]);
    double t0 = cloq_now();
    int64_t ncl = 0;
    if (coll && big(ip, x->size, n)) {
      if (cloq_any_failed(x->comm, rc)) rc = rc == CLOQ_OK ? CLOQ_STOPPED : rc;
      else rc = cloq_pdist_eig_damped(x->comm, k->owner, H, n, ip->damp, ip->dist_nb, s, U, &ncl);
      n_eig += x->rank == k->owner;
    } else if (me && rc == CLOQ_OK) {
      rc = cloq_dev_eig_damped(ip->dev, H, n, ip->damp, s, U, &ncl);
      n_eig++;
    }
    k->sec[CLOQ_ST_EIG] += cloq_now() - t0;
    if (rc == CLOQ_ERR)
      rc = CLOQ_FAIL("eigendecomposition of block %lld %s: %s", (long long)k->b,
                     cloq_input_name[in], cloq_err_msg());
    if (rc == CLOQ_OK && ncl > 0 && me)
      cloq_warn("block %lld input %s: %lld eigenvalues of the damped Gram matrix were "
                "non-positive and were clamped (raise --damp or use more calibration tokens)",
                (long long)k->b, cloq_input_name[in], (long long)ncl);
  }
  for (int m = 0; m < CLOQ_NMOD && (rc == CLOQ_OK || coll); m++) {
    if (cloq_module_input[m] != in) continue;
    if (!coll && rc == CLOQ_OK && cloq_signal_pending())
      rc = CLOQ_FAIL("stopped by signal %d in block %lld; re-run the same command to resume",
                     cloq_signal_pending(), (long long)k->b);
    rc = do_module(k, m, coll, rc, H, s, U);
  }
  free(s);
  free(U);
  return rc;
}

/* How many results a unit sends: modules x configs to do. */
static int unit_results(const cloq_initctx *x, int in, const uint8_t *todo) {
  int nc = 0, nm = 0;
  for (int c = 0; c < x->ip->nbits * x->ip->nranks; c++) nc += todo[c] != 0;
  for (int m = 0; m < CLOQ_NMOD; m++) nm += cloq_module_input[m] == in;
  return nc * nm;
}

int cloq_block_init(const cloq_initctx *x, int64_t b, int owner, int group, const uint8_t *todo,
                    double sec[CLOQ_NST]) {
  const cloq_init_params *ip = x->ip;
  const cloq_config *cfg = x->cfg;
  int nconf = ip->nbits * ip->nranks;
  int is_owner = x->rank == owner;
  for (int i = 0; i < CLOQ_NST; i++) sec[i] = 0;
  cloq_store_block *bw[CLOQ_MAX_BITS * CLOQ_MAX_RANKS] = {0};
  sink k = {.x = x, .b = b, .owner = owner, .bw = bw, .todo = todo, .sec = sec};
  int rc = CLOQ_OK;
  /* owner: writers, symmetrized and checked Gram matrices */
  double *H[CLOQ_NIN] = {0};
  if (is_owner) {
    for (int c = 0; c < nconf && rc == CLOQ_OK; c++)
      if (todo[c]) rc = cloq_store_block_begin(x->stores[c], b, &bw[c]);
    for (int in = 0; in < CLOQ_NIN && rc == CLOQ_OK; in++) {
      H[in] = cloq_worker_gram(x->w, b, in);
      if (!H[in]) {
        rc = CLOQ_FAIL("block %lld has no Gram matrix", (long long)b);
        break;
      }
      int64_t n = cloq_input_dim(cfg, in);
      cloq_gram_symmetrize(H[in], n);
      for (int64_t i = 0; i < n * n; i++)
        if (!isfinite(H[in][i])) {
          rc = CLOQ_FAIL("non-finite Gram matrix entry in block %lld input %s", (long long)b,
                         cloq_input_name[in]);
          break;
        }
    }
  }
  if (group && cloq_any_failed(x->comm, rc)) {
    rc = rc == CLOQ_OK ? CLOQ_STOPPED : rc;
    goto out;
  }
  if (!group) {
    for (int in = 0; in < CLOQ_NIN && rc == CLOQ_OK; in++) rc = do_unit(&k, in, 0, H[in]);
  } else {
    /* 1. units with ScaLAPACK-sized matrices, all ranks together */
    for (int in = 0; in < CLOQ_NIN; in++)
      if (unit_big(cfg, ip, x->size, in)) {
        int r2 = do_unit(&k, in, 1, H[in]);
        if (rc == CLOQ_OK) rc = r2;
      }
    if (cloq_any_failed(x->comm, rc)) {
      rc = rc == CLOQ_OK ? CLOQ_STOPPED : rc;
      goto out;
    }
    /* 2. the other units, spread over the ranks */
    int unit_rank[CLOQ_NIN], j = 0;
    for (int in = 0; in < CLOQ_NIN; in++)
      unit_rank[in] = unit_big(cfg, ip, x->size, in) ? -1 : (owner + j++) % x->size;
    if (is_owner) {
      for (int in = 0; in < CLOQ_NIN; in++)
        if (unit_rank[in] >= 0 && unit_rank[in] != owner) {
          int64_t n = cloq_input_dim(cfg, in);
          int r2 = send_big(H[in], n * n, MPI_DOUBLE, 8, unit_rank[in], TAG_H, x->comm);
          if (rc == CLOQ_OK) rc = r2;
        }
      for (int in = 0; in < CLOQ_NIN && rc == CLOQ_OK; in++)
        if (unit_rank[in] == owner) rc = do_unit(&k, in, 0, H[in]);
      /* results of the units computed elsewhere, in unit order */
      for (int in = 0; in < CLOQ_NIN; in++) {
        if (unit_rank[in] < 0 || unit_rank[in] == owner) continue;
        int src = unit_rank[in], nres = unit_results(x, in, todo), done = 0;
        for (int m = 0; m < CLOQ_NMOD && done < nres; m++) {
          if (cloq_module_input[m] != in) continue;
          for (int c = 0; c < nconf; c++) {
            if (!todo[c]) continue;
            int st;
            MPI_Recv(&st, 1, MPI_INT, src, TAG_RES, x->comm, MPI_STATUS_IGNORE);
            if (st != CLOQ_OK) {
              if (rc == CLOQ_OK) rc = CLOQ_STOPPED; /* that rank reports its own error */
              done = nres;
              break;
            }
            cloq_qmodule q;
            int r2 = cloq_qmodule_alloc(cfg, b, m, ip->group_size, ip->ranks[c % ip->nranks], &q);
            if (r2 == CLOQ_OK) r2 = qmodule_recv(&q, src, x->comm);
            if (r2 == CLOQ_OK && rc == CLOQ_OK) r2 = owner_write(&k, m, c, &q);
            cloq_qmodule_free(&q);
            if (rc == CLOQ_OK) rc = r2;
            done++;
          }
        }
      }
    } else {
      /* every H first: the owner sends them all before it receives any result */
      double *Hl[CLOQ_NIN] = {0};
      for (int in = 0; in < CLOQ_NIN; in++) {
        if (unit_rank[in] != x->rank) continue;
        int64_t n = cloq_input_dim(cfg, in);
        Hl[in] = cloq_calloc_checked(n * n, sizeof *Hl[in]);
        if (!Hl[in]) {
          /* the owner would block on its send: give up loudly */
          CLOQ_FAIL("out of memory for a Gram matrix of block %lld", (long long)b);
          fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
          MPI_Abort(x->comm, 1);
        }
        int r2 = recv_big(Hl[in], n * n, MPI_DOUBLE, 8, owner, TAG_H, x->comm);
        if (rc == CLOQ_OK) rc = r2;
      }
      for (int in = 0; in < CLOQ_NIN; in++) {
        if (unit_rank[in] != x->rank) continue;
        int r2 = rc == CLOQ_OK ? do_unit(&k, in, 0, Hl[in]) : rc;
        if (r2 != CLOQ_OK) emit_failure(&k);
        if (rc == CLOQ_OK) rc = r2;
      }
      for (int in = 0; in < CLOQ_NIN; in++) free(Hl[in]);
    }
  }
out:
  if (is_owner) {
    for (int c = 0; c < nconf; c++) {
      if (!bw[c]) continue;
      double t0 = cloq_now();
      if (rc == CLOQ_OK) rc = cloq_store_block_commit(&bw[c]);
      else cloq_store_block_abandon(&bw[c]);
      if (rc == CLOQ_OK) cloq_debug_kill_point("block", (long long)b, x->rank);
      sec[CLOQ_ST_WRITE] += cloq_now() - t0;
    }
    if (rc == CLOQ_OK) cloq_worker_free_gram(x->w, b);
    if (rc == CLOQ_OK && x->apply) rc = cloq_worker_weights_changed(x->w, b);
  }
  return rc;
}

int cloq_block_apply_done(const cloq_initctx *x, int64_t b) {
  for (int m = 0; m < CLOQ_NMOD; m++) {
    cloq_qmodule q;
    CLOQ_CALL(cloq_qmodule_alloc(x->cfg, b, m, x->ip->group_size, x->ip->ranks[0], &q));
    int rc = cloq_store_read_done(x->stores[0], b, m, &q);
    if (rc == CLOQ_OK) apply_module(x, b, m, &q);
    cloq_qmodule_free(&q);
    CLOQ_CALL(rc);
  }
  return cloq_worker_weights_changed(x->w, b);
}
