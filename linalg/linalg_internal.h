/* linalg_internal: small helpers shared by the linalg/ sources and nothing else.
 *
 * They live here rather than in cloq_linalg.h because they are not part of the contract: size
 * checks for the 32-bit integers that cblas and LAPACKE take, finiteness scans, and an
 * allocation that records the failure the way CLOQ_ALLOC does but lets the caller free what it
 * already holds (CLOQ_ALLOC returns on the spot, which would leak earlier buffers).
 */
#ifndef CLOQ_LINALG_INTERNAL_H
#define CLOQ_LINALG_INTERNAL_H

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "cloq_err.h"

/* cblas and LAPACKE here take 32-bit int (OpenBLAS built without INTERFACE64, lapack_int = int):
 * every dimension, leading dimension and workspace length handed to them must fit. */
static inline int cloq_fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* Index of the first non-finite entry of x[0..n), or -1 when all are finite. */
static inline int64_t cloq_first_nonfinite_d(const double *x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return i;
  return -1;
}


/* Shared by the LAPACK (eig.c) and ScaLAPACK (pdist.c) eigendecompositions: validate H and
 * write Hd = H + damp * mean(diag H) * I into A (n, n); raise eigenvalues <= 1e-12 max|s| (or
 * 1e-300 for a zero H) to that floor, counting them in *nclamped (may be NULL). */
int cloq_eig_prepare(const double *H, int64_t n, double damp, double *A);
void cloq_eig_clamp(double *s, int64_t n, int64_t *nclamped);
/* In-place transpose of a square (n, n) matrix (column-major LAPACK output -> row-major). */
void cloq_transpose_square(double *A, int64_t n);

#endif
