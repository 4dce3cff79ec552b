/* gptq: GPTQ/OPTQ quantization (Frantar et al.), on RTN's grid.
 *
 * GPTQ quantizes one column at a time and spreads each column's rounding error over the columns
 * not yet quantized, weighted by the upper Cholesky factor U of the damped inverse Gram matrix
 * (Hinv = U^T U). The result minimizes tr((W - Q) H (W - Q)^T) far better than RTN whenever the
 * inputs are correlated. The grid is RTN's (cloq_quant_scale_zero, float32 arithmetic, rintf), so
 * the codes/scales/zeros layout and cloq_dequant are shared with cloq_quant_rtn.
 *
 * Both versions share the bookkeeping (argument checks, dead columns, the act-order permutation,
 * the static scales) and differ in the arithmetic:
 *   - fast: a transposed float64 working copy Wt (n_in, n_out), so that a column of W is a
 *     contiguous row; the Cholesky chain dpotrf, dpotri, dpotrf (LAPACK); inside a batch of
 *     `block` columns each error is a rank-1 update (dger) of the batch's later columns, and one
 *     dgemm per batch brings all columns after it up to date (GPTQ's lazy batch update);
 *   - ref: a (n_out, n_in) working copy, a loop Cholesky and triangular inverse, and every
 *     error applied at once to every later column.
 * The two perform the same operations in different summation orders (and with FMA in BLAS), so
 * they agree to rounding; a code can only differ where w / scale lands within rounding of a
 * half-integer, which the tests measure.
 *
 * Groups without act_order take their scale from the updated W at the group's first column, so
 * that column's group must be fully up to date there. The fast version guarantees it by ending a
 * batch early at the start of a group that would straddle the batch end (the pending dgemm then
 * reaches every column of the group before its scale is computed). GPTQ's gptq.py reads the
 * scale from its W, which lags the in-batch updates; the contract (and the ref) use the fully
 * updated W instead, which does not depend on the batch width.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_linalg.h"
#include "linalg_internal.h"

/* What both versions derive from the arguments before any arithmetic. */
typedef struct {
  int64_t gs, ng;    /* effective group width (n_in for group_size -1) and groups per row */
  int static_groups; /* scales fixed from the step-1 W (group_size -1, or act_order) */
  int64_t *perm;     /* (n_in) processing position -> original column */
  uint8_t *dead;     /* (n_in) original column j has H_jj == 0 */
  double shift;      /* damp * mean(diag H) after step 1 */
} gptq_plan;

static void plan_free(gptq_plan *pl) {
  free(pl->perm);
  free(pl->dead);
  pl->perm = NULL;
  pl->dead = NULL;
}

int cloq_gptq_check(const float *W, int64_t n_out, int64_t n_in, const double *H,
                    const cloq_gptq_params *p, const uint8_t *codes, const float *scales,
                    const float *zeros) {
  CLOQ_CHECK(p != NULL, "GPTQ: NULL parameters");
  CLOQ_CHECK(p->bits == 2 || p->bits == 3 || p->bits == 4 || p->bits == 8,
             "unsupported bit width %d (expected 2, 3, 4 or 8)", p->bits);
  CLOQ_CHECK(p->group_size == -1 || p->group_size >= 1,
             "invalid group size %lld (expected -1 for whole rows, or >= 1)",
             (long long)p->group_size);
  CLOQ_CHECK(p->block >= 1, "GPTQ: invalid block width %lld (expected >= 1)",
             (long long)p->block);
  CLOQ_CHECK(isfinite(p->damp) && p->damp >= 0.0,
             "GPTQ: invalid damping %g (expected finite, >= 0)", p->damp);
  CLOQ_CHECK(n_out >= 0 && n_in >= 0 && cloq_fits_int(n_out) && cloq_fits_int(n_in),
             "GPTQ: weight shape (%lld, %lld) does not fit the 32-bit BLAS interface",
             (long long)n_out, (long long)n_in);
  int64_t nel, nn;
  CLOQ_CALL(cloq_mul64(n_out, n_in, &nel));
  CLOQ_CALL(cloq_mul64(n_in, n_in, &nn));
  CLOQ_CHECK(nel == 0 || (W && codes && scales && zeros),
             "GPTQ: NULL array for a non-empty weight");
  CLOQ_CHECK(nn == 0 || H, "GPTQ: NULL Gram matrix");
  for (int64_t i = 0; i < nel; i++)
    CLOQ_CHECK(isfinite(W[i]), "non-finite weight %g at row %lld, column %lld", (double)W[i],
               (long long)(i / n_in), (long long)(i % n_in));
  const int64_t bad = cloq_first_nonfinite_d(H, nn);
  CLOQ_CHECK(bad < 0, "GPTQ: non-finite value in Gram matrix at (%lld, %lld)",
             (long long)(bad / n_in), (long long)(bad % n_in));
  return CLOQ_OK;
}

