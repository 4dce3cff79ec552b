/* pdist: the top-r solve of the projection form on a ScaLAPACK process grid.
 *
 * This is the one MPI-aware file of linalg/ (built as its own library, cloq_pdist, so that
 * cloq_linalg stays MPI-free). It does only math and data movement: no files, and no printing
 * except through cloq_err/cloq_warn. The contract is in cloq_pdist.h; this comment records how.
 *
 * Data movement. The full E and the factor L live on root. A 1x1 BLACS grid holding root alone
 * describes them as one block; Cpdgemr2d copies them onto the nprow x npcol grid (2D
 * block-cyclic, nb x nb) and later copies the basis back the same way. Cpdgemr2d needs a context
 * spanning both grids; we hand it a 1 x size "line" grid, because given any other shape it
 * builds (and leaks a BLACS system handle for) a line grid of its own on every call.
 *
 * Layouts. ScaLAPACK is column-major, the contract row-major. The row-major E (n_out, n_in) goes
 * over as the column-major Et = E^T (n_in, n_out), and the row-major lower factor L as the
 * column-major upper L^T, so pdtrmm (left, upper) turns Et into Ft = (E C)^T in place. Then
 * G = F F^T = Ft^T Ft (pdsyrk 'T') or K = F^T F = Ft Ft^T (pdsyrk 'N') fill the column-major lower
 * triangle that pdsyevr reads, as proj.c does with LAPACK. pdsyevr (range 'I') returns the top r
 * eigenvectors ascending in Z's first r columns; the input side multiplies them by Ft^T (pdgemm)
 * on the grid. Root gathers the n_out x r columns, reverses their order and, on the input side,
 * orthonormalizes them (Householder QR) exactly as proj.c does. A pivoted factor (a singular Hd)
 * is applied by permuting E's columns on root before it goes over.
 *
 * Workspace. pdsyevr's lwork = -1 query is per rank and the routine checks it per rank, so the
 * sizes are agreed across ranks (MPI_Allreduce MAX). The eigenvalues are broadcast from process
 * (0, 0) (with pdsyevd, n <= nb left them different across ranks: STACK.md). Z must be n x n
 * although only r columns are used (pdsyevr's contract).
 *
 * Errors. Every fallible step is followed by an agreement (MPI_Allreduce of the failing rank),
 * so that either all ranks go on to the next collective step or all return CLOQ_ERR; the ranks
 * that did not fail copy the reason of the lowest failing rank.
 *
 * BLACS lifetime. The grids are released (Cblacs_gridexit) and the system handle derived from
 * comm is freed before returning. The BLACS keep a few process-wide buffers (and, in
 * BI_ActiveQ, possibly unfinished sends) until Cblacs_exit: call Cblacs_exit(1) before
 * MPI_Finalize for a clean shutdown. It is not required for correctness.
 *
 * Size limits. ScaLAPACK and the BLACS here take 32-bit int (Debian's build): the global
 * orders, the local arrays (lld * local columns), the root arrays (their element counts enter
 * Cpdgemr2d's int offsets) and the workspaces must all fit, which they do for n_in up to 46340.
 */
#include "cloq_pdist.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_mpi.h"
#include "linalg_internal.h"

/* ---- BLACS, C interface (no header ships with Debian's ScaLAPACK): arguments by value ------ */
int Csys2blacs_handle(MPI_Comm comm);
void Cfree_blacs_system_handle(int handle);
void Cblacs_gridinit(int *ctxt, char *order, int nprow, int npcol);
void Cblacs_gridmap(int *ctxt, int *usermap, int ldumap, int nprow, int npcol);
void Cblacs_gridinfo(int ctxt, int *nprow, int *npcol, int *myrow, int *mycol);
void Cblacs_gridexit(int ctxt);
/* Copies the (m, n) submatrix at 1-based (ia, ja) of A onto the one at (ib, jb) of B; gctxt
 * spans both grids. A rank outside A's (B's) grid passes a descriptor whose context is -1. */
void Cpdgemr2d(int m, int n, double *a, int ia, int ja, int *desca, double *b, int ib, int jb,
               int *descb, int gctxt);

/* ---- ScaLAPACK, Fortran interface: every argument by pointer, 1-based indices, a hidden
 * size_t length per CHARACTER argument (gfortran >= 8) after the others ---------------------- */
int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc, const int *nprocs);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb,
               const int *irsrc, const int *icsrc, const int *ictxt, const int *lld, int *info);
void pdsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a,
              const int *ia, const int *ja, const int *desca, const double *vl, const double *vu,
              const int *il, const int *iu, int *m, int *nz, double *w, double *z, const int *iz,
              const int *jz, const int *descz, double *work, const int *lwork, int *iwork,
              const int *liwork, int *info, size_t jobz_len, size_t range_len, size_t uplo_len);
/* PBLAS (C with a Fortran interface: the hidden lengths are ignored) */
void pdtrmm_(const char *side, const char *uplo, const char *transa, const char *diag,
             const int *m, const int *n, const double *alpha, double *a, const int *ia,
             const int *ja, const int *desca, double *b, const int *ib, const int *jb,
             const int *descb, size_t, size_t, size_t, size_t);
void pdsyrk_(const char *uplo, const char *trans, const int *n, const int *k, const double *alpha,
             double *a, const int *ia, const int *ja, const int *desca, const double *beta,
             double *c, const int *ic, const int *jc, const int *descc, size_t, size_t);
void pdgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
             const double *alpha, double *a, const int *ia, const int *ja, const int *desca,
             double *b, const int *ib, const int *jb, const int *descb, const double *beta,
             double *c, const int *ic, const int *jc, const int *descc, size_t, size_t);

enum { DLEN = 9, DESC_CTXT = 1 }; /* ScaLAPACK array descriptor: length, context entry */

/* Every rank's outcome of a step (common/cloq_mpi.h). */
#define AGREE(comm, rc) cloq_mpi_agree((comm), (rc))

/* Collective over comm: fails on every rank unless vals[0..k) are the same on every rank (a
 * mismatch would otherwise hang or corrupt the ScaLAPACK calls). */
enum { MAX_ARGS = 8 };
static int same_args(MPI_Comm comm, const int64_t *vals, int k, const char *const *names) {
  int64_t mx[2 * MAX_ARGS], red[2 * MAX_ARGS];
  for (int i = 0; i < k; i++) {
    mx[i] = vals[i];
    mx[k + i] = vals[i] == INT64_MIN ? INT64_MAX : -vals[i]; /* max of -x is -min x */
  }
  CLOQ_MPI(MPI_Allreduce(mx, red, 2 * k, MPI_INT64_T, MPI_MAX, comm));
  for (int i = 0; i < k; i++)
    CLOQ_CHECK(red[i] == -red[k + i],
               "argument %s differs across the ranks of the communicator (%lld to %lld); a "
               "collective call needs the same value on every rank",
               names[i], (long long)-red[k + i], (long long)red[i]);
  return CLOQ_OK;
}

/* ScaLAPACK's illegal-argument convention: info = -i for scalar argument i, -(100 i + j) for
 * entry j of array argument i. */
static int illegal_arg(const char *name, int info) {
  const int a = -info;
  if (a > 100)
    return CLOQ_FAIL("%s: entry %d of argument %d had an illegal value", name, a % 100, a / 100);
  return CLOQ_FAIL("%s: argument %d had an illegal value", name, a);
}

/* ---- grids --------------------------------------------------------------------------------- */

/* The BLACS contexts of one call. */
typedef struct {
  int sys;      /* BLACS system handle of comm */
  int grid;     /* nprow x npcol over all ranks of comm, row-major ("Row") */
  int line;     /* 1 x size over all ranks: the spanning context for Cpdgemr2d (== grid if
                 * nprow == 1) */
  int rootctx;  /* 1 x 1 holding root alone; -1 on the other ranks */
  int nprow, npcol, myrow, mycol;
  int corner;   /* rank in comm of grid process (0, 0) */
} pgrid;

/* As square as possible, nprow <= npcol: nprow = largest divisor of p not above sqrt(p). */
static void grid_shape(int p, int *nprow, int *npcol) {
  int r = 1;
  for (int d = 1; d <= p / d; d++)
    if (p % d == 0) r = d;
  *nprow = r;
  *npcol = p / r;
}

