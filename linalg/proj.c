/* proj: the projection form of the calibrated low-rank problem (contract in cloq_linalg.h).
 *
 * One module's work, for either init that needs a product (svd: C = I; cloq: Hd = C C^T):
 *   1. F = E C                          dtrmm, n_out n_in^2 flops (none for svd)
 *   2. S = F F^T or F^T F               dsyrk on the smaller side
 *   3. top r eigenpairs of S            dsytrd, dstemr (range 'I'), dormtr (cloq_syevr_top: the
 *                                       tridiagonal reduction is the cost, 4/3 n^3; only r vectors
 *                                       are computed and back-transformed)
 *   4. input side: V = orth(F P)        dgemm + dgeqrf/dorgqr, n_out n_in r
 *   5. the balanced split               dgemm V^T E + the SVD of an r x n_in matrix
 * against the paper's form: a full eigendecomposition of H (~9 n_in^3 with vectors), the product
 * R E^T and a full SVD of it, every singular vector computed and all but r discarded.
 *
 * Layouts. Row-major arrays are handed to column-major LAPACK as their transposes: the row-major
 * upper triangle of a symmetric matrix is the column-major lower one (dsytrd with 'L', which was
 * also the faster triangle for OpenBLAS's dsytrd here: 5.8 s against 8.0 s at n = 5120), and
 * dpotrf/dpstrf with 'U' on a row-major array leave the row-major lower factor L = U^T.
 */
#include <cblas.h>
#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_linalg.h"
#include "linalg_internal.h"

/* ---- factor of Hd ----------------------------------------------------------------------------- */

void cloq_hfactor_free(cloq_hfactor *f) {
  if (!f) return;
  free(f->L);
  free(f->piv);
  f->L = NULL;
  f->piv = NULL;
}

/* Zeroes the row-major strict upper triangle of L (n, n) and its columns >= rank. */
/* dpotrf can pass a numerically singular Hd with a pivot at rounding level (unpivoted, the last
 * Schur complements carry the cancellation of everything before them: 2 tokens and 3 inputs gave
 * pivots well above dpstrf's n eps max(diag Hd) in tests). A pivot (squared diagonal of L) below
 * 1e-10 max(diag Hd) sends the factor to dpstrf, which decides the rank with its own tolerance:
 * an Hd that is merely ill-conditioned comes back complete (rank n, pivoted), a singular one
 * with its rank, which the caller's warning names. */
enum { NEAR_SINGULAR_EXP = 10 };
int cloq_hfactor_near_singular(const double *L, const double *H, int64_t n, double damp) {
  double dmax = 0.0, tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += H[i * n + i];
  const double shift = damp * tr / (double)n;
  for (int64_t i = 0; i < n; i++)
    if (H[i * n + i] + shift > dmax) dmax = H[i * n + i] + shift;
  const double tol = pow(10.0, -NEAR_SINGULAR_EXP) * dmax;
  for (int64_t i = 0; i < n; i++) /* the row-major lower L's diagonal = the column-major U's */
    if (L[i * n + i] * L[i * n + i] <= tol) return 1;
  return 0;
}

void cloq_hfactor_clean(double *L, int64_t n, int64_t rank) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++)
      if (j > i || j >= rank) L[i * n + j] = 0.0;
}

int cloq_hfactor_make(const double *H, int64_t n, double damp, cloq_hfactor *f) {
  memset(f, 0, sizeof *f);
  CLOQ_CHECK(n >= 1 && cloq_fits_int(n), "invalid Gram matrix order %lld", (long long)n);
  int64_t nn;
  CLOQ_CALL(cloq_mul64(n, n, &nn));
  CLOQ_ALLOC(f->L, nn, "factor of the damped Gram matrix");
  f->n = n;
  f->rank = n;
  if (cloq_eig_prepare(H, n, damp, f->L) != 0) goto fail; /* validates H; L = Hd */
  const lapack_int ln = (lapack_int)n;
  lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'U', ln, f->L, ln);
  if (info < 0) {
    (void)CLOQ_FAIL("dpotrf: argument %d had an illegal value", (int)-info);
    goto fail;
  }
  if (info == 0 && cloq_hfactor_near_singular(f->L, H, n, damp)) info = (lapack_int)n;
  if (info > 0) { /* not positive definite: pivoted Cholesky up to the numerical rank */
    lapack_int *lpiv = NULL, rank = 0;
    double *work = NULL;
    if (!CLOQ_TRY_ALLOC(lpiv, n, "dpstrf pivots") || !CLOQ_TRY_ALLOC(work, 2 * n, "dpstrf work") ||
        !CLOQ_TRY_ALLOC(f->piv, n, "factor pivots")) {
      free(lpiv), free(work);
      goto fail;
    }
    (void)cloq_eig_prepare(H, n, damp, f->L);
    info = LAPACKE_dpstrf_work(LAPACK_COL_MAJOR, 'U', ln, f->L, ln, lpiv, &rank, -1.0, work);
    free(work);
    for (int64_t k = 0; k < n; k++) f->piv[k] = lpiv[k] - 1;
    free(lpiv);
    if (info < 0) {
      (void)CLOQ_FAIL("dpstrf: argument %d had an illegal value", (int)-info);
      goto fail;
    }
    f->rank = rank; /* info = 1 says rank < n, which is the point */
  }
  cloq_hfactor_clean(f->L, n, f->rank);
  return CLOQ_OK;
