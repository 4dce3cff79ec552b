/* test_eig: the damped eigendecomposition (LAPACK dsyevd) against the cyclic Jacobi reference:
 * eigenvalues, reconstruction, orthogonality, eigenvectors (up to sign), the damping term and
 * the clamping of a rank-deficient or zero Gram matrix.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

static const double EIGVAL_REL_TOL = 1e-10;  /* per eigenvalue, fast vs ref */
static const double RECON_TOL = 1e-12;       /* ||U diag(s) U^T - Hd||_F / ||Hd||_F */
static const double ORTHO_TOL = 1e-12;       /* max |U^T U - I| */
static const double EIGVEC_TOL = 1e-8;       /* 1 - |<u_fast, u_ref>| for separated eigenvalues */
static const double EIGVEC_MIN_GAP = 1e-6;   /* relative gap below which vectors are not unique */
static const double HAND_TOL = 1e-15;        /* diagonal hand example: exact up to rounding */

typedef int (*eig_fn)(const double *, int64_t, double, double *, double *, int64_t *);

static void damped(const double *H, int64_t n, double damp, double *Hd) {
  double tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += H[i * n + i];
  memcpy(Hd, H, (size_t)(n * n) * sizeof *Hd);
  for (int64_t i = 0; i < n; i++) Hd[i * n + i] += damp * tr / (double)n;
}

/* Reconstruction and orthogonality of one decomposition. */
static void check_decomposition(const char *which, const double *Hd, int64_t n, const double *s,
                                const double *U) {
  double num = 0.0, maxo = 0.0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double rec = 0.0, dot = 0.0;
      for (int64_t k = 0; k < n; k++) {
        rec += U[i * n + k] * s[k] * U[j * n + k];
        dot += U[k * n + i] * U[k * n + j];
      }
      num += (rec - Hd[i * n + j]) * (rec - Hd[i * n + j]);
      maxo = fmax(maxo, fabs(dot - (i == j ? 1.0 : 0.0)));
    }
  const double den = frob_d(Hd, n * n);
  EXPECT_CLOSE(sqrt(num), 0.0, RECON_TOL, den, "%s, n = %lld: ||U diag(s) U^T - Hd||_F", which,
               (long long)n);
  EXPECT_CLOSE(maxo, 0.0, ORTHO_TOL, 1.0, "%s, n = %lld: max |U^T U - I|", which, (long long)n);
  for (int64_t k = 1; k < n; k++)
    EXPECT_TRUE(s[k - 1] <= s[k], "%s: eigenvalues not ascending at %lld: %g > %g", which,
                (long long)k, s[k - 1], s[k]);
}

static void test_eig_fast_matches_ref(void **state) {
  (void)state;
  const int64_t sizes[] = {1, 2, 5, 17, 40};
  const double damp = 0.01;
  cloq_rng g;
  cloq_rng_seed(&g, 31337);
  for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
    const int64_t n = sizes[c], t = 2 * n + 3;
    float *X = XALLOC(float, t * n);
    double *H = XALLOC(double, n * n), *Hd = XALLOC(double, n * n);
    double *sf = XALLOC(double, n), *sr = XALLOC(double, n);
    double *Uf = XALLOC(double, n * n), *Ur = XALLOC(double, n * n);
    fill_normal_f(X, t * n, &g, 1.0);
    gram_full(X, t, n, H);
    damped(H, n, damp, Hd);
    int64_t kf = -1, kr = -1;
    EXPECT_OK(cloq_eig_damped(H, n, damp, sf, Uf, &kf));
    EXPECT_OK(cloq_eig_damped_ref(H, n, damp, sr, Ur, &kr));
    EXPECT_TRUE(kf == 0 && kr == 0, "n = %lld: expected no clamped eigenvalues, got %lld (fast), "
                "%lld (ref)", (long long)n, (long long)kf, (long long)kr);
    check_decomposition("fast", Hd, n, sf, Uf);
    check_decomposition("ref", Hd, n, sr, Ur);
    for (int64_t k = 0; k < n; k++)
      EXPECT_CLOSE(sf[k], sr[k], EIGVAL_REL_TOL, fabs(sr[k]), "n = %lld: eigenvalue %lld",
                   (long long)n, (long long)k);
    for (int64_t k = 0; k < n; k++) {
      double gap = INFINITY;
      if (k > 0) gap = fmin(gap, sr[k] - sr[k - 1]);
      if (k + 1 < n) gap = fmin(gap, sr[k + 1] - sr[k]);
      if (gap < EIGVEC_MIN_GAP * sr[n - 1]) continue;
      double dot = 0.0;
      for (int64_t i = 0; i < n; i++) dot += Uf[i * n + k] * Ur[i * n + k];
      EXPECT_CLOSE(fabs(dot), 1.0, EIGVEC_TOL, 1.0, "n = %lld: |<u_fast, u_ref>| of vector %lld",
                   (long long)n, (long long)k);
    }
    free(X), free(H), free(Hd), free(sf), free(sr), free(Uf), free(Ur);
  }
}

