/* test_optimality: the property CLoQ exists for. On random layers (plain, correlated and
 * outlier activation columns, tall and wide weights), with Q = RTN(W) at 2 and 3 bits and
 * H = X^T X, the CLoQ initialization must reach an objective tr((E - BA) H (E - BA)^T) no larger
 * than the bare quantized weight (zero init), the svd init, and a converged alternating least
 * squares (ALS) solution started from the svd init; and it must equal the closed form of the
 * paper's side of the identity, the tail ||M||_F^2 - sum_{i<r} S_i^2 of the singular values of
 * M = diag(sqrt s) U^T E^T (eig(Hd) = U diag(s) U^T, computed here independently of the init,
 * which never decomposes Hd), as must the objective the init reports itself.
 *
 * With damp = 0 the objective is exactly the calibrated one; a damped case compares under the
 * damped Hd, which is what CLoQ then minimizes. ALS (a local method, independent of the closed
 * form) is the oracle: B = E H A^T (A H A^T)^-1, A = (B^T B)^-1 B^T E until the objective moves
 * by less than ALS_REL_CHANGE.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

static const double OPT_SLACK = 1e-9;        /* f_cloq <= f_other * (1 + OPT_SLACK) */
static const double CLOSED_FORM_TOL = 1e-8;  /* |f_cloq - tail| / tail */
static const double ALS_REL_CHANGE = 1e-12;  /* ALS stops when |f_k - f_{k-1}| <= this * f_k */
enum { ALS_MAX_ITERS = 2000 };

typedef enum { COLS_PLAIN, COLS_CORRELATED, COLS_OUTLIERS } col_kind;
typedef struct {
  const char *name;
  int64_t n_out, n_in, t;
  col_kind kind;
  int64_t group_size;
} problem_spec;

static const problem_spec PROBLEMS[] = {
    {"plain", 32, 48, 128, COLS_PLAIN, -1},
    {"correlated", 40, 40, 100, COLS_CORRELATED, 8},
    {"outliers", 24, 64, 160, COLS_OUTLIERS, 16},
    {"tall-outliers", 64, 24, 50, COLS_OUTLIERS, -1},
    {"wide-correlated", 16, 56, 90, COLS_CORRELATED, 7},
};
static const int64_t RANKS[] = {1, 4, 8};
static const int BITS[] = {2, 3};

/* Calibration activations with the structure that makes H far from a multiple of I. */
static void make_activations(float *X, const problem_spec *ps, cloq_rng *g) {
  const int64_t t = ps->t, n = ps->n_in;
  fill_normal_f(X, t * n, g, 1.0);
  if (ps->kind == COLS_CORRELATED) {
    /* moving-average mixing, and every 5th column a noisy copy of its neighbour */
    for (int64_t k = 0; k < t; k++) {
      for (int64_t j = n - 1; j >= 1; j--) X[k * n + j] += 0.8f * X[k * n + j - 1];
      for (int64_t j = 5; j < n; j += 5)
        X[k * n + j] = X[k * n + j - 1] + 0.1f * (float)cloq_rng_normal(g);
    }
  } else if (ps->kind == COLS_OUTLIERS) {
    /* a few channels with 20-50x larger activations, as in LLM hidden states */
    for (int64_t j = 3; j < n; j += 11)
      for (int64_t k = 0; k < t; k++) X[k * n + j] *= (float)(20 + 3 * (j % 11) + j % 7);
  }
}

/* f = tr((E - BA) H (E - BA)^T) in float64 for float64 factors (ALS bookkeeping). */
static double objective_d(const double *E, const double *A, const double *B, int64_t n_out,
                          int64_t n, int64_t r, const double *H, double *D, double *DH) {
  memcpy(D, E, (size_t)(n_out * n) * sizeof *D);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n_out, (int)n, (int)r, -1.0, B,
              (int)r, A, (int)n, 1.0, D, (int)n);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n_out, (int)n, (int)n, 1.0, D,
              (int)n, H, (int)n, 0.0, DH, (int)n);
  double f = 0.0;
  for (int64_t i = 0; i < n_out * n; i++) f += D[i] * DH[i];
  return f;
}

/* ALS from the given float init; writes the converged factors (float) back. Returns the
 * iterations used. */
