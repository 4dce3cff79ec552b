/* test_svd: truncated SVD (LAPACK dgesdd) against one-sided Jacobi: singular values, the rank-r
 * reconstruction (invariant to the signs of singular vectors), orthonormality, a hand example, a
 * rank-deficient matrix and argument checks.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

static const double SV_REL_TOL = 1e-10;     /* per singular value, fast vs ref */
static const double RECON_FR_TOL = 1e-9;    /* max |P S Vt (fast) - P S Vt (ref)| / S_0 */
static const double RECON_FULL_TOL = 1e-12; /* max |P S Vt - M| / S_0 at full rank */
static const double ORTHO_TOL = 1e-12;      /* max |P^T P - I|, |Vt Vt^T - I| */
static const double HAND_TOL = 1e-15;       /* hand example: exact up to rounding */
static const double RANK1_TOL = 1e-14;      /* rank-1 example, relative to its S_0 */

typedef int (*svd_fn)(const double *, int64_t, int64_t, int64_t, double *, double *, double *);

/* R (m, n) = P (m, r) diag(S) Vt (r, n) */
static void reconstruct(const double *P, const double *S, const double *Vt, int64_t m, int64_t n,
                        int64_t r, double *R) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0.0;
      for (int64_t k = 0; k < r; k++) acc += P[i * r + k] * S[k] * Vt[k * n + j];
      R[i * n + j] = acc;
    }
}

static void check_orthonormal(const char *which, const double *P, const double *Vt, int64_t m,
                              int64_t n, int64_t r) {
  double mp = 0.0, mv = 0.0;
  for (int64_t a = 0; a < r; a++)
    for (int64_t b = 0; b < r; b++) {
      double dp = 0.0, dv = 0.0;
      for (int64_t i = 0; i < m; i++) dp += P[i * r + a] * P[i * r + b];
      for (int64_t j = 0; j < n; j++) dv += Vt[a * n + j] * Vt[b * n + j];
      mp = fmax(mp, fabs(dp - (a == b)));
      mv = fmax(mv, fabs(dv - (a == b)));
    }
  EXPECT_CLOSE(mp, 0.0, ORTHO_TOL, 1.0, "%s (%lld, %lld) r %lld: max |P^T P - I|", which,
               (long long)m, (long long)n, (long long)r);
  EXPECT_CLOSE(mv, 0.0, ORTHO_TOL, 1.0, "%s (%lld, %lld) r %lld: max |Vt Vt^T - I|", which,
               (long long)m, (long long)n, (long long)r);
}

static void test_svd_fast_matches_ref(void **state) {
  (void)state;
  const int64_t sizes[][2] = {{1, 1}, {5, 3}, {3, 5}, {20, 20}, {37, 13}, {13, 37}, {60, 45}};
  cloq_rng g;
  cloq_rng_seed(&g, 4242);
  for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
    const int64_t m = sizes[c][0], n = sizes[c][1], k = m < n ? m : n;
    double *M = XALLOC(double, m * n), *Rf = XALLOC(double, m * n), *Rr = XALLOC(double, m * n);
    double *Pf = XALLOC(double, m * k), *Pr = XALLOC(double, m * k);
    double *Sf = XALLOC(double, k), *Sr = XALLOC(double, k);
    double *Vf = XALLOC(double, k * n), *Vr = XALLOC(double, k * n);
    fill_normal_d(M, m * n, &g, 1.0);
    const int64_t ranks[3] = {1, k / 2 > 0 ? k / 2 : 1, k};
    for (int q = 0; q < 3; q++) {
      const int64_t r = ranks[q];
      EXPECT_OK(cloq_svd_trunc(M, m, n, r, Pf, Sf, Vf));
      EXPECT_OK(cloq_svd_trunc_ref(M, m, n, r, Pr, Sr, Vr));
      for (int64_t i = 0; i < r; i++) {
        EXPECT_CLOSE(Sf[i], Sr[i], SV_REL_TOL, Sr[i], "(%lld, %lld) r %lld: singular value %lld",
                     (long long)m, (long long)n, (long long)r, (long long)i);
        if (i > 0)
          EXPECT_TRUE(Sf[i - 1] >= Sf[i] && Sr[i - 1] >= Sr[i], "singular values not descending");
      }
      check_orthonormal("fast", Pf, Vf, m, n, r);
      check_orthonormal("ref", Pr, Vr, m, n, r);
      reconstruct(Pf, Sf, Vf, m, n, r, Rf);
      reconstruct(Pr, Sr, Vr, m, n, r, Rr);
      for (int64_t i = 0; i < m * n; i++) {
        EXPECT_CLOSE(Rf[i], Rr[i], RECON_FR_TOL, Sr[0],
                     "(%lld, %lld) r %lld: rank-r reconstruction entry (%lld, %lld) fast vs ref",
                     (long long)m, (long long)n, (long long)r, (long long)(i / n),
                     (long long)(i % n));
        if (r == k) {
          EXPECT_CLOSE(Rf[i], M[i], RECON_FULL_TOL, Sr[0], "fast full-rank reconstruction");
          EXPECT_CLOSE(Rr[i], M[i], RECON_FULL_TOL, Sr[0], "ref full-rank reconstruction");
        }
      }
    }
    free(M), free(Rf), free(Rr), free(Pf), free(Pr), free(Sf), free(Sr), free(Vf), free(Vr);
  }
}

