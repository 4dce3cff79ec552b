/* test_lora: the whole LoRA initializations of one module (cloq_lora_cloq, cloq_lora_svd and
 * their _ref, cloq_lora_zero): fast vs reference products B A, the svd init against the truncated
 * SVD of E, CLoQ reducing to the svd init when Hd = I, the balanced split of the float32 factors
 * (B^T B = A A^T diagonal), the zero init, and argument checks. The kernels underneath are tested
 * one by one in test_proj.c.
 *
 * Only products B A are compared across implementations: the factors themselves depend on the
 * signs of singular vectors, which each SVD picks freely.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

/* Comparisons of products of float32 factors (relative rounding 2^-24 per entry, accumulated over
 * sums of r terms), fast vs ref and against float64 formulas. */
static const double FLOAT_REL_TOL = 1e-6;
/* the zero init's A must reach near its bound (222 uniform draws: max below 0.8 of it has
 * probability 0.8^222) */
static const double ZERO_INIT_SPREAD = 0.8;

typedef struct {
  int64_t n_out, n_in, t;
} shape;
static const shape SHAPES[] = {{24, 32, 80}, {40, 16, 50}, {17, 23, 60}};
static const int64_t RANKS[] = {1, 4, 8};

typedef struct {
  double *E, *H;
} problem;

static problem make_problem(shape sh, uint64_t seed) {
  problem p;
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  float *X = XALLOC(float, sh.t * sh.n_in);
  p.E = XALLOC(double, sh.n_out * sh.n_in);
  p.H = XALLOC(double, sh.n_in * sh.n_in);
  fill_normal_f(X, sh.t * sh.n_in, &g, 1.0);
  fill_normal_d(p.E, sh.n_out * sh.n_in, &g, 0.01);
  gram_full(X, sh.t, sh.n_in, p.H);
  free(X);
  return p;
}
static void free_problem(problem *p) { free(p->E), free(p->H); }

static double rel_diff(const double *a, const double *b, int64_t n) {
  double num = 0.0;
  for (int64_t i = 0; i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]);
  return sqrt(num) / frob_d(b, n);
}

static void test_lora_cloq_fast_matches_ref(void **state) {
  (void)state;
  for (size_t c = 0; c < sizeof SHAPES / sizeof SHAPES[0]; c++) {
    const shape sh = SHAPES[c];
    problem p = make_problem(sh, 100 + c);
    for (size_t q = 0; q < sizeof RANKS / sizeof RANKS[0]; q++) {
      const int64_t r = RANKS[q];
      float *Af = XALLOC(float, r * sh.n_in), *Bf = XALLOC(float, sh.n_out * r);
      float *Ar = XALLOC(float, r * sh.n_in), *Br = XALLOC(float, sh.n_out * r);
      double *Cf = XALLOC(double, sh.n_out * sh.n_in), *Cr = XALLOC(double, sh.n_out * sh.n_in);
      double of = 0, orf = 0;
      EXPECT_OK(cloq_lora_cloq(p.E, sh.n_out, sh.n_in, p.H, 0.01, r, Af, Bf, &of));
      EXPECT_OK(cloq_lora_cloq_ref(p.E, sh.n_out, sh.n_in, p.H, 0.01, r, Ar, Br, &orf));
      lora_product(Bf, Af, sh.n_out, r, sh.n_in, Cf);
      lora_product(Br, Ar, sh.n_out, r, sh.n_in, Cr);
      EXPECT_CLOSE(of, orf, 1e-10, orf, "cloq (%lld, %lld) r %lld: objective fast vs ref",
                   (long long)sh.n_out, (long long)sh.n_in, (long long)r);
      EXPECT_CLOSE(rel_diff(Cf, Cr, sh.n_out * sh.n_in), 0.0, FLOAT_REL_TOL, 1.0,
                   "cloq (%lld, %lld) r %lld: relative ||BA_fast - BA_ref||_F",
                   (long long)sh.n_out, (long long)sh.n_in, (long long)r);
      free(Af), free(Bf), free(Ar), free(Br), free(Cf), free(Cr);
    }
    free_problem(&p);
  }
}

