/* cloq_blockinit: see cloq_blockinit.h. The math of a module lives in cloq_modinit.c (and
 * linalg/); this file decides which rank does what, moves the data and owns the block's
 * buffers. */
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
#include "cloq_mpi.h"
#include "cloq_linalg.h"
#include "cloq_modinit.h"
#include "cloq_pdist.h"
#include "cloq_signal.h"

enum { TAG_H = 41, TAG_RES = 42 };

static int64_t n_factor; /* this rank's factorizations, for the end-of-run summary */

void cloq_block_counts(int64_t counts[3]) {
  counts[0] = n_factor;
  cloq_module_counts(&counts[1], &counts[2]);
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static int big(const cloq_init_params *ip, int size, int64_t n) {
  return size > 1 && ip->dist_threshold > 0 && n >= ip->dist_threshold;
}

/* Whether unit `in` has a module whose top-r problem goes to ScaLAPACK (its smaller side). */
static int unit_big(const cloq_config *cfg, const cloq_init_params *ip, int size, int in) {
  if (ip->init == CLOQ_INIT_ZERO) return 0;
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
static int owner_write(sink *k, int m, int c, const cloq_qmodule *q) {
  double t0 = cloq_now();
  CLOQ_CALL(cloq_store_block_write(k->bw[c], m, q));
  cloq_debug_kill_point("write", (long long)k->b, k->x->rank);
  if (c == 0 && k->x->apply) cloq_worker_apply_qmodule(k->x->w, k->b, m, q, k->x->ip->group_size);
  k->sec[CLOQ_ST_WRITE] += cloq_now() - t0;
  return CLOQ_OK;
}

/* A module on the wire: its five arrays, then a --rank-budget run's basis and captured values
 * (pointer, element count; n 0: absent), and their MPI types and element sizes. */
typedef struct {
  void *p[7];
  int64_t n[7];
} wire;
static const size_t wire_esz[7] = {1, 4, 4, 4, 4, 4, 8};

static MPI_Datatype wire_type(int d) {
  return d == 0 ? MPI_UINT8_T : d == 6 ? MPI_DOUBLE : MPI_FLOAT;
}

static wire wire_of(const cloq_qmodule *q) {
  int64_t no = q->n_out, ni = q->n_in, ng = q->n_groups, r = q->rank, k = q->basis ? r : 0;
  return (wire){{q->codes, q->scales, q->zeros, q->A, q->B, q->basis, q->captured},
                {no * ni, no * ng, no * ng, r * ni, no * r, no * k, k}};
}

static int qmodule_send(const cloq_qmodule *q, int dest, MPI_Comm comm) {
  wire w = wire_of(q);
  for (int d = 0; d < 7; d++)
    if (w.n[d])
      CLOQ_CALL(cloq_mpi_send(w.p[d], w.n[d], wire_type(d), wire_esz[d], dest, TAG_RES, comm));
  double obj[4 + CLOQ_MAX_ITERS + 1] = {q->objective, q->objective_zero, q->n_iter,
                                        q->iter_chosen};
  memcpy(obj + 4, q->iter_obj, (size_t)q->n_iter * sizeof *obj);
  return cloq_mpi_send(obj, 4 + q->n_iter, MPI_DOUBLE, 8, dest, TAG_RES, comm);
}

static int qmodule_recv(cloq_qmodule *q, int src, MPI_Comm comm) {
  wire w = wire_of(q);
  for (int d = 0; d < 7; d++)
    if (w.n[d])
      CLOQ_CALL(cloq_mpi_recv(w.p[d], w.n[d], wire_type(d), wire_esz[d], src, TAG_RES, comm));
  /* the objectives, then the iterates' (the receiver knows the count only from the message) */
  double obj[4 + CLOQ_MAX_ITERS + 1];
  MPI_Status st;
  int n = 0;
  CLOQ_MPI(MPI_Recv(obj, 4 + CLOQ_MAX_ITERS + 1, MPI_DOUBLE, src, TAG_RES, comm, &st));
  CLOQ_MPI(MPI_Get_count(&st, MPI_DOUBLE, &n));
  CLOQ_CHECK(n >= 4 && n == 4 + (int)obj[2], "module result from rank %d: %d objectives", src, n);
  q->objective = obj[0], q->objective_zero = obj[1];
  q->n_iter = (int)obj[2], q->iter_chosen = (int)obj[3];
  memcpy(q->iter_obj, obj + 4, (size_t)q->n_iter * sizeof *obj);
  return CLOQ_OK;
}

/* Emits one result from the rank that computed it. */
static int emit(sink *k, int m, int c, const cloq_qmodule *q) {
  const cloq_initctx *x = k->x;
  if (x->rank == k->owner) return owner_write(k, m, c, q);
  int ok = CLOQ_OK;
  CLOQ_MPI(MPI_Send(&ok, 1, MPI_INT, k->owner, TAG_RES, x->comm));
  return qmodule_send(q, k->owner, x->comm);
}

/* A unit computed on another rank stopped: tell the owner (one status int). A failure to tell
 * is recorded; this rank's status is already a failure. */
static void emit_failure(sink *k) {
  int bad = CLOQ_ERR;
  (void)CLOQ_MPI_RC(MPI_Send(&bad, 1, MPI_INT, k->owner, TAG_RES, k->x->comm));
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
  CLOQ_CALL(cloq_ckpt_read_f32(x->st, name, 2, shape, *own));
  *W = *own;
  return CLOQ_OK;
}

/* ---- where a unit's top-r problems are solved ------------------------------------------------
 * Locally (LAPACK or the GPU: cloq_solver_local), or, for a unit with a module at or above the
 * threshold, on ScaLAPACK over all ranks of comm. The owner runs the unit's modules alone; the
 * others wait in serve(), and each large solve starts with a header broadcast from the owner
 * (what to solve, or that the unit is done and with which status), after which every rank calls
 * cloq_pdist_proj_solve. A module below the threshold is solved on the owner alone. */
enum { CMD_SOLVE = 1, CMD_DONE = 2, HDR_N = 6 };

typedef struct {
  const cloq_initctx *x;
  int root;
} dist_ctx;

static int dist_solve(void *ctx, const double *E, int64_t no, int64_t ni, const cloq_hfactor *f,
                      int64_t r, double *V, double *lam, double *trace) {
  const dist_ctx *d = ctx;
  const cloq_init_params *ip = d->x->ip;
  if (!big(ip, d->x->size, min64(no, ni)))
    return cloq_dev_proj_solve(ip->dev, E, no, ni, f, r, V, lam, trace);
  int64_t hdr[HDR_N] = {CMD_SOLVE, no, ni, r, f != NULL, 0};
  CLOQ_MPI(MPI_Bcast(hdr, HDR_N, MPI_INT64_T, d->root, d->x->comm));
  return cloq_pdist_proj_solve(d->x->comm, d->root, E, no, ni, f, f != NULL, r, ip->dist_nb, V,
                               lam, trace);
}

/* The owner: the unit is over, with status rc. */
static int dist_done(const cloq_initctx *x, int root, int rc) {
  int64_t hdr[HDR_N] = {CMD_DONE, 0, 0, 0, 0, rc};
  return CLOQ_MPI_RC(MPI_Bcast(hdr, HDR_N, MPI_INT64_T, root, x->comm));
}

/* The other ranks: take part in the owner's large solves until it says the unit is done.
 * Returns CLOQ_OK, CLOQ_ERR (a solve failed here: its reason is recorded) or CLOQ_STOPPED. */
static int dist_serve(const cloq_initctx *x, int root) {
  int own = CLOQ_OK;
  for (;;) {
    int64_t hdr[HDR_N];
    CLOQ_MPI(MPI_Bcast(hdr, HDR_N, MPI_INT64_T, root, x->comm));
    if (hdr[0] == CMD_DONE) return own != CLOQ_OK ? own : hdr[5] == CLOQ_OK ? CLOQ_OK : CLOQ_STOPPED;
    int r2 = cloq_pdist_proj_solve(x->comm, root, NULL, hdr[1], hdr[2], NULL, (int)hdr[4], hdr[3],
                                   x->ip->dist_nb, NULL, NULL, NULL);
    if (own == CLOQ_OK) own = r2;
  }
}

/* ---- modules and units ----------------------------------------------------------------------- */

typedef struct {
  sink *k;
  int m;
} emit_ctx;

static int sink_emit(void *ctx, int c, const cloq_qmodule *q) {
  emit_ctx *e = ctx;
  return emit(e->k, e->m, c, q);
}

/* Module m on this rank, every config to do. H, f: its input's Gram matrix and factor. */
static int do_module(sink *k, int m, const double *H, const cloq_hfactor *f, cloq_solver solver) {
  const cloq_initctx *x = k->x;
  const cloq_init_params *ip = x->ip;
  const float *W = NULL;
  float *Wown = NULL;
  cloq_qmodule q = {0};
  int rc = module_weight(x, k->b, m, &W, &Wown);
  if (rc == CLOQ_OK)
    rc = cloq_qmodule_alloc(x->cfg, k->b, m, ip->group_size, cloq_init_max_rank(ip), &q);
  if (rc == CLOQ_OK && ip->rank_budget) rc = cloq_qmodule_alloc_budget(&q);
  if (rc == CLOQ_OK) {
    emit_ctx e = {.k = k, .m = m};
    cloq_modjob j = {.ip = ip, .b = k->b, .m = m, .W = W, .H = H, .f = f, .solver = solver,
                     .todo = k->todo, .emit = sink_emit, .emit_ctx = &e, .sec = k->sec};
    rc = cloq_module_init(&j, &q);
  }
  cloq_qmodule_free(&q);
  free(Wown);
  return rc;
}

/* One unit (input `in`) on this rank: the damped factor of its Gram matrix H (symmetrized), then
 * its modules with `solver`. */
static int do_unit(sink *k, int in, const double *H, cloq_solver solver) {
  const cloq_initctx *x = k->x;
  const cloq_init_params *ip = x->ip;
  int64_t n = cloq_input_dim(x->cfg, in);
  cloq_hfactor f = {0};
  double t0 = cloq_now();
  int rc = cloq_dev_hfactor(ip->dev, H, n, ip->damp, &f);
  n_factor++;
  k->sec[CLOQ_ST_FACTOR] += cloq_now() - t0;
  if (rc != CLOQ_OK)
    return CLOQ_FAIL("factor of the damped Gram matrix of block %lld %s: %s", (long long)k->b,
                     cloq_input_name[in], cloq_err_msg());
  if (f.rank < n)
    cloq_warn("block %lld input %s: the damped Gram matrix is singular (rank %lld of %lld); the "
              "LoRA is unconstrained on its null space (raise --damp or use more calibration "
              "tokens)",
              (long long)k->b, cloq_input_name[in], (long long)f.rank, (long long)n);
  for (int m = 0; m < CLOQ_NMOD && rc == CLOQ_OK; m++) {
    if (cloq_module_input[m] != in) continue;
    if (cloq_signal_pending())
      rc = CLOQ_FAIL("stopped by signal %d in block %lld; re-run the same command to resume",
                     cloq_signal_pending(), (long long)k->b);
    else
      rc = do_module(k, m, H, &f, solver);
  }
  cloq_hfactor_free(&f);
  return rc;
}

/* A unit with ScaLAPACK-sized modules, on all ranks together (collective over comm: every rank
 * calls it for every such unit; an owner whose `prior` status is an error only closes it). */
static int do_unit_group(sink *k, int in, const double *H, int prior) {
  const cloq_initctx *x = k->x;
  if (x->rank != k->owner) return dist_serve(x, k->owner);
  dist_ctx d = {.x = x, .root = k->owner};
  cloq_solver s = {.solve = dist_solve, .ctx = &d};
  int rc = prior == CLOQ_OK ? do_unit(k, in, H, s) : prior;
  int e = dist_done(x, k->owner, rc);
  return rc != CLOQ_OK ? rc : e;
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
  if (group && cloq_mpi_any(x->comm, rc)) {
    rc = rc == CLOQ_OK ? CLOQ_STOPPED : rc;
    goto out;
  }
  if (!group) {
    for (int in = 0; in < CLOQ_NIN && rc == CLOQ_OK; in++)
      rc = do_unit(&k, in, H[in], cloq_solver_local(ip->dev));
  } else {
    /* 1. units with ScaLAPACK-sized matrices, all ranks together */
    for (int in = 0; in < CLOQ_NIN; in++)
      if (unit_big(cfg, ip, x->size, in)) {
        int r2 = do_unit_group(&k, in, H[in], rc);
        if (rc == CLOQ_OK) rc = r2;
      }
    if (cloq_mpi_any(x->comm, rc)) {
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
          int r2 = cloq_mpi_send(H[in], n * n, MPI_DOUBLE, 8, unit_rank[in], TAG_H, x->comm);
          if (rc == CLOQ_OK) rc = r2;
        }
      for (int in = 0; in < CLOQ_NIN && rc == CLOQ_OK; in++)
        if (unit_rank[in] == owner) rc = do_unit(&k, in, H[in], cloq_solver_local(ip->dev));
      /* results of the units computed elsewhere, in unit order */
      for (int in = 0; in < CLOQ_NIN; in++) {
        if (unit_rank[in] < 0 || unit_rank[in] == owner) continue;
        int src = unit_rank[in], nres = unit_results(x, in, todo), done = 0;
        for (int m = 0; m < CLOQ_NMOD && done < nres; m++) {
          if (cloq_module_input[m] != in) continue;
          for (int c = 0; c < nconf; c++) {
            if (!todo[c]) continue;
            int st = CLOQ_ERR;
            int e = CLOQ_MPI_RC(MPI_Recv(&st, 1, MPI_INT, src, TAG_RES, x->comm, MPI_STATUS_IGNORE));
            if (e != CLOQ_OK || st != CLOQ_OK) {
              /* that rank reports its own error; a failed receive is this rank's */
              if (rc == CLOQ_OK) rc = e != CLOQ_OK ? e : CLOQ_STOPPED;
              done = nres;
              break;
            }
            cloq_qmodule q;
            int r2 = cloq_qmodule_alloc(cfg, b, m, ip->group_size, ip->ranks[c % ip->nranks], &q);
            if (r2 == CLOQ_OK && ip->rank_budget) r2 = cloq_qmodule_alloc_budget(&q);
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
        if (!Hl[in]) /* the owner would block on its send: give up loudly */
          cloq_mpi_abort(x->comm, "out of memory for a Gram matrix");
        int r2 = cloq_mpi_recv(Hl[in], n * n, MPI_DOUBLE, 8, owner, TAG_H, x->comm);
        if (rc == CLOQ_OK) rc = r2;
      }
      for (int in = 0; in < CLOQ_NIN; in++) {
        if (unit_rank[in] != x->rank) continue;
        int r2 = rc == CLOQ_OK ? do_unit(&k, in, Hl[in], cloq_solver_local(ip->dev)) : rc;
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
    if (rc == CLOQ_OK) cloq_worker_apply_qmodule(x->w, b, m, &q, x->ip->group_size);
    cloq_qmodule_free(&q);
    CLOQ_CALL(rc);
  }
  return cloq_worker_weights_changed(x->w, b);
}