static int als(const double *E, const double *H, int64_t n_out, int64_t n, int64_t r, float *Af,
               float *Bf) {
  double *A = XALLOC(double, r * n), *B = XALLOC(double, n_out * r);
  double *EH = XALLOC(double, n_out * n), *AH = XALLOC(double, r * n);
  double *G = XALLOC(double, r * r), *Bt = XALLOC(double, r * n_out);
  double *D = XALLOC(double, n_out * n), *DH = XALLOC(double, n_out * n);
  for (int64_t i = 0; i < r * n; i++) A[i] = (double)Af[i];
  for (int64_t i = 0; i < n_out * r; i++) B[i] = (double)Bf[i];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n_out, (int)n, (int)n, 1.0, E,
              (int)n, H, (int)n, 0.0, EH, (int)n);
  double f = objective_d(E, A, B, n_out, n, r, H, D, DH);
  int it = 0;
  for (; it < ALS_MAX_ITERS; it++) {
    /* B^T = (A H A^T)^-1 (E H A^T)^T */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, (int)n, (int)n, 1.0, A, (int)n,
                H, (int)n, 0.0, AH, (int)n);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)r, (int)n, 1.0, AH, (int)n,
                A, (int)n, 0.0, G, (int)r);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)n_out, (int)n, 1.0, A,
                (int)n, EH, (int)n, 0.0, Bt, (int)n_out);
    int info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (int)r, (int)n_out, G, (int)r, Bt, (int)n_out);
    EXPECT_TRUE(info == 0, "ALS: A H A^T not positive definite (dposv info %d, iteration %d)",
                info, it);
    for (int64_t o = 0; o < n_out; o++)
      for (int64_t j = 0; j < r; j++) B[o * r + j] = Bt[j * n_out + o];
    /* A = (B^T B)^-1 B^T E */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)r, (int)n_out, 1.0, B,
                (int)r, B, (int)r, 0.0, G, (int)r);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)n, (int)n_out, 1.0, B,
                (int)r, E, (int)n, 0.0, A, (int)n);
    info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (int)r, (int)n, G, (int)r, A, (int)n);
    EXPECT_TRUE(info == 0, "ALS: B^T B not positive definite (dposv info %d, iteration %d)", info,
                it);
    const double fn = objective_d(E, A, B, n_out, n, r, H, D, DH);
    const double change = fabs(f - fn);
    f = fn;
    if (change <= ALS_REL_CHANGE * fn) {
      it++;
      break;
    }
  }
  for (int64_t i = 0; i < r * n; i++) Af[i] = (float)A[i];
  for (int64_t i = 0; i < n_out * r; i++) Bf[i] = (float)B[i];
  free(A), free(B), free(EH), free(AH), free(G), free(Bt), free(D), free(DH);
  return it;
}

/* Tail sum_{i >= r} S_i^2 of M = diag(sqrt s) U^T E^T (n_in, n_out), from a full SVD; also
 * returns ||M||_F^2. M is formed here with plain loops, independently of lora.c. */
static void closed_form_tails(const double *E, int64_t n_out, int64_t n, const double *s,
                              const double *U, double *tails, int64_t max_r, double *m2) {
  const int64_t k = n < n_out ? n : n_out;
  double *M = XALLOC(double, n * n_out), *P = XALLOC(double, n * k), *S = XALLOC(double, k);
  double *Vt = XALLOC(double, k * n_out);
  for (int64_t i = 0; i < n; i++)
    for (int64_t o = 0; o < n_out; o++) {
      double acc = 0.0;
      for (int64_t j = 0; j < n; j++) acc += U[j * n + i] * E[o * n + j];
      M[i * n_out + o] = sqrt(s[i]) * acc;
    }
  *m2 = frob_d(M, n * n_out) * frob_d(M, n * n_out);
  EXPECT_OK(cloq_svd_trunc(M, n, n_out, k, P, S, Vt));
  for (int64_t r = 0; r <= max_r; r++) {
    double tail = 0.0;
    for (int64_t i = k - 1; i >= r; i--) tail += S[i] * S[i]; /* small terms first */
    tails[r] = tail;
  }
  free(M), free(P), free(S), free(Vt);
}

static void expect_le(double f_cloq, double f_other, const char *other, const char *ctx) {
  EXPECT_TRUE(f_cloq <= f_other * (1.0 + OPT_SLACK),
              "%s: CLoQ objective %.17g exceeds the %s objective %.17g (ratio - 1 = %.3g, slack "
              "%.1e)", ctx, f_cloq, other, f_other, f_cloq / f_other - 1.0, OPT_SLACK);
}