fail:
  cloq_hfactor_free(f);
  return CLOQ_ERR;
}

/* Diagonal-pivoted Cholesky (LINPACK's dchdc), outer-product form: at step k take the largest
 * remaining diagonal entry; stop when it is <= tol, tol = n eps max(diag Hd) as LAPACK's dpstrf
 * default. */
int cloq_hfactor_ref(const double *H, int64_t n, double damp, cloq_hfactor *f) {
  memset(f, 0, sizeof *f);
  CLOQ_CHECK(n >= 1 && cloq_fits_int(n), "invalid Gram matrix order %lld", (long long)n);
  double *A = NULL;
  if (!CLOQ_TRY_ALLOC(A, n * n, "Cholesky working matrix") ||
      !CLOQ_TRY_ALLOC(f->L, n * n, "factor of the damped Gram matrix") ||
      !CLOQ_TRY_ALLOC(f->piv, n, "factor pivots"))
    goto fail;
  f->n = n;
  if (cloq_eig_prepare(H, n, damp, A) != 0) goto fail;
  double dmax = 0.0;
  for (int64_t i = 0; i < n; i++) {
    f->piv[i] = i;
    if (A[i * n + i] > dmax) dmax = A[i * n + i];
  }
  const double tol = (double)n * DBL_EPSILON * dmax;
  int64_t k = 0;
  for (; k < n; k++) {
    int64_t p = k; /* pivot: the largest remaining diagonal entry */
    for (int64_t i = k + 1; i < n; i++)
      if (A[i * n + i] > A[p * n + p]) p = i;
    if (!(A[p * n + p] > tol)) break;
    if (p != k) { /* symmetric swap of rows/columns k and p of A, rows of L, pivots */
      for (int64_t j = 0; j < n; j++) {
        double t = A[k * n + j];
        A[k * n + j] = A[p * n + j];
        A[p * n + j] = t;
      }
      for (int64_t i = 0; i < n; i++) {
        double t = A[i * n + k];
        A[i * n + k] = A[i * n + p];
        A[i * n + p] = t;
      }
      for (int64_t j = 0; j < k; j++) {
        double t = f->L[k * n + j];
        f->L[k * n + j] = f->L[p * n + j];
        f->L[p * n + j] = t;
      }
      int64_t t = f->piv[k];
      f->piv[k] = f->piv[p];
      f->piv[p] = t;
    }
    const double d = sqrt(A[k * n + k]);
    f->L[k * n + k] = d;
    for (int64_t i = k + 1; i < n; i++) f->L[i * n + k] = A[i * n + k] / d;
    for (int64_t i = k + 1; i < n; i++)
      for (int64_t j = k + 1; j < n; j++) A[i * n + j] -= f->L[i * n + k] * f->L[j * n + k];
  }
  f->rank = k;
  cloq_hfactor_clean(f->L, n, f->rank);
  free(A);
  return CLOQ_OK;
fail:
  free(A);
  cloq_hfactor_free(f);
  return CLOQ_ERR;
}

/* ---- F = E C ---------------------------------------------------------------------------------- */

int cloq_proj_check(const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                      int64_t r) {
  CLOQ_CHECK(n_out >= 1 && n_in >= 1 && cloq_fits_int(n_out) && cloq_fits_int(n_in),
             "invalid error matrix shape (%lld, %lld)", (long long)n_out, (long long)n_in);
  int64_t nel;
  CLOQ_CALL(cloq_mul64(n_out, n_in, &nel));
  const int64_t k = n_out < n_in ? n_out : n_in;
  CLOQ_CHECK(r >= 1 && r <= k, "LoRA rank %lld out of range [1, %lld] for a (%lld, %lld) layer",
             (long long)r, (long long)k, (long long)n_out, (long long)n_in);
  CLOQ_CHECK(!f || (f->n == n_in && f->L),
             "factor of order %lld does not match the layer's %lld inputs", f ? (long long)f->n : 0LL,
             (long long)n_in);
  const int64_t bad = cloq_first_nonfinite_d(E, nel);
  CLOQ_CHECK(bad < 0, "non-finite value in quantization error E at (%lld, %lld)",
             (long long)(bad / n_in), (long long)(bad % n_in));
  return CLOQ_OK;
}

