/* test_quailora: QuAILoRA's refinement (cloq_lora_quailora and its _ref) started from the svd
 * init, on correlated calibration problems with widely spread Gram eigenvalues, wide and tall
 * layers, every rank from 1 to the smaller side: the objective it reports never increases, never
 * goes below CLoQ's optimum, and agrees with cloq_objective_shifted recomputed independently on
 * the output factors; the output is balanced (B^T B = A A^T diagonal); fast and ref agree; ten
 * alternations close most of the gap between the svd start and CLoQ's optimum; singular starts
 * (a zero row of A) are handled; bad arguments fail with a message.
 *
 * Objectives are compared relative to c0 = tr(E Hd E^T), the objective of the bare quantized
 * weight: QuAILoRA evaluates f as c0 - 2 tr(B A Hd E^T) + tr(B^T B A Hd A^T), so its rounding is
 * relative to c0 (as CLoQ's trace - eigenvalues is), not to f, which reaches 0 at full rank.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

/* obj[k] <= obj[k-1] + OBJ_SLACK c0 and obj[k] >= f_cloq - OBJ_SLACK c0, and obj[0] against f
 * of the start recomputed: float64 rounding of c0 - 2 <.,.> + <.,.> (sums of magnitude c0).
 * Measured over the shapes and ranks here: largest rise 3.9e-15 c0, largest undershoot of CLoQ's
 * optimum 5.5e-15 c0. */
static const double OBJ_SLACK = 1e-12;
/* obj[iters] (float64 iterates) against cloq_objective_shifted on the float32 output factors:
 * the re-split's rounding of A and B (2^-24 relative per entry) moves f by about
 * 2 sqrt(f) 2^-24 ||B A C||_F <= 2^-23 c0. Measured: worst 1.3e-9 c0. */
static const double OBJ_RECOMPUTE_TOL = 1e-7;
/* B^T B vs A A^T and their off-diagonals, relative to the largest diagonal entry (float32
 * factors), as test_lora.c's FLOAT_REL_TOL. Measured: worst 6.7e-8. */
static const double BALANCE_TOL = 1e-6;
/* fast vs ref: relative ||BA_fast - BA_ref||_F of the float32 factors (the float64 iterates agree
 * to about 1e-14, so the float32 factors came out equal up to signs: measured 0, bitwise equal
 * products), and |obj_fast - obj_ref| / c0 (measured: worst 6.3e-15). */
static const double PRODUCT_REL_TOL = 1e-6, OBJ_FAST_REF_TOL = 1e-12;
/* Fraction (f_svd - obj[GAP_ITERS]) / (f_svd - f_cloq) of the gap between the svd start and
 * CLoQ's optimum closed by GAP_ITERS alternations, correlated problems, ranks 2 to 8. Measured:
 * at least 0.991 (after 1 alternation 0.72 to 1.00, after 3 0.86 to 1.00). */
static const double GAP_CLOSED_MIN = 0.9;
enum { ITERS = 10, GAP_ITERS = 10 };
static const double DAMP = 0.01;

typedef struct {
  int64_t n_out, n_in, t;
} shape;
/* wide, tall, square */
static const shape SHAPES[] = {{24, 40, 120}, {40, 20, 90}, {16, 16, 60}};

typedef struct {
  int64_t n_out, n_in;
  double *E, *H;
  double shift, c0; /* damp mean(diag H); tr(E Hd E^T) */
} problem;

/* X = (Z M / sqrt(k) + 0.05 noise) diag(exp(N(0, 0.25))), Z (t, k), k = n_in / 4 (as in
 * test_magr.c): H = X^T X has k large eigenvalues and many small ones, and columns scaled
 * unevenly, so Hd is far from a multiple of I. E = W - RTN_3bit(W), W ~ N(0, 0.02). */
