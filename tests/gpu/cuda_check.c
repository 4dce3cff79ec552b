/* cuda_check: the CUDA path of cloq_backend.h against the CPU path, on fresh random inputs.
 *
 *   cuda_check [--seed S] [--large]
 *
 * Every dispatched operation (cloq_dev_sgemm, _gram_accumulate, _eig_damped, _svd_trunc,
 * _quant_rtn, _quant_gptq) runs on the GPU and its result is compared with the CPU function of
 * the same name in cloq_linalg.h (cblas_sgemm for the GEMM), which is the reference. One line per
 * check: "ok   name: measured X (tolerance Y)" or "FAIL name: ...", then a summary line.
 * Exit status: 0 when every check passes, 1 when one fails, 77 (meson's "skipped") when
 * cloq_dev_open("cuda") fails (no CUDA in the build, no device): the reason is printed.
 *
 * The default sizes are small (n up to 300, odd sizes such as 1, 7, 129, 257 included) and take
 * about a second. --large adds Llama-7B shapes (Gram n = 4096 from 2 x 2048 rows, eig n = 4096, SVD of a
 * (4096, 4096) matrix truncated to 64, RTN and GPTQ of (4096, 4096) and (11008, 4096) with
 * groups of 128, sgemm m = 2048, k = 4096, n = 11008) and prints the wall times of the GPU and
 * the CPU call of each; the CPU side of those is slow on a small machine (minutes).
 *
 * Every tolerance is stated next to the check with the reason it is sound. u32 = 2^-24 and
 * u64 = 2^-53 are the unit roundoffs of float32 and float64, gamma(n) = n u / (1 - n u) the
 * usual bound on the rounding of an n-term sum (Higham, Accuracy and Stability, ch. 3).
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

/* Eigenvalues (and the reconstruction U diag(s) U^T - Hd, and U^T U - I), relative to max |s|:
 * dsyevd and cusolverDnDsyevd are backward stable, ||U diag(s) U^T - Hd|| <= p(n) u64 ||Hd||
 * with p(n) a modest multiple of n, and by Weyl each eigenvalue moves by at most as much; for
 * n = 4096 that is ~5e-13 x a small constant, so 1e-10 leaves a margin of 100 or more, while a
 * float32 step (~1e-7) or a wrong damping shows at once. Raising clamped eigenvalues to the
 * floor 1e-12 max|s| moves the reconstruction by at most that floor, also far inside. */
static const double EIG_TOL = 1e-10;
/* Singular values relative to the largest, and orthonormality of P and Vt: same argument
 * (dgesdd and cusolverDnDgesvd are backward stable). */
static const double SVD_TOL = 1e-10;
/* Rank-r reconstruction P diag(S) Vt, GPU vs CPU, relative to S[0]: unique when S[r-1] >
 * S[r]; it moves by about (backward error) x S[0] / gap. With backward errors ~1e-14 S[0] in
 * practice, 1e-9 holds for relative gaps above ~1e-5; the gap is printed with the result (the
 * random test matrices have a decaying spectrum, which keeps gaps far larger). */
static const double SVD_RECON_TOL = 1e-9;
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

/* ---- 3. damped eigendecomposition ------------------------------------------------------------ */
/* Eigenvalues, GPU vs CPU: max |sg - sc| / max |sc| <= EIG_TOL; eigenvectors through the GPU's
 * reconstruction max |Ug diag(sg) Ug^T - Hd| / max |sc| <= EIG_TOL and orthogonality
 * max |Ug^T Ug - I| <= EIG_TOL (signs and the basis of close eigenvalues are arbitrary, so no
 * entrywise comparison); eigenvalues ascending; nclamped equal on both sides. With damp 0 and
 * t < n, X^T X has exactly n - t zero eigenvalues: both must clamp exactly those (their computed
 * values are rounding noise ~sqrt(n) u64 max|s|, far below the floor 1e-12 max|s|, and the
 * plain normal X used there keeps the t non-zero ones far above it). A clamped eigenvalue is
 * raised to the floor, which moves the reconstruction by <= 1e-12 max|s|, inside EIG_TOL. */
