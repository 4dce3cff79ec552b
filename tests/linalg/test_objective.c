/* test_objective: the calibrated objective tr((E - BA) H (E - BA)^T) against its definition
 * ||X (E - BA)^T||_F^2 for H = X^T X, with and without a LoRA term, across the row blocks the
 * implementation uses, and from an H whose lower triangle was never filled.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

static const double OBJ_REL_TOL = 1e-11; /* relative to ||X E^T||_F^2-sized sums */

/* ||X D^T||_F^2 with D = E - B A (float64 from the float factors), plain loops. */
static double direct(const float *X, int64_t t, const double *E, const float *A, const float *B,
                     int64_t n_out, int64_t n, int64_t r) {
  double total = 0.0;
  for (int64_t o = 0; o < n_out; o++) {
    for (int64_t k = 0; k < t; k++) {
      double y = 0.0;
      for (int64_t j = 0; j < n; j++) {
        double d = E[o * n + j];
        for (int64_t l = 0; l < r; l++) d -= (double)B[o * r + l] * (double)A[l * n + j];
        y += (double)X[k * n + j] * d;
      }
      total += y * y;
    }
  }
  return total;
}

static void test_objective_matches_definition(void **state) {
  (void)state;
  /* n_out 300 spans two row blocks of the implementation */
  const int64_t shapes[][4] = {{5, 7, 20, 2}, {300, 19, 40, 3}, {33, 64, 50, 8}};
  cloq_rng g;
  cloq_rng_seed(&g, 61);
  for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
    const int64_t n_out = shapes[c][0], n = shapes[c][1], t = shapes[c][2], r = shapes[c][3];
    float *X = XALLOC(float, t * n), *A = XALLOC(float, r * n), *B = XALLOC(float, n_out * r);
    double *E = XALLOC(double, n_out * n), *H = XALLOC(double, n * n);
    double *Hu = XALLOC(double, n * n), *work = XALLOC(double, t * n);
    fill_normal_f(X, t * n, &g, 1.0);
    fill_normal_f(A, r * n, &g, 0.1);
    fill_normal_f(B, n_out * r, &g, 0.1);
    fill_normal_d(E, n_out * n, &g, 0.3);
    gram_full(X, t, n, H);
    cloq_gram_accumulate(Hu, X, t, n, work); /* upper triangle only, lower left at 0 */
    const double want0 = direct(X, t, E, NULL, NULL, n_out, n, 0);
    const double want = direct(X, t, E, A, B, n_out, n, r);
    cloq_err_clear();
    const double got0 = cloq_objective(E, NULL, NULL, n_out, n, 0, H);
    const double got0n = cloq_objective(E, NULL, NULL, n_out, n, r, H); /* NULL factors: bare */
    const double got = cloq_objective(E, A, B, n_out, n, r, H);
    const double gotu = cloq_objective(E, A, B, n_out, n, r, Hu);
    EXPECT_TRUE(cloq_err_msg()[0] == 0, "unexpected error: %s", cloq_err_msg());
    EXPECT_CLOSE(got0, want0, OBJ_REL_TOL, want0, "(%lld, %lld): bare objective",
                 (long long)n_out, (long long)n);
    EXPECT_CLOSE(got0n, want0, OBJ_REL_TOL, want0, "(%lld, %lld): NULL factors",
                 (long long)n_out, (long long)n);
    EXPECT_CLOSE(got, want, OBJ_REL_TOL, want0, "(%lld, %lld) r %lld: objective with B A",
                 (long long)n_out, (long long)n, (long long)r);
    EXPECT_CLOSE(gotu, want, OBJ_REL_TOL, want0, "(%lld, %lld) r %lld: upper-triangle H",
                 (long long)n_out, (long long)n, (long long)r);
    free(X), free(A), free(B), free(E), free(H), free(Hu), free(work);
  }
}

static void test_objective_invalid_shape(void **state) {
  (void)state;
  double E[4] = {1, 2, 3, 4}, H[4] = {1, 0, 0, 1};
  cloq_err_clear();
  const double f = cloq_objective(E, NULL, NULL, 0, 2, 0, H);
  EXPECT_TRUE(isnan(f) && strstr(cloq_err_msg(), "invalid objective shape"),
              "expected NaN and an error for n_out = 0, got %g and \"%s\"", f, cloq_err_msg());
  cloq_err_clear();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_objective_matches_definition),
      cmocka_unit_test(test_objective_invalid_shape),
  };
  return cmocka_run_group_tests_name("linalg_objective", tests, NULL, NULL);
}