static void test_lora_svd_fast_matches_ref_and_truncation(void **state) {
  (void)state;
  for (size_t c = 0; c < sizeof SHAPES / sizeof SHAPES[0]; c++) {
    const shape sh = SHAPES[c];
    const int64_t nel = sh.n_out * sh.n_in;
    problem p = make_problem(sh, 200 + c);
    for (size_t q = 0; q < sizeof RANKS / sizeof RANKS[0]; q++) {
      const int64_t r = RANKS[q];
      float *Af = XALLOC(float, r * sh.n_in), *Bf = XALLOC(float, sh.n_out * r);
      float *Ar = XALLOC(float, r * sh.n_in), *Br = XALLOC(float, sh.n_out * r);
      double *Cf = XALLOC(double, nel), *Cr = XALLOC(double, nel), *Ct = XALLOC(double, nel);
      double *P = XALLOC(double, sh.n_out * r), *S = XALLOC(double, r);
      double *Vt = XALLOC(double, r * sh.n_in);
      EXPECT_OK(cloq_lora_svd(p.E, sh.n_out, sh.n_in, r, Af, Bf));
      EXPECT_OK(cloq_lora_svd_ref(p.E, sh.n_out, sh.n_in, r, Ar, Br));
      lora_product(Bf, Af, sh.n_out, r, sh.n_in, Cf);
      lora_product(Br, Ar, sh.n_out, r, sh.n_in, Cr);
      EXPECT_CLOSE(rel_diff(Cf, Cr, nel), 0.0, FLOAT_REL_TOL, 1.0,
                   "svd (%lld, %lld) r %lld: relative ||BA_fast - BA_ref||_F",
                   (long long)sh.n_out, (long long)sh.n_in, (long long)r);
      /* B A = [E]_r, computed in float64 from the truncated SVD */
      EXPECT_OK(cloq_svd_trunc(p.E, sh.n_out, sh.n_in, r, P, S, Vt));
      for (int64_t i = 0; i < sh.n_out; i++)
        for (int64_t j = 0; j < sh.n_in; j++) {
          double acc = 0.0;
          for (int64_t k = 0; k < r; k++) acc += P[i * r + k] * S[k] * Vt[k * sh.n_in + j];
          Ct[i * sh.n_in + j] = acc;
        }
      EXPECT_CLOSE(rel_diff(Cf, Ct, nel), 0.0, FLOAT_REL_TOL, 1.0,
                   "svd (%lld, %lld) r %lld: relative ||BA - [E]_r||_F", (long long)sh.n_out,
                   (long long)sh.n_in, (long long)r);
      free(Af), free(Bf), free(Ar), free(Br), free(Cf), free(Cr), free(Ct), free(P), free(S),
          free(Vt);
    }
    free_problem(&p);
  }
}

static void test_lora_cloq_with_identity_weight_is_svd(void **state) {
  (void)state;
  /* Hd = I: the calibrated objective is ||E - BA||_F^2, so CLoQ = svd init */
  const int64_t n_out = 20, n_in = 15, r = 5, nel = n_out * n_in;
  cloq_rng g;
  cloq_rng_seed(&g, 3);
  double *E = XALLOC(double, nel), *H = XALLOC(double, n_in * n_in);
  fill_normal_d(E, nel, &g, 1.0);
  for (int64_t i = 0; i < n_in; i++) H[i * n_in + i] = 1.0;
  float A1[5 * 15], B1[20 * 5], A2[5 * 15], B2[20 * 5];
  double C1[300], C2[300];
  EXPECT_OK(cloq_lora_cloq(E, n_out, n_in, H, 0.0, r, A1, B1, NULL));
  EXPECT_OK(cloq_lora_svd(E, n_out, n_in, r, A2, B2));
  lora_product(B1, A1, n_out, r, n_in, C1);
  lora_product(B2, A2, n_out, r, n_in, C2);
  EXPECT_CLOSE(rel_diff(C1, C2, nel), 0.0, FLOAT_REL_TOL, 1.0,
               "H = I: relative ||BA_cloq - BA_svd||_F");
  free(E), free(H);
}

static void test_lora_balanced_split(void **state) {
  (void)state;
  /* B^T B = A A^T = diag(S), S the singular values of the product itself: both factors in the
   * weight's units, for both inits and both implementations */
  for (size_t c = 0; c < sizeof SHAPES / sizeof SHAPES[0]; c++) {
    const shape sh = SHAPES[c];
    const int64_t r = 4, n = sh.n_in;
    problem p = make_problem(sh, 7 + c);
    float *A = XALLOC(float, r * n), *B = XALLOC(float, sh.n_out * r);
    for (int which = 0; which < 4; which++) {
      if (which == 0) EXPECT_OK(cloq_lora_cloq(p.E, sh.n_out, n, p.H, 0.01, r, A, B, NULL));
      if (which == 1) EXPECT_OK(cloq_lora_cloq_ref(p.E, sh.n_out, n, p.H, 0.01, r, A, B, NULL));
      if (which == 2) EXPECT_OK(cloq_lora_svd(p.E, sh.n_out, n, r, A, B));
      if (which == 3) EXPECT_OK(cloq_lora_svd_ref(p.E, sh.n_out, n, r, A, B));
      double diag0 = 0.0;
      for (int64_t o = 0; o < sh.n_out; o++) diag0 += (double)B[o * r] * (double)B[o * r];
      for (int64_t a = 0; a < r; a++)
        for (int64_t b = 0; b < r; b++) {
          double btb = 0.0, aat = 0.0;
          for (int64_t o = 0; o < sh.n_out; o++) btb += (double)B[o * r + a] * (double)B[o * r + b];
          for (int64_t i = 0; i < n; i++) aat += (double)A[a * n + i] * (double)A[b * n + i];
          EXPECT_CLOSE(aat, btb, FLOAT_REL_TOL, diag0, "init %d: (A A^T)(%lld, %lld) vs (B^T B)",
                       which, (long long)a, (long long)b);
          if (a != b)
            EXPECT_CLOSE(btb, 0.0, FLOAT_REL_TOL, diag0, "init %d: (B^T B)(%lld, %lld) off-diagonal",
                         which, (long long)a, (long long)b);
        }
    }
    free(A), free(B);
    free_problem(&p);
  }
}

