/* cuda_check: the CUDA path of cloq_backend.h against the CPU path, on fresh random inputs.
 *
 *   cuda_check [--seed S] [--large]
 *
 * Every dispatched operation (cloq_dev_sgemm, _gram_accumulate, _hfactor, _proj_solve,
 * _quant_rtn, _quant_gptq) runs on the GPU and its result is compared with the CPU function it
 * dispatches to in cloq_linalg.h (cblas_sgemm for the GEMM; cloq_hfactor_make and
 * cloq_proj_solve for the init's projection form), which is the reference. One line per check:
 * "ok   name: measured X (tolerance Y)" or "FAIL name: ...", then a summary line; a comparison
 * that the inputs leave undetermined (a top-r subspace whose eigenvalue gap is at rounding level)
 * is reported on a "skip name: reason" line and not counted.
 * Exit status: 0 when every check passes, 1 when one fails, 77 (meson's "skipped") when
 * cloq_dev_open("cuda") fails (no CUDA in the build, no device): the reason is printed.
 *
 * The default sizes are small (n up to 300, odd sizes such as 1, 7, 129, 257 included) and take
 * about a second. --large adds Llama-7B shapes (Gram n = 4096 from 2 x 2048 rows, the factor of a
 * damped H of order 4096 from 2 x 2048 rows, the projection solve at r = 64 of a (4096, 4096)
 * and an input-side (11008, 4096) error weighted by such a factor, RTN and GPTQ of (4096, 4096)
 * and (11008, 4096) with groups of 128, sgemm m = 2048, k = 4096, n = 11008) and prints the wall
 * times of the GPU and the CPU call of each; the CPU side of those is slow on a small machine
 * (minutes).
 *
 * Every tolerance is stated next to the check with the reason it is sound. u32 = 2^-24 and
 * u64 = 2^-53 are the unit roundoffs of float32 and float64, gamma(n) = n u / (1 - n u) the
 * usual bound on the rounding of an n-term sum (Higham, Accuracy and Stability, ch. 3).
 * The factor and the solve are float64 on both sides (cuSOLVER potrf and syevdx, cuBLAS trmm,
 * syrk and gemm against LAPACK and OpenBLAS), so they differ by summation order only and agree
 * to rounding level, ~1e-14 relative: C C^T - Hd within 1e-12 max |Hd| (n 1e-14 when Hd is
 * singular), L within 1e-10, the trace within 1e-12, eigenvalues within 1e-10 lam_1, V^T V - I
 * within 1e-12 and the products V V^T E within 1e-10, each far above that and far below a
 * float32 step (~1e-7). Eigenvectors are compared only through the products V V^T E: their
 * signs, and their basis inside a cluster of close eigenvalues, are arbitrary.
 */
#include <cblas.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloq_backend.h"
#include "cloq_err.h"
#include "cloq_linalg.h"

/* ---- tolerances ------------------------------------------------------------------------------ */
static const double U32 = 0x1p-24; /* unit roundoff of float32 */
static const double U64 = 0x1p-53; /* unit roundoff of float64 */

/* Factor of Hd, max |C C^T - Hd| / max |Hd| where the factor has rank n: Cholesky is backward
 * stable in any summation order, C C^T = Hd + dHd with |dHd_ij| <= gamma(n + 1) (|L| |L|^T)_ij
 * <= gamma(n + 1) max |Hd| (row i of L has norm sqrt(Hd_ii); Cauchy-Schwarz), and the check's
 * own float64 product L L^T adds as much again: 2 gamma(n + 1) = 9.1e-13 at n = 4096. A rigorous
 * bound under 1e-12, which a float32 step (~1e-7) exceeds at once. */
static const double FACTOR_TOL = 1e-12;
/* The same where Hd is singular (pivoted Cholesky stopped at the numerical rank), x n: the
 * dropped Schur complement is semidefinite with its diagonal below LAPACK's stopping tolerance
 * n u64 max(diag Hd), so its entries are too; with the backward error above, ~3 n u64 max |Hd|,
 * so n x 1e-14 leaves a margin of ~30. */
static const double FACTOR_TOL_SINGULAR = 1e-14;
/* Cholesky factor, GPU vs CPU, where Hd is positive definite (its factor is unique): entrywise
 * |Lg - Lc|_ij / sqrt(Hd_ii). Not a rigorous bound (to first order L moves by up to cond(Hd)
 * times the backward error, and cond(Hd) <= 100 n + 1 with damp 0.01), but dpotrf against an
 * unblocked Cholesky loop in another summation order differed by at most 3.3e-14 on these
 * matrices (damped H of correlated, outlier-scaled columns, n up to 4096): 1e-10 leaves a
 * margin of 3000, and a float32 step (~1e-7) still shows at once. */
static const double FACTOR_L_TOL = 1e-10;
/* Projection solve, trace = ||F||_F^2 relative: F = E C differs between the two trmm orders by
 * ~sqrt(n_in) u64 relative per entry, which averages out in a sum of squares; the CPU sums the
 * n_out n_in squares in one sequential loop, whose rounding behaves as a random walk, ~u64
 * sqrt(N) / 3 relative (measured 1.7e-13 for N = 11008 x 4096, 9e-14 for 4096 x 4096; cuBLAS's
 * tree reduction is far more accurate): 1e-12 is >= 4 standard deviations at the largest shape
 * and 200 or more at the default sizes. (The rigorous bound gamma(N) would be 5e-9 there.) */
static const double TRACE_TOL = 1e-12;
/* Eigenvalues, |lam_g - lam_c| / lam_1: dsyrk + dsyevr and cublasDsyrk + cusolverDnDsyevdx are
 * backward stable, ||dS|| <= p(n) u64 ||S|| with p(n) a modest multiple of n, and by Weyl each
 * eigenvalue moves by at most as much: ~5e-13 x a small constant at n = 4096, so 1e-10 leaves a
 * margin of 100 or more (measured: 4e-16 for dgemm + dsyevd against the CPU path at n = 4096,
 * 4e-14 for the reference solver, Jacobi on loop products, at the default sizes). */
static const double LAM_TOL = 1e-10;
/* Orthonormality of the GPU's basis, max |V^T V - I|: eigenvectors from syevdx (output side)
 * and a Householder QR (input side) are orthonormal to a modest multiple of n u64 in norm at
 * worst and entrywise far better: the CPU's dsyevr (MRRR, the least orthogonal of LAPACK's
 * solvers) measured 3e-14 at n = 64 and 2e-15 at n = 4096, its Householder QR 9e-16 at
 * (11008, 64). 1e-12 leaves a margin of 30 or more; a float32 step (~1e-7) shows at once. */
static const double ORTH_TOL = 1e-12;
/* Products V V^T E, ||gpu - cpu||_F / ||cpu||_F, compared where the relative gap
 * (lam_r - lam_{r+1}) / lam_1 exceeds GAP_REL (below it the top-r subspace is not determined by
 * the data: a "skip" line). Davis-Kahan bounds the turn of the subspace by (backward error) /
 * gap, ~1e-14 lam_1 / gap at worst; in practice the coupling across the gap is the rounding of
 * the eigenvalues near lam_r, far below lam_1: dgemm + dsyevd (all pairs; Gram-Schmidt for the
 * input side's basis) against the CPU path on the weighted (4096, 4096) and (11008, 4096)
 * problems differed by at most 2e-13 at 37 ranks from 1 to 95, gaps down to 4e-6 lam_1 included
 * (difference x gap <= 1.2e-15 throughout), and the reference solver by at most 2.3e-12 at the
 * default sizes. 1e-10 leaves a margin of ~50 or more, while a wrong eigenvector or a float32
 * step moves the product by 1e-7 or more. */
static const double PROD_TOL = 1e-10;
static const double GAP_REL = 1e-6;
/* GPTQ: the GPU's lazy batch update is a cublasDgemm whose summation order differs from
 * OpenBLAS's, so the float64 working weights differ by ~1e-16 relative; a code can differ only
 * where that moves w / scale across a half-integer (then the rest of that row follows, as rows
 * are independent in GPTQ). tests/linalg/test_gptq.c measured 0 differing codes in 865,280
 * between two summation orders. Allowed: 0.1% of the codes, and at least one row's worth per
 * problem. */
static const double GPTQ_CODE_FRAC = 1e-3;
/* Objective tr((W-Q) H (W-Q)^T) relative difference when the codes agree (Q then differs only
 * where a dynamic scale moved by an ulp, ~6e-8 relative in one group): 1e-6. Where codes differ,
 * 1e-2, the bound test_gptq.c uses for its own fast-vs-reference mismatches. */
static const double GPTQ_OBJ_TOL = 1e-6;
static const double GPTQ_OBJ_TOL_MISMATCH = 1e-2;