static void check_eig_case(int64_t n, int64_t t, double damp, cloq_rng *g) {
  char name[128], sub[192];
  snprintf(name, sizeof name, "eig n=%lld t=%lld damp=%g", (long long)n, (long long)t, damp);
  const int expect_clamp = damp == 0.0 && t < n;
  float *X = ALLOC(float, t * n);
  double *H = ALLOC(double, n * n), *Hd = ALLOC(double, n * n);
  double *sg = ALLOC(double, n), *sc = ALLOC(double, n);
  double *Ug = ALLOC(double, n * n), *Uc = ALLOC(double, n * n);
  if (expect_clamp)
    fill_normal_f(X, t * n, g, 1.0);
  else
    make_x(X, t, n, 1.0, n > 2 ? 1 : 0, g);
  gram_full(X, t, n, H);
  double tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += H[i * n + i];
  memcpy(Hd, H, (size_t)(n * n) * sizeof *Hd);
  for (int64_t i = 0; i < n; i++) Hd[i * n + i] += damp * (tr / (double)n);
  int64_t kg = -1, kc = -1;
  cloq_err_clear();
  const double t0 = now();
  const int rg = cloq_dev_eig_damped(gpu, H, n, damp, sg, Ug, &kg);
  const double t1 = now();
  const int rcpu = cloq_eig_damped(H, n, damp, sc, Uc, &kc);
  set_timing(t1 - t0, now() - t1);
  if (!call_ok(name, "gpu", rg) || !call_ok(name, "cpu", rcpu)) goto done;

  double smax = 0.0, dv = 0.0;
  int64_t unsorted = 0;
  for (int64_t i = 0; i < n; i++) smax = fmax(smax, fabs(sc[i]));
  for (int64_t i = 0; i < n; i++) {
    const double d = fabs(sg[i] - sc[i]);
    dv = (d <= dv) ? dv : (isnan(d) ? INFINITY : d);
    if (i > 0 && !(sg[i - 1] <= sg[i])) unsorted++;
  }
  snprintf(sub, sizeof sub, "%s: eigenvalues |gpu - cpu| / max|s|", name);
  char extra[96];
  snprintf(extra, sizeof extra, "; %lld out of ascending order", (long long)unsorted);
  check_tol(sub, unsorted ? INFINITY : dv / smax, EIG_TOL, extra);
  timing[0] = 0;

  snprintf(sub, sizeof sub, "%s: nclamped", name);
  if (expect_clamp)
    result(kg == kc && kc == n - t, sub, "gpu %lld, cpu %lld (expected %lld = n - t)",
           (long long)kg, (long long)kc, (long long)(n - t));
  else
    result(kg == kc, sub, "gpu %lld, cpu %lld (must be equal)", (long long)kg, (long long)kc);

  /* reconstruction Ug diag(sg) Ug^T and orthogonality Ug^T Ug, by dgemm */
  double *T = ALLOC(double, n * n), *R = ALLOC(double, n * n);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) T[i * n + j] = Ug[i * n + j] * sg[j];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)n, 1.0, T, (int)n,
              Ug, (int)n, 0.0, R, (int)n);
  double rec = 0.0;
  for (int64_t i = 0; i < n * n; i++) {
    const double d = fabs(R[i] - Hd[i]);
    rec = (d <= rec) ? rec : (isnan(d) ? INFINITY : d);
  }
  snprintf(sub, sizeof sub, "%s: gpu |U diag(s) U^T - Hd| / max|s|", name);
  check_tol(sub, rec / smax, EIG_TOL, NULL);
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0, Ug, (int)n,
              Ug, (int)n, 0.0, R, (int)n);
  double orth = 0.0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      const double d = fabs(R[i * n + j] - (i == j ? 1.0 : 0.0));
      orth = (d <= orth) ? orth : (isnan(d) ? INFINITY : d);
    }
  snprintf(sub, sizeof sub, "%s: gpu |U^T U - I|", name);
  check_tol(sub, orth, EIG_TOL, NULL);
  free(T), free(R);
done:
  free(X), free(H), free(Hd), free(sg), free(sc), free(Ug), free(Uc);
}

