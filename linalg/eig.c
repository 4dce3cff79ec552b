/* eig: eigendecomposition of the damped Gram matrix Hd = H + damp * mean(diag H) * I.
 *
 * CLoQ needs Hd^(1/2) and Hd^(-1/2) (through s and U), so eigenvalues that are zero or slightly
 * negative from rounding (a rank-deficient H: fewer calibration tokens than columns, dead
 * channels) are raised to a floor relative to the largest one, and the count is reported so the
 * caller can warn naming the layer. The fast version calls LAPACK dsyevd (divide and conquer,
 * with an explicit lwork = -1 query); the reference is a cyclic Jacobi solver, slow but simple
 * enough to trust.
 *
 * Layout trick (fast version): Hd is symmetric, so its row-major array is also its column-major
 * array and dsyevd is called column-major without a transposed copy. dsyevd returns eigenvectors
 * as columns of a column-major matrix; one in-place transpose turns that into the row-major U
 * whose columns are eigenvectors, as the contract wants.
 */
#include <lapacke.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_linalg.h"
#include "linalg_internal.h"

/* The reference's stopping rule: sweeps until no off-diagonal entry is worth rotating away. */
enum { JACOBI_MAX_SWEEPS = 100 };

/* Validates H and fills A with Hd (linalg_internal.h). */
int cloq_eig_prepare(const double *H, int64_t n, double damp, double *A) {
  CLOQ_CHECK(n >= 1 && cloq_fits_int(n), "invalid Gram matrix order %lld", (long long)n);
  CLOQ_CHECK(isfinite(damp) && damp >= 0.0, "invalid damping %g (expected finite, >= 0)", damp);
  const int64_t nn = n * n; /* n fits in int, so n*n fits in int64 */
  const int64_t bad = cloq_first_nonfinite_d(H, nn);
  CLOQ_CHECK(bad < 0, "non-finite value in Gram matrix at (%lld, %lld)", (long long)(bad / n),
             (long long)(bad % n));
  memcpy(A, H, (size_t)nn * sizeof *A);
  double tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += H[i * n + i];
  const double add = damp * (tr / (double)n);
  for (int64_t i = 0; i < n; i++) A[i * n + i] += add;
  return CLOQ_OK;
}

void cloq_transpose_square(double *A, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = i + 1; j < n; j++) {
      const double tmp = A[i * n + j];
      A[i * n + j] = A[j * n + i];
      A[j * n + i] = tmp;
    }
}

/* Raises eigenvalues <= floor to floor (floor relative to max |s|); counts them. */
void cloq_eig_clamp(double *s, int64_t n, int64_t *nclamped) {
  double smax = 0.0;
  for (int64_t i = 0; i < n; i++)
    if (fabs(s[i]) > smax) smax = fabs(s[i]);
  const double floor_ = smax > 0.0 ? 1e-12 * smax : 1e-300;
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) {
    if (s[i] <= floor_) {
      s[i] = floor_;
      k++;
    }
  }
  if (nclamped) *nclamped = k;
}

