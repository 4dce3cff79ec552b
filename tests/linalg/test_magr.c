/* test_magr: MagR against its reference, the l1-ball projection on hand cases, and the
 * properties that make MagR worth running: smaller per-row (per-group) maxima, a small change of
 * X W^T, and a lower RTN error against the original W on problems with outliers.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "linalg_internal.h"
#include "test_util.h"

/* theta of the fast (sorting) and ref (Michelot) projections: same value up to the order of two
 * short float64 sums. */
static const double THETA_RTOL = 1e-12;
/* fast vs ref MagR outputs (float32): the iterates differ by float64 rounding only; measured: all
 * outputs bitwise equal on these problems. Allowed: one float32 ulp of the row's largest weight. */
static const double MAGR_ULPS = 1.0;
/* Relative change of the calibrated output tr((W' - W) H (W' - W)^T) / tr(W H W^T) at MagR's
 * default alphas (1e-3 whole rows, 1e-4 groups of 32), 200 steps. Measured: worst 3.0e-4 (rows)
 * and 1.7e-5 (groups) on the 3 problems here, 5.0e-4 and 2.4e-5 over 25 problems. */
static const double REL_OBJ_ROW = 1e-3, REL_OBJ_GROUP = 1e-4;
/* RTN after MagR against RTN of W, errors measured against the original W, on low-rank
 * correlated problems with outliers (whole rows, 3 and 4 bits, alpha 1e-3, 200 steps). Measured:
 * total error at most 0.74 x RTN's with at least 84 % of the rows improved on the 3 problems
 * here; over 25 problems, at most 0.83 x and at least 72 %. */
static const double RTN_GAIN_MAX_RATIO = 0.85, RTN_GAIN_MIN_ROWS = 0.70;

enum { ITERS = 200 };

/* Row r's e^T H e for e = a - b (float arrays), float64. */
static double row_quad(const float *a, const float *b, int64_t n, const double *H) {
  double total = 0.0;
  for (int64_t i = 0; i < n; i++) {
    double acc = 0.0;
    for (int64_t k = 0; k < n; k++) acc += H[i * n + k] * ((double)a[k] - (double)b[k]);
    total += ((double)a[i] - (double)b[i]) * acc;
  }
  return total;
}

static double max_abs(const float *x, int64_t n) {
  double m = 0.0;
  for (int64_t i = 0; i < n; i++) m = fabs((double)x[i]) > m ? fabs((double)x[i]) : m;
  return m;
}

/* Both thetas on z, checked against a hand value and the projection's defining properties:
 * P(z) = sign(z) max(|z| - theta, 0) lies on the sphere ||P||_1 = a when z is outside the ball. */
static void check_theta(const double *z, int64_t n, double a, double want) {
  double work[64];
  const double tf = cloq_linf_prox_theta(z, n, a, work), tr = cloq_linf_prox_theta_ref(z, n, a);
  for (int v = 0; v < 2; v++) {
    const double t = v ? tr : tf;
    const char *which = v ? "ref" : "fast";
    if (isinf(want)) {
      EXPECT_TRUE(isinf(t) && t > 0, "%s: a = %g: expected theta +inf, got %g", which, a, t);
      continue;
    }
    EXPECT_CLOSE(t, want, THETA_RTOL, fabs(want) > 1.0 ? fabs(want) : 1.0,
                 "%s: theta for n = %lld, a = %g", which, (long long)n, a);
    double l1z = 0.0, l1p = 0.0;
    for (int64_t i = 0; i < n; i++) {
      l1z += fabs(z[i]);
      l1p += fabs(z[i]) > t ? fabs(z[i]) - t : 0.0;
    }
    if (l1z > a)
      EXPECT_CLOSE(l1p, a, 1e-12, a, "%s: ||P(z)||_1 for n = %lld", which, (long long)n);
    else
      EXPECT_TRUE(t == 0.0, "%s: z inside the ball: expected theta 0, got %g", which, t);
  }
}

