/* test_quant: the RTN quantizer against its reference, hand-worked examples and the contract's
 * edge rules (all-zero groups, short last group, whole-row groups, invalid arguments).
 *
 * The fast quantizer must agree with the reference bit for bit (codes, scales and zero points),
 * because E = W - Q feeds every initialization and any drift would be invisible downstream.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

/* Dequantization error bound: |w - dq| <= scale * (1/2 + DEQUANT_SLACK). The slack covers the
 * float32 rounding of w / scale (relative 2^-24 of at most 2^bits - 1 steps) and of the
 * dequantized product. */
static const double DEQUANT_SLACK = 1e-4;

static const int BITS[] = {2, 3, 4, 8};
static const int64_t GROUPS[] = {1, 7, 32, -1};

/* Random weights with the awkward cases mixed in: outliers, exact zeros, -0.0, rows that are all
 * positive, all negative or all zero. */
static void fill_weights(float *W, int64_t n_out, int64_t n_in, uint64_t seed) {
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  fill_normal_f(W, n_out * n_in, &g, 0.02);
  for (int64_t i = 0; i < n_out * n_in; i += 37) W[i] *= 40.0f; /* outliers */
  for (int64_t i = 5; i < n_out * n_in; i += 53) W[i] = 0.0f;
  for (int64_t i = 11; i < n_out * n_in; i += 61) W[i] = -0.0f;
  for (int64_t c = 0; c < n_in; c++) {
    W[1 * n_in + c] = fabsf(W[1 * n_in + c]);  /* all >= 0 */
    W[2 * n_in + c] = -fabsf(W[2 * n_in + c]); /* all <= 0 */
    W[3 * n_in + c] = 0.0f;                    /* all zero */
  }
}

