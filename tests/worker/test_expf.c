/* test_expf: the worker's softmax exp (worker/cloq_expf.h, exp_nonpos) at every float32 in
 * (-87, 0], both zeros included, against float64 exp at the bound its comment states; at -87 and
 * below it must return exactly 0 (the documented flush).
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cloq_expf.h"

/* The bound of cloq_expf.h's comment: relative error against float64 exp. */
static const double EXPF_REL_TOL = 2.6e-7;

/* float <-> its IEEE bits */
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static uint32_t to_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

/* Every float in (-87, 0]: the bit patterns 0x80000000 (-0) up to just below -87's, and +0.
 * Negative floats grow in magnitude with their bit pattern, so this is one integer loop. */
static void test_exp_nonpos_every_float(void **state) {
  (void)state;
  const uint32_t lo = 0x80000000u, hi = to_bits(-87.0f); /* hi itself is the flush point */
  double worst = 0.0;
  float worst_x = 0.0f;
  uint64_t bad = 0, count = 0;
  float first_bad = 0.0f;
  for (uint32_t u = lo; u < hi; u++) {
    const float x = from_bits(u);
    const double want = exp((double)x);
    const double rel = fabs((double)exp_nonpos(x) - want) / want;
    count++;
    if (rel > worst) worst = rel, worst_x = x;
    if (!(rel <= EXPF_REL_TOL)) {
      if (!bad) first_bad = x;
      bad++;
    }
  }
  const double rel0 = fabs((double)exp_nonpos(0.0f) - 1.0);
  if (!(rel0 <= EXPF_REL_TOL)) bad++, first_bad = 0.0f;
  count++;
  printf("exp_nonpos: %llu floats in (-87, 0], max relative error %.3g at %.9g (bound %.3g)\n",
         (unsigned long long)count, worst, (double)worst_x, EXPF_REL_TOL);
  if (bad)
    fail_msg("exp_nonpos: %llu of %llu floats in (-87, 0] beyond relative error %.3g; first at "
             "%.9g: expected %.9g, got %.9g; worst %.3g at %.9g",
             (unsigned long long)bad, (unsigned long long)count, EXPF_REL_TOL, (double)first_bad,
             exp((double)first_bad), (double)exp_nonpos(first_bad), worst, (double)worst_x);
  /* exactly 1 at zero: a softmax row's maximum gets weight 1 */
  if (exp_nonpos(0.0f) != 1.0f || exp_nonpos(-0.0f) != 1.0f)
    fail_msg("exp_nonpos(+-0): expected 1, got %.9g and %.9g", (double)exp_nonpos(0.0f),
             (double)exp_nonpos(-0.0f));
}

/* The flush: -87 and everything below (to -inf) gives exactly 0. */
static void test_exp_nonpos_flush(void **state) {
  (void)state;
  const float xs[] = {-87.0f, nextafterf(-87.0f, -INFINITY), -87.5f, -88.7f, -103.9f, -1e10f,
                      -FLT_MAX, -INFINITY};
  for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
    const float y = exp_nonpos(xs[i]);
    if (y != 0.0f) fail_msg("exp_nonpos(%.9g): expected 0 (flush), got %.9g", (double)xs[i], (double)y);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exp_nonpos_every_float),
      cmocka_unit_test(test_exp_nonpos_flush),
  };
  return cmocka_run_group_tests_name("worker_expf", tests, NULL, NULL);
}