static void test_l1_projection_edge_cases(void **state) {
  (void)state;
  /* z = (3, -1), a = 2: u = (3, 1), rho = 1 (1 - (4 - 2)/2 = 0 is not > 0), theta = 1 */
  check_theta((const double[]){3.0, -1.0}, 2, 2.0, 1.0);
  /* already inside the ball (||z||_1 = 0.75 <= 1): P(z) = z, theta 0, prox 0 */
  check_theta((const double[]){0.5, -0.25}, 2, 1.0, 0.0);
  /* exactly on the sphere: still inside */
  check_theta((const double[]){0.5, -0.5}, 2, 1.0, 0.0);
  /* all zeros */
  check_theta((const double[]){0.0, -0.0, 0.0, 0.0}, 4, 0.5, 0.0);
  /* a = 0: the ball is {0}, P(z) = 0, nothing is clipped */
  check_theta((const double[]){1.0, -2.0}, 2, 0.0, INFINITY);
  check_theta((const double[]){0.0, 0.0}, 2, 0.0, INFINITY);
  /* ties: (2, -2, 2), a = 3: all three active, theta = (6 - 3)/3 = 1 */
  check_theta((const double[]){2.0, -2.0, 2.0}, 3, 3.0, 1.0);
  /* ties at the top, small a: (1, 1, 1, 0.5), a = 0.3: three active, theta = 2.7 / 3 = 0.9 */
  check_theta((const double[]){1.0, -1.0, 1.0, 0.5}, 4, 0.3, 0.9);
  /* ties that end exactly at the threshold: (1, 1, 0.5, 0.5), a = 1: theta = 0.5 with two
   * active (the 0.5s are not above it) */
  check_theta((const double[]){1.0, 1.0, 0.5, -0.5}, 4, 1.0, 0.5);
  /* one entry: theta = |z| - a */
  check_theta((const double[]){-5.0}, 1, 2.0, 3.0);
  /* a larger than the largest entry but smaller than the l1 norm: theta = (0.9 - 0.6) / 3, the
   * last entry sits exactly at it */
  check_theta((const double[]){0.4, -0.3, 0.2, 0.1}, 4, 0.6, 0.1);
  /* random vectors: fast (sort over the candidates) and ref (Michelot) agree */
  cloq_rng g;
  cloq_rng_seed(&g, 99);
  double z[64], work[64];
  for (int trial = 0; trial < 500; trial++) {
    const int64_t n = 1 + (int64_t)(cloq_rng_uniform(&g) * 64);
    fill_normal_d(z, n, &g, 1.0);
    if (trial % 3 == 0) z[trial % n] *= 30.0;
    const double a = pow(10.0, -4.0 + 5.0 * cloq_rng_uniform(&g));
    const double tf = cloq_linf_prox_theta(z, n, a, work), tr = cloq_linf_prox_theta_ref(z, n, a);
    EXPECT_CLOSE(tf, tr, THETA_RTOL, fabs(tr) > 1.0 ? fabs(tr) : 1.0,
                 "trial %d (n = %lld, a = %g): fast vs ref theta", trial, (long long)n, a);
  }
}

static void test_magr_fast_matches_ref(void **state) {
  (void)state;
  /* (n_out, n_in, t, group, alpha) */
  const struct {
    int64_t n_out, n_in, t, gs;
    double alpha;
  } cases[] = {{16, 96, 300, -1, 1e-3}, {16, 96, 300, 32, 1e-4}, {12, 70, 200, 16, 1e-3},
               {8, 50, 40, 7, 1e-2},    {8, 33, 100, 100, 1e-3}};
  int64_t compared = 0, differ = 0;
  double worst = 0.0;
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    const int64_t n_out = cases[k].n_out, n_in = cases[k].n_in;
    float *W = XALLOC(float, n_out * n_in), *Wf = XALLOC(float, n_out * n_in);
    float *Wr = XALLOC(float, n_out * n_in);
    double *H = XALLOC(double, n_in * n_in);
    outlier_problem(n_out, n_in, cases[k].t, 700u + k, W, H);
    EXPECT_OK(cloq_magr(W, n_out, n_in, H, cases[k].alpha, ITERS, cases[k].gs, Wf));
    EXPECT_OK(cloq_magr_ref(W, n_out, n_in, H, cases[k].alpha, ITERS, cases[k].gs, Wr));
    for (int64_t r = 0; r < n_out; r++) {
      const double ulp = MAGR_ULPS * ldexp(max_abs(W + r * n_in, n_in), -23);
      for (int64_t c = 0; c < n_in; c++) {
        const double d = fabs((double)Wf[r * n_in + c] - (double)Wr[r * n_in + c]);
        EXPECT_TRUE(d <= ulp, "case %zu (%lld, %lld) at (%lld, %lld): fast %.9g, ref %.9g", k,
                    (long long)n_out, (long long)n_in, (long long)r, (long long)c,
                    (double)Wf[r * n_in + c], (double)Wr[r * n_in + c]);
        differ += d != 0.0;
        worst = d > worst ? d : worst;
      }
    }
    compared += n_out * n_in;
    free(W), free(Wf), free(Wr), free(H);
  }
  print_message("MagR fast vs ref: %lld of %lld outputs differ, largest difference %.3g\n",
                (long long)differ, (long long)compared, worst);
}

