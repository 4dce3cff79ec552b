/* cloq_pdist: the init's top-r solve (cloq_proj_solve of cloq_linalg.h) on a ScaLAPACK process
 * grid. The one MPI-aware part of linalg/: it lives in its own library
 * (cloq_pdist, pdist_dep) so that cloq_linalg stays free of MPI.
 *
 * The function is COLLECTIVE over comm: every rank of comm calls it with the same scalar
 * arguments (n_out, n_in, weighted, r, nb, root). The ranks of comm form an nprow x npcol BLACS grid, as
 * square as possible with nprow <= npcol (1: 1x1, 2: 1x2, 3: 1x3, 4: 2x2, 6: 2x3, 8: 2x4). The
 * full input lives on root only; it is spread over the grid in 2D block-cyclic blocks of nb x nb
 * (nb <= 0: CLOQ_PDIST_DEFAULT_NB) and the outputs are gathered back onto root. comm need not be
 * MPI_COMM_WORLD; the BLACS grids are created from it and released before returning.
 *
 * Results match the LAPACK path (cloq_proj_solve) to rounding; they are not bitwise identical
 * to it, and eigenvectors agree with it only up to sign.
 *
 * Errors: it returns CLOQ_OK or CLOQ_ERR, the SAME status on every rank (the ranks agree on it
 * before every collective step, so no rank is left waiting on an error path). A rank that failed
 * records its own reason (cloq_err_msg); the others record "failed on rank R: <R's reason>".
 * Nothing is printed except through cloq_err/cloq_warn (ScaLAPACK's own PXERBLA may print an
 * "illegal value" line to stdout before the error is returned).
 *
 * Memory: the caller owns every array. Workspaces are allocated and freed inside (per rank:
 * (n_in n_out + n_in^2 + 2 n^2) / (nprow npcol) doubles, n the smaller side, plus pdsyevr's
 * workspace; on root also n_out r for the gathered basis, and a copy of E when f is pivoted).
 *
 * BLACS state: the BLACS keeps a few process-wide buffers after the grids are released; call
 * Cblacs_exit(1) before MPI_Finalize to release them (optional; see pdist.c).
 */
#ifndef CLOQ_PDIST_H
#define CLOQ_PDIST_H

#include <mpi.h>
#include <stdint.h>

#include "cloq_linalg.h"

/* Block size used when nb <= 0 (ScaLAPACK's usual choice for these routines). */
enum { CLOQ_PDIST_DEFAULT_NB = 64 };

/* cloq_proj_solve on the grid: F = E C (pdtrmm), G = F F^T or K = F^T F on the smaller side
 * (pdsyrk), its top r eigenpairs (pdsyevr, range 'I'), and for the input side F P (pdgemm).
 * Collective over comm (every rank calls with the same n_out, n_in, weighted, r, nb, root).
 *   E (n_out, n_in) float64 row-major and, when weighted, the factor f of Hd: read on root only
 *     (may be NULL elsewhere); weighted 0 means C = I (the svd init).
 *   V (n_out, r) row-major, lam (r) and *trace: written on root only (may be NULL elsewhere).
 * Same results as cloq_proj_solve to rounding (products V V^T E within ~1e-12 where the
 * eigenvalue gap allows), and the same checks and messages on root, plus root outside comm and
 * ScaLAPACK failures (info decoded). */
int cloq_pdist_proj_solve(MPI_Comm comm, int root, const double *E, int64_t n_out, int64_t n_in,
                          const cloq_hfactor *f, int weighted, int64_t r, int64_t nb, double *V,
                          double *lam, double *trace);

#endif
