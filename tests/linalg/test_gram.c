/* test_gram: Gram accumulation H += X^T X (dsyrk) against the triple-loop reference, the
 * upper-triangle-only contract, symmetrization, and independence from the BLAS thread count.
 */
#include <cblas.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

/* |H_fast - H_ref|_ij <= GRAM_TOL * sqrt(H_ii H_jj): entries are sums of products, and
 * Cauchy-Schwarz bounds each by the diagonal, which is the natural scale of its rounding. */
static const double GRAM_TOL = 1e-12;
static const double LOWER_SENTINEL = -12345.0;

static void test_gram_fast_matches_ref(void **state) {
  (void)state;
  const int64_t sizes[][2] = {{1, 1}, {7, 5}, {33, 17}, {100, 64}, {3, 50}, {129, 31}};
  cloq_rng g;
  cloq_rng_seed(&g, 2024);
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    const int64_t t = sizes[k][0], n = sizes[k][1];
    float *X1 = XALLOC(float, t * n), *X2 = XALLOC(float, t * n);
    double *work = XALLOC(double, t * n);
    double *Hf = XALLOC(double, n * n), *Hr = XALLOC(double, n * n);
    fill_normal_f(X1, t * n, &g, 1.0);
    fill_normal_f(X2, t * n, &g, 3.0);
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < n; j++) /* an existing upper triangle to add to; sentinel below */
        Hf[i * n + j] = Hr[i * n + j] = j >= i ? 0.5 * (double)(i + j) : LOWER_SENTINEL;
    /* two calls: the second must add to the first (beta = 1) */
    cloq_gram_accumulate(Hf, X1, t, n, work);
    cloq_gram_accumulate(Hf, X2, t, n, work);
    cloq_gram_accumulate_ref(Hr, X1, t, n);
    cloq_gram_accumulate_ref(Hr, X2, t, n);
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < n; j++) {
        if (j < i) {
          EXPECT_TRUE(Hf[i * n + j] == LOWER_SENTINEL && Hr[i * n + j] == LOWER_SENTINEL,
                      "(t, n) = (%lld, %lld): lower entry (%lld, %lld) was written: fast %g, "
                      "ref %g", (long long)t, (long long)n, (long long)i, (long long)j,
                      Hf[i * n + j], Hr[i * n + j]);
          continue;
        }
        const double scale = sqrt(Hr[i * n + i] * Hr[j * n + j]);
        EXPECT_CLOSE(Hf[i * n + j], Hr[i * n + j], GRAM_TOL, scale,
                     "(t, n) = (%lld, %lld): H(%lld, %lld) fast vs ref", (long long)t,
                     (long long)n, (long long)i, (long long)j);
      }
    free(X1), free(X2), free(work), free(Hf), free(Hr);
  }
}

static void test_gram_exact_small(void **state) {
  (void)state;
  /* X = [[1, 2], [3, 4], [0.5, -1]]: X^T X = [[10.25, 13.5], [13.5, 21]], exact in binary */
  const float X[] = {1.0f, 2.0f, 3.0f, 4.0f, 0.5f, -1.0f};
  const double want[] = {10.25, 13.5, 13.5, 21.0};
  double Hf[4] = {0}, Hr[4] = {0}, work[6];
  cloq_gram_accumulate(Hf, X, 3, 2, work);
  cloq_gram_accumulate_ref(Hr, X, 3, 2);
  cloq_gram_symmetrize(Hf, 2);
  cloq_gram_symmetrize(Hr, 2);
  for (int i = 0; i < 4; i++) {
    EXPECT_TRUE(Hf[i] == want[i], "fast entry %d: expected %g, got %g", i, want[i], Hf[i]);
    EXPECT_TRUE(Hr[i] == want[i], "ref entry %d: expected %g, got %g", i, want[i], Hr[i]);
  }
}

static void test_gram_symmetrize(void **state) {
  (void)state;
  const int64_t n = 23;
  double *H = XALLOC(double, n * n), *H0 = XALLOC(double, n * n);
  cloq_rng g;
  cloq_rng_seed(&g, 5);
  fill_normal_d(H, n * n, &g, 1.0);
  memcpy(H0, H, (size_t)(n * n) * sizeof *H);
  cloq_gram_symmetrize(H, n);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      const double want = j >= i ? H0[i * n + j] : H0[j * n + i];
      EXPECT_TRUE(memcmp(&H[i * n + j], &want, sizeof want) == 0,
                  "H(%lld, %lld): expected %a (from the upper triangle), got %a", (long long)i,
                  (long long)j, want, H[i * n + j]);
    }
  free(H), free(H0);
}

static void test_gram_independent_of_blas_threads(void **state) {
  (void)state;
  /* The header promises the result depends only on the call order: same bits with 1 and with
   * several OpenBLAS threads (sizes large enough for OpenBLAS to actually thread). */
  const int64_t t = 700, n = 300;
  float *X = XALLOC(float, t * n);
  double *work = XALLOC(double, t * n);
  double *H1 = XALLOC(double, n * n), *H2 = XALLOC(double, n * n);
  cloq_rng g;
  cloq_rng_seed(&g, 99);
  fill_normal_f(X, t * n, &g, 1.0);
  const int saved = openblas_get_num_threads();
  openblas_set_num_threads(1);
  cloq_gram_accumulate(H1, X, t, n, work);
  openblas_set_num_threads(4);
  cloq_gram_accumulate(H2, X, t, n, work);
  openblas_set_num_threads(saved);
  for (int64_t i = 0; i < n * n; i++)
    EXPECT_TRUE(memcmp(&H1[i], &H2[i], sizeof(double)) == 0,
                "H(%lld, %lld): 1 thread gives %a, 4 threads give %a", (long long)(i / n),
                (long long)(i % n), H1[i], H2[i]);
  free(X), free(work), free(H1), free(H2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gram_fast_matches_ref),
      cmocka_unit_test(test_gram_exact_small),
      cmocka_unit_test(test_gram_symmetrize),
      cmocka_unit_test(test_gram_independent_of_blas_threads),
  };
  return cmocka_run_group_tests_name("linalg_gram", tests, NULL, NULL);
}
