/* cloq-bench-kernels: this machine's own rates for the kernels cloq's stages spend their time in,
 * at the sizes of a given model, so that bench/README.md can state achieved GFLOP/s against
 * what the machine does on the same operation in the same run.
 *
 *   cloq-bench-kernels T D MLP [R]
 * T tokens per sample, D hidden size, MLP intermediate size, R LoRA rank (default 16). Prints one
 * line per kernel: name, shape, seconds (best of 3), GFLOP/s. Uses the threads OpenBLAS is given
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
  int T = atoi(argv[1]), D = atoi(argv[2]), H = atoi(argv[3]);
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
