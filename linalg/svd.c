/* svd: truncated singular value decomposition M (m, n) = P diag(S) Vt, r leading triplets.
 *
 * Both LoRA initializations reduce to a truncated SVD (of E for svd init, of M = R E^T for
 * CLoQ). The fast version calls LAPACK dgesdd with jobz 'S' after an lwork = -1 query; the
 * reference is one-sided (Hestenes) Jacobi, which is simple and accurate to high relative
 * precision.
 *
 * Layout trick (fast version): a row-major (m, n) array is the column-major (n, m) matrix M^T.
 * dgesdd on M^T = V diag(S) P^T returns, column-major, U_c = V (n, k) and VT_c = P^T (k, m),
 * k = min(m, n). Read back as row-major arrays, U_c is exactly Vt (k, n) and VT_c is exactly
 * P (m, k): no transposes, and the leading r rows of Vt are its first r*n entries.
 */
#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_linalg.h"
#include "linalg_internal.h"

/* One-sided Jacobi: columns p, q count as orthogonal once |<gp, gq>| <= tol ||gp|| ||gq||, with
 * tol = JACOBI_SVD_TOL_EPS * eps * sqrt(len). The sqrt(len) follows LAPACK's dgesvj: a computed
 * dot product of length len carries about that much rounding, so a smaller tol could keep
 * rotating noise forever. */
static const double JACOBI_SVD_TOL_EPS = 8.0;
enum { JACOBI_SVD_MAX_SWEEPS = 80 };

int cloq_svd_check_args(const double *M, int64_t m, int64_t n, int64_t r) {
  CLOQ_CHECK(m >= 1 && n >= 1 && cloq_fits_int(m) && cloq_fits_int(n),
             "invalid matrix shape (%lld, %lld) for SVD", (long long)m, (long long)n);
  const int64_t k = m < n ? m : n;
  CLOQ_CHECK(r >= 1 && r <= k, "SVD rank %lld out of range [1, %lld] for a (%lld, %lld) matrix",
             (long long)r, (long long)k, (long long)m, (long long)n);
  int64_t mn;
  CLOQ_CALL(cloq_mul64(m, n, &mn));
  const int64_t bad = cloq_first_nonfinite_d(M, mn);
  CLOQ_CHECK(bad < 0, "non-finite value in matrix for SVD at (%lld, %lld)", (long long)(bad / n),
             (long long)(bad % n));
  return CLOQ_OK;
}

/* dgesdd (jobz 'S') on the column-major (n, m) matrix in A, i.e. on M^T for a row-major (m, n)
 * M; Uc (n, k) and VTc (k, m) column-major, k = min(m, n). Runs the lwork = -1 query and owns the
 * workspace; iwork holds 8k integers. */
static int gesdd_colmajor(double *A, int64_t m, int64_t n, double *Sk, double *Uc, double *VTc,
                          lapack_int *iwork) {
  const int64_t k = m < n ? m : n;
  const lapack_int lm = (lapack_int)n, ln = (lapack_int)m, lk = (lapack_int)k;
  double wq = 0.0;
  CLOQ_LAPACK("dgesdd (workspace query)",
              LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'S', lm, ln, A, lm, Sk, Uc, lm, VTc, lk, &wq,
                                  -1, iwork));
  CLOQ_CHECK(wq >= 1.0 && wq <= (double)INT_MAX,
             "dgesdd: workspace of %g doubles for (%lld, %lld) exceeds the 32-bit LAPACK interface",
             wq, (long long)m, (long long)n);
  const lapack_int lwork = (lapack_int)wq;
  double *work = NULL;
  if (!CLOQ_TRY_ALLOC(work, lwork, "dgesdd workspace")) return CLOQ_ERR;
  const lapack_int info = LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'S', lm, ln, A, lm, Sk, Uc, lm,
                                              VTc, lk, work, lwork, iwork);
  free(work);
  CLOQ_LAPACK("dgesdd", info);
  return CLOQ_OK;
}

int cloq_svd_trunc(const double *M, int64_t m, int64_t n, int64_t r, double *P, double *S,
                   double *Vt) {
  CLOQ_CALL(cloq_svd_check_args(M, m, n, r));
  const int64_t k = m < n ? m : n;
  double *A = NULL, *Sk = NULL, *Uc = NULL, *VTc = NULL;
  lapack_int *iwork = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(A, m * n, "SVD input copy") || !CLOQ_TRY_ALLOC(Sk, k, "singular values") ||
      !CLOQ_TRY_ALLOC(Uc, k * n, "right singular vectors") ||
      !CLOQ_TRY_ALLOC(VTc, m * k, "left singular vectors") ||
      !CLOQ_TRY_ALLOC(iwork, 8 * k, "dgesdd integer workspace"))
    goto done;
  memcpy(A, M, (size_t)(m * n) * sizeof *A); /* dgesdd destroys its input */
  if (gesdd_colmajor(A, m, n, Sk, Uc, VTc, iwork) != 0) goto done;
  memcpy(S, Sk, (size_t)r * sizeof *S);
  memcpy(Vt, Uc, (size_t)(r * n) * sizeof *Vt); /* leading r rows of Vt (k, n) */
  for (int64_t i = 0; i < m; i++) memcpy(P + i * r, VTc + i * k, (size_t)r * sizeof *P);
  rc = CLOQ_OK;
