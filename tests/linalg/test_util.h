/* test_util: helpers shared by the linalg test binaries (random fills, checked allocation, and
 * comparisons that print what they expected and what they got before failing).
 *
 * Include after <cmocka.h>. Everything is static inline so that each binary uses what it needs
 * without unused-function warnings.
 */
#ifndef CLOQ_TEST_UTIL_H
#define CLOQ_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_linalg.h"

/* calloc that fails the test instead of returning NULL. */
static inline void *xcalloc(int64_t nelem, size_t size) {
  void *p = cloq_calloc_checked(nelem, size);
  if (!p) fail_msg("test allocation of %lld x %zu bytes failed", (long long)nelem, size);
  return p;
}
#define XALLOC(type, nelem) ((type *)xcalloc((int64_t)(nelem), sizeof(type)))

/* A cloq call that must succeed: on failure print the recorded reason. */
#define EXPECT_OK(expr)                                                                            \
  do {                                                                                             \
    cloq_err_clear();                                                                              \
    int expect_rc_ = (expr);                                                                       \
    if (expect_rc_ != 0) fail_msg("%s failed: %s", #expr, cloq_err_msg());                       \
  } while (0)

/* A cloq call that must fail with a message containing `needle`. */
#define EXPECT_FAIL(expr, needle)                                                                  \
  do {                                                                                             \
    cloq_err_clear();                                                                              \
    int expect_rc_ = (expr);                                                                       \
    if (expect_rc_ == 0) fail_msg("%s succeeded; expected a failure mentioning \"%s\"", #expr,    \
                                  (needle));                                                       \
    if (!strstr(cloq_err_msg(), (needle)))                                                         \
      fail_msg("%s failed with \"%s\"; expected a message mentioning \"%s\"", #expr,              \
               cloq_err_msg(), (needle));                                                          \
    cloq_err_clear();                                                                              \
  } while (0)

/* |got - want| <= tol * scale, else print both (with the context given as printf arguments). */
#define EXPECT_CLOSE(got, want, tol, scale, ...)                                                   \
  do {                                                                                             \
    const double g_ = (double)(got), w_ = (double)(want), s_ = (double)(scale);                   \
    if (!(fabs(g_ - w_) <= (tol) * s_)) {                                                          \
      char ctx_[256];                                                                              \
      snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                                    \
      fail_msg("%s: expected %.17g, got %.17g (|diff| = %.3g > %.3g = tol %.1e * scale %.3g)",    \
               ctx_, w_, g_, fabs(g_ - w_), (tol) * s_, (double)(tol), s_);                        \
    }                                                                                              \
  } while (0)

/* Condition with a printed reason. */
#define EXPECT_TRUE(cond, ...)                                                                     \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      char ctx_[512];                                                                              \
      snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                                    \
      fail_msg("%s: %s", #cond, ctx_);                                                             \
    }                                                                                              \
  } while (0)

static inline void fill_normal_f(float *x, int64_t n, cloq_rng *g, double sd) {
  for (int64_t i = 0; i < n; i++) x[i] = (float)(sd * cloq_rng_normal(g));
}
static inline void fill_normal_d(double *x, int64_t n, cloq_rng *g, double sd) {
  for (int64_t i = 0; i < n; i++) x[i] = sd * cloq_rng_normal(g);
}

/* Frobenius norm of a double array. */
static inline double frob_d(const double *x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
  return sqrt(s);
}

/* C (m, n) = A (m, k) B (k, n), plain loops, float64. */
static inline void matmul_d(const double *A, const double *B, int64_t m, int64_t k, int64_t n,
                            double *C) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0.0;
      for (int64_t l = 0; l < k; l++) acc += A[i * k + l] * B[l * n + j];
      C[i * n + j] = acc;
    }
}

/* C (m, n) = B (m, r) A (r, n) from float factors, float64 products. */
static inline void lora_product(const float *B, const float *A, int64_t m, int64_t r, int64_t n,
                                double *C) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0.0;
      for (int64_t l = 0; l < r; l++) acc += (double)B[i * r + l] * (double)A[l * n + j];
      C[i * n + j] = acc;
    }
}

/* H (n, n) = X^T X, full symmetric, via the reference Gram. */
static inline void gram_full(const float *X, int64_t t, int64_t n, double *H) {
  for (int64_t i = 0; i < n * n; i++) H[i] = 0.0;
  cloq_gram_accumulate_ref(H, X, t, n);
  cloq_gram_symmetrize(H, n);
}

/* H (n, n) = X^T X of a low-rank correlated X (t, n): X = (Z M / sqrt(k) + 0.05 N) diag(s),
 * Z (t, k) and M (k, n) standard normal, k = max(n / 4, 1), s_c = exp(N(0, 0.25)): k large
 * eigenvalues and many small ones, columns scaled unevenly (MagR's, COMQ's and QuAILoRA's test
 * problems). Draws from g in that order. */
static inline void correlated_gram(int64_t n, int64_t t, cloq_rng *g, double *H) {
  const int64_t k = n / 4 > 0 ? n / 4 : 1;
  double *Z = XALLOC(double, t * k), *M = XALLOC(double, k * n), *Xd = XALLOC(double, t * n);
  float *X = XALLOC(float, t * n);
  fill_normal_d(Z, t * k, g, 1.0);
  fill_normal_d(M, k * n, g, 1.0 / sqrt((double)k));
  matmul_d(Z, M, t, k, n, Xd);
  for (int64_t c = 0; c < n; c++) {
    const double s = exp(0.5 * cloq_rng_normal(g));
    for (int64_t r = 0; r < t; r++)
      X[r * n + c] = (float)((Xd[r * n + c] + 0.05 * cloq_rng_normal(g)) * s);
  }
  gram_full(X, t, n, H);
  free(Z), free(M), free(Xd), free(X);
}

/* correlated_gram's H (n_in, t samples) and W (n_out, n_in) N(0, 0.02) with every 37th entry x10
 * (outliers that set RTN's ranges), from one stream seeded with `seed` (MagR's and COMQ's tests). */
static inline void outlier_problem(int64_t n_out, int64_t n_in, int64_t t, uint64_t seed, float *W,
                                   double *H) {
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  correlated_gram(n_in, t, &g, H);
  fill_normal_f(W, n_out * n_in, &g, 0.02);
  for (int64_t i = 0; i < n_out * n_in; i += 37) W[i] *= 10.0f;
}

#endif