int cloq_proj_apply(const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                    double *F) {
  CLOQ_CHECK(n_out >= 1 && n_in >= 1 && cloq_fits_int(n_out) && cloq_fits_int(n_in),
             "invalid error matrix shape (%lld, %lld)", (long long)n_out, (long long)n_in);
  CLOQ_CHECK(!f || (f->n == n_in && f->L),
             "factor of order %lld does not match the layer's %lld inputs", f ? (long long)f->n : 0LL,
             (long long)n_in);
  CLOQ_CHECK(!(f && f->piv && F == E), "a pivoted factor cannot be applied in place");
  int64_t nel;
  CLOQ_CALL(cloq_mul64(n_out, n_in, &nel));
  if (f && f->piv) {
    for (int64_t o = 0; o < n_out; o++)
      for (int64_t k = 0; k < n_in; k++) F[o * n_in + k] = E[o * n_in + f->piv[k]];
  } else if (F != E) {
    memcpy(F, E, (size_t)nel * sizeof *F);
  }
  if (f)
    cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, (int)n_out,
                (int)n_in, 1.0, f->L, (int)n_in, F, (int)n_in);
  return CLOQ_OK;
}

static double sumsq(const double *x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
  return s;
}

/* ---- the top-r solve ------------------------------------------------------------------------ */

int cloq_tridiag_range(double *d, double *e, int64_t n, int64_t il, int64_t iu, double *w,
                       double *Z, int method) {
  const lapack_int ln = (lapack_int)n, lil = (lapack_int)il, liu = (lapack_int)iu;
  const lapack_int k = liu - lil + 1;
  double *d0 = NULL, *e0 = NULL, *work = NULL;
  lapack_int *isuppz = NULL, *iwork = NULL, m = 0, tryrac = 1, info = 0;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(d0, n, "tridiagonal copy") || !CLOQ_TRY_ALLOC(e0, n, "tridiagonal copy") ||
      !CLOQ_TRY_ALLOC(isuppz, 2 * (int64_t)k, "dstemr support"))
    goto done;
  memcpy(d0, d, (size_t)n * sizeof *d0);
  memcpy(e0, e, (size_t)n * sizeof *e0);
  double wq = 0.0;
  lapack_int iwq = 0;
  info = method == CLOQ_TRIDIAG_BISECTION ? 1 : 0; /* 1: as if dstemr had failed */
  if (info == 0)
    info = LAPACKE_dstemr_work(LAPACK_COL_MAJOR, Z ? 'V' : 'N', 'I', ln, d, e, 0.0, 0.0, lil, liu,
                             &m, w, Z, Z ? ln : 1, k, isuppz, &tryrac, &wq, -1, &iwq, -1);
  if (info == 0) {
    const lapack_int lwork = (lapack_int)wq > 1 ? (lapack_int)wq : 1, liwork = iwq > 1 ? iwq : 1;
    if (!CLOQ_TRY_ALLOC(work, lwork, "dstemr workspace") ||
        !CLOQ_TRY_ALLOC(iwork, liwork, "dstemr integer workspace"))
      goto done;
    info = LAPACKE_dstemr_work(LAPACK_COL_MAJOR, Z ? 'V' : 'N', 'I', ln, d, e, 0.0, 0.0, lil, liu,
                               &m, w, Z, Z ? ln : 1, k, isuppz, &tryrac, work, lwork, iwork,
                               liwork);
  }
  if (info < 0) {
    (void)CLOQ_FAIL("dstemr: argument %d had an illegal value", (int)-info);
    goto done;
  }
  if (info == 0 && m == k) {
    rc = CLOQ_OK;
    goto done;
  }
  /* the fallback, on the saved tridiagonal */
  free(work), free(iwork);
  work = NULL, iwork = NULL;
  lapack_int nsplit = 0, *iblock = NULL, *isplit = NULL, *ifail = NULL;
  if (!CLOQ_TRY_ALLOC(work, 5 * n, "dstebz/dstein workspace") ||
      !CLOQ_TRY_ALLOC(iwork, 3 * n, "dstebz/dstein integer workspace") ||
      !CLOQ_TRY_ALLOC(iblock, n, "dstebz blocks") || !CLOQ_TRY_ALLOC(isplit, n, "dstebz splits") ||
      !CLOQ_TRY_ALLOC(ifail, k, "dstein failures")) {
    free(iblock), free(isplit), free(ifail);
    goto done;
  }
  info = LAPACKE_dstebz_work('I', 'B', ln, 0.0, 0.0, lil, liu, 0.0, d0, e0, &m, &nsplit, w, iblock,
                             isplit, work, iwork);
  if (info == 0 && m == k && Z)
    info = LAPACKE_dstein_work(LAPACK_COL_MAJOR, ln, d0, e0, m, w, iblock, isplit, Z, ln, work,
                               iwork, ifail);
  free(iblock), free(isplit), free(ifail);
  if (info != 0 || m != k) {
    (void)CLOQ_FAIL("dstebz/dstein: failed (info=%d, %d of %d eigenpairs)", (int)info, (int)m,
                    (int)k);
    goto done;
  }
  /* order 'B' sorts within each split-off block only: sort the pairs ascending (as dsyevr does
   * after dstein; a stable insertion sort, k is the rank of a LoRA) */
  for (lapack_int i = 1; i < k; i++) {
    const double wi = w[i];
    lapack_int j = i;
    for (; j > 0 && w[j - 1] > wi; j--) w[j] = w[j - 1];
    w[j] = wi;
    if (Z && j != i) { /* rotate columns j..i right by one */
      memcpy(work, Z + (int64_t)i * n, (size_t)n * sizeof *work);
      memmove(Z + ((int64_t)j + 1) * n, Z + (int64_t)j * n, (size_t)((i - j) * n) * sizeof *Z);
      memcpy(Z + (int64_t)j * n, work, (size_t)n * sizeof *Z);
    }
  }
  rc = CLOQ_OK;
