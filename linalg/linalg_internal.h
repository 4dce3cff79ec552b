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
#include "cloq_linalg.h"

/* cblas and LAPACKE here take 32-bit int (OpenBLAS built without INTERFACE64, lapack_int = int):
 * every dimension, leading dimension and workspace length handed to them must fit. */
static inline int cloq_fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* Index of the first non-finite entry of x[0..n), or -1 when all are finite. */
static inline int64_t cloq_first_nonfinite_d(const double *x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return i;
  return -1;
}


/* RTN's grid for one group of one row (quant.c): scale = (xmax - xmin) / (2^bits - 1) and
 * zero = rint(-xmin / scale) in float32 from the 0-extended range [xmin, xmax], with GPTQ's
 * all-zero rule ([0, 0] becomes [-1, 1]); zero is stored as +0.0, never -0.0. Fails, naming row
 * and group, when the scale is not finite and > 0. Shared by RTN and GPTQ so that both use the
 * same grid bit for bit. */
int cloq_quant_scale_zero(float xmin, float xmax, int bits, int64_t row, int64_t group,
                          float *scale, float *zero);

/* Argument checks shared by the CPU and CUDA versions, so that both fail with the same message:
 * RTN's (quant.c; sets *gs, the effective group width, and *ngroups), GPTQ's (gptq.c; also scans
 * W and H for non-finite entries) and the truncated SVD's (svd.c; r range, finite M). */
int cloq_quant_check_args(const float *W, int64_t n_out, int64_t n_in, int bits,
                          int64_t group_size, const uint8_t *codes, const float *scales,
                          const float *zeros, int64_t *gs, int64_t *ngroups);
int cloq_gptq_check(const float *W, int64_t n_out, int64_t n_in, const double *H,
                    const cloq_gptq_params *p, const uint8_t *codes, const float *scales,
                    const float *zeros);
int cloq_svd_check_args(const double *M, int64_t m, int64_t n, int64_t r);

/* MagR's proximal step (magr.c): the threshold theta with prox_{a ||.||_inf}(z) = z - P(z) =
 * clip(z, -theta, theta), P the projection onto the l1 ball of radius a:
 * P(z)_i = sign(z_i) max(|z_i| - theta, 0). theta = 0 when ||z||_1 <= a (P(z) = z), +inf when
 * a = 0 (P(z) = 0). Fast: Duchi et al.'s sort over the entries that can be clipped, work holds n
 * doubles; ref: Michelot's fixed point, no sort. Exposed for the unit tests. */
double cloq_linf_prox_theta(const double *z, int64_t n, double a, double *work);
double cloq_linf_prox_theta_ref(const double *z, int64_t n, double a);

/* Shared by the LAPACK (eig.c) and ScaLAPACK (pdist.c) eigendecompositions: validate H and
 * write Hd = H + damp * mean(diag H) * I into A (n, n); raise eigenvalues <= 1e-12 max|s| (or
 * 1e-300 for a zero H) to that floor, counting them in *nclamped (may be NULL). */
int cloq_eig_prepare(const double *H, int64_t n, double damp, double *A);
void cloq_eig_clamp(double *s, int64_t n, int64_t *nclamped);
/* Shared by the CPU (proj.c) and CUDA (cuda_dev.cu) projection forms, so both check, clean and
 * orthonormalize alike: the argument checks of cloq_proj_solve (shape, r range, factor order,
 * finite E); zeroing the row-major strict upper triangle of a factor L (n, n) and its columns
 * >= rank; an orthonormal basis V (n_out, r) of the columns of U (n_out, r), both row-major,
 * column j spanning U's first j + 1 columns (Householder QR). */
int cloq_proj_check(const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                    int64_t r);
void cloq_hfactor_clean(double *L, int64_t n, int64_t rank);
/* Whether dpotrf's L (row-major lower, of H + damp mean(diag H) I) has a pivot L_kk^2 at or below
 * 1e-10 max(diag Hd): then the factor is redone with pivoting (dpstrf decides the rank). */
int cloq_hfactor_near_singular(const double *L, const double *H, int64_t n, double damp);
int cloq_orth_columns(const double *U, int64_t n_out, int64_t r, double *V);

/* The top r eigenpairs of the symmetric S (n, n), of which the row-major upper (= column-major
 * lower) triangle is read; S is destroyed. lam (r) descending, as computed; P (n, r) row-major,
 * the eigenvectors as columns in the same order, or NULL for eigenvalues only. dsytrd, then the
 * top r pairs of the tridiagonal by MRRR (dstemr, range 'I'; dstebz + dstein if it fails), then
 * dormtr on the r vectors: what dsyevr does, except that dsyevr takes bisection and inverse
 * iteration for every subset of the spectrum, which cost as much as the reduction itself at
 * n = 512 (shared by proj.c and MagR's largest eigenvalue). */
int cloq_syevr_top(double *S, int64_t n, int64_t r, double *P, double *lam);
/* Eigenpairs il..iu (1-based, ascending) of the symmetric tridiagonal (d, e) of order n (e: n - 1
 * off-diagonal entries, and room for n): w (n) receives them ascending, Z (n, iu - il + 1)
 * column-major their vectors (NULL: eigenvalues only); d and e are destroyed. AUTO: MRRR
 * (dstemr: O(n) per pair), and when dstemr fails (no relatively robust representation: rare)
 * bisection and inverse iteration (dstebz + dstein, as dsyevr does for any subset); BISECTION
 * takes the latter at once (the tests reach it that way). */
enum { CLOQ_TRIDIAG_AUTO, CLOQ_TRIDIAG_BISECTION };
int cloq_tridiag_range(double *d, double *e, int64_t n, int64_t il, int64_t iu, double *w,
                       double *Z, int method);

/* In-place transpose of a square (n, n) matrix (column-major LAPACK output -> row-major). */
void cloq_transpose_square(double *A, int64_t n);

#endif