/* ---- bookkeeping ----------------------------------------------------------------------------- */
static cloq_dev *gpu;
static int n_checks, n_failed;
static int large_mode;
static uint64_t base_seed = 20240611u;
static char timing[128]; /* " [gpu X s, cpu Y s]" in --large mode, else "" */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void set_timing(double t_gpu, double t_cpu) {
  if (large_mode)
    snprintf(timing, sizeof timing, " [gpu %.3f s, cpu %.3f s]", t_gpu, t_cpu);
  else
    timing[0] = 0;
}

/* One result line: "ok   name: <text>" or "FAIL name: <text>". */
__attribute__((format(printf, 3, 4))) static void result(int ok, const char *name,
                                                          const char *fmt, ...) {
  char text[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  printf("%s %s: %s\n", ok ? "ok  " : "FAIL", name, text);
  fflush(stdout);
  n_checks++;
  n_failed += !ok;
}

/* measured <= tol (NaN fails). */
static void check_tol(const char *name, double measured, double tol, const char *extra) {
  result(measured <= tol, name, "measured %.3g (tolerance %.3g)%s%s", measured, tol,
         extra ? extra : "", timing);
}

/* A call that must succeed on one side: on failure print the recorded reason. */
static int call_ok(const char *name, const char *side, int rc) {
  if (rc == 0) return 1;
  result(0, name, "%s call failed: %s", side, cloq_err_msg());
  cloq_err_clear();
  return 0;
}

static void *xcalloc(int64_t nelem, size_t size) {
  void *p = cloq_calloc_checked(nelem, size);
  if (!p) {
    fprintf(stderr, "cuda_check: allocation of %lld x %zu bytes failed\n", (long long)nelem,
            size);
    exit(1);
  }
  return p;
}
#define ALLOC(type, nelem) ((type *)xcalloc((int64_t)(nelem), sizeof(type)))

static double gamma_n(double n, double u) { return n * u / (1.0 - n * u); }

/* The reason of a recorded error without its location: messages read "[rank N: ]file:line:
 * function: reason", and the GPU path fails in other source files and functions than the CPU
 * path, so failure messages are compared after that prefix (the whole message when it does not
 * have that form). */
static const char *reason_of(const char *msg) {
  const char *p = msg;
  if (strncmp(p, "rank ", 5) == 0) {
    const char *q = strstr(p, ": ");
    if (q) p = q + 2;
  }
  for (const char *c = strchr(p, ':'); c; c = strchr(c + 1, ':')) {
    const char *d = c + 1;
    if (!isdigit((unsigned char)*d)) continue;
    while (isdigit((unsigned char)*d)) d++;
    if (d[0] != ':' || d[1] != ' ') continue;
    const char *f = d + 2, *e = f; /* the function name */
    while (isalnum((unsigned char)*e) || *e == '_') e++;
    if (e > f && e[0] == ':' && e[1] == ' ') return e + 2;
    return f;
  }
  return msg;
}

/* Failure cases: both sides must fail; with needle NULL their reasons must be equal, otherwise
 * both must contain needle. */
static void check_both_fail(const char *name, int rc_gpu, const char *msg_gpu, int rc_cpu,
                            const char *msg_cpu, const char *needle) {
  if (rc_gpu == 0 || rc_cpu == 0) {
    result(0, name, "expected both to fail: gpu %s (\"%s\"), cpu %s (\"%s\")",
           rc_gpu ? "failed" : "succeeded", msg_gpu, rc_cpu ? "failed" : "succeeded", msg_cpu);
    return;
  }
  const char *rg = reason_of(msg_gpu), *rc = reason_of(msg_cpu);
  if (needle)
    result(strstr(rg, needle) && strstr(rc, needle), name,
           "both fail mentioning \"%s\": gpu \"%s\", cpu \"%s\"", needle, rg, rc);
  else
    result(strcmp(rg, rc) == 0, name, "both fail with the same reason: gpu \"%s\", cpu \"%s\"",
           rg, rc);
}

/* ---- random inputs --------------------------------------------------------------------------- */
static void fill_normal_f(float *x, int64_t n, cloq_rng *g, double sd) {
  for (int64_t i = 0; i < n; i++) x[i] = (float)(sd * cloq_rng_normal(g));
}

/* A weight: N(0, 0.02) with every 37th entry x20 (outliers), as tests/linalg/test_gptq.c. */
static void make_weight(float *W, int64_t n_out, int64_t n_in, cloq_rng *g) {
  fill_normal_f(W, n_out * n_in, g, 0.02);
  for (int64_t i = 0; i < n_out * n_in; i += 37) W[i] *= 20.0f;
}

/* Calibration inputs X (t, n) float32 with correlated columns, like activations: column c is
 * s_c (z_c + Y C_c), Z (t, n) and Y (t, 8) normal and C (8, n) normal (8 shared factors: a
 * correlation of ~0.9 between columns, an ill-conditioned Gram matrix), s_c = exp(colscale
 * N(0,1)) (outlier channels). ndead columns are zero (dead channels, H_jj = 0). */
enum { NFACTORS = 8 };
static void make_x(float *X, int64_t t, int64_t n, double colscale, int64_t ndead, cloq_rng *g) {
  double *Y = ALLOC(double, t * NFACTORS), *C = ALLOC(double, NFACTORS * n);
  double *s = ALLOC(double, n);
  for (int64_t i = 0; i < t * NFACTORS; i++) Y[i] = cloq_rng_normal(g);
  for (int64_t i = 0; i < NFACTORS * n; i++) C[i] = cloq_rng_normal(g);
  for (int64_t c = 0; c < n; c++) s[c] = exp(colscale * cloq_rng_normal(g));
  for (int64_t r = 0; r < t; r++)
    for (int64_t c = 0; c < n; c++) {
      double v = cloq_rng_normal(g);
      for (int f = 0; f < NFACTORS; f++) v += Y[r * NFACTORS + f] * C[f * n + c];
      X[r * n + c] = (float)(s[c] * v);
    }
  for (int64_t k = 0; k < ndead && k < n; k++) {
    const int64_t c = (n * (k + 1)) / (ndead + 1);
    for (int64_t r = 0; r < t; r++) X[r * n + c] = 0.0f;
  }
  free(Y), free(C), free(s);
}

/* H (n, n) = X^T X, full symmetric (CPU Gram). */
static void gram_full(const float *X, int64_t t, int64_t n, double *H) {
  double *work = ALLOC(double, t * n);
  memset(H, 0, (size_t)(n * n) * sizeof *H);
  cloq_gram_accumulate(H, X, t, n, work);
  cloq_gram_symmetrize(H, n);
  free(work);
}

/* ---- 1. sgemm -------------------------------------------------------------------------------- */
/* Two measures, both on C = alpha A B + beta C0 (float32 in, float32 accumulation):
 *  (a) entrywise, GPU vs CPU over all of C: |Cg - Cc|_ij / (|alpha| ||a_i|| ||b_j|| + |beta|
 *      |C0_ij|) <= 2 gamma(k + 2) (u32). Each result is within gamma(k+2) (|alpha| |A||B| +
 *      |beta||C0|)_ij of the exact value whatever the summation order or FMA use (the k products
 *      and sums, the alpha scaling, the beta term), and (|A||B|)_ij <= ||a_i|| ||b_j|| by
 *      Cauchy-Schwarz: a rigorous bound, so it can never flag a correct GEMM. It is loose
 *      (k u32), so it catches gross errors (wrong transposes, missed beta, garbage) only;
 *  (b) accuracy against a float64 GEMM of the same inputs (exact products, error ~1e-16), as the
 *      RMS of the error over the RMS of C, on up to 256 evenly spaced rows: <= 2 u32 sqrt(k + 2).
 *      For mean-zero inputs (these are normal), rounding errors behave as random: recursive
 *      float32 summation, the least accurate order, has an RMS relative error of about
 *      u32 sqrt(k / 6) (blocked and FMA orders less), so the bound has a margin of ~5 while TF32
 *      (10-bit mantissa, errors ~2^-11 relative per product: ~4e-4 whatever k) or a half-
 *      precision path exceeds it by 50x or more at k = 4096. The CPU's value is printed beside
 *      it. */
static void check_sgemm_case(int64_t m, int64_t n, int64_t k, float alpha, float beta,
                             int nan_c, cloq_rng *g) {
  char name[128];
  snprintf(name, sizeof name, "sgemm m=%lld n=%lld k=%lld alpha=%g beta=%g%s", (long long)m,
           (long long)n, (long long)k, (double)alpha, (double)beta,
           nan_c ? " (C holds NaN, unread)" : "");
  float *A = ALLOC(float, m * k), *B = ALLOC(float, k * n), *C0 = ALLOC(float, m * n);
  float *Cg = ALLOC(float, m * n), *Cc = ALLOC(float, m * n);
  fill_normal_f(A, m * k, g, 1.0);
  fill_normal_f(B, k * n, g, 1.0);
  if (nan_c)
    for (int64_t i = 0; i < m * n; i++) C0[i] = NAN;
  else
    fill_normal_f(C0, m * n, g, 1.0);
  memcpy(Cg, C0, (size_t)(m * n) * sizeof *Cg);
  memcpy(Cc, C0, (size_t)(m * n) * sizeof *Cc);
  cloq_err_clear();
  const double t0 = now();
  const int rc = cloq_dev_sgemm(gpu, m, n, k, alpha, A, B, beta, Cg);
  const double t1 = now();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, alpha, A,
              (int)k, B, (int)n, beta, Cc, (int)n);
  set_timing(t1 - t0, now() - t1);
  if (!call_ok(name, "gpu", rc)) goto done;

  /* (a) rigorous entrywise bound */
  double *ra = ALLOC(double, m), *cb = ALLOC(double, n);
  for (int64_t i = 0; i < m; i++) {
    double s = 0.0;
    for (int64_t l = 0; l < k; l++) s += (double)A[i * k + l] * A[i * k + l];
    ra[i] = sqrt(s);
  }
  for (int64_t l = 0; l < k; l++)
    for (int64_t j = 0; j < n; j++) cb[j] += (double)B[l * n + j] * B[l * n + j];
  for (int64_t j = 0; j < n; j++) cb[j] = sqrt(cb[j]);
  double worst = 0.0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      const double d = fabs((double)Cg[i * n + j] - (double)Cc[i * n + j]);
      double scale = fabs((double)alpha) * ra[i] * cb[j];
      if (beta != 0.0f) scale += fabs((double)beta) * fabs((double)C0[i * n + j]);
      const double e = scale > 0.0 ? d / scale : (d == 0.0 ? 0.0 : INFINITY);
      if (!(e <= worst)) worst = isnan(e) ? INFINITY : e; /* NaN/inf anywhere fails */
    }
  char sub[192];
  snprintf(sub, sizeof sub, "%s: entrywise |gpu - cpu| / bound scale", name);
  check_tol(sub, worst, 2.0 * gamma_n((double)k + 2.0, U32), NULL);
  free(ra), free(cb);

  /* (b) accuracy against float64 on sampled rows */
  const int64_t rs = m < 256 ? m : 256;
  double *Ad = ALLOC(double, rs * k), *Bd = ALLOC(double, k * n), *Ex = ALLOC(double, rs * n);
  for (int64_t s = 0; s < rs; s++) {
    const int64_t i = s * m / rs;
    for (int64_t l = 0; l < k; l++) Ad[s * k + l] = A[i * k + l];
    for (int64_t j = 0; j < n; j++) Ex[s * n + j] = beta != 0.0f ? (double)C0[i * n + j] : 0.0;
  }
  for (int64_t i = 0; i < k * n; i++) Bd[i] = B[i];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rs, (int)n, (int)k, (double)alpha,
              Ad, (int)k, Bd, (int)n, (double)beta, Ex, (int)n);
  double eg = 0.0, ec = 0.0, ee = 0.0;
  for (int64_t s = 0; s < rs; s++) {
    const int64_t i = s * m / rs;
    for (int64_t j = 0; j < n; j++) {
      const double x = Ex[s * n + j];
      eg += (Cg[i * n + j] - x) * (Cg[i * n + j] - x);
      ec += (Cc[i * n + j] - x) * (Cc[i * n + j] - x);
      ee += x * x;
    }
  }
  const double rg = ee > 0.0 ? sqrt(eg / ee) : sqrt(eg), rcpu = ee > 0.0 ? sqrt(ec / ee) : sqrt(ec);
  char extra[96];
  snprintf(extra, sizeof extra, "; cpu %.3g", rcpu);
  snprintf(sub, sizeof sub, "%s: rms error vs float64 / rms C", name);
  check_tol(sub, isnan(rg) ? INFINITY : rg, 2.0 * U32 * sqrt((double)k + 2.0), extra);
  free(Ad), free(Bd), free(Ex);