/* Collective over comm (the BLACS grid calls create MPI communicators). */
static int pgrid_open(MPI_Comm comm, int root, pgrid *g) {
  int me = 0, size = 0;
  CLOQ_MPI(MPI_Comm_rank(comm, &me));
  CLOQ_MPI(MPI_Comm_size(comm, &size));
  char order[] = "Row";
  g->sys = Csys2blacs_handle(comm);
  grid_shape(size, &g->nprow, &g->npcol);
  g->grid = g->sys;
  Cblacs_gridinit(&g->grid, order, g->nprow, g->npcol);
  Cblacs_gridinfo(g->grid, &g->nprow, &g->npcol, &g->myrow, &g->mycol);
  g->line = g->grid;
  if (g->nprow != 1) {
    g->line = g->sys;
    Cblacs_gridinit(&g->line, order, 1, size);
  }
  int map = root; /* ranks of comm, as the system context numbers them */
  g->rootctx = g->sys;
  Cblacs_gridmap(&g->rootctx, &map, 1, 1, 1);
  if (me != root) g->rootctx = -1; /* the BLACS already say so; make it explicit */
  const int mine = (g->myrow == 0 && g->mycol == 0) ? me : -1;
  CLOQ_MPI(MPI_Allreduce(&mine, &g->corner, 1, MPI_INT, MPI_MAX, comm));
  return CLOQ_OK;
}

/* Collective over comm (gridexit frees communicators). */
static void pgrid_close(pgrid *g) {
  if (g->rootctx >= 0) Cblacs_gridexit(g->rootctx);
  if (g->line != g->grid) Cblacs_gridexit(g->line);
  Cblacs_gridexit(g->grid);
  Cfree_blacs_system_handle(g->sys); /* a no-op for MPI_COMM_WORLD's handle 0 */
}

/* Rows (or columns) of a global dimension n held by grid row (column) iproc of nprocs. */
static int numroc(int n, int nb, int iproc, int nprocs) {
  const int zero = 0;
  return numroc_(&n, &nb, &iproc, &zero, &nprocs);
}

/* Descriptor of an (m, n) matrix in mb x nb blocks on ctxt, leading dimension lld. A rank
 * outside ctxt (ctxt < 0) gets the descriptor Cpdgemr2d expects from non-members. */
static int make_desc(int *desc, int m, int n, int mb, int nb, int ctxt, int lld) {
  if (ctxt < 0) {
    memset(desc, 0, DLEN * sizeof *desc);
    desc[DESC_CTXT] = -1;
    return CLOQ_OK;
  }
  const int zero = 0;
  int info = 0;
  descinit_(desc, &m, &n, &mb, &nb, &zero, &zero, &ctxt, &lld, &info);
  if (info != 0) return illegal_arg("descinit", info);
  return CLOQ_OK;
}

/* The local block of a (rows, cols) global matrix on this rank: leading dimension (>= 1) and
 * element count (>= 1, so that the allocation is never empty); fails when it exceeds int. */
static int local_shape(int rows, int cols, int nb, const pgrid *g, int *lld, int64_t *count) {
  const int lr = numroc(rows, nb, g->myrow, g->nprow), lc = numroc(cols, nb, g->mycol, g->npcol);
  *lld = lr > 1 ? lr : 1;
  *count = (int64_t)*lld * (lc > 1 ? lc : 1);
  CLOQ_CHECK(*count <= INT_MAX,
             "local block of %d x %d (of a %d x %d matrix) exceeds the 32-bit ScaLAPACK interface",
             lr, lc, rows, cols);
  return CLOQ_OK;
}

static int resolve_nb(int64_t nb, int *out) {
  if (nb <= 0) nb = CLOQ_PDIST_DEFAULT_NB;
  CLOQ_CHECK(nb <= INT_MAX, "invalid block size %lld", (long long)nb);
  *out = (int)nb;
  return CLOQ_OK;
}

/* Agreed workspace sizes: the largest need of any rank, as a checked int. */
static int agree_lwork(MPI_Comm comm, const char *name, int64_t need, int64_t ineed, int *lwork,
                       int *liwork) {
  int64_t mine[2] = {need, ineed}, all[2];
  CLOQ_MPI(MPI_Allreduce(mine, all, 2, MPI_INT64_T, MPI_MAX, comm));
  CLOQ_CHECK(all[0] >= 1 && all[0] <= INT_MAX && all[1] >= 0 && all[1] <= INT_MAX,
             "%s: workspace of %lld doubles / %lld ints exceeds the 32-bit ScaLAPACK interface",
             name, (long long)all[0], (long long)all[1]);
  *lwork = (int)all[0];
  *liwork = all[1] > 1 ? (int)all[1] : 1;
  return CLOQ_OK;
}

/* ---- the top-r solve ---------------------------------------------------------------------- */

/* Local checks of cloq_pdist_proj_solve's arguments (before any collective step); root also runs
 * proj.c's checks (same messages). */