/* qsort context is not portable; the order key travels with the index instead. */
typedef struct {
  double d;
  int64_t j;
} diag_key;

static int by_decreasing_diag(const void *a, const void *b) {
  const diag_key *x = a, *y = b;
  if (x->d != y->d) return x->d > y->d ? -1 : 1;
  return (x->j > y->j) - (x->j < y->j); /* ties keep index order: a stable sort */
}

/* Range of one group of row r of the step-1 W (dead columns read as 0), then its scale/zero. */
static int static_scales(const float *W, int64_t n_out, int64_t n_in, int bits,
                         const gptq_plan *pl, float *scales, float *zeros) {
  for (int64_t r = 0; r < n_out; r++)
    for (int64_t g = 0, c0 = 0; g < pl->ng; g++, c0 += pl->gs) {
      const int64_t c1 = (c0 + pl->gs < n_in) ? c0 + pl->gs : n_in;
      float xmin = 0.0f, xmax = 0.0f; /* RTN's scan: strict comparisons from 0 */
      for (int64_t c = c0; c < c1; c++) {
        const float w = pl->dead[c] ? 0.0f : W[r * n_in + c];
        if (w < xmin) xmin = w;
        if (w > xmax) xmax = w;
      }
      CLOQ_CALL(cloq_quant_scale_zero(xmin, xmax, bits, r, g, &scales[r * pl->ng + g],
                                      &zeros[r * pl->ng + g]));
    }
  return CLOQ_OK;
}

/* Steps 1 and 2 and the damping shift; the static scales when they apply. */
static int plan_make(const float *W, int64_t n_out, int64_t n_in, const double *H,
                     const cloq_gptq_params *p, float *scales, float *zeros, gptq_plan *pl) {
  diag_key *keys = NULL;
  pl->gs = (p->group_size == -1 || p->group_size > n_in) ? n_in : p->group_size;
  pl->ng = cloq_quant_ngroups(n_in, p->group_size);
  pl->static_groups = p->group_size == -1 || p->act_order;
  if (!CLOQ_TRY_ALLOC(pl->perm, n_in, "GPTQ column order") ||
      !CLOQ_TRY_ALLOC(pl->dead, n_in, "GPTQ dead-column flags") ||
      !CLOQ_TRY_ALLOC(keys, n_in, "GPTQ act-order keys"))
    goto fail;
  double tr = 0.0;
  for (int64_t j = 0; j < n_in; j++) {
    const double d = H[j * n_in + j];
    pl->dead[j] = d == 0.0;
    keys[j].d = pl->dead[j] ? 1.0 : d;
    keys[j].j = j;
    tr += keys[j].d;
  }
  pl->shift = n_in > 0 ? p->damp * (tr / (double)n_in) : 0.0;
  if (p->act_order) qsort(keys, (size_t)n_in, sizeof *keys, by_decreasing_diag);
  for (int64_t j = 0; j < n_in; j++) pl->perm[j] = keys[j].j;
  free(keys);
  keys = NULL;
  if (pl->static_groups && static_scales(W, n_out, n_in, p->bits, pl, scales, zeros) != 0)
    goto fail;
  return CLOQ_OK;
fail:
  free(keys);
  plan_free(pl);
  return CLOQ_ERR;
}

/* Hp (n_in, n_in) = the step-1, permuted, damped Gram matrix: Hp[a][b] = H[perm a][perm b]. */
static void damped_permuted(const double *H, int64_t n_in, const gptq_plan *pl, double *Hp) {
  for (int64_t a = 0; a < n_in; a++) {
    const double *hrow = H + pl->perm[a] * n_in;
    for (int64_t b = 0; b < n_in; b++) Hp[a * n_in + b] = hrow[pl->perm[b]];
    if (pl->dead[pl->perm[a]]) Hp[a * n_in + a] = 1.0;
    Hp[a * n_in + a] += pl->shift;
  }
}