done:
  free(A), free(B), free(C0), free(Cg), free(Cc);
}

static void check_sgemm(void) {
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(base_seed, 1, 0));
  /* m, n, k, alpha, beta, NaN in C */
  check_sgemm_case(1, 1, 1, 1.0f, 0.0f, 0, &g);
  check_sgemm_case(7, 129, 257, 1.0f, 0.0f, 0, &g);
  check_sgemm_case(64, 64, 64, 0.75f, -0.5f, 0, &g);
  check_sgemm_case(129, 7, 300, 1.0f, 1.0f, 0, &g);
  check_sgemm_case(257, 129, 1, -1.5f, 0.25f, 0, &g);
  check_sgemm_case(100, 65, 257, 1.0f, 0.0f, 1, &g);
  if (large_mode) check_sgemm_case(2048, 11008, 4096, 1.0f, 0.0f, 0, &g);
}

/* ---- 2. Gram accumulation -------------------------------------------------------------------- */
/* H += X1^T X1, then H += X2^T X2 (the second into a non-zero H). Products of float32 values are
 * exact in float64, so each entry is a float64 sum of t1 + t2 terms, and both sides are within
 * gamma(t1 + t2) (u64) sum_k |x_ki x_kj| <= gamma(t1 + t2) sqrt(H_ii H_jj) (Cauchy-Schwarz) of the
 * exact value, in any order: |Hg - Hc|_ij / sqrt(Hc_ii Hc_jj) <= 2 gamma(t1 + t2) is rigorous
 * (4.5e-13 for 2 x 2048 rows, under the 1e-12 of the design) and catches any float32 step
 * (1e-7). Compared on the upper triangle (the contract updates only j >= i); the strictly lower
 * triangle, filled with a sentinel beforehand, must come back bitwise unchanged (the contract:
 * "only the upper triangle of H is updated"). Dead columns give exact zeros on both sides. */
static void check_gram_case(int64_t n, int64_t t1, int64_t t2, int64_t ndead, cloq_rng *g) {
  char name[128], sub[192];
  snprintf(name, sizeof name, "gram n=%lld t=%lld+%lld", (long long)n, (long long)t1,
           (long long)t2);
  float *X1 = ALLOC(float, t1 * n), *X2 = ALLOC(float, t2 * n);
  const int64_t tmax = t1 > t2 ? t1 : t2;
  double *Hg = ALLOC(double, n * n), *Hc = ALLOC(double, n * n), *work = ALLOC(double, tmax * n);
  make_x(X1, t1, n, 1.0, ndead, g);
  make_x(X2, t2, n, 1.0, ndead, g);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < i; j++) Hg[i * n + j] = Hc[i * n + j] = -7.25 - (double)(i + j);
  double tg = 0.0, tc = 0.0;
  int ok = 1;
  for (int pass = 0; pass < 2 && ok; pass++) {
    const float *X = pass ? X2 : X1;
    const int64_t t = pass ? t2 : t1;
    cloq_err_clear();
    const double t0 = now();
    const int rc = cloq_dev_gram_accumulate(gpu, Hg, X, t, n, work);
    const double t1_ = now();
    cloq_gram_accumulate(Hc, X, t, n, work);
    tg += t1_ - t0, tc += now() - t1_;
    ok = call_ok(name, "gpu", rc);
  }
  set_timing(tg, tc);
  if (ok) {
    double worst = 0.0;
    int64_t lower_changed = 0;
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < n; j++) {
        if (j < i) {
          const double want = -7.25 - (double)(i + j);
          lower_changed += memcmp(&Hg[i * n + j], &want, sizeof want) != 0;
          continue;
        }
        const double d = fabs(Hg[i * n + j] - Hc[i * n + j]);
        const double scale = sqrt(Hc[i * n + i] * Hc[j * n + j]);
        const double e = scale > 0.0 ? d / scale : (d == 0.0 ? 0.0 : INFINITY);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
      }
    snprintf(sub, sizeof sub, "%s: upper |gpu - cpu| / sqrt(H_ii H_jj)", name);
    check_tol(sub, worst, 2.0 * gamma_n((double)(t1 + t2), U64), NULL);
    timing[0] = 0;
    snprintf(sub, sizeof sub, "%s: strictly lower triangle left unchanged", name);
    result(lower_changed == 0, sub, "measured %lld changed entries (tolerance 0)",
           (long long)lower_changed);
  }
  free(X1), free(X2), free(Hg), free(Hc), free(work);
}

static void check_gram(void) {
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(base_seed, 2, 0));
  /* n, t1, t2, dead columns */
  check_gram_case(1, 3, 2, 0, &g);
  check_gram_case(7, 5, 9, 1, &g);
  check_gram_case(64, 64, 1, 0, &g);
  check_gram_case(129, 300, 77, 2, &g);
  check_gram_case(257, 100, 200, 1, &g);
  if (large_mode) check_gram_case(4096, 2048, 2048, 3, &g);
}