static void test_eig_damping_term(void **state) {
  (void)state;
  /* diag(3, 1, 2), damp 0.1: mean diagonal 2, so Hd = diag(3.2, 1.2, 2.2) */
  const double H[9] = {3, 0, 0, 0, 1, 0, 0, 0, 2};
  const double want[3] = {1.2, 2.2, 3.2};
  const int want_axis[3] = {1, 2, 0}; /* eigenvector k is +-e_{want_axis[k]} */
  const eig_fn fns[2] = {cloq_eig_damped, cloq_eig_damped_ref};
  for (int v = 0; v < 2; v++) {
    double s[3], U[9];
    int64_t k = -1;
    EXPECT_OK(fns[v](H, 3, 0.1, s, U, &k));
    EXPECT_TRUE(k == 0, "%s: expected 0 clamped, got %lld", v ? "ref" : "fast", (long long)k);
    for (int i = 0; i < 3; i++) {
      EXPECT_CLOSE(s[i], want[i], HAND_TOL, want[i], "%s: eigenvalue %d", v ? "ref" : "fast", i);
      for (int r = 0; r < 3; r++)
        EXPECT_CLOSE(fabs(U[r * 3 + i]), r == want_axis[i] ? 1.0 : 0.0, HAND_TOL, 1.0,
                     "%s: |U(%d, %d)|", v ? "ref" : "fast", r, i);
    }
  }
}

static void test_eig_rank_deficient_clamps(void **state) {
  (void)state;
  /* 3 tokens, 10 columns, no damping: rank 3, so 7 eigenvalues are rounding noise around 0 and
   * must be raised to the floor 1e-12 * max |s|, and counted. */
  const int64_t t = 3, n = 10;
  float X[3 * 10];
  double H[100], s[10], U[100];
  cloq_rng g;
  cloq_rng_seed(&g, 8);
  fill_normal_f(X, t * n, &g, 1.0);
  gram_full(X, t, n, H);
  const eig_fn fns[2] = {cloq_eig_damped, cloq_eig_damped_ref};
  for (int v = 0; v < 2; v++) {
    int64_t k = -1;
    EXPECT_OK(fns[v](H, n, 0.0, s, U, &k));
    EXPECT_TRUE(k == n - t, "%s: expected %lld clamped eigenvalues, got %lld", v ? "ref" : "fast",
                (long long)(n - t), (long long)k);
    const double floor_ = 1e-12 * s[n - 1];
    for (int64_t i = 0; i < n - t; i++)
      EXPECT_TRUE(s[i] == floor_, "%s: clamped eigenvalue %lld: expected the floor %g, got %g",
                  v ? "ref" : "fast", (long long)i, floor_, s[i]);
    for (int64_t i = n - t; i < n; i++)
      EXPECT_TRUE(s[i] > 1e3 * floor_, "%s: eigenvalue %lld = %g should be well above the floor",
                  v ? "ref" : "fast", (long long)i, s[i]);
  }
}

static void test_eig_zero_matrix(void **state) {
  (void)state;
  double H[16] = {0}, s[4], U[16];
  const eig_fn fns[2] = {cloq_eig_damped, cloq_eig_damped_ref};
  for (int v = 0; v < 2; v++) {
    int64_t k = -1;
    EXPECT_OK(fns[v](H, 4, 0.01, s, U, &k));
    EXPECT_TRUE(k == 4, "%s: expected all 4 eigenvalues clamped, got %lld", v ? "ref" : "fast",
                (long long)k);
    for (int i = 0; i < 4; i++)
      EXPECT_TRUE(s[i] == 1e-300, "%s: eigenvalue %d: expected 1e-300, got %g", v ? "ref" : "fast",
                  i, s[i]);
  }
}

static void test_eig_rejects_invalid(void **state) {
  (void)state;
  double H[9] = {2, 0.1, 0, 0.1, 2, 0, 0, 0, 2}, s[3], U[9];
  int64_t k;
  H[2 * 3 + 1] = NAN;
  EXPECT_FAIL(cloq_eig_damped(H, 3, 0.01, s, U, &k), "non-finite value in Gram matrix");
  EXPECT_FAIL(cloq_eig_damped_ref(H, 3, 0.01, s, U, &k), "non-finite value in Gram matrix");
  H[2 * 3 + 1] = INFINITY;
  EXPECT_FAIL(cloq_eig_damped(H, 3, 0.01, s, U, &k), "non-finite value in Gram matrix");
  H[2 * 3 + 1] = 0.0;
  EXPECT_FAIL(cloq_eig_damped(H, 0, 0.01, s, U, &k), "order");
  EXPECT_FAIL(cloq_eig_damped(H, 3, -0.5, s, U, &k), "damping");
  EXPECT_FAIL(cloq_eig_damped_ref(H, 3, NAN, s, U, &k), "damping");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_eig_fast_matches_ref),
      cmocka_unit_test(test_eig_damping_term),
      cmocka_unit_test(test_eig_rank_deficient_clamps),
      cmocka_unit_test(test_eig_zero_matrix),
      cmocka_unit_test(test_eig_rejects_invalid),
  };
  return cmocka_run_group_tests_name("linalg_eig", tests, NULL, NULL);
}
