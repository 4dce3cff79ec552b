/* magr: MagR weight magnitude reduction (Zhang et al., NeurIPS 2024), a preprocessing step that
 * makes a weight easier to quantize without changing what the layer computes on calibration data.
 *
 * For each row w it runs proximal gradient descent on 0.5 (v - w)^T Hn (v - w) + alpha ||v||_inf
 * (per group when group_size > 0), Hn = H / lambda_max(H), step 1 (the Lipschitz constant of the
 * smooth part is 1 after the normalization). The prox of a ||.||_inf is z - P(z), P the Euclidean
 * projection onto the l1 ball of radius a (Moreau decomposition), and z - P(z) is simply z clipped
 * to [-theta, theta], where theta is the threshold of the projection
 * (P(z)_i = sign(z_i) max(|z_i| - theta, 0)). Clipping is what is computed: it is the same map
 * without the cancellation of z - P(z).
 *
 * Fast: one dsymm per step for all rows, lambda_max by cloq_syevr_top (one eigenvalue, no vectors), and
 * Duchi et al.'s sorting projection restricted to the few entries that can be clipped. Ref: loops,
 * lambda_max from the Jacobi eigensolver (cloq_eig_damped_ref), and Michelot's fixed-point
 * projection, which finds the same theta without sorting.
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

static int by_decreasing(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x < y) - (x > y);
}

/* Duchi et al. (2008), Fig. 1: u = |z| sorted descending, rho = max{j : u_j > (sum_{i<=j} u_i -
 * a) / j}, theta = (sum_{i<=rho} u_i - a) / rho. Only entries above max|z| - a can exceed theta
 * (a >= sum_i max(|z_i| - theta, 0) >= max|z| - theta), so only those are sorted: with the small
 * alphas MagR uses that is a handful per row instead of all of them. The cut is lowered by a few
 * ulps of max|z| so that rounding can only let extra entries in, which is harmless: the sorted
 * candidates are always a prefix of the full sorted order. */
double cloq_linf_prox_theta(const double *z, int64_t n, double a, double *work) {
  if (a == 0.0) return INFINITY;
  double l1 = 0.0, zmax = 0.0;
  for (int64_t i = 0; i < n; i++) {
    const double v = fabs(z[i]);
    l1 += v;
    zmax = v > zmax ? v : zmax;
  }
  if (l1 <= a) return 0.0; /* inside the ball: P(z) = z, the prox is 0 */
  const double cut = (zmax - a) - 4.0 * DBL_EPSILON * zmax;
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++)
    if (fabs(z[i]) > cut) work[k++] = fabs(z[i]);
  qsort(work, (size_t)k, sizeof *work, by_decreasing);
  double cs = 0.0, theta = 0.0;
  for (int64_t j = 0; j < k; j++) { /* the test holds for j <= rho and fails after */
    cs += work[j];
    const double t = (cs - a) / (double)(j + 1);
    if (!(work[j] > t)) break;
    theta = t;
  }
  return theta;
}

/* Michelot (1986): theta <- (sum of |z_i| > theta - a) / count, from theta = -inf; the active set
 * shrinks at each pass and theta rises to the fixed point, reached when the set stops changing. */
double cloq_linf_prox_theta_ref(const double *z, int64_t n, double a) {
  if (a == 0.0) return INFINITY;
  double l1 = 0.0;
  for (int64_t i = 0; i < n; i++) l1 += fabs(z[i]);
  if (l1 <= a) return 0.0;
  double theta = -INFINITY;
  int64_t kprev = -1;
  for (;;) {
    double s = 0.0;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
      if (fabs(z[i]) > theta) {
        s += fabs(z[i]);
        k++;
      }
    if (k == kprev || k == 0) break;
    theta = (s - a) / (double)k;
    kprev = k;
  }
  return theta;
}