done:
  free(d0), free(e0), free(work), free(iwork), free(isuppz);
  return rc;
}

int cloq_syevr_top(double *S, int64_t n, int64_t r, double *P, double *lam) {
  CLOQ_CHECK(n >= 1 && cloq_fits_int(n) && r >= 1 && r <= n, "invalid eigenproblem: top %lld of %lld",
             (long long)r, (long long)n);
  const lapack_int ln = (lapack_int)n, lr = (lapack_int)r;
  double *d = NULL, *e = NULL, *tau = NULL, *w = NULL, *Z = NULL, *work = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(d, n, "tridiagonal") || !CLOQ_TRY_ALLOC(e, n, "tridiagonal") ||
      !CLOQ_TRY_ALLOC(tau, n, "reflectors") || !CLOQ_TRY_ALLOC(w, n, "eigenvalues") ||
      (P && !CLOQ_TRY_ALLOC(Z, n * r, "eigenvectors")))
    goto done;
  /* S = Q T Q^T (dsytrd, the O(n^3) part), after a workspace query covering dormtr too */
  double wq = 0.0, wq2 = 0.0;
  lapack_int info = LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'L', ln, S, ln, d, e, tau, &wq, -1);
  if (info == 0 && P)
    info = LAPACKE_dormtr_work(LAPACK_COL_MAJOR, 'L', 'L', 'N', ln, lr, S, ln, tau, Z, ln, &wq2, -1);
  if (info != 0 || !(wq <= (double)INT_MAX && wq2 <= (double)INT_MAX)) {
    (void)CLOQ_FAIL("dsytrd/dormtr (workspace query): info=%d, %g / %g doubles", (int)info, wq,
                    wq2);
    goto done;
  }
  const lapack_int lwork = (lapack_int)(wq > wq2 ? wq : wq2) > 1 ? (lapack_int)(wq > wq2 ? wq : wq2) : 1;
  if (!CLOQ_TRY_ALLOC(work, lwork, "dsytrd workspace")) goto done;
  info = LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'L', ln, S, ln, d, e, tau, work, lwork);
  if (info != 0) {
    (void)CLOQ_FAIL("dsytrd: argument %d had an illegal value", (int)-info);
    goto done;
  }
  /* the top r pairs of T, then Q times their vectors (dormtr) */
  if (cloq_tridiag_range(d, e, n, n - r + 1, n, w, Z, CLOQ_TRIDIAG_AUTO) != 0) goto done;
  if (P) {
    info = LAPACKE_dormtr_work(LAPACK_COL_MAJOR, 'L', 'L', 'N', ln, lr, S, ln, tau, Z, ln, work,
                               lwork);
    if (info != 0) {
      (void)CLOQ_FAIL("dormtr: argument %d had an illegal value", (int)-info);
      goto done;
    }
  }
  /* ascending (column-major Z (n, r)) -> descending (row-major P (n, r)) */
  for (int64_t j = 0; j < r; j++) {
    const int64_t src = r - 1 - j;
    lam[j] = w[src];
    if (P)
      for (int64_t i = 0; i < n; i++) P[i * r + j] = Z[i + src * n];
  }
  rc = CLOQ_OK;