static void test_lora_zero(void **state) {
  (void)state;
  const int64_t n_out = 11, n_in = 37, r = 6;
  float A1[6 * 37], B1[11 * 6], A2[6 * 37], B2[11 * 6], A3[6 * 37];
  for (int i = 0; i < 11 * 6; i++) B1[i] = 1.0f;
  cloq_lora_zero(n_out, n_in, r, 12345, A1, B1);
  cloq_lora_zero(n_out, n_in, r, 12345, A2, B2);
  cloq_lora_zero(n_out, n_in, r, 12346, A3, B2);
  const double bound = 1.0 / sqrt((double)n_in);
  int differs = 0;
  double amax = 0.0;
  for (int64_t i = 0; i < r * n_in; i++) {
    EXPECT_TRUE(fabs((double)A1[i]) <= bound, "A[%lld] = %g outside [-%g, %g]", (long long)i,
                (double)A1[i], bound, bound);
    EXPECT_TRUE(memcmp(&A1[i], &A2[i], sizeof(float)) == 0,
                "same seed: A[%lld] = %a then %a", (long long)i, (double)A1[i], (double)A2[i]);
    differs |= A1[i] != A3[i];
    amax = fmax(amax, fabs((double)A1[i]));
  }
  EXPECT_TRUE(differs, "seeds 12345 and 12346 gave the same A");
  EXPECT_TRUE(amax > ZERO_INIT_SPREAD * bound,
              "max |A| = %g: expected values spread up to the bound %g", amax, bound);
  for (int64_t i = 0; i < n_out * r; i++)
    EXPECT_TRUE(B1[i] == 0.0f, "B[%lld] = %g, expected 0", (long long)i, (double)B1[i]);
}

static void test_lora_rejects_invalid(void **state) {
  (void)state;
  const shape sh = {6, 5, 20};
  problem p = make_problem(sh, 9);
  float A[5 * 6], B[6 * 6];
  EXPECT_FAIL(cloq_lora_cloq(p.E, 6, 5, p.H, 0.01, 0, A, B, NULL), "rank 0 out of range");
  EXPECT_FAIL(cloq_lora_cloq(p.E, 6, 5, p.H, 0.01, 6, A, B, NULL), "rank 6 out of range");
  EXPECT_FAIL(cloq_lora_svd(p.E, 6, 5, 6, A, B), "rank 6 out of range");
  EXPECT_FAIL(cloq_lora_svd_ref(p.E, 6, 5, 0, A, B), "rank 0 out of range");
  EXPECT_FAIL(cloq_lora_cloq(p.E, 6, 5, p.H, -1.0, 2, A, B, NULL), "damp");
  p.H[2] = NAN;
  EXPECT_FAIL(cloq_lora_cloq(p.E, 6, 5, p.H, 0.01, 2, A, B, NULL), "non-finite value in Gram");
  EXPECT_FAIL(cloq_lora_cloq_ref(p.E, 6, 5, p.H, 0.01, 2, A, B, NULL), "non-finite value in Gram");
  p.H[2] = 0.0;
  p.E[7] = INFINITY;
  EXPECT_FAIL(cloq_lora_cloq(p.E, 6, 5, p.H, 0.01, 2, A, B, NULL),
              "non-finite value in quantization error");
  EXPECT_FAIL(cloq_lora_svd(p.E, 6, 5, 2, A, B), "non-finite value in quantization error");
  free_problem(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lora_cloq_fast_matches_ref),
      cmocka_unit_test(test_lora_svd_fast_matches_ref_and_truncation),
      cmocka_unit_test(test_lora_cloq_with_identity_weight_is_svd),
      cmocka_unit_test(test_lora_balanced_split),
      cmocka_unit_test(test_lora_zero),
      cmocka_unit_test(test_lora_rejects_invalid),
  };
  return cmocka_run_group_tests_name("linalg_lora", tests, NULL, NULL);
}