static int solve_args(int me, int size, int root, const double *E, int64_t no, int64_t ni,
                      const cloq_hfactor *f, int weighted, int64_t r, int64_t nb,
                      const double *V, const double *lam, const double *trace) {
  CLOQ_CHECK(root >= 0 && root < size, "root %d outside the communicator (size %d)", root, size);
  CLOQ_CHECK(no >= 1 && ni >= 1 && cloq_fits_int(no) && cloq_fits_int(ni),
             "invalid error matrix shape (%lld, %lld)", (long long)no, (long long)ni);
  CLOQ_CHECK(no <= INT_MAX / ni && ni <= INT_MAX / ni,
             "matrix (%lld, %lld) exceeds the 32-bit ScaLAPACK redistribution", (long long)no,
             (long long)ni);
  const int64_t k = no < ni ? no : ni;
  CLOQ_CHECK(r >= 1 && r <= k, "LoRA rank %lld out of range [1, %lld] for a (%lld, %lld) layer",
             (long long)r, (long long)k, (long long)no, (long long)ni);
  int inb;
  CLOQ_CALL(resolve_nb(nb, &inb));
  if (me != root) return CLOQ_OK;
  CLOQ_CHECK(E && V && lam && trace, "E, V, lam and trace must be given on root");
  CLOQ_CHECK(!weighted == !f, "the factor must be given on root exactly when weighted");
  return cloq_proj_check(E, no, ni, f, r);
}

/* pdsyevr's failure codes. */
static int syevr_fail(int info) {
  if (info < 0) return illegal_arg("pdsyevr", info);
  return CLOQ_FAIL("pdsyevr: internal error (info=%d)", info);
}

/* Sum of squares of the valid part (rows x cols of a column-major block with leading dimension
 * lld) of this rank's local block. */
static double local_sumsq(const double *A, int rows, int cols, int lld) {
  double s = 0.0;
  for (int j = 0; j < cols; j++)
    for (int i = 0; i < rows; i++) s += A[i + (int64_t)j * lld] * A[i + (int64_t)j * lld];
  return s;
}