done:
  free(A);
  free(Sk);
  free(Uc);
  free(VTc);
  free(iwork);
  return rc;
}

/* One-sided Jacobi on ncol columns of length len, stored column-contiguous in G (G[j len + i]);
 * V (ncol, ncol), also column-contiguous, accumulates the rotations: G_in V = G_out with the
 * columns of G_out mutually orthogonal. */
static int hestenes(double *G, int64_t len, int64_t ncol, double *V) {
  const double tol = JACOBI_SVD_TOL_EPS * DBL_EPSILON * sqrt((double)len);
  for (int64_t j = 0; j < ncol; j++)
    for (int64_t i = 0; i < ncol; i++) V[j * ncol + i] = (i == j) ? 1.0 : 0.0;
  for (int sweep = 0; sweep < JACOBI_SVD_MAX_SWEEPS; sweep++) {
    int rotated = 0;
    for (int64_t p = 0; p < ncol; p++) {
      for (int64_t q = p + 1; q < ncol; q++) {
        double *gp = G + p * len, *gq = G + q * len;
        double alpha = 0.0, beta = 0.0, gamma = 0.0;
        for (int64_t i = 0; i < len; i++) {
          alpha += gp[i] * gp[i];
          beta += gq[i] * gq[i];
          gamma += gp[i] * gq[i];
        }
        if (fabs(gamma) <= tol * sqrt(alpha) * sqrt(beta) || gamma == 0.0) continue;
        rotated = 1;
        /* rotation that zeroes the (p, q) entry of the 2x2 Gram [[alpha, gamma], [gamma, beta]] */
        const double zeta = (beta - alpha) / (2.0 * gamma);
        double t = 1.0 / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
        if (zeta < 0.0) t = -t;
        if (!isfinite(zeta * zeta)) t = 1.0 / (2.0 * zeta);
        const double c = 1.0 / sqrt(1.0 + t * t), sn = c * t;
        for (int64_t i = 0; i < len; i++) {
          const double a = gp[i], b = gq[i];
          gp[i] = c * a - sn * b;
          gq[i] = sn * a + c * b;
        }
        double *vp = V + p * ncol, *vq = V + q * ncol;
        for (int64_t i = 0; i < ncol; i++) {
          const double a = vp[i], b = vq[i];
          vp[i] = c * a - sn * b;
          vq[i] = sn * a + c * b;
        }
      }
    }
    if (!rotated) return CLOQ_OK;
  }
  return CLOQ_FAIL("one-sided Jacobi SVD: no convergence after %d sweeps (%lld columns)",
                   JACOBI_SVD_MAX_SWEEPS, (long long)ncol);
}

int cloq_svd_trunc_ref(const double *M, int64_t m, int64_t n, int64_t r, double *P, double *S,
                       double *Vt) {
  CLOQ_CALL(cloq_svd_check_args(M, m, n, r));
  /* Orthogonalize the shorter side's vectors: columns of M when m >= n (M = G diag V^T), else
   * columns of M^T, i.e. rows of M (M^T = G diag V^T, so M = V diag G^T). */
  const int tall = m >= n;
  const int64_t len = tall ? m : n, ncol = tall ? n : m;
  double *G = NULL, *V = NULL, *sig = NULL;
  int64_t *perm = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(G, m * n, "Jacobi SVD columns") ||
      !CLOQ_TRY_ALLOC(V, ncol * ncol, "Jacobi SVD rotations") ||
      !CLOQ_TRY_ALLOC(sig, ncol, "singular values") ||
      !CLOQ_TRY_ALLOC(perm, ncol, "singular value permutation"))
    goto done;
  if (tall) {
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) G[j * m + i] = M[i * n + j];
  } else {
    memcpy(G, M, (size_t)(m * n) * sizeof *G); /* row j of M is column j of M^T */
  }
  if (hestenes(G, len, ncol, V) != 0) goto done;
  for (int64_t j = 0; j < ncol; j++) {
    double nrm = 0.0;
    for (int64_t i = 0; i < len; i++) nrm += G[j * len + i] * G[j * len + i];
    sig[j] = sqrt(nrm);
    perm[j] = j;
  }
  for (int64_t i = 1; i < ncol; i++) { /* descending, stable */
    const int64_t pi = perm[i];
    int64_t j = i;
    for (; j > 0 && sig[perm[j - 1]] < sig[pi]; j--) perm[j] = perm[j - 1];
    perm[j] = pi;
  }
  for (int64_t j = 0; j < r; j++) {
    const int64_t c = perm[j];
    S[j] = sig[c];
    /* a zero singular value leaves a zero vector: it multiplies S = 0 in every product */
    const double inv = sig[c] > 0.0 ? 1.0 / sig[c] : 0.0;
    if (tall) { /* P = normalized G columns (m, r), Vt = V^T rows */
      for (int64_t i = 0; i < m; i++) P[i * r + j] = G[c * m + i] * inv;
      for (int64_t i = 0; i < n; i++) Vt[j * n + i] = V[c * ncol + i];
    } else { /* P = V (m, r), Vt = normalized G columns as rows (r, n) */
      for (int64_t i = 0; i < m; i++) P[i * r + j] = V[c * ncol + i];
      for (int64_t i = 0; i < n; i++) Vt[j * n + i] = G[c * n + i] * inv;
    }
  }
  rc = CLOQ_OK;
done:
  free(G);
  free(V);
  free(sig);
  free(perm);
  return rc;
}