static problem make_problem(shape sh, uint64_t seed) {
  const int64_t n = sh.n_in, no = sh.n_out;
  problem p = {.n_out = no, .n_in = n};
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  float *W = XALLOC(float, no * n), *Q = XALLOC(float, no * n);
  float *scales = XALLOC(float, no), *zeros = XALLOC(float, no);
  uint8_t *codes = XALLOC(uint8_t, no * n);
  p.H = XALLOC(double, n * n);
  correlated_gram(n, sh.t, &g, p.H);
  fill_normal_f(W, no * n, &g, 0.02);
  EXPECT_OK(cloq_quant_rtn(W, no, n, 3, -1, codes, scales, zeros));
  cloq_dequant(codes, scales, zeros, no, n, -1, Q);
  p.E = XALLOC(double, no * n);
  for (int64_t i = 0; i < no * n; i++) p.E[i] = (double)W[i] - (double)Q[i];
  p.shift = cloq_gram_shift(p.H, n, DAMP);
  p.c0 = cloq_objective_shifted(p.E, NULL, NULL, no, n, 0, p.H, p.shift);
  free(W), free(Q), free(scales), free(zeros), free(codes);
  return p;
}
static void free_problem(problem *p) { free(p->E), free(p->H); }

static int64_t min_side(const problem *p) { return p->n_out < p->n_in ? p->n_out : p->n_in; }

/* Worst measured figures, printed once per test (the numbers behind the constants). */
typedef struct {
  double rise, under, recompute, balance;
} worst;

/* max |(B^T B - A A^T)_ab| and max |(B^T B)_ab|, a != b, over the largest diagonal entry. */
static double balance_error(const float *A, const float *B, int64_t no, int64_t n, int64_t r) {
  double dmax = 0.0, err = 0.0;
  for (int64_t a = 0; a < r; a++)
    for (int64_t b = 0; b < r; b++) {
      double btb = 0.0, aat = 0.0;
      for (int64_t o = 0; o < no; o++) btb += (double)B[o * r + a] * (double)B[o * r + b];
      for (int64_t i = 0; i < n; i++) aat += (double)A[a * n + i] * (double)A[b * n + i];
      if (a == b) dmax = fmax(dmax, btb);
      err = fmax(err, fabs(btb - aat));
      if (a != b) err = fmax(err, fabs(btb));
    }
  return dmax > 0.0 ? err / dmax : err;
}

/* One rank from the svd start: the objective's properties, the recomputation, the balance. */
static void check_rank(const problem *p, int64_t r, int iters, worst *w) {
  const int64_t no = p->n_out, n = p->n_in;
  float *A = XALLOC(float, r * n), *B = XALLOC(float, no * r);
  float *Ac = XALLOC(float, r * n), *Bc = XALLOC(float, no * r);
  double *obj = XALLOC(double, iters + 1), f_cloq = 0.0;
  EXPECT_OK(cloq_lora_cloq(p->E, no, n, p->H, DAMP, r, Ac, Bc, &f_cloq));
  EXPECT_OK(cloq_lora_svd(p->E, no, n, r, A, B));
  const double f_svd = cloq_objective_shifted(p->E, A, B, no, n, r, p->H, p->shift);
  EXPECT_OK(cloq_lora_quailora(p->E, no, n, p->H, DAMP, r, iters, A, B, obj));
  EXPECT_CLOSE(obj[0], f_svd, OBJ_SLACK, p->c0, "(%lld, %lld) r %lld: obj[0] vs the svd "
               "start's objective", (long long)no, (long long)n, (long long)r);
  for (int k = 0; k <= iters; k++) {
    const double rise = k > 0 ? (obj[k] - obj[k - 1]) / p->c0 : 0.0;
    const double under = (f_cloq - obj[k]) / p->c0;
    w->rise = fmax(w->rise, rise), w->under = fmax(w->under, under);
    EXPECT_TRUE(rise <= OBJ_SLACK, "(%lld, %lld) r %lld: obj[%d] = %.17g > obj[%d] = %.17g "
                "(rise %.3g c0, slack %.1e)", (long long)no, (long long)n, (long long)r, k, obj[k],
                k - 1, obj[k > 0 ? k - 1 : 0], rise, OBJ_SLACK);
    EXPECT_TRUE(under <= OBJ_SLACK, "(%lld, %lld) r %lld: obj[%d] = %.17g below CLoQ's optimum "
                "%.17g (by %.3g c0, slack %.1e)", (long long)no, (long long)n, (long long)r, k,
                obj[k], f_cloq, under, OBJ_SLACK);
  }
  const double f_out = cloq_objective_shifted(p->E, A, B, no, n, r, p->H, p->shift);
  w->recompute = fmax(w->recompute, fabs(f_out - obj[iters]) / p->c0);
  EXPECT_CLOSE(obj[iters], f_out, OBJ_RECOMPUTE_TOL, p->c0, "(%lld, %lld) r %lld: obj[%d] vs "
               "cloq_objective_shifted of the output", (long long)no, (long long)n, (long long)r,
               iters);
  const double bal = balance_error(A, B, no, n, r);
  w->balance = fmax(w->balance, bal);
  EXPECT_TRUE(bal <= BALANCE_TOL, "(%lld, %lld) r %lld: balance error %.3g > %.1e", (long long)no,
              (long long)n, (long long)r, bal, BALANCE_TOL);
  free(A), free(B), free(Ac), free(Bc), free(obj);
}