done:
  free(d), free(e), free(tau), free(w), free(Z), free(work);
  return rc;
}

/* The top r pairs of G or K, eigenvalues clamped at 0 (both are semidefinite: a negative one is
 * rounding). */
static int top_eig(double *S, int64_t n, int64_t r, double *P, double *lam) {
  CLOQ_CALL(cloq_syevr_top(S, n, r, P, lam));
  for (int64_t j = 0; j < r; j++)
    if (!(lam[j] > 0.0)) lam[j] = 0.0;
  return CLOQ_OK;
}

/* V (n_out, r) row-major = an orthonormal basis of the columns of U (n_out, r) row-major, column
 * j spanning U's first j + 1 columns (Householder QR: dgeqrf + dorgqr on the column-major
 * copy). */
int cloq_orth_columns(const double *U, int64_t n_out, int64_t r, double *V) {
  double *Q = NULL, *tau = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(Q, n_out * r, "QR copy") || !CLOQ_TRY_ALLOC(tau, r, "QR reflectors"))
    goto done;
  for (int64_t i = 0; i < n_out; i++)
    for (int64_t j = 0; j < r; j++) Q[i + j * n_out] = U[i * r + j];
  const lapack_int lm = (lapack_int)n_out, lr = (lapack_int)r;
  lapack_int info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, lm, lr, Q, lm, tau);
  if (info == 0) info = LAPACKE_dorgqr(LAPACK_COL_MAJOR, lm, lr, lr, Q, lm, tau);
  if (info != 0) {
    (void)CLOQ_FAIL("dgeqrf/dorgqr: argument %d had an illegal value", (int)-info);
    goto done;
  }
  for (int64_t i = 0; i < n_out; i++)
    for (int64_t j = 0; j < r; j++) V[i * r + j] = Q[i + j * n_out];
  rc = CLOQ_OK;
done:
  free(Q), free(tau);
  return rc;
}

int cloq_proj_solve(const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                    int64_t r, double *V, double *lam, double *trace) {
  CLOQ_CALL(cloq_proj_check(E, n_out, n_in, f, r));
  const int out_side = n_out <= n_in;
  const int64_t n = out_side ? n_out : n_in;
  double *F = NULL, *S = NULL, *P = NULL, *U = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(F, n_out * n_in, "F = E C") || !CLOQ_TRY_ALLOC(S, n * n, "G or K") ||
      (!out_side && (!CLOQ_TRY_ALLOC(P, n * r, "eigenvectors of K") ||
                     !CLOQ_TRY_ALLOC(U, n_out * r, "F P"))))
    goto done;
  if (cloq_proj_apply(E, n_out, n_in, f, F) != 0) goto done;
  *trace = sumsq(F, n_out * n_in);
  if (out_side) /* G = F F^T, row-major upper */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)n_out, (int)n_in, 1.0, F, (int)n_in,
                0.0, S, (int)n_out);
  else /* K = F^T F */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n_in, (int)n_out, 1.0, F, (int)n_in,
                0.0, S, (int)n_in);
  if (top_eig(S, n, r, out_side ? V : P, lam) != 0) goto done;
  if (!out_side) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n_out, (int)r, (int)n_in, 1.0, F,
                (int)n_in, P, (int)r, 0.0, U, (int)r);
    if (cloq_orth_columns(U, n_out, r, V) != 0) goto done;
  }
  rc = CLOQ_OK;
done:
  free(F), free(S), free(P), free(U);
  return rc;
}

/* The reference: loops for every product, the Jacobi eigensolver for all pairs of S (its
 * eigenvalues are floored at 1e-12 max, so lam is recomputed as Rayleigh quotients), and modified
 * Gram-Schmidt, twice, for the input side's basis. */