int cloq_eig_damped(const double *H, int64_t n, double damp, double *s, double *U,
                    int64_t *nclamped) {
  CLOQ_CALL(cloq_eig_prepare(H, n, damp, U)); /* dsyevd overwrites its input with the vectors */
  const lapack_int ln = (lapack_int)n;
  double wq = 0.0;
  lapack_int iwq = 0;
  CLOQ_LAPACK("dsyevd (workspace query)",
              LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', ln, U, ln, s, &wq, -1, &iwq, -1));
  /* lwork ~ 1 + 6n + 2n^2 must be representable as lapack_int (n up to ~32k with 32-bit ints) */
  CLOQ_CHECK(wq >= 1.0 && wq <= (double)INT_MAX && iwq >= 1,
             "dsyevd: workspace of %g doubles for n = %lld exceeds the 32-bit LAPACK interface",
             wq, (long long)n);
  const lapack_int lwork = (lapack_int)wq, liwork = iwq;
  double *work = NULL;
  lapack_int *iwork = NULL;
  if (!CLOQ_TRY_ALLOC(work, lwork, "dsyevd workspace") ||
      !CLOQ_TRY_ALLOC(iwork, liwork, "dsyevd integer workspace")) {
    free(work);
    return CLOQ_ERR;
  }
  const lapack_int info =
      LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', ln, U, ln, s, work, lwork, iwork, liwork);
  free(work);
  free(iwork);
  CLOQ_LAPACK("dsyevd", info);
  /* column-major Z (Z[i + j n] = component i of vector j) -> row-major U (U[i n + j]) */
  cloq_transpose_square(U, n);
  cloq_eig_clamp(s, n, nclamped);
  return CLOQ_OK;
}

/* Sum of squares of the strictly upper off-diagonal entries. */
static double offdiag2(const double *A, int64_t n) {
  double off = 0.0;
  for (int64_t p = 0; p < n; p++)
    for (int64_t q = p + 1; q < n; q++) off += A[p * n + q] * A[p * n + q];
  return off;
}

int cloq_eig_damped_ref(const double *H, int64_t n, double damp, double *s, double *U,
                        int64_t *nclamped) {
  double *A = NULL;
  int64_t *perm = NULL;
  /* V accumulates the rotations; it is written into U (columns = eigenvectors) at the end. */
  double *V = U;
  int converged = 0;
  CLOQ_CHECK(n >= 1 && cloq_fits_int(n), "invalid Gram matrix order %lld", (long long)n);
  if (!CLOQ_TRY_ALLOC(A, n * n, "Jacobi working matrix")) return CLOQ_ERR;
  if (cloq_eig_prepare(H, n, damp, A) != 0) goto fail;

  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) V[i * n + j] = (i == j) ? 1.0 : 0.0;

  for (int sweep = 0; sweep < JACOBI_MAX_SWEEPS && !converged; sweep++) {
    if (offdiag2(A, n) == 0.0) {
      converged = 1;
      break;
    }
    for (int64_t p = 0; p < n; p++) {
      for (int64_t q = p + 1; q < n; q++) {
        const double apq = A[p * n + q], app = A[p * n + p], aqq = A[q * n + q];
        if (apq == 0.0) continue;
        /* An entry too small to change either diagonal entry is dropped (Rutishauser's test,
         * after the first sweeps, as in Numerical Recipes): rotating it would only stir
         * rounding noise and could keep the sweep from terminating. */
        const double g = 100.0 * fabs(apq);
        if (sweep > 3 && fabs(app) + g == fabs(app) && fabs(aqq) + g == fabs(aqq)) {
          A[p * n + q] = A[q * n + p] = 0.0;
          continue;
        }
        /* rotation J (J_pp = J_qq = c, J_pq = s, J_qp = -s) with (J^T A J)_pq = 0; t is the
         * smaller root of t^2 + 2 theta t - 1 = 0 (angle <= pi/4, the stable choice) */
        const double theta = (aqq - app) / (2.0 * apq);
        double t = 1.0 / (fabs(theta) + sqrt(theta * theta + 1.0));
        if (theta < 0.0) t = -t;
        if (!isfinite(theta * theta)) t = 1.0 / (2.0 * theta); /* huge theta: t ~ 1/(2 theta) */
        const double c = 1.0 / sqrt(t * t + 1.0), sn = t * c;
        for (int64_t k = 0; k < n; k++) { /* columns p, q of A J */
          const double akp = A[k * n + p], akq = A[k * n + q];
          A[k * n + p] = c * akp - sn * akq;
          A[k * n + q] = sn * akp + c * akq;
        }
        for (int64_t k = 0; k < n; k++) { /* rows p, q of J^T (A J) */
          const double apk = A[p * n + k], aqk = A[q * n + k];
          A[p * n + k] = c * apk - sn * aqk;
          A[q * n + k] = sn * apk + c * aqk;
        }
        A[p * n + q] = A[q * n + p] = 0.0; /* zero by construction; drop the rounding residue */
        for (int64_t k = 0; k < n; k++) {  /* V J */
          const double vkp = V[k * n + p], vkq = V[k * n + q];
          V[k * n + p] = c * vkp - sn * vkq;
          V[k * n + q] = sn * vkp + c * vkq;
        }
      }
    }
  }
  if (!converged && offdiag2(A, n) != 0.0) {
    (void)CLOQ_FAIL("Jacobi eigensolver: no convergence after %d sweeps (n = %lld)",
                    JACOBI_MAX_SWEEPS, (long long)n);
    goto fail;
  }

  /* sort ascending (insertion sort on a permutation: n is small wherever the ref is used) */
  if (!CLOQ_TRY_ALLOC(perm, n, "eigenvalue permutation")) goto fail;
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t i = 1; i < n; i++) {
    const int64_t pi = perm[i];
    int64_t j = i;
    for (; j > 0 && A[perm[j - 1] * n + perm[j - 1]] > A[pi * n + pi]; j--) perm[j] = perm[j - 1];
    perm[j] = pi;
  }
  for (int64_t i = 0; i < n; i++) s[i] = A[perm[i] * n + perm[i]];
  /* permute the columns of V (= U) through A, which is free now */
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) A[i * n + j] = V[i * n + perm[j]];
  memcpy(U, A, (size_t)(n * n) * sizeof *U);
  free(perm);
  free(A);
  cloq_eig_clamp(s, n, nclamped);
  return CLOQ_OK;
fail:
  free(perm);
  free(A);
  return CLOQ_ERR;
}