static void check_eig(void) {
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(base_seed, 3, 0));
  /* n, t, damp */
  check_eig_case(1, 3, 0.01, &g);
  check_eig_case(7, 20, 0.01, &g);
  check_eig_case(64, 200, 0.01, &g);
  check_eig_case(129, 60, 0.01, &g); /* t < n, made definite by the damping */
  check_eig_case(257, 400, 0.01, &g);
  check_eig_case(7, 3, 0.0, &g);     /* t < n, undamped: n - t clamped */
  check_eig_case(129, 60, 0.0, &g);
  check_eig_case(300, 100, 0.0, &g);
  /* failure: a non-finite entry, the same reason on both sides */
  {
    const int64_t n = 9;
    double *H = ALLOC(double, n * n), *s = ALLOC(double, n), *U = ALLOC(double, n * n);
    for (int64_t i = 0; i < n; i++) H[i * n + i] = 1.0 + (double)i;
    H[3 * n + 5] = H[5 * n + 3] = NAN;
    char mg[1024], mc[1024];
    int64_t k = 0;
    cloq_err_clear();
    const int rg = cloq_dev_eig_damped(gpu, H, n, 0.01, s, U, &k);
    snprintf(mg, sizeof mg, "%s", cloq_err_msg());
    cloq_err_clear();
    const int rc = cloq_eig_damped(H, n, 0.01, s, U, &k);
    snprintf(mc, sizeof mc, "%s", cloq_err_msg());
    cloq_err_clear();
    check_both_fail("eig n=9 NaN in H", rg, mg, rc, mc, NULL);
    free(H), free(s), free(U);
  }
  if (large_mode) check_eig_case(4096, 2048, 0.01, &g);
}

/* ---- 4. truncated SVD ------------------------------------------------------------------------ */
/* M (m, n) = Z diag(d), Z normal, d_j = exp(-3 j / n): a decaying spectrum, so consecutive
 * singular values are well separated. Singular values |Sg - Sc| / Sc[0] <= SVD_TOL (and
 * descending); the rank-r product P diag(S) Vt, in which signs cancel, GPU vs CPU, relative to
 * Sc[0], <= SVD_RECON_TOL (the relative gap (S[r-1] - S[r]) / S[0] is printed); the GPU's P and
 * Vt orthonormal (max |P^T P - I|, max |Vt Vt^T - I| <= SVD_TOL). */