static void test_quailora_objective_and_balance(void **state) {
  (void)state;
  worst w = {0};
  for (size_t c = 0; c < sizeof SHAPES / sizeof SHAPES[0]; c++) {
    problem p = make_problem(SHAPES[c], 10 + c);
    for (int64_t r = 1; r <= min_side(&p); r++) check_rank(&p, r, ITERS, &w);
    check_rank(&p, 3, 0, &w); /* the re-split alone */
    free_problem(&p);
  }
  print_message("worst: rise %.3g c0, below CLoQ %.3g c0, recompute %.3g c0, balance %.3g\n",
                w.rise, w.under, w.recompute, w.balance);
}

static double rel_diff(const double *a, const double *b, int64_t n) {
  double num = 0.0;
  for (int64_t i = 0; i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]);
  const double den = frob_d(b, n);
  return den > 0.0 ? sqrt(num) / den : sqrt(num);
}

static void test_quailora_fast_matches_ref(void **state) {
  (void)state;
  static const int64_t RANKS[] = {1, 3, 8, 16};
  double worst_prod = 0.0, worst_obj = 0.0;
  for (size_t c = 0; c < sizeof SHAPES / sizeof SHAPES[0]; c++) {
    problem p = make_problem(SHAPES[c], 20 + c);
    const int64_t no = p.n_out, n = p.n_in, nel = no * n;
    for (size_t q = 0; q < sizeof RANKS / sizeof RANKS[0] && RANKS[q] <= min_side(&p); q++) {
      const int64_t r = RANKS[q];
      float *Af = XALLOC(float, r * n), *Bf = XALLOC(float, no * r);
      float *Ar = XALLOC(float, r * n), *Br = XALLOC(float, no * r);
      double *Cf = XALLOC(double, nel), *Cr = XALLOC(double, nel);
      double of[ITERS + 1], orf[ITERS + 1];
      EXPECT_OK(cloq_lora_svd(p.E, no, n, r, Af, Bf));
      memcpy(Ar, Af, (size_t)(r * n) * sizeof *Ar);
      memcpy(Br, Bf, (size_t)(no * r) * sizeof *Br);
      EXPECT_OK(cloq_lora_quailora(p.E, no, n, p.H, DAMP, r, ITERS, Af, Bf, of));
      EXPECT_OK(cloq_lora_quailora_ref(p.E, no, n, p.H, DAMP, r, ITERS, Ar, Br, orf));
      lora_product(Bf, Af, no, r, n, Cf);
      lora_product(Br, Ar, no, r, n, Cr);
      const double dp = rel_diff(Cf, Cr, nel);
      worst_prod = fmax(worst_prod, dp);
      EXPECT_TRUE(dp <= PRODUCT_REL_TOL, "(%lld, %lld) r %lld: relative ||BA_fast - BA_ref||_F = "
                  "%.3g > %.1e", (long long)no, (long long)n, (long long)r, dp, PRODUCT_REL_TOL);
      for (int k = 0; k <= ITERS; k++) {
        worst_obj = fmax(worst_obj, fabs(of[k] - orf[k]) / p.c0);
        EXPECT_CLOSE(of[k], orf[k], OBJ_FAST_REF_TOL, p.c0, "(%lld, %lld) r %lld: obj[%d] fast "
                     "vs ref", (long long)no, (long long)n, (long long)r, k);
      }
      free(Af), free(Bf), free(Ar), free(Br), free(Cf), free(Cr);
    }
    free_problem(&p);
  }
  print_message("worst: product %.3g, objective %.3g c0\n", worst_prod, worst_obj);
}