/* Smaller maxima, small output change, and W unchanged when MagR has nothing to do. */
static void test_magr_properties(void **state) {
  (void)state;
  const int64_t n_out = 24, n_in = 128, t = 400;
  float *W = XALLOC(float, n_out * n_in), *Wm = XALLOC(float, n_out * n_in);
  double *H = XALLOC(double, n_in * n_in);
  double worst_rel[2] = {0.0, 0.0}, mean_shrink[2] = {0.0, 0.0};
  for (int trial = 0; trial < 3; trial++) {
    outlier_problem(n_out, n_in, t, 4000u + (uint64_t)trial, W, H);
    double wHw = 0.0;
    float *zero = XALLOC(float, n_in);
    for (int64_t r = 0; r < n_out; r++) wHw += row_quad(W + r * n_in, zero, n_in, H);
    free(zero);
    for (int grouped = 0; grouped < 2; grouped++) {
      const int64_t gs = grouped ? 32 : -1, width = grouped ? 32 : n_in;
      const double alpha = grouped ? 1e-4 : 1e-3;
      for (int v = 0; v < 2; v++) {
        if (v == 0)
          EXPECT_OK(cloq_magr(W, n_out, n_in, H, alpha, ITERS, gs, Wm));
        else
          EXPECT_OK(cloq_magr_ref(W, n_out, n_in, H, alpha, ITERS, gs, Wm));
        double dHd = 0.0;
        int64_t rows_lower = 0;
        for (int64_t r = 0; r < n_out; r++) {
          dHd += row_quad(Wm + r * n_in, W + r * n_in, n_in, H);
          for (int64_t c0 = 0; c0 < n_in; c0 += width) {
            const double before = max_abs(W + r * n_in + c0, width);
            const double after = max_abs(Wm + r * n_in + c0, width);
            EXPECT_TRUE(after <= before, "trial %d row %lld group %lld: max |w| %g -> %g",
                        trial, (long long)r, (long long)(c0 / width), before, after);
          }
          const double before = max_abs(W + r * n_in, n_in);
          const double after = max_abs(Wm + r * n_in, n_in);
          rows_lower += after < before;
          mean_shrink[grouped] += after / before / (double)(n_out * 3 * 2);
        }
        /* every row has outliers (every 37th entry x10): the row maximum must come down */
        EXPECT_TRUE(rows_lower == n_out, "trial %d group %lld: only %lld of %lld row maxima "
                    "decreased", trial, (long long)gs, (long long)rows_lower, (long long)n_out);
        const double rel = dHd / wHw;
        EXPECT_TRUE(rel <= (grouped ? REL_OBJ_GROUP : REL_OBJ_ROW),
                    "trial %d group %lld: tr(dW H dW^T) / tr(W H W^T) = %.3g", trial,
                    (long long)gs, rel);
        worst_rel[grouped] = rel > worst_rel[grouped] ? rel : worst_rel[grouped];
      }
    }
  }
  print_message("MagR relative output change: worst %.3g (rows, alpha 1e-3), %.3g (groups of 32, "
                "alpha 1e-4); mean row max after/before %.3f, %.3f\n",
                worst_rel[0], worst_rel[1], mean_shrink[0], mean_shrink[1]);

  /* nothing to do: alpha 0, no steps, a zero H: W bitwise */
  for (int v = 0; v < 2; v++) {
    int (*fn)(const float *, int64_t, int64_t, const double *, double, int, int64_t, float *) =
        v ? cloq_magr_ref : cloq_magr;
    EXPECT_OK(fn(W, n_out, n_in, H, 0.0, ITERS, -1, Wm));
    EXPECT_TRUE(memcmp(W, Wm, (size_t)(n_out * n_in) * sizeof *W) == 0, "alpha 0 changed W");
    EXPECT_OK(fn(W, n_out, n_in, H, 1e-3, 0, 16, Wm));
    EXPECT_TRUE(memcmp(W, Wm, (size_t)(n_out * n_in) * sizeof *W) == 0, "0 steps changed W");
    double *H0 = XALLOC(double, n_in * n_in);
    EXPECT_OK(fn(W, n_out, n_in, H0, 1e-3, ITERS, -1, Wm));
    EXPECT_TRUE(memcmp(W, Wm, (size_t)(n_out * n_in) * sizeof *W) == 0, "zero H changed W");
    free(H0);
  }
  free(W), free(Wm), free(H);
}