static int magr_check(const float *W, int64_t n_out, int64_t n_in, const double *H, double alpha,
                      int iters, int64_t group_size, const float *Wout, int64_t *nel) {
  CLOQ_CHECK(isfinite(alpha) && alpha >= 0.0, "MagR: invalid alpha %g (expected finite, >= 0)",
             alpha);
  CLOQ_CHECK(iters >= 0, "MagR: invalid iteration count %d (expected >= 0)", iters);
  CLOQ_CHECK(group_size == -1 || group_size >= 1,
             "invalid group size %lld (expected -1 for whole rows, or >= 1)",
             (long long)group_size);
  CLOQ_CHECK(n_out >= 0 && n_in >= 0 && cloq_fits_int(n_out) && cloq_fits_int(n_in),
             "MagR: weight shape (%lld, %lld) does not fit the 32-bit BLAS interface",
             (long long)n_out, (long long)n_in);
  int64_t nn;
  CLOQ_CALL(cloq_mul64(n_out, n_in, nel));
  CLOQ_CALL(cloq_mul64(n_in, n_in, &nn));
  if (*nel == 0) return CLOQ_OK;
  CLOQ_CHECK(W && Wout && H, "MagR: NULL array for a non-empty weight");
  const uintptr_t w0 = (uintptr_t)W, o0 = (uintptr_t)Wout, bytes = (uintptr_t)*nel * sizeof *W;
  CLOQ_CHECK(o0 + bytes <= w0 || w0 + bytes <= o0, "MagR: output aliases the input weight");
  for (int64_t i = 0; i < *nel; i++)
    CLOQ_CHECK(isfinite(W[i]), "MagR: non-finite weight %g at row %lld, column %lld",
               (double)W[i], (long long)(i / n_in), (long long)(i % n_in));
  const int64_t bad = cloq_first_nonfinite_d(H, nn);
  CLOQ_CHECK(bad < 0, "MagR: non-finite value in Gram matrix at (%lld, %lld)",
             (long long)(bad / n_in), (long long)(bad % n_in));
  return CLOQ_OK;
}

/* The cases that leave W unchanged: no steps, no penalty, or no information in H (every step
 * would be a pure shrink towards 0 with nothing holding X v near X w). */
static int magr_identity(const float *W, int64_t nel, const double *H, int64_t n_in, double alpha,
                         int iters, float *Wout) {
  int zero = 1;
  for (int64_t i = 0; i < n_in * n_in && zero; i++) zero = H[i] == 0.0;
  if (!(alpha == 0.0 || iters == 0 || zero)) return 0;
  memcpy(Wout, W, (size_t)nel * sizeof *W);
  return 1;
}

static int store(const double *V, int64_t nel, int64_t n_in, float *Wout) {
  for (int64_t i = 0; i < nel; i++) {
    Wout[i] = (float)V[i];
    CLOQ_CHECK(isfinite(Wout[i]), "MagR: result %g at row %lld, column %lld overflows float32",
               V[i], (long long)(i / n_in), (long long)(i % n_in));
  }
  return CLOQ_OK;
}

static void clip(double *z, int64_t n, double theta) {
  for (int64_t i = 0; i < n; i++) z[i] = z[i] > theta ? theta : (z[i] < -theta ? -theta : z[i]);
}

/* lambda_max(H) by dsyevr: range 'I' with il = iu = n, no vectors (cloq_syevr_top). */
static int lambda_max(const double *H, int64_t n, double *lam) {
  double *A = NULL;
  if (!CLOQ_TRY_ALLOC(A, n * n, "MagR Gram copy for the eigensolver")) return CLOQ_ERR;
  memcpy(A, H, (size_t)(n * n) * sizeof *A); /* symmetric: row-major = column-major */
  const int rc = cloq_syevr_top(A, n, 1, NULL, lam);
  free(A);
  return rc;
}

static int check_lambda(double lam) {
  CLOQ_CHECK(lam > 0.0 && isfinite(lam),
             "MagR: the Gram matrix has no positive eigenvalue (largest %g); expected X^T X", lam);
  return CLOQ_OK;
}