static void test_ngroups(void **state) {
  (void)state;
  const int64_t cases[][3] = {{10, -1, 1}, {10, 3, 4}, {9, 3, 3}, {10, 10, 1}, {10, 20, 1},
                              {10, 1, 10}, {0, 4, 0},  {10, 0, -1}, {10, -2, -1}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    EXPECT_TRUE(cloq_quant_ngroups(cases[i][0], cases[i][1]) == cases[i][2],
                "n_in %lld, group %lld: expected %lld groups, got %lld", (long long)cases[i][0],
                (long long)cases[i][1], (long long)cases[i][2],
                (long long)cloq_quant_ngroups(cases[i][0], cases[i][1]));
}

static void test_rtn_fast_matches_ref_bitwise(void **state) {
  (void)state;
  const int64_t n_out = 13, n_in = 100;
  float *W = XALLOC(float, n_out * n_in);
  uint8_t *c1 = XALLOC(uint8_t, n_out * n_in), *c2 = XALLOC(uint8_t, n_out * n_in);
  float *s1 = XALLOC(float, n_out * n_in), *s2 = XALLOC(float, n_out * n_in);
  float *z1 = XALLOC(float, n_out * n_in), *z2 = XALLOC(float, n_out * n_in);
  for (int trial = 0; trial < 3; trial++) {
    fill_weights(W, n_out, n_in, 1000u + (uint64_t)trial);
    for (size_t b = 0; b < sizeof BITS / sizeof BITS[0]; b++)
      for (size_t q = 0; q < sizeof GROUPS / sizeof GROUPS[0]; q++) {
        const int bits = BITS[b];
        const int64_t gs = GROUPS[q], ng = cloq_quant_ngroups(n_in, gs);
        memset(c1, 0xAB, (size_t)(n_out * n_in));
        memset(c2, 0xCD, (size_t)(n_out * n_in));
        EXPECT_OK(cloq_quant_rtn(W, n_out, n_in, bits, gs, c1, s1, z1));
        EXPECT_OK(cloq_quant_rtn_ref(W, n_out, n_in, bits, gs, c2, s2, z2));
        for (int64_t i = 0; i < n_out * n_in; i++)
          EXPECT_TRUE(c1[i] == c2[i], "bits %d group %lld: code (%lld, %lld): ref %u, fast %u",
                      bits, (long long)gs, (long long)(i / n_in), (long long)(i % n_in),
                      (unsigned)c2[i], (unsigned)c1[i]);
        for (int64_t i = 0; i < n_out * ng; i++) {
          EXPECT_TRUE(memcmp(&s1[i], &s2[i], sizeof(float)) == 0,
                      "bits %d group %lld: scale %lld: ref %a, fast %a", bits, (long long)gs,
                      (long long)i, (double)s2[i], (double)s1[i]);
          EXPECT_TRUE(memcmp(&z1[i], &z2[i], sizeof(float)) == 0,
                      "bits %d group %lld: zero %lld: ref %a, fast %a", bits, (long long)gs,
                      (long long)i, (double)z2[i], (double)z1[i]);
        }
      }
  }
  free(W), free(c1), free(c2), free(s1), free(s2), free(z1), free(z2);
}

/* Runs both quantizers on one row and compares with hand-computed values, dequant included. */
static void check_row(const float *w, int64_t n_in, int bits, int64_t gs, const uint8_t *codes,
                      const float *scales, const float *zeros, const float *deq) {
  const int64_t ng = cloq_quant_ngroups(n_in, gs);
  uint8_t c[16];
  float s[16], z[16], Q[16];
  for (int v = 0; v < 2; v++) {
    if (v == 0)
      EXPECT_OK(cloq_quant_rtn(w, 1, n_in, bits, gs, c, s, z));
    else
      EXPECT_OK(cloq_quant_rtn_ref(w, 1, n_in, bits, gs, c, s, z));
    const char *which = v == 0 ? "fast" : "ref";
    for (int64_t i = 0; i < n_in; i++)
      EXPECT_TRUE(c[i] == codes[i], "%s, bits %d: code %lld of w = %g: expected %u, got %u",
                  which, bits, (long long)i, (double)w[i], (unsigned)codes[i], (unsigned)c[i]);
    for (int64_t g = 0; g < ng; g++) {
      EXPECT_TRUE(s[g] == scales[g], "%s: scale of group %lld: expected %g, got %g", which,
                  (long long)g, (double)scales[g], (double)s[g]);
      EXPECT_TRUE(z[g] == zeros[g] && !signbit(z[g]),
                  "%s: zero of group %lld: expected %g, got %g (sign bit %d)", which,
                  (long long)g, (double)zeros[g], (double)z[g], (int)!!signbit(z[g]));
    }
    cloq_dequant(c, s, z, 1, n_in, gs, Q);
    for (int64_t i = 0; i < n_in; i++)
      EXPECT_TRUE(Q[i] == deq[i], "%s: dequantized %lld of w = %g: expected %g, got %g", which,
                  (long long)i, (double)w[i], (double)deq[i], (double)Q[i]);
  }
}

static void test_rtn_hand_examples(void **state) {
  (void)state;
  /* bits 2, one group: range [-1, 2], scale 3/3 = 1, zero rint(1) = 1. Ties go to even:
   * rint(0.5) = 0, rint(1.5) = 2, rint(-0.5) = -0. */
  {
    const float w[] = {-1.0f, 0.5f, 2.0f, 1.5f, -0.5f, 0.25f};
    const uint8_t codes[] = {0, 1, 3, 3, 1, 1};
    const float scales[] = {1.0f}, zeros[] = {1.0f};
    const float deq[] = {-1.0f, 0.0f, 2.0f, 2.0f, 0.0f, 0.0f};
    check_row(w, 6, 2, -1, codes, scales, zeros, deq);
  }
  /* bits 2, group 2 over 5 columns (last group has one column):
   * [-1, 2]: scale 1, zero 1; [0.5, -0.25]: range [-0.25, 0.5], scale 0.25, zero 1;
   * [3]: range extended to [0, 3], scale 1, zero 0. */
  {
    const float w[] = {-1.0f, 2.0f, 0.5f, -0.25f, 3.0f};
    const uint8_t codes[] = {0, 3, 3, 0, 3};
    const float scales[] = {1.0f, 0.25f, 1.0f}, zeros[] = {1.0f, 1.0f, 0.0f};
    const float deq[] = {-1.0f, 2.0f, 0.5f, -0.25f, 3.0f};
    check_row(w, 5, 2, 2, codes, scales, zeros, deq);
  }
  /* bits 3, all <= 0: range [-7, 0], scale 1, zero 7; rint(-3.5) = -4, rint(-2.5) = -2. */
  {
    const float w[] = {-7.0f, -3.5f, -2.5f};
    const uint8_t codes[] = {0, 3, 5};
    const float scales[] = {1.0f}, zeros[] = {7.0f};
    const float deq[] = {-7.0f, -4.0f, -2.0f};
    check_row(w, 3, 3, -1, codes, scales, zeros, deq);
  }
  /* bits 3, all >= 0: range [0, 7], zero = rint(-0 / 1) must be stored as +0. */
  {
    const float w[] = {0.0f, 7.0f, 3.5f, 2.5f};
    const uint8_t codes[] = {0, 7, 4, 2};
    const float scales[] = {1.0f}, zeros[] = {0.0f};
    const float deq[] = {0.0f, 7.0f, 4.0f, 2.0f};
    check_row(w, 4, 3, 8, codes, scales, zeros, deq);
  }
}

static void test_rtn_all_zero_group(void **state) {
  (void)state;
  /* GPTQ's rule: xmin = xmax = 0 becomes [-1, 1], so scale = 2 / maxq and zero = rint(maxq / 2)
   * in float32; every code equals the zero point and dequantizes to exactly 0. */
  float w[10] = {0};
  w[3] = -0.0f;
  uint8_t c[10];
  float s[2], z[2], Q[10];
  for (size_t b = 0; b < sizeof BITS / sizeof BITS[0]; b++) {
    const int bits = BITS[b];
    const float maxq = (float)((1 << bits) - 1);
    const float want_scale = 2.0f / maxq;
    const float want_zero = rintf(1.0f / want_scale);
    for (int v = 0; v < 2; v++) {
      if (v == 0)
        EXPECT_OK(cloq_quant_rtn(w, 1, 10, bits, 5, c, s, z));
      else
        EXPECT_OK(cloq_quant_rtn_ref(w, 1, 10, bits, 5, c, s, z));
      for (int g = 0; g < 2; g++) {
        EXPECT_TRUE(s[g] == want_scale, "bits %d: expected scale %g, got %g", bits,
                    (double)want_scale, (double)s[g]);
        EXPECT_TRUE(z[g] == want_zero, "bits %d: expected zero %g, got %g", bits,
                    (double)want_zero, (double)z[g]);
      }
      cloq_dequant(c, s, z, 1, 10, 5, Q);
      for (int i = 0; i < 10; i++) {
        EXPECT_TRUE(c[i] == (uint8_t)want_zero, "bits %d: code %d: expected %g, got %u", bits, i,
                    (double)want_zero, (unsigned)c[i]);
        EXPECT_TRUE(Q[i] == 0.0f, "bits %d: dequantized %d: expected 0, got %g", bits, i,
                    (double)Q[i]);
      }
    }
  }
  /* bits 2 by hand: scale 2/3, 1/scale rounds to 1.5f in float32, rint(1.5) = 2 */
  EXPECT_OK(cloq_quant_rtn(w, 1, 10, 2, -1, c, s, z));
  EXPECT_TRUE(z[0] == 2.0f, "bits 2 all-zero row: expected zero point 2, got %g", (double)z[0]);
}

static void test_rtn_dequant_error_bound(void **state) {
  (void)state;
  const int64_t n_out = 9, n_in = 75;
  float *W = XALLOC(float, n_out * n_in), *Q = XALLOC(float, n_out * n_in);
  uint8_t *c = XALLOC(uint8_t, n_out * n_in);
  float *s = XALLOC(float, n_out * n_in), *z = XALLOC(float, n_out * n_in);
  fill_weights(W, n_out, n_in, 77);
  for (size_t b = 0; b < sizeof BITS / sizeof BITS[0]; b++)
    for (size_t q = 0; q < sizeof GROUPS / sizeof GROUPS[0]; q++) {
      const int bits = BITS[b];
      const int64_t gs = GROUPS[q], ng = cloq_quant_ngroups(n_in, gs);
      const int64_t width = gs == -1 ? n_in : gs;
      const float maxq = (float)((1 << bits) - 1);
      EXPECT_OK(cloq_quant_rtn(W, n_out, n_in, bits, gs, c, s, z));
      cloq_dequant(c, s, z, n_out, n_in, gs, Q);
      for (int64_t i = 0; i < n_out * ng; i++)
        EXPECT_TRUE(z[i] == rintf(z[i]) && z[i] >= 0.0f && z[i] <= maxq,
                    "bits %d group %lld: zero point %lld = %g is not an integer in [0, %g]",
                    bits, (long long)gs, (long long)i, (double)z[i], (double)maxq);
      for (int64_t r = 0; r < n_out; r++)
        for (int64_t col = 0; col < n_in; col++) {
          const int64_t i = r * n_in + col;
          const double scale = s[r * ng + col / width];
          EXPECT_TRUE(c[i] <= (uint8_t)maxq, "bits %d: code %u above %g", bits, (unsigned)c[i],
                      (double)maxq);
          EXPECT_CLOSE(Q[i], W[i], 0.5 + DEQUANT_SLACK, scale,
                       "bits %d group %lld, (%lld, %lld): dequantized vs weight", bits,
                       (long long)gs, (long long)r, (long long)col);
        }
    }
  free(W), free(Q), free(c), free(s), free(z);
}

static void test_rtn_rejects_invalid(void **state) {
  (void)state;
  float w[8] = {0.1f, -0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
  uint8_t c[20]; /* room for the (4, 5) case below */
  float s[20], z[20];
  const int bad_bits[] = {0, 1, 5, 6, 7, 16, -4};
  for (size_t i = 0; i < sizeof bad_bits / sizeof bad_bits[0]; i++) {
    EXPECT_FAIL(cloq_quant_rtn(w, 2, 4, bad_bits[i], -1, c, s, z), "bit width");
    EXPECT_FAIL(cloq_quant_rtn_ref(w, 2, 4, bad_bits[i], -1, c, s, z), "bit width");
  }
  const int64_t bad_groups[] = {0, -2, -128};
  for (size_t i = 0; i < sizeof bad_groups / sizeof bad_groups[0]; i++) {
    EXPECT_FAIL(cloq_quant_rtn(w, 2, 4, 4, bad_groups[i], c, s, z), "group size");
    EXPECT_FAIL(cloq_quant_rtn_ref(w, 2, 4, 4, bad_groups[i], c, s, z), "group size");
  }
  /* non-finite weights are named by row */
  float Wn[4 * 5];
  for (int i = 0; i < 20; i++) Wn[i] = 0.01f * (float)(i - 7);
  const float bad_vals[] = {NAN, INFINITY, -INFINITY};
  for (size_t k = 0; k < 3; k++) {
    Wn[3 * 5 + 2] = bad_vals[k];
    EXPECT_FAIL(cloq_quant_rtn(Wn, 4, 5, 4, -1, c, s, z), "row 3");
    EXPECT_FAIL(cloq_quant_rtn_ref(Wn, 4, 5, 4, -1, c, s, z), "row 3");
    EXPECT_FAIL(cloq_quant_rtn(Wn, 4, 5, 4, 2, c, s, z), "non-finite weight");
  }
  /* ranges float32 cannot turn into a scale: overflow of xmax - xmin, underflow of the scale */
  const float huge[2] = {-3e38f, 3e38f}, tiny[2] = {1e-45f, 0.0f};
  EXPECT_FAIL(cloq_quant_rtn(huge, 1, 2, 4, -1, c, s, z), "unusable scale");
  EXPECT_FAIL(cloq_quant_rtn_ref(huge, 1, 2, 4, -1, c, s, z), "unusable scale");
  EXPECT_FAIL(cloq_quant_rtn(tiny, 1, 2, 8, -1, c, s, z), "unusable scale");
  EXPECT_FAIL(cloq_quant_rtn_ref(tiny, 1, 2, 8, -1, c, s, z), "unusable scale");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ngroups),
      cmocka_unit_test(test_rtn_fast_matches_ref_bitwise),
      cmocka_unit_test(test_rtn_hand_examples),
      cmocka_unit_test(test_rtn_all_zero_group),
      cmocka_unit_test(test_rtn_dequant_error_bound),
      cmocka_unit_test(test_rtn_rejects_invalid),
  };
  return cmocka_run_group_tests_name("linalg_quant", tests, NULL, NULL);
}