static void check_svd_case(int64_t m, int64_t n, int64_t r, cloq_rng *g) {
  char name[128], sub[192];
  snprintf(name, sizeof name, "svd (%lld, %lld) r=%lld", (long long)m, (long long)n,
           (long long)r);
  const int64_t kmin = m < n ? m : n;
  double *M = ALLOC(double, m * n);
  double *Pg = ALLOC(double, m * r), *Pc = ALLOC(double, m * r);
  double *Sg = ALLOC(double, r), *Sc = ALLOC(double, r);
  double *Vg = ALLOC(double, r * n), *Vc = ALLOC(double, r * n);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) M[i * n + j] = cloq_rng_normal(g) * exp(-3.0 * j / n);
  cloq_err_clear();
  const double t0 = now();
  const int rg = cloq_dev_svd_trunc(gpu, M, m, n, r, Pg, Sg, Vg);
  const double t1 = now();
  const int rcpu = cloq_svd_trunc(M, m, n, r, Pc, Sc, Vc);
  set_timing(t1 - t0, now() - t1);
  if (!call_ok(name, "gpu", rg) || !call_ok(name, "cpu", rcpu)) goto done;
  double gap = INFINITY; /* full rank: the product is M itself */
  if (r < kmin) { /* S[r] from one more triplet (on the GPU, for speed; only printed) */
    double *P2 = ALLOC(double, m * (r + 1)), *S2 = ALLOC(double, r + 1);
    double *V2 = ALLOC(double, (r + 1) * n);
    gap = cloq_dev_svd_trunc(gpu, M, m, n, r + 1, P2, S2, V2) == 0 ? (S2[r - 1] - S2[r]) / S2[0]
                                                                    : NAN;
    cloq_err_clear();
    free(P2), free(S2), free(V2);
  }

  double dv = 0.0;
  int64_t unsorted = 0;
  for (int64_t i = 0; i < r; i++) {
    const double d = fabs(Sg[i] - Sc[i]);
    dv = (d <= dv) ? dv : (isnan(d) ? INFINITY : d);
    if (i > 0 && !(Sg[i - 1] >= Sg[i])) unsorted++;
  }
  char extra[128];
  snprintf(extra, sizeof extra, "; %lld out of descending order", (long long)unsorted);
  snprintf(sub, sizeof sub, "%s: singular values |gpu - cpu| / S[0]", name);
  check_tol(sub, unsorted ? INFINITY : dv / Sc[0], SVD_TOL, extra);
  timing[0] = 0;

  /* rank-r products */
  double *T = ALLOC(double, m * r), *Rg = ALLOC(double, m * n), *Rc = ALLOC(double, m * n);
  for (int side = 0; side < 2; side++) {
    const double *P = side ? Pc : Pg, *S = side ? Sc : Sg, *V = side ? Vc : Vg;
    for (int64_t i = 0; i < m; i++)
      for (int64_t l = 0; l < r; l++) T[i * r + l] = P[i * r + l] * S[l];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)r, 1.0, T,
                (int)r, V, (int)n, 0.0, side ? Rc : Rg, (int)n);
  }
  double rec = 0.0;
  for (int64_t i = 0; i < m * n; i++) {
    const double d = fabs(Rg[i] - Rc[i]);
    rec = (d <= rec) ? rec : (isnan(d) ? INFINITY : d);
  }
  if (isnan(gap))
    snprintf(extra, sizeof extra, "; gap not computed");
  else if (isinf(gap))
    snprintf(extra, sizeof extra, "; full rank");
  else
    snprintf(extra, sizeof extra, "; relative gap S[r-1] - S[r] = %.3g", gap);
  snprintf(sub, sizeof sub, "%s: |P S Vt gpu - cpu| / S[0]", name);
  check_tol(sub, rec / Sc[0], SVD_RECON_TOL, extra);

  double *G = ALLOC(double, r * r), orth = 0.0;
  for (int side = 0; side < 2; side++) {
    if (side == 0) /* P^T P */
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)r, (int)m, 1.0, Pg,
                  (int)r, Pg, (int)r, 0.0, G, (int)r);
    else /* Vt Vt^T */
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)r, (int)n, 1.0, Vg,
                  (int)n, Vg, (int)n, 0.0, G, (int)r);
    for (int64_t i = 0; i < r; i++)
      for (int64_t j = 0; j < r; j++) {
        const double d = fabs(G[i * r + j] - (i == j ? 1.0 : 0.0));
        orth = (d <= orth) ? orth : (isnan(d) ? INFINITY : d);
      }
  }
  snprintf(sub, sizeof sub, "%s: gpu max(|P^T P - I|, |Vt Vt^T - I|)", name);
  check_tol(sub, orth, SVD_TOL, NULL);
  free(T), free(Rg), free(Rc), free(G);
done:
  free(M), free(Pg), free(Pc), free(Sg), free(Sc), free(Vg), free(Vc);
}

static void check_svd(void) {
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(base_seed, 4, 0));
  /* m > n, m < n, m == n; r in {1, small, min(m, n)} */
  const int64_t cases[][3] = {{1, 1, 1},      {7, 3, 1},      {7, 3, 3},       {129, 64, 1},
                              {129, 64, 8},   {129, 64, 64},  {64, 257, 1},    {64, 257, 5},
                              {64, 257, 64},  {100, 100, 1},  {100, 100, 10},  {100, 100, 100},
                              {3, 7, 2}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    check_svd_case(cases[c][0], cases[c][1], cases[c][2], &g);
  /* failure: a non-finite entry */
  {
    double M[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, P[8], S[2], V[6];
    M[7] = INFINITY;
    char mg[1024], mc[1024];
    cloq_err_clear();
    const int rg = cloq_dev_svd_trunc(gpu, M, 4, 3, 2, P, S, V);
    snprintf(mg, sizeof mg, "%s", cloq_err_msg());
    cloq_err_clear();
    const int rc = cloq_svd_trunc(M, 4, 3, 2, P, S, V);
    snprintf(mc, sizeof mc, "%s", cloq_err_msg());
    cloq_err_clear();
    check_both_fail("svd (4, 3) r=2 inf in M", rg, mg, rc, mc, NULL);
  }
  if (large_mode) check_svd_case(4096, 4096, 64, &g);
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
  check_eig();
  check_svd();
  check_rtn();
  check_gptq();
  cloq_dev_close(&gpu);
  printf("%s: %d of %d checks failed (seed %llu, %.1f s)\n", n_failed ? "FAILED" : "passed",
         n_failed, n_checks, (unsigned long long)base_seed, now() - t0);
  return n_failed ? 1 : 0;
}