/* ---- 3. factor of the damped Gram matrix ----------------------------------------------------- */
/* cloq_dev_hfactor against cloq_hfactor_make on H = X^T X:
 *  - the GPU's factor reproduces Hd: max |C C^T - Hd| / max |Hd| <= FACTOR_TOL where its rank is
 *    n, n FACTOR_TOL_SINGULAR where Hd is singular. C = P L: (C C^T)[piv i][piv j] is row i of L
 *    times row j, so L L^T is compared with Hd permuted, and the GPU's pivots must first be a
 *    permutation of 0..n-1;
 *  - the path and the rank agree: damped (Hd positive definite) both unpivoted with rank n;
 *    undamped with t < n (plain normal X: rank t in exact arithmetic, n - t zero eigenvalues)
 *    both pivoted with the same rank below n (cuSOLVER has no pivoted Cholesky: the GPU falls
 *    back to the CPU's, so a different rank would mean a wrong fallback);
 *  - rank n: the Cholesky factor of a positive definite matrix is unique, so L is compared
 *    entrywise, |Lg - Lc|_ij / sqrt(Hd_ii) <= FACTOR_L_TOL (row i of L has norm sqrt(Hd_ii));
 *    the strictly upper triangle must be zero on both sides and counts like any entry.
 * A NaN in H must fail on both sides with the same reason. */
static void check_factor_case(int64_t n, int64_t t, double damp, cloq_rng *g) {
  char name[128], sub[192];
  snprintf(name, sizeof name, "factor n=%lld t=%lld damp=%g", (long long)n, (long long)t, damp);
  const int singular = damp == 0.0 && t < n;
  float *X = ALLOC(float, t * n);
  double *H = ALLOC(double, n * n), *Hd = ALLOC(double, n * n), *R = NULL;
  int64_t *seen = NULL;
  cloq_hfactor fg = {0}, fc = {0};
  if (singular)
    fill_normal_f(X, t * n, g, 1.0);
  else
    make_x(X, t, n, 1.0, n > 2 ? 1 : 0, g);
  gram_full(X, t, n, H);
  free(X);
  double tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += H[i * n + i];
  memcpy(Hd, H, (size_t)(n * n) * sizeof *Hd);
  for (int64_t i = 0; i < n; i++) Hd[i * n + i] += damp * (tr / (double)n);
  cloq_err_clear();
  const double t0 = now();
  const int rg = cloq_dev_hfactor(gpu, H, n, damp, &fg);
  const double t1 = now();
  const int rcpu = cloq_hfactor_make(H, n, damp, &fc);
  set_timing(t1 - t0, now() - t1);
  if (!call_ok(name, "gpu", rg) || !call_ok(name, "cpu", rcpu)) goto done;

  /* the GPU's order, rank and pivots must be usable before anything is indexed by them */
  int shape_ok = fg.n == n && fg.L && fg.rank >= 0 && fg.rank <= n;
  seen = ALLOC(int64_t, n);
  for (int64_t i = 0; shape_ok && fg.piv && i < n; i++) {
    const int64_t p = fg.piv[i];
    if (p < 0 || p >= n || seen[p]++) shape_ok = 0;
  }

  /* reconstruction: L L^T against Hd with rows and columns permuted */
  double hmax = 0.0, rec = INFINITY;
  for (int64_t i = 0; i < n * n; i++) hmax = fmax(hmax, fabs(Hd[i]));
  if (shape_ok) {
    R = ALLOC(double, n * n);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)n, 1.0, fg.L,
                (int)n, fg.L, (int)n, 0.0, R, (int)n);
    rec = 0.0;
    for (int64_t i = 0; i < n; i++) {
      const int64_t pi = fg.piv ? fg.piv[i] : i;
      for (int64_t j = 0; j < n; j++) {
        const int64_t pj = fg.piv ? fg.piv[j] : j;
        const double d = fabs(R[i * n + j] - Hd[pi * n + pj]);
        rec = (d <= rec) ? rec : (isnan(d) ? INFINITY : d);
      }
    }
  }
  const int full_rank = shape_ok && fg.rank == n;
  char extra[96];
  snprintf(extra, sizeof extra, "; gpu rank %lld of %lld", (long long)fg.rank, (long long)n);
  snprintf(sub, sizeof sub, "%s: gpu |C C^T - Hd| / max|Hd|", name);
  check_tol(sub, rec / hmax, full_rank ? FACTOR_TOL : (double)n * FACTOR_TOL_SINGULAR, extra);
  timing[0] = 0;

  /* path and rank */
  const int pg = fg.piv != NULL, pc = fc.piv != NULL;
  const int ok_path = shape_ok && pg == pc && fg.rank == fc.rank && pc == singular &&
                      (singular ? fc.rank < n : fc.rank == n);
  snprintf(sub, sizeof sub, "%s: path and rank", name);
  if (singular)
    snprintf(extra, sizeof extra, "both pivoted, the same rank < n (%lld = t in exact arithmetic)",
             (long long)t);
  else
    snprintf(extra, sizeof extra, "both unpivoted, rank n");
  result(ok_path, sub, "gpu %s rank %lld, cpu %s rank %lld (expected %s)%s",
         pg ? "pivoted" : "unpivoted", (long long)fg.rank, pc ? "pivoted" : "unpivoted",
         (long long)fc.rank, extra,
         shape_ok ? "" : "; the gpu factor's order, rank or pivots are invalid");

  /* the unique Cholesky factor */
  if (full_rank && !pg && !pc && fc.rank == n) {
    double dl = 0.0;
    for (int64_t i = 0; i < n; i++) {
      const double rs = sqrt(Hd[i * n + i]);
      for (int64_t j = 0; j < n; j++) {
        const double d = fabs(fg.L[i * n + j] - fc.L[i * n + j]) / rs;
        dl = (d <= dl) ? dl : (isnan(d) ? INFINITY : d);
      }
    }
    snprintf(sub, sizeof sub, "%s: |L gpu - cpu|_ij / sqrt(Hd_ii)", name);
    check_tol(sub, dl, FACTOR_L_TOL, NULL);
  }
done:
  cloq_hfactor_free(&fg);
  cloq_hfactor_free(&fc);
  free(H), free(Hd), free(R), free(seen);
}

static void check_factor(void) {
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(base_seed, 3, 0));
  /* n, t, damp */
  check_factor_case(1, 3, 0.01, &g);
  check_factor_case(7, 20, 0.01, &g);
  check_factor_case(64, 200, 0.01, &g);
  check_factor_case(129, 60, 0.01, &g); /* t < n, made definite by the damping */
  check_factor_case(257, 400, 0.01, &g);
  check_factor_case(7, 3, 0.0, &g);     /* t < n, undamped: singular, pivoted */
  check_factor_case(129, 60, 0.0, &g);
  check_factor_case(300, 100, 0.0, &g);
  /* failure: a non-finite entry, the same reason on both sides */
  {
    const int64_t n = 9;
    double *H = ALLOC(double, n * n);
    for (int64_t i = 0; i < n; i++) H[i * n + i] = 1.0 + (double)i;
    H[3 * n + 5] = H[5 * n + 3] = NAN;
    char mg[1024], mc[1024];
    cloq_hfactor f = {0};
    cloq_err_clear();
    const int rg = cloq_dev_hfactor(gpu, H, n, 0.01, &f);
    snprintf(mg, sizeof mg, "%s", cloq_err_msg());
    cloq_hfactor_free(&f);
    cloq_err_clear();
    const int rc = cloq_hfactor_make(H, n, 0.01, &f);
    snprintf(mc, sizeof mc, "%s", cloq_err_msg());
    cloq_hfactor_free(&f);
    cloq_err_clear();
    check_both_fail("factor n=9 NaN in H", rg, mg, rc, mc, NULL);
    free(H);
  }
  if (large_mode) check_factor_case(4096, 2 * 2048, 0.01, &g);
}

/* ---- 4. projection solve --------------------------------------------------------------------- */
/* cloq_dev_proj_solve against cloq_proj_solve, both given the same E and the same factor (the
 * CPU's, so that only the solve is compared): C = I (the svd init), a Cholesky factor (damped H
 * of correlated columns) and a pivoted one (undamped H of rank t < n_in); the output side
 * (n_out <= n_in, square included) and the input side (n_out > n_in); r = 1, a middle rank and
 * r = min(n_out, n_in). E is noise-like, as a quantization error: normal, every 37th entry x20.
 * Per problem, over its ranks (the worst is reported):
 *  - trace |tg - tc| / tc <= TRACE_TOL;
 *  - eigenvalues max_j |lam_g - lam_c|_j / lam_c[0] <= LAM_TOL, the GPU's in descending order
 *    (up to that tolerance: the zero eigenvalues of a singular F are rounding noise);
 *  - the GPU's basis orthonormal, max |V^T V - I| <= ORTH_TOL;
 *  - the products, ||Vg Vg^T E - Vc Vc^T E||_F / ||Vc Vc^T E||_F <= PROD_TOL, where the relative
 *    gap (lam_r - lam_{r+1}) / lam_1 > GAP_REL; lam_{r+1} from a CPU solve at r + 1, and 0 at
 *    r = n_in < n_out (the span of all of V is determined only where lam_r > 0: a pivoted factor
 *    of rank below n_in leaves the input side's last columns arbitrary); always at r = n_out <=
 *    n_in, where V is square and V V^T = I (gap inf). A rank whose gap is at or below GAP_REL
 *    gets a "skip" line.
 * Eigenvectors are compared only through the products: their signs, and their basis inside a
 * cluster of close eigenvalues, are arbitrary. Non-finite E and r outside [1, min side] must fail
 * on both sides with the same reason. */