int cloq_proj_solve_ref(const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                        int64_t r, double *V, double *lam, double *trace) {
  CLOQ_CALL(cloq_proj_check(E, n_out, n_in, f, r));
  const int out_side = n_out <= n_in;
  const int64_t n = out_side ? n_out : n_in;
  double *F = NULL, *S = NULL, *s = NULL, *Ue = NULL, *P = NULL, *U = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(F, n_out * n_in, "F = E C") || !CLOQ_TRY_ALLOC(S, n * n, "G or K") ||
      !CLOQ_TRY_ALLOC(s, n, "eigenvalues") || !CLOQ_TRY_ALLOC(Ue, n * n, "eigenvectors") ||
      !CLOQ_TRY_ALLOC(P, n * r, "top eigenvectors") || !CLOQ_TRY_ALLOC(U, n_out * r, "F P"))
    goto done;
  /* F = E P L, loops */
  for (int64_t o = 0; o < n_out; o++)
    for (int64_t j = 0; j < n_in; j++) {
      double acc = 0.0;
      if (!f) {
        acc = E[o * n_in + j];
      } else {
        for (int64_t k = j; k < n_in; k++) { /* (E P)[o][k] = E[o][piv[k]], L[k][j] */
          const int64_t src = f->piv ? f->piv[k] : k;
          acc += E[o * n_in + src] * f->L[k * n_in + j];
        }
      }
      F[o * n_in + j] = acc;
    }
  *trace = sumsq(F, n_out * n_in);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0.0;
      if (out_side)
        for (int64_t k = 0; k < n_in; k++) acc += F[i * n_in + k] * F[j * n_in + k];
      else
        for (int64_t k = 0; k < n_out; k++) acc += F[k * n_in + i] * F[k * n_in + j];
      S[i * n + j] = acc;
    }
  int64_t ncl = 0;
  if (cloq_eig_damped_ref(S, n, 0.0, s, Ue, &ncl) != 0) goto done;
  for (int64_t j = 0; j < r; j++) { /* ascending -> the top r, descending */
    const int64_t src = n - 1 - j;
    for (int64_t i = 0; i < n; i++) P[i * r + j] = Ue[i * n + src];
    double q = 0.0;
    for (int64_t a = 0; a < n; a++)
      for (int64_t b = 0; b < n; b++) q += P[a * r + j] * S[a * n + b] * Ue[b * n + src];
    lam[j] = q > 0.0 ? q : 0.0;
  }
  if (out_side) {
    memcpy(V, P, (size_t)(n * r) * sizeof *V);
  } else {
    for (int64_t o = 0; o < n_out; o++)
      for (int64_t j = 0; j < r; j++) {
        double acc = 0.0;
        for (int64_t k = 0; k < n_in; k++) acc += F[o * n_in + k] * P[k * r + j];
        U[o * r + j] = acc;
      }
    for (int64_t j = 0; j < r; j++) {
      for (int pass = 0; pass < 2; pass++)
        for (int64_t k = 0; k < j; k++) {
          double dot = 0.0;
          for (int64_t o = 0; o < n_out; o++) dot += V[o * r + k] * U[o * r + j];
          for (int64_t o = 0; o < n_out; o++) U[o * r + j] -= dot * V[o * r + k];
        }
      double nrm = 0.0;
      for (int64_t o = 0; o < n_out; o++) nrm += U[o * r + j] * U[o * r + j];
      nrm = sqrt(nrm);
      if (nrm > 0.0) {
        for (int64_t o = 0; o < n_out; o++) V[o * r + j] = U[o * r + j] / nrm;
      } else { /* F P has a zero column (rank(F) < r): any unit vector orthogonal to the rest */
        for (int64_t e = 0; e < n_out; e++) {
          for (int64_t o = 0; o < n_out; o++) U[o * r + j] = o == e ? 1.0 : 0.0;
          for (int64_t k = 0; k < j; k++) {
            const double dot = V[e * r + k];
            for (int64_t o = 0; o < n_out; o++) U[o * r + j] -= dot * V[o * r + k];
          }
          nrm = 0.0;
          for (int64_t o = 0; o < n_out; o++) nrm += U[o * r + j] * U[o * r + j];
          if (nrm > 0.25) break;
        }
        nrm = sqrt(nrm);
        for (int64_t o = 0; o < n_out; o++) V[o * r + j] = U[o * r + j] / nrm;
      }
    }
  }
  rc = CLOQ_OK;
done:
  free(F), free(S), free(s), free(Ue), free(P), free(U);
  return rc;
}

int64_t cloq_proj_solve_rank(int64_t r, int64_t n_out, int64_t n_in) {
  const int64_t q = (r + CLOQ_SOLVE_QUANTUM - 1) / CLOQ_SOLVE_QUANTUM * CLOQ_SOLVE_QUANTUM;
  const int64_t k = n_out < n_in ? n_out : n_in;
  return q < k ? q : k;
}

/* ---- objectives ------------------------------------------------------------------------------- */

int cloq_proj_captured(const double *V, int64_t n_out, int64_t rmax, const double *F,
                       int64_t n_in, double *cap) {
  CLOQ_CHECK(n_out >= 1 && n_in >= 1 && rmax >= 1 && cloq_fits_int(n_out) &&
                 cloq_fits_int(n_in) && cloq_fits_int(rmax),
             "invalid shape (%lld, %lld), rank %lld", (long long)n_out, (long long)n_in,
             (long long)rmax);
  double *X = NULL;
  CLOQ_ALLOC(X, rmax * n_in, "V^T F");
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)rmax, (int)n_in, (int)n_out, 1.0, V,
              (int)rmax, F, (int)n_in, 0.0, X, (int)n_in);
  for (int64_t j = 0; j < rmax; j++) cap[j] = sumsq(X + j * n_in, n_in);
  free(X);
  return CLOQ_OK;
}