static void test_quailora_closes_gap(void **state) {
  (void)state;
  double least = 1.0;
  for (size_t c = 0; c < sizeof SHAPES / sizeof SHAPES[0]; c++) {
    problem p = make_problem(SHAPES[c], 30 + c);
    const int64_t no = p.n_out, n = p.n_in;
    for (int64_t r = 2; r <= 8; r += 2) {
      float *A = XALLOC(float, r * n), *B = XALLOC(float, no * r);
      double obj[GAP_ITERS + 1], f_cloq = 0.0;
      EXPECT_OK(cloq_lora_cloq(p.E, no, n, p.H, DAMP, r, A, B, &f_cloq));
      EXPECT_OK(cloq_lora_svd(p.E, no, n, r, A, B));
      EXPECT_OK(cloq_lora_quailora(p.E, no, n, p.H, DAMP, r, GAP_ITERS, A, B, obj));
      const double gap = obj[0] - f_cloq;
      print_message("(%2lld, %2lld) r %lld: svd %.4e cloq %.4e; gap closed after 1, 3, %d: "
                    "%.3f %.3f %.3f\n", (long long)no, (long long)n, (long long)r, obj[0], f_cloq,
                    GAP_ITERS, (obj[0] - obj[1]) / gap, (obj[0] - obj[3]) / gap,
                    (obj[0] - obj[GAP_ITERS]) / gap);
      const double closed = (obj[0] - obj[GAP_ITERS]) / gap;
      least = fmin(least, closed);
      EXPECT_TRUE(closed >= GAP_CLOSED_MIN, "(%lld, %lld) r %lld: %d alternations closed %.3f of "
                  "the gap %.4e between the svd start and CLoQ (expected >= %.2f)", (long long)no,
                  (long long)n, (long long)r, GAP_ITERS, closed, gap, GAP_CLOSED_MIN);
      free(A), free(B);
    }
    free_problem(&p);
  }
  print_message("least gap closed: %.3f\n", least);
}

/* A zero row of A (the svd start of an E of rank 2 < r = 4 has two; a hand-made start has one
 * while E has full rank): the pivoted solves keep going; the objective still never rises and the
 * output is finite and balanced. */
static void test_quailora_singular_start(void **state) {
  (void)state;
  const shape sh = {20, 30, 80};
  const int64_t no = sh.n_out, n = sh.n_in, r = 4;
  problem p = make_problem(sh, 40);
  double *E2 = XALLOC(double, no * n), u[20], v[30];
  cloq_rng g;
  cloq_rng_seed(&g, 41);
  for (int rank = 0; rank < 2; rank++) { /* E2 = u1 v1^T + u2 v2^T */
    fill_normal_d(u, no, &g, 0.01);
    fill_normal_d(v, n, &g, 1.0);
    for (int64_t o = 0; o < no; o++)
      for (int64_t i = 0; i < n; i++) E2[o * n + i] += u[o] * v[i];
  }
  float *A = XALLOC(float, r * n), *B = XALLOC(float, no * r);
  double obj[ITERS + 1];
  for (int which = 0; which < 2; which++) {
    const double *E = which == 0 ? E2 : p.E;
    const double c0 = cloq_objective_shifted(E, NULL, NULL, no, n, 0, p.H, p.shift);
    EXPECT_OK(cloq_lora_svd(E, no, n, r, A, B));
    if (which == 1) memset(A + 2 * n, 0, (size_t)n * sizeof *A); /* row 2 of A = 0 */
    for (int ref = 0; ref < 2; ref++) {
      float *A1 = XALLOC(float, r * n), *B1 = XALLOC(float, no * r);
      memcpy(A1, A, (size_t)(r * n) * sizeof *A1), memcpy(B1, B, (size_t)(no * r) * sizeof *B1);
      EXPECT_OK((ref ? cloq_lora_quailora_ref : cloq_lora_quailora)(E, no, n, p.H, DAMP, r, ITERS,
                                                                   A1, B1, obj));
      for (int k = 1; k <= ITERS; k++)
        EXPECT_TRUE(obj[k] - obj[k - 1] <= OBJ_SLACK * c0, "singular start %d ref %d: obj[%d] = "
                    "%.17g > obj[%d] = %.17g", which, ref, k, obj[k], k - 1, obj[k - 1]);
      const double f_out = cloq_objective_shifted(E, A1, B1, no, n, r, p.H, p.shift);
      EXPECT_CLOSE(obj[ITERS], f_out, OBJ_RECOMPUTE_TOL, c0, "singular start %d ref %d: obj vs "
                   "recomputed", which, ref);
      const double bal = balance_error(A1, B1, no, n, r);
      EXPECT_TRUE(bal <= BALANCE_TOL, "singular start %d ref %d: balance error %.3g", which, ref,
                  bal);
      free(A1), free(B1);
    }
  }
  free(A), free(B), free(E2);
  free_problem(&p);
}