enum { FACT_NONE, FACT_CHOL, FACT_PIVOTED };

static void make_error(double *E, int64_t n_out, int64_t n_in, cloq_rng *g) {
  for (int64_t i = 0; i < n_out * n_in; i++) E[i] = 0.01 * cloq_rng_normal(g);
  for (int64_t i = 0; i < n_out * n_in; i += 37) E[i] *= 20.0;
}

/* The CPU's factor of kind FACT_CHOL (make_x with t rows, one dead column where n > 2, damp
 * 0.01) or FACT_PIVOTED (plain normal X with t < n rows, damp 0; with t = 1 its entries are
 * rounded to powers of two, so that H = x^T x is exact and exactly singular, where rounding
 * could otherwise leave a tiny matrix numerically definite), and its description. */
static int make_factor(int kind, int64_t n, int64_t t, cloq_rng *g, cloq_hfactor *f, char *desc,
                       size_t desc_len) {
  float *X = ALLOC(float, t * n);
  double *H = ALLOC(double, n * n);
  const double damp = kind == FACT_CHOL ? 0.01 : 0.0;
  if (kind == FACT_CHOL)
    make_x(X, t, n, 1.0, n > 2 ? 1 : 0, g);
  else
    fill_normal_f(X, t * n, g, 1.0);
  if (kind == FACT_PIVOTED && t == 1)
    for (int64_t i = 0; i < n; i++) X[i] = copysignf(ldexpf(1.0f, ilogbf(X[i])), X[i]);
  gram_full(X, t, n, H);
  const int rc = cloq_hfactor_make(H, n, damp, f);
  free(X), free(H);
  if (rc == 0)
    snprintf(desc, desc_len, "C=%s(t=%lld damp=%g rank=%lld)", f->piv ? "pivoted" : "chol",
             (long long)t, damp, (long long)f->rank);
  else
    snprintf(desc, desc_len, "C=factor(t=%lld damp=%g)", (long long)t, damp);
  return rc;
}

/* ||Vg Vg^T E - Vc Vc^T E||_F / ||Vc Vc^T E||_F, with one (n_out, n_in) buffer: P = Vc (Vc^T E),
 * its norm, then P = Vg (Vg^T E) - P. */
static double product_diff(const double *E, int64_t n_out, int64_t n_in, int64_t r,
                           const double *Vg, const double *Vc) {
  double *Z = ALLOC(double, r * n_in), *P = ALLOC(double, n_out * n_in);
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)n_in, (int)n_out, 1.0, Vc,
              (int)r, E, (int)n_in, 0.0, Z, (int)n_in);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n_out, (int)n_in, (int)r, 1.0, Vc,
              (int)r, Z, (int)n_in, 0.0, P, (int)n_in);
  double nc = 0.0, nd = 0.0;
  for (int64_t i = 0; i < n_out * n_in; i++) nc += P[i] * P[i];
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)n_in, (int)n_out, 1.0, Vg,
              (int)r, E, (int)n_in, 0.0, Z, (int)n_in);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n_out, (int)n_in, (int)r, 1.0, Vg,
              (int)r, Z, (int)n_in, -1.0, P, (int)n_in);
  for (int64_t i = 0; i < n_out * n_in; i++) nd += P[i] * P[i];
  free(Z), free(P);
  return sqrt(nd / nc);
}

static void check_proj_problem(int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                               const char *fdesc, const int64_t *ranks, int nr, cloq_rng *g) {
  const int64_t kmin = n_out < n_in ? n_out : n_in;
  char name[192], sub[320], rlist[64] = "";
  for (int k = 0; k < nr; k++)
    snprintf(rlist + strlen(rlist), sizeof rlist - strlen(rlist), "%s%lld", k ? "," : "",
             (long long)ranks[k]);
  snprintf(name, sizeof name, "proj (%lld, %lld) %s side %s r=%s", (long long)n_out,
           (long long)n_in, n_out <= n_in ? "output" : "input", fdesc, rlist);
  double *E = ALLOC(double, n_out * n_in);
  make_error(E, n_out, n_in, g);
  double worst_tr = 0.0, worst_lam = 0.0, worst_orth = 0.0, worst_prod = 0.0;
  double min_gap = INFINITY, tg = 0.0, tc = 0.0;
  int64_t unsorted = 0, lam_at = 0, prod_at = 0;
  int compared = 0, call_failed = 0;
  char skipped[256] = "";
  for (int k = 0; k < nr && !call_failed; k++) {
    const int64_t r = ranks[k];
    double *Vg = ALLOC(double, n_out * r), *Vc = ALLOC(double, n_out * r);
    double *lg = ALLOC(double, r), *lc = ALLOC(double, r), trg = NAN, trc = NAN;
    cloq_err_clear();
    const double t0 = now();
    const int rg = cloq_dev_proj_solve(gpu, E, n_out, n_in, f, r, Vg, lg, &trg);
    const double t1 = now();
    const int rcpu = cloq_proj_solve(E, n_out, n_in, f, r, Vc, lc, &trc);
    tg += t1 - t0, tc += now() - t1;
    snprintf(sub, sizeof sub, "%s (at r=%lld)", name, (long long)r);
    if (!call_ok(sub, "gpu", rg) || !call_ok(sub, "cpu", rcpu)) {
      call_failed = 1;
      goto next;
    }
    double e = fabs(trg - trc) / trc;
    worst_tr = (e <= worst_tr) ? worst_tr : (isnan(e) ? INFINITY : e);
    for (int64_t j = 0; j < r; j++) {
      e = fabs(lg[j] - lc[j]) / lc[0];
      if (lam_at == 0 || !(e <= worst_lam)) {
        worst_lam = isnan(e) ? INFINITY : e;
        lam_at = r;
      }
      if (j > 0 && !(lg[j] - lg[j - 1] <= LAM_TOL * lc[0])) unsorted++;
    }
    /* orthonormality of the GPU's basis */
    double *G = ALLOC(double, r * r);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)r, (int)n_out, 1.0, Vg,
                (int)r, Vg, (int)r, 0.0, G, (int)r);
    for (int64_t i = 0; i < r; i++)
      for (int64_t j = 0; j < r; j++) {
        e = fabs(G[i * r + j] - (i == j ? 1.0 : 0.0));
        worst_orth = (e <= worst_orth) ? worst_orth : (isnan(e) ? INFINITY : e);
      }
    free(G);
    /* the products, where the gap determines them (always at r = n_out <= n_in: V is square and
     * V V^T = I) */
    double lam_next = 0.0;
    const int square_v = r == n_out && n_out <= n_in;
    if (r < kmin && !square_v) {
      double *V2 = ALLOC(double, n_out * (r + 1)), *l2 = ALLOC(double, r + 1), tr2 = 0.0;
      const int rc2 = cloq_proj_solve(E, n_out, n_in, f, r + 1, V2, l2, &tr2);
      lam_next = l2[r];
      free(V2), free(l2);
      snprintf(sub, sizeof sub, "%s (at r=%lld, for lam_r+1)", name, (long long)(r + 1));
      if (!call_ok(sub, "cpu", rc2)) {
        call_failed = 1;
        goto next;
      }
    }
    const double gap = square_v ? INFINITY : (lc[r - 1] - lam_next) / lc[0];
    if (gap > GAP_REL) {
      e = product_diff(E, n_out, n_in, r, Vg, Vc);
      if (prod_at == 0 || !(e <= worst_prod)) {
        worst_prod = isnan(e) ? INFINITY : e;
        prod_at = r;
      }
      min_gap = fmin(min_gap, gap);
      compared++;
    } else {
      snprintf(skipped + strlen(skipped), sizeof skipped - strlen(skipped), "%sr=%lld (gap %.3g)",
               skipped[0] ? ", " : "", (long long)r, gap);
    }
  next:
    free(Vg), free(Vc), free(lg), free(lc);
  }
  set_timing(tg, tc);
  if (!call_failed) {
    snprintf(sub, sizeof sub, "%s: trace |gpu - cpu| / cpu", name);
    check_tol(sub, worst_tr, TRACE_TOL, NULL);
    timing[0] = 0;
    char extra[320];
    snprintf(extra, sizeof extra, "; worst at r=%lld; %lld out of descending order",
             (long long)lam_at, (long long)unsorted);
    snprintf(sub, sizeof sub, "%s: eigenvalues |gpu - cpu| / lam_1", name);
    check_tol(sub, unsorted ? INFINITY : worst_lam, LAM_TOL, extra);
    snprintf(sub, sizeof sub, "%s: gpu |V^T V - I|", name);
    check_tol(sub, worst_orth, ORTH_TOL, NULL);
    snprintf(sub, sizeof sub, "%s: |V V^T E gpu - cpu|_F / |cpu|_F", name);
    if (compared) {
      snprintf(extra, sizeof extra, "; worst at r=%lld; %d of %d ranks compared, smallest relative "
               "gap %.3g%s%s", (long long)prod_at, compared, nr, min_gap,
               skipped[0] ? "; not compared: " : "", skipped);
      check_tol(sub, worst_prod, PROD_TOL, extra);
    }
    if (skipped[0]) {
      printf("skip %s: not determined (relative gap (lam_r - lam_r+1) / lam_1 <= %.3g) at %s\n",
             sub, GAP_REL, skipped);
      fflush(stdout);
    }
  }
  free(E);
}