static int not_pd(const char *stage, int64_t col, double damp) {
  return CLOQ_FAIL("GPTQ: the damped Gram matrix is not positive definite (%s failed at "
                   "processing column %lld with damp %g); use a larger --damp",
                   stage, (long long)col, damp);
}

/* Scale/zero of the group that starts at column j (no act_order: processing positions are
 * original columns), for every row, from the fully updated working weights w(r, c) =
 * Wk[r * rs + c * cs] (the two versions keep transposed copies). */
static int group_scales(const double *Wk, int64_t rs, int64_t cs, int64_t n_out, int64_t n_in,
                        int64_t j, int bits, const gptq_plan *pl, float *scales, float *zeros) {
  const int64_t g = j / pl->gs, c1 = (j + pl->gs < n_in) ? j + pl->gs : n_in;
  for (int64_t r = 0; r < n_out; r++) {
    float xmin = 0.0f, xmax = 0.0f;
    for (int64_t c = j; c < c1; c++) {
      const float w = (float)Wk[r * rs + c * cs];
      if (w < xmin) xmin = w;
      if (w > xmax) xmax = w;
    }
    CLOQ_CALL(cloq_quant_scale_zero(xmin, xmax, bits, r, g, &scales[r * pl->ng + g],
                                    &zeros[r * pl->ng + g]));
  }
  return CLOQ_OK;
}

/* Quantizes one working value on the grid (scale, zero): the code, and the float32 dequantized
 * value in *q. Fails when the updated weight no longer fits float32 (a wildly ill-conditioned
 * H); rintf of a NaN or inf would make the uint8_t conversion undefined. */
static int quant_one(double w, float scale, float zero, float maxq, int64_t row, int64_t col,
                     uint8_t *code, double *q) {
  const float wf = (float)w;
  CLOQ_CHECK(isfinite(wf),
             "GPTQ: updated weight at row %lld, column %lld is %g (not finite in float32); the "
             "Gram matrix is too ill-conditioned, use a larger --damp",
             (long long)row, (long long)col, w);
  float c = rintf(wf / scale) + zero;
  c = c < 0.0f ? 0.0f : c;
  c = c > maxq ? maxq : c;
  *code = (uint8_t)c;
  *q = (double)((c - zero) * scale);
  return CLOQ_OK;
}