int cloq_pdist_proj_solve(MPI_Comm comm, int root, const double *E, int64_t n_out, int64_t n_in,
                          const cloq_hfactor *f, int weighted, int64_t r, int64_t nb, double *V,
                          double *lam, double *trace) {
  int me = 0, size = 0;
  CLOQ_MPI(MPI_Comm_rank(comm, &me));
  CLOQ_MPI(MPI_Comm_size(comm, &size));

  /* 1. arguments (all ranks), E and the factor (root); E P on root when pivoted */
  int rc = solve_args(me, size, root, E, n_out, n_in, f, weighted, r, nb, V, lam, trace);
  const int64_t args[6] = {n_out, n_in, r, nb, root, weighted != 0};
  static const char *const arg_names[6] = {"n_out", "n_in", "r", "nb", "root", "weighted"};
  rc |= same_args(comm, args, 6, arg_names); /* collective: every rank runs it */
  CLOQ_CALL(AGREE(comm, rc));

  const int out_side = n_out <= n_in;
  const int no = (int)n_out, ni = (int)n_in, n = out_side ? no : ni, ir = (int)r, one = 1;
  int inb = 0;
  (void)resolve_nb(nb, &inb); /* checked above */
  /* pdsyevr hands PDORMTR a fixed max(18 n, np0 mq0 + 2 nb^2) doubles (mq0: the eigenvector
   * columns on process column 0) whatever LWORK is, which is too little when fewer than nb
   * vectors are asked of a matrix larger than nb (found here by the sweep below: "PDORMTR
   * parameter number 16 had an illegal value" and garbage vectors). Asking for at least
   * min(nb, n) vectors makes (np0 - nb)(mq0 - nb) >= 0, which is exactly what PDORMTR needs;
   * the top r are the last r of them. */
  const int mz = ir > (n < inb ? n : inb) ? ir : (n < inb ? n : inb);
  const int il = n - mz + 1, iu = n, zoff = mz - ir;
  double *Ep = NULL, *Zr = NULL, *w = NULL;
  if (me == root && weighted && f->piv) {
    rc = CLOQ_TRY_ALLOC(Ep, n_out * n_in, "E P") ? cloq_proj_apply(E, n_out, n_in, NULL, Ep)
                                                 : CLOQ_ERR;
    for (int64_t o = 0; rc == CLOQ_OK && o < n_out; o++)
      for (int64_t k = 0; k < n_in; k++) Ep[o * n_in + k] = E[o * n_in + f->piv[k]];
  }
  if (rc == CLOQ_OK && me == root &&
      (!CLOQ_TRY_ALLOC(Zr, n_out * r, "gathered basis") || !CLOQ_TRY_ALLOC(w, n, "eigenvalues")))
    rc = CLOQ_ERR;
  if (rc == CLOQ_OK && me != root && !CLOQ_TRY_ALLOC(w, n, "eigenvalues")) rc = CLOQ_ERR;
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) {
    free(Ep), free(Zr), free(w);
    return rc;
  }

  pgrid g;
  if (pgrid_open(comm, root, &g) != CLOQ_OK) { /* an MPI failure (MPI_ERRORS_RETURN only) */
    free(Ep), free(Zr), free(w);
    return CLOQ_ERR;
  }
  double *A = NULL, *L = NULL, *S = NULL, *Z = NULL, *U = NULL, *work = NULL;
  int *iwork = NULL;
  int descA[DLEN], descL[DLEN], descS[DLEN], descZ[DLEN], descU[DLEN], descRE[DLEN],
      descRL[DLEN], descRZ[DLEN];
  int lldA = 1, lldL = 1, lldS = 1, lldU = 1, lwork = 0, liwork = 0, info = 0, m = 0, nz = 0;
  int64_t nA = 0, nL = 0, nS = 0, nU = 0;
  double dummy = 0.0;
  /* Cpdgemr2d only reads its source: the casts drop const for the Fortran-style prototype */
  const double *Esrc = Ep ? Ep : E;
  double *Eroot = (me == root) ? (double *)(uintptr_t)Esrc : &dummy;
  double *Lroot = (me == root && weighted) ? (double *)(uintptr_t)f->L : &dummy;
  double *Zroot = (me == root) ? Zr : &dummy;

  /* 2. local blocks and descriptors: Ft (n_in, n_out) = E^T, U = L^T (n_in, n_in), S and Z
   * (n, n), and for the input side F P (n_out, r); on root E as the column-major (n_in, n_out),
   * L as the column-major upper (n_in, n_in), the gathered columns as (n_out, r) */
  rc = local_shape(ni, no, inb, &g, &lldA, &nA);
  if (rc == CLOQ_OK && weighted) rc = local_shape(ni, ni, inb, &g, &lldL, &nL);
  if (rc == CLOQ_OK) rc = local_shape(n, n, inb, &g, &lldS, &nS);
  if (rc == CLOQ_OK && !out_side) rc = local_shape(no, ir, inb, &g, &lldU, &nU);
  if (rc == CLOQ_OK)
    rc = (CLOQ_TRY_ALLOC(A, nA, "local block of F^T") &&
          (!weighted || CLOQ_TRY_ALLOC(L, nL, "local block of the factor")) &&
          CLOQ_TRY_ALLOC(S, nS, "local block of G or K") &&
          CLOQ_TRY_ALLOC(Z, nS, "local block of the eigenvectors") &&
          (out_side || CLOQ_TRY_ALLOC(U, nU, "local block of F P")))
             ? CLOQ_OK
             : CLOQ_ERR;
  if (rc == CLOQ_OK) rc = make_desc(descA, ni, no, inb, inb, g.grid, lldA);
  if (rc == CLOQ_OK && weighted) rc = make_desc(descL, ni, ni, inb, inb, g.grid, lldL);
  if (rc == CLOQ_OK) rc = make_desc(descS, n, n, inb, inb, g.grid, lldS);
  if (rc == CLOQ_OK) rc = make_desc(descZ, n, n, inb, inb, g.grid, lldS);
  if (rc == CLOQ_OK && !out_side) rc = make_desc(descU, no, ir, inb, inb, g.grid, lldU);
  if (rc == CLOQ_OK) rc = make_desc(descRE, ni, no, inb, inb, g.rootctx, ni);
  if (rc == CLOQ_OK && weighted) rc = make_desc(descRL, ni, ni, inb, inb, g.rootctx, ni);
  if (rc == CLOQ_OK) rc = make_desc(descRZ, no, ir, inb, inb, g.rootctx, no);
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;

  /* 3. E^T and L^T: root -> grid (collective over the line context); Ft = L^T E^T */
  Cpdgemr2d(ni, no, Eroot, 1, 1, descRE, A, 1, 1, descA, g.line);
  if (weighted) {
    Cpdgemr2d(ni, ni, Lroot, 1, 1, descRL, L, 1, 1, descL, g.line);
    const double alpha = 1.0;
    pdtrmm_("L", "U", "N", "N", &ni, &no, &alpha, L, &one, &one, descL, A, &one, &one, descA, 1, 1,
            1, 1);
  }
  {
    const int lr = numroc(ni, inb, g.myrow, g.nprow), lc = numroc(no, inb, g.mycol, g.npcol);
    double mine = local_sumsq(A, lr, lc, lldA), tot = 0.0;
    rc = CLOQ_MPI_RC(MPI_Allreduce(&mine, &tot, 1, MPI_DOUBLE, MPI_SUM, comm));
    if (me == root) *trace = tot;
  }
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;

  /* 4. G = F F^T = Ft^T Ft (output side) or K = F^T F = Ft Ft^T, column-major lower */
  {
    const double alpha = 1.0, beta = 0.0;
    if (out_side)
      pdsyrk_("L", "T", &no, &ni, &alpha, A, &one, &one, descA, &beta, S, &one, &one, descS, 1, 1);
    else
      pdsyrk_("L", "N", &ni, &no, &alpha, A, &one, &one, descA, &beta, S, &one, &one, descS, 1, 1);
  }

  /* 5. the top r eigenpairs: workspace query, agreement (the query is per rank), pdsyevr */
  {
    const int query = -1;
    double wq = 0.0;
    int iwq = 0;
    const double zero = 0.0;
    pdsyevr_("V", "I", "L", &n, S, &one, &one, descS, &zero, &zero, &il, &iu, &m, &nz, w, Z, &one,
             &one, descZ, &wq, &query, &iwq, &query, &info, 1, 1, 1);
    rc = info != 0 ? illegal_arg("pdsyevr (workspace query)", info) : CLOQ_OK;
    if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;
    rc = agree_lwork(comm, "pdsyevr", (int64_t)wq, iwq, &lwork, &liwork);
    if (rc == CLOQ_OK && (!CLOQ_TRY_ALLOC(work, lwork, "pdsyevr workspace") ||
                          !CLOQ_TRY_ALLOC(iwork, liwork, "pdsyevr integer workspace")))
      rc = CLOQ_ERR;
    if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;
    pdsyevr_("V", "I", "L", &n, S, &one, &one, descS, &zero, &zero, &il, &iu, &m, &nz, w, Z, &one,
             &one, descZ, work, &lwork, iwork, &liwork, &info, 1, 1, 1);
    rc = info != 0 ? syevr_fail(info) : CLOQ_OK;
    if (rc == CLOQ_OK && (m != mz || nz != mz))
      rc = CLOQ_FAIL("pdsyevr: %d eigenvalues and %d eigenvectors of %d", m, nz, mz);
    if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;
  }

  /* 6. eigenvalues from process (0, 0); the basis columns grid -> root: the last r of Z's mz
   * columns, or F P = Ft^T Z (input side) */
  rc = CLOQ_MPI_RC(MPI_Bcast(w, mz, MPI_DOUBLE, g.corner, comm));
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;
  const int jz = 1 + zoff;
  if (out_side) {
    Cpdgemr2d(no, ir, Z, 1, jz, descZ, Zroot, 1, 1, descRZ, g.line);
  } else {
    const double alpha = 1.0, beta = 0.0;
    pdgemm_("T", "N", &no, &ir, &ni, &alpha, A, &one, &one, descA, Z, &one, &jz, descZ, &beta, U,
            &one, &one, descU, 1, 1);
    Cpdgemr2d(no, ir, U, 1, 1, descU, Zroot, 1, 1, descRZ, g.line);
  }
  if (me == root) { /* ascending column-major -> descending row-major */
    double *dst = out_side ? V : NULL;
    double *Ut = NULL;
    if (!out_side && !CLOQ_TRY_ALLOC(Ut, n_out * r, "F P")) rc = CLOQ_ERR;
    if (!out_side) dst = Ut;
    for (int64_t j = 0; rc == CLOQ_OK && j < r; j++) {
      const int64_t src = r - 1 - j;
      lam[j] = w[zoff + src] > 0.0 ? w[zoff + src] : 0.0;
      for (int64_t i = 0; i < n_out; i++) dst[i * r + j] = Zr[i + src * n_out];
    }
    if (rc == CLOQ_OK && !out_side) rc = cloq_orth_columns(Ut, n_out, r, V);
    free(Ut);
  }
  rc = AGREE(comm, rc);
done:
  pgrid_close(&g);
  free(A), free(L), free(S), free(Z), free(U), free(work), free(iwork);
  free(Ep), free(Zr), free(w);
  return rc;
}