/* The point of MagR: RTN of W' is closer to W on calibration data than RTN of W itself. */
static void test_magr_helps_rtn(void **state) {
  (void)state;
  const int64_t n_out = 32, n_in = 128, t = 400;
  float *W = XALLOC(float, n_out * n_in), *Wm = XALLOC(float, n_out * n_in);
  float *Q = XALLOC(float, n_out * n_in), *Qm = XALLOC(float, n_out * n_in);
  double *H = XALLOC(double, n_in * n_in);
  uint8_t *c = XALLOC(uint8_t, n_out * n_in);
  float s[32], z[32];
  double worst_ratio = 0.0, worst_rows = 1.0;
  for (int trial = 0; trial < 3; trial++) {
    outlier_problem(n_out, n_in, t, 8100u + (uint64_t)trial, W, H);
    EXPECT_OK(cloq_magr(W, n_out, n_in, H, 1e-3, ITERS, -1, Wm));
    for (int bits = 3; bits <= 4; bits++) {
      EXPECT_OK(cloq_quant_rtn(W, n_out, n_in, bits, -1, c, s, z));
      cloq_dequant(c, s, z, n_out, n_in, -1, Q);
      EXPECT_OK(cloq_quant_rtn(Wm, n_out, n_in, bits, -1, c, s, z));
      cloq_dequant(c, s, z, n_out, n_in, -1, Qm);
      double e = 0.0, em = 0.0;
      int64_t better = 0;
      for (int64_t r = 0; r < n_out; r++) {
        const double er = row_quad(Q + r * n_in, W + r * n_in, n_in, H);
        const double emr = row_quad(Qm + r * n_in, W + r * n_in, n_in, H);
        e += er;
        em += emr;
        better += emr < er;
      }
      const double ratio = em / e, rows = (double)better / (double)n_out;
      EXPECT_TRUE(ratio <= RTN_GAIN_MAX_RATIO && rows >= RTN_GAIN_MIN_ROWS,
                  "trial %d, %d bits: RTN error after MagR %.4f x RTN's, %.0f %% of rows better",
                  trial, bits, ratio, 100.0 * rows);
      worst_ratio = ratio > worst_ratio ? ratio : worst_ratio;
      worst_rows = rows < worst_rows ? rows : worst_rows;
    }
  }
  print_message("RTN after MagR vs RTN: worst error ratio %.3f, fewest rows improved %.0f %%\n",
                worst_ratio, 100.0 * worst_rows);
  free(W), free(Wm), free(Q), free(Qm), free(H), free(c);
}

static void test_magr_rejects_invalid(void **state) {
  (void)state;
  enum { NO = 2, NI = 3 };
  float W[NO * NI] = {0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f}, out[NO * NI];
  double H[NI * NI] = {2.0, 0.5, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 1.0};
  int (*const fns[2])(const float *, int64_t, int64_t, const double *, double, int, int64_t,
                      float *) = {cloq_magr, cloq_magr_ref};
  for (int v = 0; v < 2; v++) {
    EXPECT_OK(fns[v](W, NO, NI, H, 1e-2, 10, -1, out));
    EXPECT_FAIL(fns[v](W, NO, NI, H, -1e-3, 10, -1, out), "alpha");
    EXPECT_FAIL(fns[v](W, NO, NI, H, NAN, 10, -1, out), "alpha");
    EXPECT_FAIL(fns[v](W, NO, NI, H, INFINITY, 10, -1, out), "alpha");
    EXPECT_FAIL(fns[v](W, NO, NI, H, 1e-3, -1, -1, out), "iteration count");
    EXPECT_FAIL(fns[v](W, NO, NI, H, 1e-3, 10, 0, out), "group size");
    EXPECT_FAIL(fns[v](W, NO, NI, H, 1e-3, 10, -3, out), "group size");
    float Wn[NO * NI];
    memcpy(Wn, W, sizeof W);
    Wn[1 * NI + 2] = -INFINITY;
    EXPECT_FAIL(fns[v](Wn, NO, NI, H, 1e-3, 10, -1, out), "non-finite weight -inf at row 1, "
                "column 2");
    double Hn[NI * NI];
    memcpy(Hn, H, sizeof H);
    Hn[2 * NI + 0] = NAN;
    EXPECT_FAIL(fns[v](W, NO, NI, Hn, 1e-3, 10, -1, out), "non-finite value in Gram matrix at "
                "(2, 0)");
    float Wa[NO * NI];
    memcpy(Wa, W, sizeof W);
    EXPECT_FAIL(fns[v](Wa, NO, NI, H, 1e-3, 10, -1, Wa), "aliases");
    /* a negative definite "Gram" matrix has no positive eigenvalue to normalize by */
    double Hneg[NI * NI] = {-1.0, 0.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, -1.0};
    EXPECT_FAIL(fns[v](W, NO, NI, Hneg, 1e-3, 10, -1, out), "no positive eigenvalue");
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_l1_projection_edge_cases),
      cmocka_unit_test(test_magr_fast_matches_ref),
      cmocka_unit_test(test_magr_properties),
      cmocka_unit_test(test_magr_helps_rtn),
      cmocka_unit_test(test_magr_rejects_invalid),
  };
  return cmocka_run_group_tests_name("linalg_magr", tests, NULL, NULL);
}