int cloq_quant_gptq(const float *W, int64_t n_out, int64_t n_in, const double *H,
                    const cloq_gptq_params *p, uint8_t *codes, float *scales, float *zeros) {
  CLOQ_CALL(cloq_gptq_check(W, n_out, n_in, H, p, codes, scales, zeros));
  if (n_out == 0 || n_in == 0) return CLOQ_OK;
  gptq_plan pl = {0};
  CLOQ_CALL(plan_make(W, n_out, n_in, H, p, scales, zeros, &pl));
  int rc = CLOQ_ERR;
  double *U = NULL, *Wt = NULL, *Err = NULL;
  const int64_t block = p->block < n_in ? p->block : n_in;
  const float maxq = (float)((1 << p->bits) - 1);
  const int n = (int)n_in, m = (int)n_out;
  if (!CLOQ_TRY_ALLOC(U, n_in * n_in, "GPTQ inverse Cholesky factor") ||
      !CLOQ_TRY_ALLOC(Wt, n_in * n_out, "GPTQ working weights (n_in, n_out)") ||
      !CLOQ_TRY_ALLOC(Err, block * n_out, "GPTQ batch errors"))
    goto done;

  /* Hinv = Hp^-1 and its upper factor U (Hinv = U^T U). Hp is symmetric, so its row-major array
   * is also its column-major one; LAPACK works column-major on the upper triangle throughout
   * (dpotri leaves only that triangle of Hinv valid), and one transpose at the end turns the
   * column-major upper U into the row-major U read below (row j: U_jk for k >= j contiguous). */
  damped_permuted(H, n_in, &pl, U);
  lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', n, U, n);
  if (info > 0) {
    (void)not_pd("Cholesky of H", (int64_t)info - 1, p->damp);
    goto done;
  }
  if (info == 0) info = LAPACKE_dpotri(LAPACK_COL_MAJOR, 'U', n, U, n);
  if (info == 0) {
    info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', n, U, n);
    if (info > 0) {
      (void)not_pd("Cholesky of H^-1", (int64_t)info - 1, p->damp);
      goto done;
    }
  }
  if (info != 0) {
    (void)CLOQ_FAIL("GPTQ: LAPACK dpotrf/dpotri returned info=%d", (int)info);
    goto done;
  }
  cloq_transpose_square(U, n_in);

  for (int64_t j = 0; j < n_in; j++) { /* Wt row j = step-1 column perm[j] */
    const int64_t c = pl.perm[j];
    double *wt = Wt + j * n_out;
    if (pl.dead[c]) continue; /* calloc'd: already 0 */
    for (int64_t r = 0; r < n_out; r++) wt[r] = (double)W[r * n_in + c];
  }

  for (int64_t i1 = 0; i1 < n_in;) {
    int64_t i2 = i1 + block < n_in ? i1 + block : n_in;
    if (!pl.static_groups && i2 < n_in) {
      /* a group straddling the batch end must start a batch of its own (see the top) */
      const int64_t g0 = ((i2 - 1) / pl.gs) * pl.gs;
      if (g0 > i1 && g0 + pl.gs > i2) i2 = g0;
    }
    for (int64_t j = i1; j < i2; j++) {
      const int64_t c = pl.perm[j], g = c / pl.gs;
      if (!pl.static_groups && j % pl.gs == 0 &&
          group_scales(Wt, 1, n_out, n_out, n_in, j, p->bits, &pl, scales, zeros) != 0)
        goto done;
      const double *wt = Wt + j * n_out;
      double *err = Err + (j - i1) * n_out;
      const double d = U[j * n_in + j];
      for (int64_t r = 0; r < n_out; r++) {
        double q = 0.0; /* set by quant_one; silences -Wmaybe-uninitialized */
        if (quant_one(wt[r], scales[r * pl.ng + g], zeros[r * pl.ng + g], maxq, r, c,
                      &codes[r * n_in + c], &q) != 0)
          goto done;
        err[r] = (wt[r] - q) / d;
      }
      if (i2 - j - 1 > 0) /* Wt[k, :] -= U_jk err for the batch's later columns k */
        cblas_dger(CblasRowMajor, (int)(i2 - j - 1), m, -1.0, U + j * n_in + j + 1, 1, err, 1,
                   Wt + (j + 1) * n_out, m);
    }
    if (i2 < n_in) /* Wt[i2:, :] -= U[i1:i2, i2:]^T Err */
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(n_in - i2), m, (int)(i2 - i1),
                  -1.0, U + i1 * n_in + i2, n, Err, m, 1.0, Wt + i2 * n_out, m);
    i1 = i2;
  }
  rc = CLOQ_OK;
done:
  free(U);
  free(Wt);
  free(Err);
  plan_free(&pl);
  return rc;
}

/* ---- reference ------------------------------------------------------------------------------ */

/* In place: A (n, n) row-major symmetric (lower triangle read) -> L with A = L L^T in the lower
 * triangle (the strict upper triangle is zeroed). Returns the first column whose pivot is not
 * positive, or -1. */
static int64_t chol_lower_ref(double *A, int64_t n) {
  for (int64_t j = 0; j < n; j++) {
    double djj = A[j * n + j];
    for (int64_t k = 0; k < j; k++) djj -= A[j * n + k] * A[j * n + k];
    if (!(djj > 0.0) || !isfinite(djj)) return j;
    const double ljj = sqrt(djj);
    A[j * n + j] = ljj;
    for (int64_t i = j + 1; i < n; i++) {
      double s = A[i * n + j];
      for (int64_t k = 0; k < j; k++) s -= A[i * n + k] * A[j * n + k];
      A[i * n + j] = s / ljj;
    }
    for (int64_t i = 0; i < j; i++) A[i * n + j] = 0.0;
  }
  return -1;
}

/* U (n, n) row-major upper with H^-1 = U^T U, from Hp (destroyed: it holds L on return).
 * L^-1 by forward substitution, H^-1 = L^-T L^-1, then U = the transposed lower Cholesky factor
 * of H^-1 (H^-1 = (L')(L')^T = U^T U with U = L'^T). */