int cloq_magr(const float *W, int64_t n_out, int64_t n_in, const double *H, double alpha,
              int iters, int64_t group_size, float *Wout) {
  int64_t nel;
  CLOQ_CALL(magr_check(W, n_out, n_in, H, alpha, iters, group_size, Wout, &nel));
  if (nel == 0 || magr_identity(W, nel, H, n_in, alpha, iters, Wout)) return CLOQ_OK;
  double lam = 0.0;
  CLOQ_CALL(lambda_max(H, n_in, &lam));
  CLOQ_CALL(check_lambda(lam));
  const int64_t gs = (group_size == -1 || group_size > n_in) ? n_in : group_size;
  const int m = (int)n_out, n = (int)n_in;
  double *V = NULL, *D = NULL, *G = NULL, *work = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(V, nel, "MagR iterate") || !CLOQ_TRY_ALLOC(D, nel, "MagR difference") ||
      !CLOQ_TRY_ALLOC(G, nel, "MagR gradient") || !CLOQ_TRY_ALLOC(work, gs, "MagR sort buffer"))
    goto done;
  for (int64_t i = 0; i < nel; i++) V[i] = (double)W[i];
  for (int it = 0; it < iters; it++) {
    for (int64_t i = 0; i < nel; i++) D[i] = V[i] - (double)W[i];
    /* G = D Hn: row r is Hn (v_r - w_r) since H is symmetric */
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, m, n, 1.0 / lam, H, n, D, n, 0.0, G, n);
    for (int64_t r = 0; r < n_out; r++) {
      double *v = V + r * n_in;
      const double *g = G + r * n_in;
      for (int64_t c = 0; c < n_in; c++) v[c] -= g[c];
      for (int64_t c0 = 0; c0 < n_in; c0 += gs) {
        const int64_t len = c0 + gs < n_in ? gs : n_in - c0;
        clip(v + c0, len, cloq_linf_prox_theta(v + c0, len, alpha, work));
      }
    }
  }
  rc = store(V, nel, n_in, Wout);
done:
  free(V);
  free(D);
  free(G);
  free(work);
  return rc;
}

int cloq_magr_ref(const float *W, int64_t n_out, int64_t n_in, const double *H, double alpha,
                  int iters, int64_t group_size, float *Wout) {
  int64_t nel;
  CLOQ_CALL(magr_check(W, n_out, n_in, H, alpha, iters, group_size, Wout, &nel));
  if (nel == 0 || magr_identity(W, nel, H, n_in, alpha, iters, Wout)) return CLOQ_OK;
  const int64_t gs = (group_size == -1 || group_size > n_in) ? n_in : group_size;
  double *s = NULL, *Ue = NULL, *V = NULL, *d = NULL, *z = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(s, n_in, "MagR reference eigenvalues") ||
      !CLOQ_TRY_ALLOC(Ue, n_in * n_in, "MagR reference eigenvectors") ||
      !CLOQ_TRY_ALLOC(V, nel, "MagR reference iterate") ||
      !CLOQ_TRY_ALLOC(d, n_in, "MagR reference difference") ||
      !CLOQ_TRY_ALLOC(z, n_in, "MagR reference gradient step"))
    goto done;
  int64_t nclamped = 0;
  if (cloq_eig_damped_ref(H, n_in, 0.0, s, Ue, &nclamped) != 0) goto done;
  /* every eigenvalue raised to the (positive) floor means none was positive to begin with */
  const double lam = nclamped == n_in ? 0.0 : s[n_in - 1];
  if (check_lambda(lam) != 0) goto done;
  for (int64_t i = 0; i < nel; i++) V[i] = (double)W[i];
  for (int64_t r = 0; r < n_out; r++) {
    double *v = V + r * n_in;
    const float *w = W + r * n_in;
    for (int it = 0; it < iters; it++) {
      for (int64_t c = 0; c < n_in; c++) d[c] = v[c] - (double)w[c];
      for (int64_t i = 0; i < n_in; i++) { /* z = v - H d / lambda_max */
        double acc = 0.0;
        for (int64_t k = 0; k < n_in; k++) acc += H[i * n_in + k] * d[k];
        z[i] = v[i] - acc / lam;
      }
      for (int64_t c0 = 0; c0 < n_in; c0 += gs) {
        const int64_t len = c0 + gs < n_in ? gs : n_in - c0;
        const double theta = cloq_linf_prox_theta_ref(z + c0, len, alpha);
        for (int64_t c = c0; c < c0 + len; c++)
          v[c] = fabs(z[c]) > theta ? copysign(theta, z[c]) : z[c];
      }
    }
  }
  rc = store(V, nel, n_in, Wout);
done:
  free(s);
  free(Ue);
  free(V);
  free(d);
  free(z);
  return rc;
}