static void test_quailora_bad_arguments(void **state) {
  (void)state;
  const shape sh = {12, 10, 40};
  const int64_t no = sh.n_out, n = sh.n_in, r = 2;
  problem p = make_problem(sh, 50);
  float A[2 * 10], B[12 * 2];
  double obj[4];
  EXPECT_OK(cloq_lora_svd(p.E, no, n, r, A, B));
  EXPECT_FAIL(cloq_lora_quailora(p.E, no, n, p.H, DAMP, 0, 3, A, B, obj), "out of range");
  EXPECT_FAIL(cloq_lora_quailora_ref(p.E, no, n, p.H, DAMP, 11, 3, A, B, obj), "out of range");
  EXPECT_FAIL(cloq_lora_quailora(p.E, no, n, p.H, DAMP, r, -1, A, B, obj), "alternation count");
  EXPECT_FAIL(cloq_lora_quailora(p.E, no, n, p.H, -0.1, r, 3, A, B, obj), "invalid damping");
  EXPECT_FAIL(cloq_lora_quailora_ref(p.E, no, n, p.H, NAN, r, 3, A, B, obj), "invalid damping");
  p.E[5] = NAN;
  EXPECT_FAIL(cloq_lora_quailora(p.E, no, n, p.H, DAMP, r, 3, A, B, obj), "non-finite value in "
              "quantization error E");
  p.E[5] = 0.0;
  p.H[7] = INFINITY;
  EXPECT_FAIL(cloq_lora_quailora(p.E, no, n, p.H, DAMP, r, 3, A, B, obj), "non-finite value in "
              "Gram matrix");
  p.H[7] = p.H[7 * n];
  const float a0 = A[3];
  A[3] = NAN;
  EXPECT_FAIL(cloq_lora_quailora_ref(p.E, no, n, p.H, DAMP, r, 3, A, B, obj), "factor A");
  A[3] = a0;
  /* undamped, rank-deficient H (4 tokens, 10 inputs): Hd singular */
  float X[4 * 10];
  cloq_rng g;
  cloq_rng_seed(&g, 51);
  fill_normal_f(X, 4 * n, &g, 1.0);
  gram_full(X, 4, n, p.H);
  EXPECT_FAIL(cloq_lora_quailora(p.E, no, n, p.H, 0.0, r, 3, A, B, obj), "not positive definite");
  EXPECT_FAIL(cloq_lora_quailora_ref(p.E, no, n, p.H, 0.0, r, 3, A, B, obj),
              "not positive definite");
  free_problem(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quailora_objective_and_balance),
      cmocka_unit_test(test_quailora_fast_matches_ref),
      cmocka_unit_test(test_quailora_closes_gap),
      cmocka_unit_test(test_quailora_singular_start),
      cmocka_unit_test(test_quailora_bad_arguments),
  };
  return cmocka_run_group_tests_name("linalg_quailora", tests, NULL, NULL);
}
