/* cloq-bench-kernels: this machine's own rates for the kernels cloq's stages spend their time in,
 * at the sizes of a given model, so that bench/README.md can state achieved GFLOP/s against
 * what the machine does on the same operation in the same run.
 *
 *   cloq-bench-kernels T D MLP [R]
 * T tokens per sample, D hidden size, MLP intermediate size, R LoRA rank (default 16). Prints one
 * line per kernel: name, shape, seconds (best of 3 where repeated), GFLOP/s: sgemm (the
 * forward), dsyrk (the Gram update), dpotrf (the factor of Hd), dtrmm (F = E C), dsyevr with
 * range 'I' (the top-R eigenpairs: the init's solve), and dsyevd / dgesdd (the paper's form). Uses the threads OpenBLAS is given
 * (OPENBLAS_NUM_THREADS). Not a test: figures only. */
#include <cblas.h>
#include <lapacke.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cloq_clock.h"
#include "cloq_linalg.h"

static void fill(double *x, int64_t n, cloq_rng *g) {
  for (int64_t i = 0; i < n; i++) x[i] = cloq_rng_normal(g);
}

static void report(const char *name, const char *shape, double sec, double flops) {
  printf("%-8s %-22s %9.4f s %8.1f GFLOP/s\n", name, shape, sec, flops / sec * 1e-9);
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: cloq-bench-kernels T D MLP [R]\n");
    return 2;
  }
  int T = atoi(argv[1]), D = atoi(argv[2]), H = atoi(argv[3]), R = argc > 4 ? atoi(argv[4]) : 16;
  cloq_rng g;
  cloq_rng_seed(&g, 1);
  char shape[64];
  int big = H > D ? H : D;
  /* sgemm: the forward's linears, (T, n_in) x (n_in, n_out) */
  {
    float *x = malloc((size_t)T * big * 4), *w = malloc((size_t)big * big * 4),
          *y = malloc((size_t)T * big * 4);
    for (int64_t i = 0; i < (int64_t)T * big; i++) x[i] = (float)cloq_rng_normal(&g);
    for (int64_t i = 0; i < (int64_t)big * big; i++) w[i] = (float)cloq_rng_normal(&g) * 0.01f;
    double best = 1e30;
    for (int k = 0; k < 3; k++) {
      double t0 = cloq_now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, H, D, 1.0f, x, D, w, D, 0.0f, y, H);
      double t = cloq_now() - t0;
      if (t < best) best = t;
    }
    snprintf(shape, sizeof shape, "%dx%d * %dx%d", T, D, D, H);
    report("sgemm", shape, best, 2.0 * T * (double)D * H);
    free(x), free(w), free(y);
  }
  /* dsyrk: one sample's Gram update, H (n, n) += X^T X, n = D and MLP */
  int ns[2] = {D, H};
  for (int j = 0; j < 2; j++) {
    int n = ns[j];
    double *x = malloc((size_t)T * n * 8), *h = calloc((size_t)n * n, 8);
    fill(x, (int64_t)T * n, &g);
    double best = 1e30;
    for (int k = 0; k < 3; k++) {
      double t0 = cloq_now();
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, T, 1.0, x, n, 1.0, h, n);
      double t = cloq_now() - t0;
      if (t < best) best = t;
    }
    snprintf(shape, sizeof shape, "n %d, t %d", n, T);
    report("dsyrk", shape, best, (double)T * n * (n + 1.0));
    free(x), free(h);
  }
  /* dsyevd: the eigendecomposition of a damped Gram matrix, n = D and MLP */
  for (int j = 0; j < 2; j++) {
    int n = ns[j];
    double *x = malloc((size_t)2 * n * n * 8), *a = malloc((size_t)n * n * 8),
           *w = malloc((size_t)n * 8);
    fill(x, (int64_t)2 * n * n, &g);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, 2 * n, 1.0, x, n, 0.0, a, n);
    double t0 = cloq_now();
    int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', n, a, n, w);
    double t = cloq_now() - t0;
    snprintf(shape, sizeof shape, "n %d", n);
    if (info == 0) report("dsyevd", shape, t, 4.7 * (double)n * n * n);
    free(x), free(a), free(w);
  }
  /* dpotrf and dtrmm: the factor of Hd (n = D and MLP) and F = E C for a D x D and a D x MLP
   * module */
  for (int j = 0; j < 2; j++) {
    int n = ns[j], no = D;
    double *x = malloc((size_t)2 * n * n * 8), *a = malloc((size_t)n * n * 8),
           *e = malloc((size_t)no * n * 8);
    fill(x, (int64_t)2 * n * n, &g);
    fill(e, (int64_t)no * n, &g);
    cblas_dsyrk(CblasColMajor, CblasUpper, CblasTrans, n, 2 * n, 1.0, x, 2 * n, 0.0, a, n);
    double t0 = cloq_now();
    int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', n, a, n);
    double t = cloq_now() - t0;
    snprintf(shape, sizeof shape, "n %d", n);
    if (info == 0) report("dpotrf", shape, t, (double)n * n * n / 3.0);
    t0 = cloq_now();
    cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, no, n, 1.0, a, n,
                e, n);
    t = cloq_now() - t0;
    snprintf(shape, sizeof shape, "%d x %d", no, n);
    report("dtrmm", shape, t, (double)no * n * n);
    free(x), free(a), free(e);
  }
  /* dsyevr, range 'I': the top R eigenpairs of an n = D matrix (the init's solve) */
  {
    int n = D, r = R < n ? R : n, m = 0;
    double *x = malloc((size_t)2 * n * n * 8), *a = malloc((size_t)n * n * 8),
           *w = malloc((size_t)n * 8), *z = malloc((size_t)n * r * 8);
    int *sup = malloc((size_t)2 * r * sizeof *sup);
    fill(x, (int64_t)2 * n * n, &g);
    cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, n, 2 * n, 1.0, x, 2 * n, 0.0, a, n);
    double t0 = cloq_now();
    int info = LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'L', n, a, n, 0.0, 0.0, n - r + 1, n, 0.0,
                              &m, w, z, n, sup);
    double t = cloq_now() - t0;
    snprintf(shape, sizeof shape, "n %d, top %d", n, r);
    if (info == 0) report("dsyevr", shape, t, 4.0 / 3.0 * (double)n * n * n);
    free(x), free(a), free(w), free(z), free(sup);
  }
  /* dgesdd: the SVD of a module's M = R E^T, (n_in, n_out) for a D x D and a MLP x D module */
  int ms[2][2] = {{D, D}, {H, D}};
  for (int j = 0; j < 2; j++) {
    int m = ms[j][0], n = ms[j][1];
    double *a = malloc((size_t)m * n * 8), *s = malloc((size_t)(m < n ? m : n) * 8),
           *u = malloc((size_t)m * m * 8), *vt = malloc((size_t)n * n * 8);
    fill(a, (int64_t)m * n, &g);
    double t0 = cloq_now();
    int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', m, n, a, n, s, u, m < n ? m : n, vt, n);
    double t = cloq_now() - t0;
    double mm = m > n ? m : n, nn = m > n ? n : m;
    snprintf(shape, sizeof shape, "%d x %d", m, n);
    if (info == 0) report("dgesdd", shape, t, 4.0 * mm * nn * nn + 22.0 * nn * nn * nn);
    free(a), free(s), free(u), free(vt);
  }
  return 0;
}
