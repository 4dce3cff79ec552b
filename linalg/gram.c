/* gram: accumulation of the calibration Gram matrix H += X^T X (upper triangle), and its
 * symmetrization.
 *
 * H is the weighting of the CLoQ objective, so it is accumulated in float64 from widened
 * activations: the products x_i x_j of float32 values are exact in float64, and the only rounding
 * is in the sums. The fast version hands the widened block to dsyrk, which writes only the upper
 * triangle of the row-major H (the half the contract promises). OpenBLAS partitions syrk over
 * the output matrix, not over the t rows being summed, so the result should not depend on its
 * thread count; test_gram checks 1 against 4 threads bit for bit, since the header promises it.
 * Bitwise reproducibility across runs also needs the same order of calls (the contract says so).
 */
#include <cblas.h>
#include <stdint.h>

#include "cloq_linalg.h"
#include "linalg_internal.h"

void cloq_gram_accumulate(double *H, const float *X, int64_t t, int64_t n, double *work) {
  if (t <= 0 || n <= 0) return;
  const int64_t nel = t * n; /* the caller owns work of t*n doubles, so this fits */
  for (int64_t i = 0; i < nel; i++) work[i] = (double)X[i];
  /* dsyrk takes int sizes: feed the rows in chunks that fit (a single chunk in practice). n
   * itself always fits, since H holds n*n doubles. */
  const int64_t chunk = INT_MAX;
  for (int64_t r0 = 0; r0 < t; r0 += chunk) {
    const int64_t rows = (t - r0 < chunk) ? t - r0 : chunk;
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)rows, 1.0, work + r0 * n,
                (int)n, 1.0, H, (int)n);
  }
}

void cloq_gram_accumulate_ref(double *H, const float *X, int64_t t, int64_t n) {
  for (int64_t k = 0; k < t; k++) {
    const float *x = X + k * n;
    for (int64_t i = 0; i < n; i++) {
      const double xi = (double)x[i];
      for (int64_t j = i; j < n; j++) H[i * n + j] += xi * (double)x[j];
    }
  }
}

void cloq_gram_symmetrize(double *H, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = i + 1; j < n; j++) H[j * n + i] = H[i * n + j];
}