static void test_svd_hand_example(void **state) {
  (void)state;
  /* M = [[0, -2], [3, 0], [0, 0]]: S = (3, 2); leading pair +-(e_2, e_1) */
  const double M[6] = {0, -2, 3, 0, 0, 0};
  const svd_fn fns[2] = {cloq_svd_trunc, cloq_svd_trunc_ref};
  for (int v = 0; v < 2; v++) {
    double P[6], S[2], Vt[4];
    EXPECT_OK(fns[v](M, 3, 2, 2, P, S, Vt));
    EXPECT_CLOSE(S[0], 3.0, HAND_TOL, 3.0, "%s: S_0", v ? "ref" : "fast");
    EXPECT_CLOSE(S[1], 2.0, HAND_TOL, 2.0, "%s: S_1", v ? "ref" : "fast");
    EXPECT_CLOSE(fabs(P[1 * 2 + 0]), 1.0, HAND_TOL, 1.0, "%s: |P(1, 0)|", v ? "ref" : "fast");
    EXPECT_CLOSE(fabs(Vt[0 * 2 + 0]), 1.0, HAND_TOL, 1.0, "%s: |Vt(0, 0)|", v ? "ref" : "fast");
    EXPECT_CLOSE(P[1 * 2 + 0] * Vt[0 * 2 + 0], 1.0, HAND_TOL, 1.0, "%s: sign pairing",
                 v ? "ref" : "fast");
  }
}

static void test_svd_rank_deficient(void **state) {
  (void)state;
  /* M = u v^T: one singular value |u| |v|, the rest ~ 0; rank 1 reconstructs M */
  const int64_t m = 6, n = 4;
  const double u[6] = {1, -2, 0.5, 3, 0, 1}, v[4] = {2, 1, -1, 0.25};
  double M[24], P[24], S[4], Vt[16], R[24];
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) M[i * n + j] = u[i] * v[j];
  const double want = frob_d(u, m) * frob_d(v, n);
  const svd_fn fns[2] = {cloq_svd_trunc, cloq_svd_trunc_ref};
  for (int f = 0; f < 2; f++) {
    EXPECT_OK(fns[f](M, m, n, 4, P, S, Vt));
    EXPECT_CLOSE(S[0], want, RANK1_TOL, want, "%s: S_0 of a rank-1 matrix", f ? "ref" : "fast");
    for (int i = 1; i < 4; i++)
      EXPECT_CLOSE(S[i], 0.0, RANK1_TOL, want, "%s: S_%d of a rank-1 matrix", f ? "ref" : "fast",
                   i);
    EXPECT_OK(fns[f](M, m, n, 1, P, S, Vt));
    reconstruct(P, S, Vt, m, n, 1, R);
    for (int64_t i = 0; i < m * n; i++)
      EXPECT_CLOSE(R[i], M[i], RANK1_TOL, want, "%s: rank-1 reconstruction entry %lld",
                   f ? "ref" : "fast", (long long)i);
  }
}

static void test_svd_rejects_invalid(void **state) {
  (void)state;
  double M[6] = {1, 2, 3, 4, 5, 6}, P[6], S[2], Vt[6];
  const svd_fn fns[2] = {cloq_svd_trunc, cloq_svd_trunc_ref};
  for (int f = 0; f < 2; f++) {
    EXPECT_FAIL(fns[f](M, 2, 3, 0, P, S, Vt), "rank 0 out of range");
    EXPECT_FAIL(fns[f](M, 2, 3, 3, P, S, Vt), "rank 3 out of range");
    EXPECT_FAIL(fns[f](M, 0, 3, 1, P, S, Vt), "shape");
    M[4] = NAN;
    EXPECT_FAIL(fns[f](M, 2, 3, 1, P, S, Vt), "non-finite");
    M[4] = 5;
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_svd_fast_matches_ref),
      cmocka_unit_test(test_svd_hand_example),
      cmocka_unit_test(test_svd_rank_deficient),
      cmocka_unit_test(test_svd_rejects_invalid),
  };
  return cmocka_run_group_tests_name("linalg_svd", tests, NULL, NULL);
}