/* A solve that must fail on both sides: E (5, 3), C = I. */
static void check_proj_fail(const char *what, const double *E, int64_t r) {
  const int64_t n_out = 5, n_in = 3, rr = r > 0 ? r : 1;
  double *V = ALLOC(double, n_out * rr), *lam = ALLOC(double, rr), tr = 0.0;
  char name[128], mg[1024], mc[1024];
  snprintf(name, sizeof name, "proj (5, 3) r=%lld %s", (long long)r, what);
  cloq_err_clear();
  const int rg = cloq_dev_proj_solve(gpu, E, n_out, n_in, NULL, r, V, lam, &tr);
  snprintf(mg, sizeof mg, "%s", cloq_err_msg());
  cloq_err_clear();
  const int rc = cloq_proj_solve(E, n_out, n_in, NULL, r, V, lam, &tr);
  snprintf(mc, sizeof mc, "%s", cloq_err_msg());
  cloq_err_clear();
  check_both_fail(name, rg, mg, rc, mc, NULL);
  free(V), free(lam);
}

static void check_proj(void) {
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(base_seed, 4, 0));
  /* n_out, n_in, rows t of the Cholesky factor's H, rows t < n_in of the pivoted one's (0: none) */
  const int64_t shapes[][4] = {
      {64, 129, 258, 100}, /* output side; pivoted rank 100 >= n_out */
      {257, 64, 128, 40},  /* input side; pivoted rank 40 < n_in */
      {100, 100, 200, 70}, /* square (the output side) */
      {3, 7, 14, 3},
      {7, 3, 6, 1},
      {1, 1, 3, 0},
  };
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const int64_t n_out = shapes[s][0], n_in = shapes[s][1];
    const int64_t kmin = n_out < n_in ? n_out : n_in, mid = kmin / 8 > 2 ? kmin / 8 : 2;
    int64_t ranks[3];
    int nr = 0;
    ranks[nr++] = 1;
    if (mid < kmin) ranks[nr++] = mid;
    if (kmin > 1) ranks[nr++] = kmin;
    for (int kind = FACT_NONE; kind <= FACT_PIVOTED; kind++) {
      const int64_t t = kind == FACT_CHOL ? shapes[s][2] : shapes[s][3];
      cloq_hfactor f = {0};
      char desc[96] = "C=I";
      if (kind != FACT_NONE) {
        if (t == 0) continue;
        cloq_err_clear();
        if (!call_ok("proj: cpu factor of H", "cpu",
                     make_factor(kind, n_in, t, &g, &f, desc, sizeof desc)))
          continue;
      }
      check_proj_problem(n_out, n_in, kind == FACT_NONE ? NULL : &f, desc, ranks, nr, &g);
      cloq_hfactor_free(&f);
    }
  }
  /* failures: non-finite E, r outside [1, min(n_out, n_in)] */
  {
    double E[15];
    for (int i = 0; i < 15; i++) E[i] = 0.01 * cloq_rng_normal(&g);
    check_proj_fail("valid E", E, 0);
    check_proj_fail("valid E", E, 4);
    E[2 * 3 + 1] = NAN;
    check_proj_fail("NaN in E at (2, 1)", E, 2);
    E[2 * 3 + 1] = 0.0;
    E[4 * 3 + 0] = -INFINITY;
    check_proj_fail("-inf in E at (4, 0)", E, 2);
  }
  if (large_mode) { /* Llama-7B: the factor of a damped H of order 4096 from 2 x 2048 rows */
    cloq_hfactor f = {0};
    char desc[96];
    const int64_t r64[] = {64};
    cloq_err_clear();
    if (call_ok("proj: cpu factor of H", "cpu",
                make_factor(FACT_CHOL, 4096, 2 * 2048, &g, &f, desc, sizeof desc))) {
      check_proj_problem(4096, 4096, &f, desc, r64, 1, &g);
      check_proj_problem(11008, 4096, &f, desc, r64, 1, &g);
    }
    cloq_hfactor_free(&f);
  }
}

/* ---- 5. RTN ---------------------------------------------------------------------------------- */
/* RTN on the GPU is the CPU's float32 operations in the CPU's order: codes, scales and zeros
 * must be BITWISE equal (tolerance 0), for bits 2, 3, 4, 8 and groups -1, 32, 128 (n_in not a
 * multiple of the group, groups wider than the row). The weights include an all-zero group (the
 * [-1, 1] rule), an all-positive group (range extended to 0), -0.0 entries, outliers, and a group
 * of subnormal values (a flush-to-zero GPU build would quantize that group differently). The
 * failure cases (NaN, inf, a range that overflows float32, a scale that underflows to 0) must
 * fail on both sides with the same reason (the location prefix removed, see reason_of). */
static const int RTN_BITS[] = {2, 3, 4, 8};
static const int64_t RTN_GROUPS[] = {-1, 32, 128};

static void plant_rtn_specials(float *W, int64_t n_out, int64_t n_in) {
  if (n_in >= 64) /* row 0, columns 32..63: all zero */
    for (int64_t c = 32; c < 64; c++) W[c] = 0.0f;
  if (n_out >= 2 && n_in >= 32) /* row 1, columns 0..31: subnormal values */
    for (int64_t c = 0; c < 32; c++) W[n_in + c] = (float)((c % 7) - 3) * 0x1p-140f;
  if (n_out >= 3 && n_in >= 64) /* row 2, columns 32..63: all positive */
    for (int64_t c = 32; c < 64; c++) W[2 * n_in + c] = fabsf(W[2 * n_in + c]) + 0.01f;
  for (int64_t i = 5; i < n_out * n_in; i += 101) W[i] = -0.0f;
}

static void check_rtn_case(int64_t n_out, int64_t n_in, cloq_rng *g, int all_settings) {
  char name[160];
  float *W = ALLOC(float, n_out * n_in);
  make_weight(W, n_out, n_in, g);
  plant_rtn_specials(W, n_out, n_in);
  uint8_t *cg = ALLOC(uint8_t, n_out * n_in), *cc = ALLOC(uint8_t, n_out * n_in);
  const int64_t ngmax = n_in; /* room for any group size */
  float *sg = ALLOC(float, n_out * ngmax), *sc = ALLOC(float, n_out * ngmax);
  float *zg = ALLOC(float, n_out * ngmax), *zc = ALLOC(float, n_out * ngmax);
  int64_t diff_codes = 0, diff_sz = 0, n_codes = 0, n_sz = 0, settings = 0;
  char first[160] = "";
  double tg = 0.0, tc = 0.0;
  int call_failed = 0;
  for (size_t b = 0; b < sizeof RTN_BITS / sizeof RTN_BITS[0] && !call_failed; b++)
    for (size_t q = 0; q < sizeof RTN_GROUPS / sizeof RTN_GROUPS[0] && !call_failed; q++) {
      const int bits = all_settings ? RTN_BITS[b] : 4;
      const int64_t gs = all_settings ? RTN_GROUPS[q] : 128;
      if (!all_settings && (b > 0 || q > 0)) continue;
      const int64_t ng = cloq_quant_ngroups(n_in, gs);
      cloq_err_clear();
      const double t0 = now();
      const int rg = cloq_dev_quant_rtn(gpu, W, n_out, n_in, bits, gs, cg, sg, zg);
      const double t1 = now();
      const int rc = cloq_quant_rtn(W, n_out, n_in, bits, gs, cc, sc, zc);
      tg += t1 - t0, tc += now() - t1;
      snprintf(name, sizeof name, "rtn (%lld, %lld) bits=%d group=%lld", (long long)n_out,
               (long long)n_in, bits, (long long)gs);
      if (!call_ok(name, "gpu", rg) || !call_ok(name, "cpu", rc)) {
        call_failed = 1;
        break;
      }
      int64_t dc = 0, ds = 0;
      for (int64_t i = 0; i < n_out * n_in; i++) dc += cg[i] != cc[i];
      for (int64_t i = 0; i < n_out * ng; i++)
        ds += memcmp(&sg[i], &sc[i], sizeof(float)) != 0 || memcmp(&zg[i], &zc[i], sizeof(float));
      if ((dc || ds) && !first[0])
        snprintf(first, sizeof first, "; first difference at bits %d group %lld", bits,
                 (long long)gs);
      diff_codes += dc, diff_sz += ds, n_codes += n_out * n_in, n_sz += 2 * n_out * ng;
      settings++;
    }
  set_timing(tg, tc);
  if (!call_failed) {
    if (all_settings)
      snprintf(name, sizeof name, "rtn (%lld, %lld) bits 2,3,4,8 x groups -1,32,128",
               (long long)n_out, (long long)n_in);
    else
      snprintf(name, sizeof name, "rtn (%lld, %lld) bits=4 group=128", (long long)n_out,
               (long long)n_in);
    result(diff_codes == 0 && diff_sz == 0, name,
           "measured %lld of %lld codes, %lld of %lld scale/zero pairs not bitwise equal "
           "(tolerance 0) over %lld settings%s%s",
           (long long)diff_codes, (long long)n_codes, (long long)diff_sz, (long long)(n_sz / 2),
           (long long)settings, first, timing);
  }
  free(W), free(cg), free(cc), free(sg), free(sc), free(zg), free(zc);
}

