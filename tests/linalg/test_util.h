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

#endif
