/* cloq_pdist: the two decompositions of cloq (damped eigendecomposition, truncated SVD) on a
 * ScaLAPACK process grid. The one MPI-aware part of linalg/: it lives in its own library
 * (cloq_pdist, pdist_dep) so that cloq_linalg stays free of MPI.
 *
 * Both functions are COLLECTIVE over comm: every rank of comm calls them with the same scalar
 * arguments (n, m, r, damp, nb, root). The ranks of comm form an nprow x npcol BLACS grid, as
 * square as possible with nprow <= npcol (1: 1x1, 2: 1x2, 3: 1x3, 4: 2x2, 6: 2x3, 8: 2x4). The
 * full input lives on root only; it is spread over the grid in 2D block-cyclic blocks of nb x nb
 * (nb <= 0: CLOQ_PDIST_DEFAULT_NB) and the outputs are gathered back onto root. comm need not be
 * MPI_COMM_WORLD; the BLACS grids are created from it and released before returning.
 *
 * Results match the LAPACK path (cloq_eig_damped, cloq_svd_trunc) to rounding; they are not
 * bitwise identical to it, and singular vectors / eigenvectors agree with it only up to sign.
 *
 * Errors: both return CLOQ_OK or CLOQ_ERR, the SAME status on every rank (the ranks agree on it
 * before every collective step, so no rank is left waiting on an error path). A rank that failed
 * records its own reason (cloq_err_msg); the others record "failed on rank R: <R's reason>".
 * Nothing is printed except through cloq_err/cloq_warn (ScaLAPACK's own PXERBLA may print an
 * "illegal value" line to stdout before the error is returned).
 *
 * Memory: the caller owns every array. Workspaces are allocated and freed inside (per rank:
 * about 2 (n/nprow)(n/npcol) doubles for the eigendecomposition plus ScaLAPACK's workspace; on
 * root nothing beyond the outputs).
 *
 * BLACS state: the BLACS keeps a few process-wide buffers after the grids are released; call
 * Cblacs_exit(1) before MPI_Finalize to release them (optional; see pdist.c).
 */
#ifndef CLOQ_PDIST_H
#define CLOQ_PDIST_H

#include <mpi.h>
#include <stdint.h>

/* Block size used when nb <= 0 (ScaLAPACK's usual choice for these routines). */
enum { CLOQ_PDIST_DEFAULT_NB = 64 };

/* Damped eigendecomposition on the grid (ScaLAPACK pdsyevd, divide and conquer).
 * Collective over comm (every rank calls with the same n, damp, nb, root).
 *   H (n, n) float64 row-major, full symmetric: read on root only (may be NULL elsewhere).
 *   U (n, n) float64 row-major, COLUMNS are eigenvectors: written on root only (may be NULL
 *     elsewhere).
 *   s (n) ascending and *nclamped: written on EVERY rank (the same values everywhere).
 * Same semantics as cloq_eig_damped: Hd = H + damp * mean(diag H) * I; eigenvalues <= floor,
 * floor = 1e-12 * max|s| (or 1e-300 when H is zero), are raised to floor and counted. Fails, on
 * every rank, on a non-finite entry of H ("non-finite value in Gram matrix", found on root), on
 * n < 1 or n > INT_MAX, on a negative or non-finite damp, on root outside comm, and on a
 * ScaLAPACK failure (info decoded). */
int cloq_pdist_eig_damped(MPI_Comm comm, int root, const double *H, int64_t n, double damp,
                          int64_t nb, double *s, double *U, int64_t *nclamped);

/* Truncated SVD on the grid (ScaLAPACK pdgesvd, jobu = jobvt = 'V').
 * Collective over comm (every rank calls with the same m, n, r, nb, root).
 *   M (m, n) float64 row-major: read on root only (may be NULL elsewhere).
 *   P (m, r) and Vt (r, n) float64 row-major, the r leading singular vectors: written on root
 *     only (may be NULL elsewhere).
 *   S (r) descending: written on EVERY rank (the same values everywhere).
 * 1 <= r <= min(m, n). Same error conditions as cloq_svd_trunc (r out of range, non-finite entry
 * of M, invalid shape), plus root outside comm and ScaLAPACK failures (info decoded). */
int cloq_pdist_svd_trunc(MPI_Comm comm, int root, const double *M, int64_t m, int64_t n, int64_t r,
                         int64_t nb, double *P, double *S, double *Vt);

#endif