/* One failure case of RTN: W (3, 40) normal with one planted value (or, with underflow set, one
 * group of +-2^-149, whose 8-bit scale 2^-148 / 255 rounds to 0). */
static void check_rtn_fail(const char *what, int bits, float planted, int underflow) {
  const int64_t n_out = 3, n_in = 40, gs = 16;
  float W[3 * 40];
  uint8_t codes[3 * 40];
  float scales[3 * 3], zeros[3 * 3];
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(base_seed, 5, 99));
  fill_normal_f(W, n_out * n_in, &g, 0.02);
  if (underflow) {
    for (int64_t c = 16; c < 32; c++) W[n_in + c] = (c % 2 ? 1.0f : -1.0f) * 0x1p-149f;
  } else if (isfinite(planted) && planted > 1e38f) { /* +-planted: the range overflows */
    W[2 * n_in + 20] = planted;
    W[2 * n_in + 21] = -planted;
  } else {
    W[2 * n_in + 21] = planted;
  }
  char name[128], mg[1024], mc[1024];
  snprintf(name, sizeof name, "rtn (3, 40) bits=%d group=16 %s", bits, what);
  cloq_err_clear();
  const int rg = cloq_dev_quant_rtn(gpu, W, n_out, n_in, bits, gs, codes, scales, zeros);
  snprintf(mg, sizeof mg, "%s", cloq_err_msg());
  cloq_err_clear();
  const int rc = cloq_quant_rtn(W, n_out, n_in, bits, gs, codes, scales, zeros);
  snprintf(mc, sizeof mc, "%s", cloq_err_msg());
  cloq_err_clear();
  check_both_fail(name, rg, mg, rc, mc, NULL);
}

static void check_rtn(void) {
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(base_seed, 5, 0));
  const int64_t shapes[][2] = {{1, 1}, {7, 129}, {64, 257}, {33, 300}, {16, 64}, {3, 7}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    check_rtn_case(shapes[s][0], shapes[s][1], &g, 1);
  check_rtn_fail("NaN at (2, 21)", 4, NAN, 0);
  check_rtn_fail("inf at (2, 21)", 3, INFINITY, 0);
  check_rtn_fail("range [-3e38, 3e38] overflows", 2, 3e38f, 0);
  check_rtn_fail("scale of a +-2^-149 group underflows", 8, 0.0f, 1);
  if (large_mode) {
    check_rtn_case(4096, 4096, &g, 0);
    check_rtn_case(11008, 4096, &g, 0);
  }
}

/* ---- 6. GPTQ --------------------------------------------------------------------------------- */
/* tr((W - Q) H (W - Q)^T), Q the dequantized codes, H the full symmetric undamped Gram matrix;
 * float64 (dsymm for E H). */
static double gptq_objective(const float *W, const uint8_t *codes, const float *scales,
                             const float *zeros, int64_t n_out, int64_t n_in, int64_t gs,
                             const double *H) {
  float *Q = ALLOC(float, n_out * n_in);
  double *E = ALLOC(double, n_out * n_in), *F = ALLOC(double, n_out * n_in);
  cloq_dequant(codes, scales, zeros, n_out, n_in, gs, Q);
  for (int64_t i = 0; i < n_out * n_in; i++) E[i] = (double)W[i] - (double)Q[i];
  cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, (int)n_out, (int)n_in, 1.0, H, (int)n_in,
              E, (int)n_in, 0.0, F, (int)n_in);
  double total = 0.0;
  for (int64_t i = 0; i < n_out * n_in; i++) total += E[i] * F[i];
  free(Q), free(E), free(F);
  return total;
}

typedef struct {
  int64_t n_out, n_in, t, ndead;
} gptq_problem;

/* Codes: differing entries <= GPTQ_CODE_FRAC of the problem's codes, and at least one row
 * (n_in) is allowed; scales/zeros: bitwise equal wherever the contract makes them independent of
 * the codes that differ: always with act_order or group -1 (computed from the step-1 W before
 * any update), and, for dynamic groups, in every (row, group) with no differing code of that row
 * before the group's first column (a group's scale is taken from W updated by exactly those
 * columns); objective: see GPTQ_OBJ_TOL. */
static void check_gptq_problem(const gptq_problem *pr, int all_settings, int64_t *tot_codes,
                               int64_t *tot_diff, cloq_rng *g) {
  const int64_t n_out = pr->n_out, n_in = pr->n_in, t = pr->t;
  char name[160], sub[256];
  snprintf(name, sizeof name, "gptq (%lld, %lld) t=%lld dead=%lld", (long long)n_out,
           (long long)n_in, (long long)t, (long long)pr->ndead);
  float *X = ALLOC(float, t * n_in), *W = ALLOC(float, n_out * n_in);
  double *H = ALLOC(double, n_in * n_in);
  make_x(X, t, n_in, 1.0, pr->ndead, g);
  gram_full(X, t, n_in, H);
  make_weight(W, n_out, n_in, g);
  free(X);
  uint8_t *cg = ALLOC(uint8_t, n_out * n_in), *cc = ALLOC(uint8_t, n_out * n_in);
  float *sg = ALLOC(float, n_out * n_in), *sc = ALLOC(float, n_out * n_in);
  float *zg = ALLOC(float, n_out * n_in), *zc = ALLOC(float, n_out * n_in);
  const int bits_list[] = {2, 3, 4};
  const int64_t groups[] = {-1, 32, 128}, blocks[] = {128, 32};
  int64_t codes = 0, diff = 0, sz_req = 0, sz_diff = 0, settings = 0, mism_settings = 0;
  double worst_obj = 0.0, worst_obj_mism = 0.0;
  char first_sz[160] = "", worst_at[160] = "";
  double tg = 0.0, tc = 0.0;
  int call_failed = 0;
  for (int b = 0; b < 3 && !call_failed; b++)
    for (int q = 0; q < 3 && !call_failed; q++)
      for (int ao = 0; ao < 2 && !call_failed; ao++)
        for (int bl = 0; bl < 2 && !call_failed; bl++) {
          cloq_gptq_params p = {.bits = bits_list[b], .group_size = groups[q], .damp = 0.01,
                                .act_order = ao, .block = blocks[bl]};
          if (!all_settings) {
            if (b || q || bl) continue;
            p.bits = 4, p.group_size = 128, p.block = 128;
            p.act_order = n_out > n_in; /* (11008, 4096) with act_order, (4096, 4096) without */
            if (ao) continue;
          }
          const int64_t gs = p.group_size, ng = cloq_quant_ngroups(n_in, gs);
          const int64_t gw = (gs == -1 || gs > n_in) ? n_in : gs;
          snprintf(sub, sizeof sub, "%s bits=%d group=%lld act_order=%d block=%lld", name,
                   p.bits, (long long)gs, p.act_order, (long long)p.block);
          cloq_err_clear();
          const double t0 = now();
          const int rg = cloq_dev_quant_gptq(gpu, W, n_out, n_in, H, &p, cg, sg, zg);
          const double t1 = now();
          const int rc = cloq_quant_gptq(W, n_out, n_in, H, &p, cc, sc, zc);
          tg += t1 - t0, tc += now() - t1;
          if (!call_ok(sub, "gpu", rg) || !call_ok(sub, "cpu", rc)) {
            call_failed = 1;
            break;
          }
          int64_t dc = 0;
          for (int64_t r = 0; r < n_out; r++) {
            int64_t fd = n_in; /* first differing column of the row */
            for (int64_t c = 0; c < n_in; c++)
              if (cg[r * n_in + c] != cc[r * n_in + c]) {
                if (fd == n_in) fd = c;
                dc++;
              }
            for (int64_t k = 0; k < ng; k++) {
              if (!(p.act_order || fd >= k * gw)) continue;
              sz_req++;
              const int64_t i = r * ng + k;
              if (memcmp(&sg[i], &sc[i], sizeof(float)) || memcmp(&zg[i], &zc[i], sizeof(float))) {
                sz_diff++;
                if (!first_sz[0])
                  snprintf(first_sz, sizeof first_sz,
                           "; first at bits %d group %lld act_order %d block %lld row %lld "
                           "group %lld",
                           p.bits, (long long)gs, p.act_order, (long long)p.block, (long long)r,
                           (long long)k);
              }
            }
          }
          const double og = gptq_objective(W, cg, sg, zg, n_out, n_in, gs, H);
          const double oc = gptq_objective(W, cc, sc, zc, n_out, n_in, gs, H);
          double rel = fabs(og - oc) / oc;
          if (isnan(rel)) rel = INFINITY;
          if (dc) {
            mism_settings++;
            worst_obj_mism = fmax(worst_obj_mism, rel);
          } else if (rel >= worst_obj) {
            worst_obj = rel;
            snprintf(worst_at, sizeof worst_at, " at bits %d group %lld act_order %d block %lld",
                     p.bits, (long long)gs, p.act_order, (long long)p.block);
          }
          codes += n_out * n_in, diff += dc, settings++;
        }
  set_timing(tg, tc);
  if (!call_failed) {
    const double code_tol = fmax(GPTQ_CODE_FRAC * (double)codes, (double)n_in);
    snprintf(sub, sizeof sub, "%s, %lld settings: differing codes", name, (long long)settings);
    result((double)diff <= code_tol, sub, "measured %lld of %lld (tolerance %.0f)%s",
           (long long)diff, (long long)codes, code_tol, timing);
    timing[0] = 0;
    snprintf(sub, sizeof sub, "%s, %lld settings: scales/zeros not bitwise equal", name,
             (long long)settings);
    result(sz_diff == 0, sub, "measured %lld of %lld required-equal pairs (tolerance 0)%s",
           (long long)sz_diff, (long long)sz_req, first_sz);
    snprintf(sub, sizeof sub, "%s, %lld settings: objective relative difference", name,
             (long long)settings);
    char extra[256] = "";
    if (mism_settings)
      snprintf(extra, sizeof extra, "%s; %lld settings with differing codes: worst %.3g "
               "(tolerance %.3g)", worst_obj > 0.0 ? worst_at : "", (long long)mism_settings, worst_obj_mism,
               GPTQ_OBJ_TOL_MISMATCH);
    else if (worst_obj > 0.0)
      snprintf(extra, sizeof extra, "%s", worst_at);
    result(worst_obj <= GPTQ_OBJ_TOL && worst_obj_mism <= GPTQ_OBJ_TOL_MISMATCH, sub,
           "measured %.3g (tolerance %.3g)%s", worst_obj, GPTQ_OBJ_TOL, extra);
    *tot_codes += codes, *tot_diff += diff;
  }
  free(W), free(H), free(cg), free(cc), free(sg), free(sc), free(zg), free(zc);
}