/* One problem at one bit width and damping: every rank. */
static void run_problem(const problem_spec *ps, int bits, double damp, uint64_t seed) {
  const int64_t n_out = ps->n_out, n = ps->n_in, t = ps->t, nel = n_out * n;
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  float *W = XALLOC(float, nel), *Q = XALLOC(float, nel), *X = XALLOC(float, t * n);
  uint8_t *codes = XALLOC(uint8_t, nel);
  const int64_t ng = cloq_quant_ngroups(n, ps->group_size);
  float *scales = XALLOC(float, n_out * ng), *zeros = XALLOC(float, n_out * ng);
  double *E = XALLOC(double, nel), *H = XALLOC(double, n * n), *Hd = XALLOC(double, n * n);
  double *work = XALLOC(double, t * n), *s = XALLOC(double, n), *U = XALLOC(double, n * n);

  fill_normal_f(W, nel, &g, 0.02);
  make_activations(X, ps, &g);
  EXPECT_OK(cloq_quant_rtn(W, n_out, n, bits, ps->group_size, codes, scales, zeros));
  cloq_dequant(codes, scales, zeros, n_out, n, ps->group_size, Q);
  for (int64_t i = 0; i < nel; i++) E[i] = (double)W[i] - (double)Q[i];
  cloq_gram_accumulate(H, X, t, n, work);
  cloq_gram_symmetrize(H, n);
  double tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += H[i * n + i];
  memcpy(Hd, H, (size_t)(n * n) * sizeof *Hd);
  for (int64_t i = 0; i < n; i++) Hd[i * n + i] += damp * tr / (double)n;

  int64_t nclamped = -1;
  EXPECT_OK(cloq_eig_damped(H, n, damp, s, U, &nclamped));
  /* a clamped eigenvalue would make s, U describe a matrix other than Hd */
  EXPECT_TRUE(nclamped == 0, "%s: %lld eigenvalues clamped; the comparison needs none", ps->name,
              (long long)nclamped);

  const int64_t max_r = RANKS[sizeof RANKS / sizeof RANKS[0] - 1];
  double tails[16], m2;
  closed_form_tails(E, n_out, n, s, U, tails, max_r, &m2);
  const double f_zero = cloq_objective(E, NULL, NULL, n_out, n, 0, Hd);
  EXPECT_CLOSE(f_zero, m2, CLOSED_FORM_TOL, m2, "%s bits %d damp %g: tr(E Hd E^T) vs ||M||_F^2",
               ps->name, bits, damp);

  for (size_t q = 0; q < sizeof RANKS / sizeof RANKS[0]; q++) {
    const int64_t r = RANKS[q];
    char ctx[160];
    snprintf(ctx, sizeof ctx, "%s (%lld x %lld, t %lld) bits %d damp %g rank %lld", ps->name,
             (long long)n_out, (long long)n, (long long)t, bits, damp, (long long)r);
    float *Ac = XALLOC(float, r * n), *Bc = XALLOC(float, n_out * r);
    float *As = XALLOC(float, r * n), *Bs = XALLOC(float, n_out * r);
    float *Aa = XALLOC(float, r * n), *Ba = XALLOC(float, n_out * r);
    double f_free = 0;
    EXPECT_OK(cloq_lora_cloq(E, n_out, n, H, damp, r, Ac, Bc, &f_free));
    EXPECT_OK(cloq_lora_svd(E, n_out, n, r, As, Bs));
    memcpy(Aa, As, (size_t)(r * n) * sizeof *Aa);
    memcpy(Ba, Bs, (size_t)(n_out * r) * sizeof *Ba);
    const int iters = als(E, Hd, n_out, n, r, Aa, Ba);

    const double f_cloq = cloq_objective(E, Ac, Bc, n_out, n, r, Hd);
    const double f_svd = cloq_objective(E, As, Bs, n_out, n, r, Hd);
    const double f_als = cloq_objective(E, Aa, Ba, n_out, n, r, Hd);
    print_message("%-56s zero %.4e svd %.4e als %.4e (%4d it) cloq %.4e; cloq/als-1 %+.1e, "
                  "cloq/closed-1 %+.1e\n", ctx, f_zero, f_svd, f_als, iters, f_cloq,
                  f_cloq / f_als - 1.0, f_cloq / tails[r] - 1.0);
    expect_le(f_cloq, f_zero, "zero-init", ctx);
    expect_le(f_cloq, f_svd, "svd-init", ctx);
    expect_le(f_cloq, f_als, "converged ALS", ctx);
    EXPECT_CLOSE(f_cloq, tails[r], CLOSED_FORM_TOL, tails[r],
                 "%s: CLoQ objective vs closed form ||M||_F^2 - sum_{i<r} S_i^2", ctx);
    EXPECT_CLOSE(f_free, tails[r], CLOSED_FORM_TOL, tails[r],
                 "%s: CLoQ's own objective (trace - top eigenvalues) vs closed form", ctx);
    free(Ac), free(Bc), free(As), free(Bs), free(Aa), free(Ba);
  }
  free(W), free(Q), free(X), free(codes), free(scales), free(zeros), free(E), free(H), free(Hd);
  free(work), free(s), free(U);
}

static void test_cloq_optimal_undamped(void **state) {
  (void)state;
  for (size_t p = 0; p < sizeof PROBLEMS / sizeof PROBLEMS[0]; p++)
    for (size_t b = 0; b < sizeof BITS / sizeof BITS[0]; b++)
      run_problem(&PROBLEMS[p], BITS[b], 0.0, 1000 * (p + 1) + (uint64_t)BITS[b]);
}

static void test_cloq_optimal_damped(void **state) {
  (void)state;
  run_problem(&PROBLEMS[2], 2, 0.01, 777);
  run_problem(&PROBLEMS[1], 3, 0.01, 778);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cloq_optimal_undamped),
      cmocka_unit_test(test_cloq_optimal_damped),
  };
  return cmocka_run_group_tests_name("linalg_optimality", tests, NULL, NULL);
}