double cloq_proj_objective(double trace, const double *cap, int64_t r, int64_t nside) {
  if (r >= nside) return 0.0;
  double s = 0.0;
  for (int64_t j = r - 1; j >= 0; j--) s += cap[j]; /* smallest first */
  const double obj = trace - s;
  return obj > 0.0 ? obj : 0.0;
}

/* ---- the balanced split --------------------------------------------------------------------- */

typedef int (*svd_fn)(const double *M, int64_t m, int64_t n, int64_t r, double *P, double *S,
                      double *Vt);

/* C (m, n) = op(A) B, row-major, op(A) = A (lda) or A^T (A stored (k, m), lda); B (k, n) with
 * leading dimension ldb; C with leading dimension n. `ref`: plain loops, else dgemm. */
static void matmul(int ref, int trans_a, int64_t m, int64_t n, int64_t k, const double *A,
                   int64_t lda, const double *B, int64_t ldb, double *C) {
  if (!ref) {
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, (int)m, (int)n,
                (int)k, 1.0, A, (int)lda, B, (int)ldb, 0.0, C, (int)n);
    return;
  }
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0.0;
      for (int64_t l = 0; l < k; l++) acc += (trans_a ? A[l * lda + i] : A[i * lda + l]) * B[l * ldb + j];
      C[i * n + j] = acc;
    }
}

/* Z = V_r^T E (r, n_in), its SVD Y S Zt, Bd = V_r Y sqrt(S) (n_out, r), Ad = sqrt(S) Zt. `ref`:
 * loops and the Jacobi SVD. */
static int split(const double *V, const double *E, int64_t n_out, int64_t n_in, int64_t rmax,
                 int64_t r, double *Ad, double *Bd, int ref) {
  CLOQ_CHECK(n_out >= 1 && n_in >= 1 && cloq_fits_int(n_out) && cloq_fits_int(n_in),
             "invalid error matrix shape (%lld, %lld)", (long long)n_out, (long long)n_in);
  CLOQ_CHECK(r >= 1 && r <= rmax && rmax <= n_out && r <= n_in,
             "LoRA rank %lld out of range [1, %lld] for a (%lld, %lld) layer and a basis of %lld "
             "columns", (long long)r, (long long)(n_out < n_in ? n_out : n_in), (long long)n_out,
             (long long)n_in, (long long)rmax);
  double *Z = NULL, *Y = NULL, *S = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(Z, r * n_in, "V^T E") || !CLOQ_TRY_ALLOC(Y, r * r, "split rotation") ||
      !CLOQ_TRY_ALLOC(S, r, "singular values of the product"))
    goto done;
  matmul(ref, 1, r, n_in, n_out, V, rmax, E, n_in, Z); /* Z = V_r^T E */
  /* Z = Y diag(S) Zt; Zt overwrites Ad */
  if ((ref ? cloq_svd_trunc_ref : cloq_svd_trunc)(Z, r, n_in, r, Y, S, Ad) != 0) goto done;
  for (int64_t j = 0; j < r; j++) {
    const double h = sqrt(S[j]);
    for (int64_t i = 0; i < n_in; i++) Ad[j * n_in + i] *= h;
    for (int64_t k = 0; k < r; k++) Y[k * r + j] *= h;
  }
  matmul(ref, 0, n_out, r, r, V, rmax, Y, r, Bd); /* Bd = V_r Y sqrt(S) */
  rc = CLOQ_OK;
done:
  free(Z), free(Y), free(S);
  return rc;
}

/* Rounds x[0..n) to float32 into y, failing when a value does not fit. */
static int to_float(const double *x, int64_t n, float *y, const char *what) {
  for (int64_t i = 0; i < n; i++) {
    y[i] = (float)x[i];
    CLOQ_CHECK(isfinite(y[i]), "LoRA factor %s: entry %lld = %g does not fit in float32", what,
               (long long)i, x[i]);
  }
  return CLOQ_OK;
}

static int split_f(const double *V, const double *E, int64_t n_out, int64_t n_in, int64_t rmax,
                   int64_t r, float *A, float *B, int ref) {
  double *Ad = NULL, *Bd = NULL;
  int rc = CLOQ_ERR;
  if (CLOQ_TRY_ALLOC(Ad, r * n_in, "factor A") && CLOQ_TRY_ALLOC(Bd, n_out * r, "factor B") &&
      split(V, E, n_out, n_in, rmax, r, Ad, Bd, ref) == 0 &&
      to_float(Ad, r * n_in, A, "A") == 0 && to_float(Bd, n_out * r, B, "B") == 0)
    rc = CLOQ_OK;
  free(Ad), free(Bd);
  return rc;
}