static int inv_chol_upper_ref(double *Hp, int64_t n, double damp, double *U) {
  int64_t bad = chol_lower_ref(Hp, n);
  if (bad >= 0) return not_pd("Cholesky of H", bad, damp);
  double *Li = NULL;
  if (!CLOQ_TRY_ALLOC(Li, n * n, "GPTQ reference inverse factor")) return CLOQ_ERR;
  for (int64_t j = 0; j < n; j++) { /* column j of L^-1: solve L x = e_j */
    Li[j * n + j] = 1.0 / Hp[j * n + j];
    for (int64_t i = j + 1; i < n; i++) {
      double s = 0.0;
      for (int64_t k = j; k < i; k++) s += Hp[i * n + k] * Li[k * n + j];
      Li[i * n + j] = -s / Hp[i * n + i];
    }
  }
  for (int64_t i = 0; i < n; i++) /* (L^-T L^-1)_ij = sum_k Li_ki Li_kj, k >= max(i, j) */
    for (int64_t j = 0; j <= i; j++) {
      double s = 0.0;
      for (int64_t k = i; k < n; k++) s += Li[k * n + i] * Li[k * n + j];
      U[i * n + j] = U[j * n + i] = s;
    }
  free(Li);
  bad = chol_lower_ref(U, n);
  if (bad >= 0) return not_pd("Cholesky of H^-1", bad, damp);
  for (int64_t i = 0; i < n; i++) /* L' -> U = L'^T */
    for (int64_t j = i + 1; j < n; j++) {
      U[i * n + j] = U[j * n + i];
      U[j * n + i] = 0.0;
    }
  return CLOQ_OK;
}

int cloq_quant_gptq_ref(const float *W, int64_t n_out, int64_t n_in, const double *H,
                        const cloq_gptq_params *p, uint8_t *codes, float *scales, float *zeros) {
  CLOQ_CALL(cloq_gptq_check(W, n_out, n_in, H, p, codes, scales, zeros));
  if (n_out == 0 || n_in == 0) return CLOQ_OK;
  gptq_plan pl = {0};
  CLOQ_CALL(plan_make(W, n_out, n_in, H, p, scales, zeros, &pl));
  int rc = CLOQ_ERR;
  double *Hp = NULL, *U = NULL, *Wr = NULL;
  const float maxq = (float)((1 << p->bits) - 1);
  if (!CLOQ_TRY_ALLOC(Hp, n_in * n_in, "GPTQ reference Gram copy") ||
      !CLOQ_TRY_ALLOC(U, n_in * n_in, "GPTQ reference inverse Cholesky factor") ||
      !CLOQ_TRY_ALLOC(Wr, n_out * n_in, "GPTQ reference working weights"))
    goto done;
  damped_permuted(H, n_in, &pl, Hp);
  if (inv_chol_upper_ref(Hp, n_in, p->damp, U) != 0) goto done;

  /* Wr (n_out, n_in) in processing order: Wr[r][j] = step-1 W[r][perm j] */
  for (int64_t r = 0; r < n_out; r++)
    for (int64_t j = 0; j < n_in; j++)
      Wr[r * n_in + j] = pl.dead[pl.perm[j]] ? 0.0 : (double)W[r * n_in + pl.perm[j]];

  for (int64_t j = 0; j < n_in; j++) {
    const int64_t c = pl.perm[j], g = c / pl.gs;
    if (!pl.static_groups && j % pl.gs == 0 &&
        group_scales(Wr, n_in, 1, n_out, n_in, j, p->bits, &pl, scales, zeros) != 0)
      goto done;
    const double d = U[j * n_in + j];
    for (int64_t r = 0; r < n_out; r++) {
      double *wr = Wr + r * n_in;
      double q = 0.0; /* set by quant_one; silences -Wmaybe-uninitialized */
      if (quant_one(wr[j], scales[r * pl.ng + g], zeros[r * pl.ng + g], maxq, r, c,
                    &codes[r * n_in + c], &q) != 0)
        goto done;
      const double err = (wr[j] - q) / d;
      for (int64_t k = j + 1; k < n_in; k++) wr[k] -= err * U[j * n_in + k];
    }
  }
  rc = CLOQ_OK;
done:
  free(Hp);
  free(U);
  free(Wr);
  plan_free(&pl);
  return rc;
}
