/* test_objective: the calibrated objective tr((E - BA) H (E - BA)^T) against its definition
 * ||X (E - BA)^T||_F^2 for H = X^T X, with and without a LoRA term, across the row blocks the
 * implementation uses, and from an H whose lower triangle was never filled; the damped objective
 * (H + shift I) against a plain triple-loop re-derivation, with r = 0 and r > 0, PSD and indefinite
 * H, zero, positive and negative shifts.
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

/* The damped objective, re-derived from its definition with plain loops:
 * sum_o sum_j sum_k D[o,j] (H + shift I)[j,k] D[o,k], D = E - B A (float64 from the float
 * factors), the full symmetric H rebuilt from its upper triangle. Also returns the same sum of
 * absolute terms, the scale of the rounding error (the sum may cancel when H is indefinite). */
static double shifted_direct(const double *E, const float *A, const float *B, int64_t n_out,
                             int64_t n, int64_t r, const double *H, double shift, double *abs_sum) {
  double total = 0.0, mag = 0.0;
  double *d = XALLOC(double, n);
  for (int64_t o = 0; o < n_out; o++) {
    for (int64_t j = 0; j < n; j++) {
      d[j] = E[o * n + j];
      for (int64_t l = 0; l < r; l++) d[j] -= (double)B[o * r + l] * (double)A[l * n + j];
    }
    for (int64_t j = 0; j < n; j++)
      for (int64_t k = 0; k < n; k++) {
        const double h = (j <= k ? H[j * n + k] : H[k * n + j]) + (j == k ? shift : 0.0);
        total += d[j] * h * d[k];
        mag += fabs(d[j] * h * d[k]);
      }
  }
  free(d);
  *abs_sum = mag;
  return total;
}

/* cloq_objective_shifted on random small problems: PSD H = X^T X (plain loops) and an indefinite
 * symmetric H, shifts 0, positive (damping), negative; r = 0, r > 0, and NULL factors with r > 0
 * (the bare objective); n_out 300 spans two row blocks. The lower triangle of H is NaN: only the
 * upper one may be read. */
static void test_objective_shifted_matches_definition(void **state) {
  (void)state;
  const int64_t shapes[][4] = {{1, 1, 3, 1}, {5, 7, 20, 2}, {300, 19, 40, 3}, {33, 64, 50, 8},
                               {12, 9, 4, 9}};
  const double shifts[] = {0.0, 0.37, 12.5, -0.2};
  cloq_rng g;
  cloq_rng_seed(&g, 1207);
  for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
    const int64_t n_out = shapes[c][0], n = shapes[c][1], t = shapes[c][2], r = shapes[c][3];
    float *X = XALLOC(float, t * n), *A = XALLOC(float, r * n), *B = XALLOC(float, n_out * r);
    double *E = XALLOC(double, n_out * n), *H = XALLOC(double, n * n);
    fill_normal_f(X, t * n, &g, 1.0);
    fill_normal_f(A, r * n, &g, 0.2);
    fill_normal_f(B, n_out * r, &g, 0.2);
    fill_normal_d(E, n_out * n, &g, 0.3);
    for (int indefinite = 0; indefinite <= 1; indefinite++) {
      for (int64_t j = 0; j < n; j++)
        for (int64_t k = 0; k < n; k++) {
          double h = 0.0;
          if (j > k) {
            h = NAN;
          } else if (indefinite) {
            h = cloq_rng_normal(&g);
          } else {
            for (int64_t i = 0; i < t; i++) h += (double)X[i * n + j] * (double)X[i * n + k];
          }
          H[j * n + k] = h;
        }
      for (size_t s = 0; s < sizeof shifts / sizeof shifts[0]; s++) {
        const double shift = shifts[s];
        double mag0, mag;
        const double want0 = shifted_direct(E, NULL, NULL, n_out, n, 0, H, shift, &mag0);
        const double want = shifted_direct(E, A, B, n_out, n, r, H, shift, &mag);
        cloq_err_clear();
        const double got0 = cloq_objective_shifted(E, NULL, NULL, n_out, n, 0, H, shift);
        const double got0f = cloq_objective_shifted(E, A, B, n_out, n, 0, H, shift); /* r = 0 */
        const double got0n = cloq_objective_shifted(E, NULL, NULL, n_out, n, r, H, shift);
        const double got = cloq_objective_shifted(E, A, B, n_out, n, r, H, shift);
        EXPECT_TRUE(cloq_err_msg()[0] == 0, "unexpected error: %s", cloq_err_msg());
        EXPECT_CLOSE(got0, want0, OBJ_REL_TOL, mag0, "(%lld, %lld) %s H, shift %g: r = 0",
                     (long long)n_out, (long long)n, indefinite ? "indefinite" : "PSD", shift);
        EXPECT_CLOSE(got0f, want0, OBJ_REL_TOL, mag0,
                     "(%lld, %lld) %s H, shift %g: r = 0 with factors passed", (long long)n_out,
                     (long long)n, indefinite ? "indefinite" : "PSD", shift);
        EXPECT_CLOSE(got0n, want0, OBJ_REL_TOL, mag0,
                     "(%lld, %lld) %s H, shift %g: NULL factors with r = %lld", (long long)n_out,
                     (long long)n, indefinite ? "indefinite" : "PSD", shift, (long long)r);
        EXPECT_CLOSE(got, want, OBJ_REL_TOL, mag, "(%lld, %lld) %s H, shift %g: r = %lld",
                     (long long)n_out, (long long)n, indefinite ? "indefinite" : "PSD", shift,
                     (long long)r);
        if (shift == 0.0) {
          const double plain = cloq_objective(E, A, B, n_out, n, r, H);
          EXPECT_TRUE(plain == got, "cloq_objective %.17g != cloq_objective_shifted(shift 0) %.17g",
                      plain, got);
        }
      }
    }
    free(X), free(A), free(B), free(E), free(H);
  }
}

/* The shift the worker passes: damp * mean(diag H). */
static void test_gram_shift(void **state) {
  (void)state;
  const double H[9] = {2.0, 5.0, -1.0, 5.0, 4.0, 3.0, -1.0, 3.0, 9.0};
  EXPECT_CLOSE(cloq_gram_shift(H, 3, 0.01), 0.01 * 15.0 / 3.0, 1e-15, 1.0, "damp 0.01");
  EXPECT_CLOSE(cloq_gram_shift(H, 3, 0.0), 0.0, 0.0, 1.0, "damp 0");
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
      cmocka_unit_test(test_objective_shifted_matches_definition),
      cmocka_unit_test(test_gram_shift),
      cmocka_unit_test(test_objective_invalid_shape),
  };
  return cmocka_run_group_tests_name("linalg_objective", tests, NULL, NULL);
}