int cloq_lora_split(const double *V, const double *E, int64_t n_out, int64_t n_in, int64_t rmax,
                    int64_t r, float *A, float *B) {
  return split_f(V, E, n_out, n_in, rmax, r, A, B, 0);
}

int cloq_lora_split_d(const double *V, const double *E, int64_t n_out, int64_t n_in,
                      int64_t rmax, int64_t r, double *A, double *B) {
  return split(V, E, n_out, n_in, rmax, r, A, B, 0);
}

int cloq_lora_split_ref(const double *V, const double *E, int64_t n_out, int64_t n_in,
                        int64_t rmax, int64_t r, float *A, float *B) {
  return split_f(V, E, n_out, n_in, rmax, r, A, B, 1);
}

/* ---- whole initializations ------------------------------------------------------------------ */

typedef int (*factor_fn)(const double *H, int64_t n, double damp, cloq_hfactor *f);
typedef int (*solve_fn)(const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                        int64_t r, double *V, double *lam, double *trace);

static int lora_with(const double *E, int64_t n_out, int64_t n_in, const double *H, double damp,
                     int64_t r, float *A, float *B, double *objective, factor_fn factor,
                     solve_fn solve, int ref) {
  CLOQ_CALL(cloq_proj_check(E, n_out, n_in, NULL, r));
  cloq_hfactor f = {0};
  double *V = NULL, *lam = NULL, trace = 0.0;
  int rc = CLOQ_ERR;
  if (H && factor(H, n_in, damp, &f) != 0) return CLOQ_ERR;
  if (CLOQ_TRY_ALLOC(V, n_out * r, "basis V") && CLOQ_TRY_ALLOC(lam, r, "eigenvalues") &&
      solve(E, n_out, n_in, H ? &f : NULL, r, V, lam, &trace) == 0 &&
      split_f(V, E, n_out, n_in, r, r, A, B, ref) == 0) {
    if (objective)
      *objective = cloq_proj_objective(trace, lam, r, n_out < n_in ? n_out : n_in);
    rc = CLOQ_OK;
  }
  cloq_hfactor_free(&f);
  free(V), free(lam);
  return rc;
}

int cloq_lora_svd(const double *E, int64_t n_out, int64_t n_in, int64_t r, float *A, float *B) {
  return lora_with(E, n_out, n_in, NULL, 0.0, r, A, B, NULL, cloq_hfactor_make, cloq_proj_solve,
                   0);
}

int cloq_lora_svd_ref(const double *E, int64_t n_out, int64_t n_in, int64_t r, float *A,
                      float *B) {
  return lora_with(E, n_out, n_in, NULL, 0.0, r, A, B, NULL, cloq_hfactor_ref,
                   cloq_proj_solve_ref, 1);
}

int cloq_lora_cloq(const double *E, int64_t n_out, int64_t n_in, const double *H, double damp,
                   int64_t r, float *A, float *B, double *objective) {
  CLOQ_CHECK(H, "CLoQ needs the Gram matrix");
  return lora_with(E, n_out, n_in, H, damp, r, A, B, objective, cloq_hfactor_make,
                   cloq_proj_solve, 0);
}

int cloq_lora_cloq_ref(const double *E, int64_t n_out, int64_t n_in, const double *H,
                       double damp, int64_t r, float *A, float *B, double *objective) {
  CLOQ_CHECK(H, "CLoQ needs the Gram matrix");
  return lora_with(E, n_out, n_in, H, damp, r, A, B, objective, cloq_hfactor_ref,
                   cloq_proj_solve_ref, 1);
}

void cloq_lora_zero(int64_t n_out, int64_t n_in, int64_t r, uint64_t seed, float *A, float *B) {
  if (n_out > 0 && r > 0) memset(B, 0, (size_t)(n_out * r) * sizeof *B);
  if (n_in <= 0 || r <= 0) return;
  /* PEFT: kaiming_uniform_(a = sqrt(5)) on a (r, n_in) weight gives bound
   * sqrt(6 / ((1 + 5) n_in)) = 1 / sqrt(n_in). Row-major fill order fixes the stream. */
  const double bound = 1.0 / sqrt((double)n_in);
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  for (int64_t i = 0; i < r * n_in; i++)
    A[i] = (float)((2.0 * cloq_rng_uniform(&g) - 1.0) * bound);
}