/* A GPTQ call that must fail on both sides. */
static void check_gptq_fail(const char *what, const float *W, int64_t n_out, int64_t n_in,
                            const double *H, double damp, const char *needle) {
  const cloq_gptq_params p = {.bits = 4, .group_size = 8, .damp = damp, .act_order = 0,
                              .block = 4};
  uint8_t *codes = ALLOC(uint8_t, n_out * n_in);
  float *scales = ALLOC(float, n_out * n_in), *zeros = ALLOC(float, n_out * n_in);
  char name[160], mg[1024], mc[1024];
  snprintf(name, sizeof name, "gptq (%lld, %lld) %s", (long long)n_out, (long long)n_in, what);
  cloq_err_clear();
  const int rg = cloq_dev_quant_gptq(gpu, W, n_out, n_in, H, &p, codes, scales, zeros);
  snprintf(mg, sizeof mg, "%s", cloq_err_msg());
  cloq_err_clear();
  const int rc = cloq_quant_gptq(W, n_out, n_in, H, &p, codes, scales, zeros);
  snprintf(mc, sizeof mc, "%s", cloq_err_msg());
  cloq_err_clear();
  check_both_fail(name, rg, mg, rc, mc, needle);
  free(codes), free(scales), free(zeros);
}

static void check_gptq_failures(cloq_rng *g) {
  const int64_t n_out = 4, n = 16;
  float *W = ALLOC(float, n_out * n);
  double *H = ALLOC(double, n * n);
  float *X = ALLOC(float, 10 * n);
  make_weight(W, n_out, n, g);
  /* H = ones (X one row of ones), damp 0: rank 1, the second Cholesky pivot is exactly
   * 1 - 1 * 1 = 0 in any order, so both must report a non-positive-definite matrix */
  for (int64_t i = 0; i < n * n; i++) H[i] = 1.0;
  check_gptq_fail("H = ones, damp 0 (rank 1)", W, n_out, n, H, 0.0, "not positive definite");
  /* indefinite: X^T X of 10 rows minus 0.1 mean(diag) I (n - 10 eigenvalues at -0.1 mean),
   * damp 0.01 adds back only 0.001 mean */
  fill_normal_f(X, 10 * n, g, 1.0);
  gram_full(X, 10, n, H);
  double tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += H[i * n + i];
  for (int64_t i = 0; i < n; i++) H[i * n + i] -= 0.1 * tr / (double)n;
  check_gptq_fail("indefinite H, damp 0.01", W, n_out, n, H, 0.01, "not positive definite");
  /* non-finite inputs: the same reason on both sides */
  gram_full(X, 10, n, H);
  for (int64_t i = 0; i < n; i++) H[i * n + i] += 1.0;
  const float w_saved = W[1 * n + 5];
  W[1 * n + 5] = NAN;
  check_gptq_fail("NaN in W at (1, 5)", W, n_out, n, H, 0.01, NULL);
  W[1 * n + 5] = w_saved;
  H[2 * n + 9] = INFINITY;
  check_gptq_fail("inf in H at (2, 9)", W, n_out, n, H, 0.01, NULL);
  free(W), free(H), free(X);
}

static void check_gptq(void) {
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(base_seed, 6, 0));
  const gptq_problem probs[] = {
      {16, 129, 300, 1}, /* t > n, one dead column */
      {24, 257, 200, 2}, /* t < n: rank-deficient, definite only through the damping */
      {8, 64, 150, 0},
      {1, 7, 20, 1},
      {12, 300, 600, 3},
  };
  int64_t tot_codes = 0, tot_diff = 0;
  for (size_t i = 0; i < sizeof probs / sizeof probs[0]; i++)
    check_gptq_problem(&probs[i], 1, &tot_codes, &tot_diff, &g);
  check_gptq_failures(&g);
  if (large_mode) {
    const gptq_problem big[] = {{4096, 4096, 2048, 3}, {11008, 4096, 2048, 3}};
    for (size_t i = 0; i < 2; i++) check_gptq_problem(&big[i], 0, &tot_codes, &tot_diff, &g);
  }
  timing[0] = 0;
  char extra[64];
  snprintf(extra, sizeof extra, " (%lld of %lld codes)", (long long)tot_diff,
           (long long)tot_codes);
  check_tol("gptq all problems: fraction of differing codes",
            tot_codes ? (double)tot_diff / (double)tot_codes : 0.0, GPTQ_CODE_FRAC, extra);
}

/* ---- main ------------------------------------------------------------------------------------ */
static int usage(const char *argv0) {
  fprintf(stderr, "usage: %s [--seed S] [--large]\n", argv0);
  return 2;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--large") == 0) {
      large_mode = 1;
    } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      char *end = NULL;
      base_seed = strtoull(argv[++i], &end, 0);
      if (!end || *end) return usage(argv[0]);
    } else {
      return usage(argv[0]);
    }
  }
  char notice[512] = "";
  cloq_err_clear();
  if (cloq_dev_open("cuda", 0, &gpu, notice, sizeof notice) != 0) {
    const char *why = cloq_err_msg()[0] ? cloq_err_msg() : notice[0] ? notice
                                                         : "cloq_dev_open(\"cuda\") failed";
    printf("skipped: %s\n", why);
    return 77;
  }
  if (!cloq_dev_is_gpu(gpu)) { /* comparing the CPU with itself would prove nothing */
    printf("skipped: cloq_dev_open(\"cuda\") returned a device that is not a GPU (%s)\n",
           cloq_dev_name(gpu));
    cloq_dev_close(&gpu);
    return 77;
  }
  printf("device: %s; cpu reference; seed %llu%s\n", cloq_dev_name(gpu),
         (unsigned long long)base_seed, large_mode ? "; --large" : "");
  fflush(stdout);
  const double t0 = now();
  check_sgemm();
  check_gram();
  check_factor();
  check_proj();
  check_rtn();
  check_gptq();
  cloq_dev_close(&gpu);
  printf("%s: %d of %d checks failed (seed %llu, %.1f s)\n", n_failed ? "FAILED" : "passed",
         n_failed, n_checks, (unsigned long long)base_seed, now() - t0);
  return n_failed ? 1 : 0;
}
