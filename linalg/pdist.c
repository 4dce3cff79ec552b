/* pdist: the damped eigendecomposition and the truncated SVD on a ScaLAPACK process grid.
 *
 * This is the one MPI-aware file of linalg/ (built as its own library, cloq_pdist, so that
 * cloq_linalg stays MPI-free). It does only math and data movement: no files, and no printing
 * except through cloq_err/cloq_warn. The contract is in cloq_pdist.h; this comment records how.
 *
 * Data movement. The full matrix lives on root. A 1x1 BLACS grid holding root alone describes it
 * as one block; Cpdgemr2d copies it onto the nprow x npcol grid (2D block-cyclic, nb x nb) and
 * later copies the results back the same way. Cpdgemr2d needs a context spanning both grids;
 * we hand it a 1 x size "line" grid, because given any other shape it builds (and leaks a BLACS
 * system handle for) a line grid of its own on every call.
 *
 * Layouts. ScaLAPACK is column-major, the contract row-major. A row-major symmetric Hd is its own
 * column-major array, so H goes over as is (pdsyevd reads the column-major upper triangle, i.e.
 * the row-major lower one, the same triangle eig.c's dsyevd reads). pdsyevd returns eigenvectors
 * as the columns of a column-major Z, which lands on root as the transpose of what we want and
 * is transposed in place (as eig.c does). A row-major M (m, n) is the column-major M^T (n, m);
 * the SVD of M^T = V diag(S) P^T gives, column-major, Uc = V (n, k) and VTc = P^T (k, m). The
 * first r columns of Uc, gathered column-major with leading dimension n, ARE the row-major
 * Vt (r, n); the first r rows of VTc, gathered with leading dimension r, ARE the row-major
 * P (m, r). So the SVD needs no transpose at all.
 *
 * The pdsyevd workspace (STACK.md, Reference-ScaLAPACK/scalapack#74). pdsyevd's lwork = -1 query
 * undercounts what two routines it calls need from the tail of WORK (offset 2n):
 *   PDORMTR, which then fails with "parameter 16 illegal" that pdsyevd ignores (INFO = 0 and
 *     the eigenvectors of the tridiagonal matrix are returned untransformed: garbage);
 *   PDLASRT (inside PDSTEDC, n > nb on more than one rank), which needs max(n, np (nb + nq))
 *     and on failure returns on some ranks only: the others wait forever (the deadlocks).
 * So lwork = max(query, 2n + PDORMTR's own query, 2n + PDLASRT's need), liwork likewise, and
 * both are agreed across ranks (MPI_Allreduce MAX) because the routines check them per rank.
 * When n <= nb, PDSTEDC solves on process (0, 0) alone and the other ranks are left holding the
 * tridiagonal's diagonal as "eigenvalues": the eigenvalues are broadcast from (0, 0).
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
 * Cpdgemr2d's int offsets) and the workspaces must all fit, which they do for n up to 46340.
 */
#include "cloq_pdist.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
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
void pdsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *ia,
              const int *ja, const int *desca, double *w, double *z, const int *iz, const int *jz,
              const int *descz, double *work, const int *lwork, int *iwork, const int *liwork,
              int *info, size_t jobz_len, size_t uplo_len);
void pdormtr_(const char *side, const char *uplo, const char *trans, const int *m, const int *n,
              double *a, const int *ia, const int *ja, const int *desca, double *tau, double *c,
              const int *ic, const int *jc, const int *descc, double *work, const int *lwork,
              int *info, size_t side_len, size_t uplo_len, size_t trans_len);
void pdgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a,
              const int *ia, const int *ja, const int *desca, double *s, double *u, const int *iu,
              const int *ju, const int *descu, double *vt, const int *ivt, const int *jvt,
              const int *descvt, double *work, const int *lwork, int *info, size_t jobu_len,
              size_t jobvt_len);

enum { DLEN = 9, DESC_CTXT = 1 }; /* ScaLAPACK array descriptor: length, context entry */
enum { ERR_LEN = 1024 };          /* room for one cloq_err line */

/* An MPI call that must succeed. Under comm's default handler (MPI_ERRORS_ARE_FATAL) a failure
 * aborts before this check; under MPI_ERRORS_RETURN it is recorded and propagated. */
#define PD_MPI(call)                                                                               \
  do {                                                                                             \
    int pd_mpi_rc_ = (call);                                                                       \
    if (pd_mpi_rc_ != MPI_SUCCESS) {                                                               \
      char pd_mpi_s_[MPI_MAX_ERROR_STRING];                                                        \
      int pd_mpi_len_ = 0;                                                                         \
      MPI_Error_string(pd_mpi_rc_, pd_mpi_s_, &pd_mpi_len_);                                       \
      return CLOQ_FAIL("%s failed: %s", #call, pd_mpi_s_);                                        \
    }                                                                                              \
  } while (0)

/* Collective over comm: CLOQ_OK when rc is 0 on every rank, else CLOQ_ERR on every rank; the
 * ranks whose rc is 0 record "failed on rank R: <R's reason>" for the lowest failing rank R
 * (reported as raised at the caller's line). */
static int agree_at(MPI_Comm comm, int rc, int line, const char *func) {
  int me = 0, first = INT_MAX;
  PD_MPI(MPI_Comm_rank(comm, &me));
  int mine = rc ? me : INT_MAX;
  PD_MPI(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == INT_MAX) return CLOQ_OK;
  char msg[ERR_LEN] = "";
  if (me == first) snprintf(msg, sizeof msg, "%s", cloq_err_msg());
  PD_MPI(MPI_Bcast(msg, ERR_LEN, MPI_CHAR, first, comm));
  if (!rc) (void)cloq_err_set(__FILE__, line, func, "failed on rank %d: %s", first, msg);
  return CLOQ_ERR;
}
#define AGREE(comm, rc) agree_at((comm), (rc), __LINE__, __func__)

/* Collective over comm: fails on every rank unless vals[0..k) are the same on every rank (a
 * mismatch would otherwise hang or corrupt the ScaLAPACK calls). */
enum { MAX_ARGS = 8 };
static int same_args(MPI_Comm comm, const int64_t *vals, int k, const char *const *names) {
  int64_t mx[2 * MAX_ARGS], red[2 * MAX_ARGS];
  for (int i = 0; i < k; i++) {
    mx[i] = vals[i];
    mx[k + i] = vals[i] == INT64_MIN ? INT64_MAX : -vals[i]; /* max of -x is -min x */
  }
  PD_MPI(MPI_Allreduce(mx, red, 2 * k, MPI_INT64_T, MPI_MAX, comm));
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
  PD_MPI(MPI_Comm_rank(comm, &me));
  PD_MPI(MPI_Comm_size(comm, &size));
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
  PD_MPI(MPI_Allreduce(&mine, &g->corner, 1, MPI_INT, MPI_MAX, comm));
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
  PD_MPI(MPI_Allreduce(mine, all, 2, MPI_INT64_T, MPI_MAX, comm));
  CLOQ_CHECK(all[0] >= 1 && all[0] <= INT_MAX && all[1] >= 0 && all[1] <= INT_MAX,
             "%s: workspace of %lld doubles / %lld ints exceeds the 32-bit ScaLAPACK interface",
             name, (long long)all[0], (long long)all[1]);
  *lwork = (int)all[0];
  *liwork = all[1] > 1 ? (int)all[1] : 1;
  return CLOQ_OK;
}

/* ---- damped eigendecomposition --------------------------------------------------------------- */

/* Hd and the eigenvalue floor come from eig.c (cloq_eig_prepare, cloq_eig_clamp): both paths
 * see the same Hd bit for bit and clamp alike. */

/* Local checks of cloq_pdist_eig_damped's arguments (before any collective step). */
static int eig_args(int me, int size, int root, const double *H, int64_t n, double damp,
                    int64_t nb, const double *s, const double *U, const int64_t *nclamped) {
  CLOQ_CHECK(root >= 0 && root < size, "root %d outside the communicator (size %d)", root, size);
  CLOQ_CHECK(n >= 1 && cloq_fits_int(n), "invalid Gram matrix order %lld", (long long)n);
  CLOQ_CHECK(n <= INT_MAX / n,
             "Gram matrix order %lld exceeds the 32-bit ScaLAPACK redistribution (n^2 > %d)",
             (long long)n, INT_MAX);
  CLOQ_CHECK(isfinite(damp) && damp >= 0.0, "invalid damping %g (expected finite, >= 0)", damp);
  int inb;
  CLOQ_CALL(resolve_nb(nb, &inb));
  CLOQ_CHECK(s && nclamped, "eigenvalue outputs must be given on every rank");
  CLOQ_CHECK(me != root || (H && U), "H and U must be given on root");
  return CLOQ_OK;
}

/* pdsyevd's failure codes (info > 0: eigenvalue info / (n + 1) failed on the submatrix at rows
 * and columns info mod (n + 1)). */
static int syevd_fail(int info, int n) {
  if (info < 0) return illegal_arg("pdsyevd", info);
  return CLOQ_FAIL("pdsyevd: failed to converge (info=%d: eigenvalue %d, submatrix at %d)", info,
                   info / (n + 1), info % (n + 1));
}

/* Workspace for pdsyevd with the fix described at the top of this file (local need). */
static int syevd_workspace(int n, int nb, const pgrid *g, double *A, const int *descA, double *w,
                           double *Z, const int *descZ, int64_t *need, int64_t *ineed) {
  const int one = 1, query = -1;
  double wq = 0.0, wq_ormtr = 0.0;
  int iwq = 0, info = 0;
  pdsyevd_("V", "U", &n, A, &one, &one, descA, w, Z, &one, &one, descZ, &wq, &query, &iwq, &query,
           &info, 1, 1);
  if (info != 0) return illegal_arg("pdsyevd (workspace query)", info);
  /* the same PDORMTR call pdsyevd makes (w stands in for tau: a query reads neither) */
  pdormtr_("L", "U", "N", &n, &n, A, &one, &one, descA, w, Z, &one, &one, descZ, &wq_ormtr, &query,
           &info, 1, 1, 1);
  if (info != 0) return illegal_arg("pdormtr (workspace query)", info);
  const int64_t np = numroc(n, nb, g->myrow, g->nprow), nq = numroc(n, nb, g->mycol, g->npcol);
  const int64_t lasrt = np * (nb + nq) > n ? np * (nb + nq) : n; /* PDLASRT's LWMIN */
  const int64_t tail = 2 * (int64_t)n; /* pdsyevd hands both routines WORK(2n + 1:) */
  int64_t lw = (int64_t)wq;
  if (tail + (int64_t)wq_ormtr > lw) lw = tail + (int64_t)wq_ormtr;
  if (tail + lasrt > lw) lw = tail + lasrt;
  int64_t liw = iwq;
  const int64_t lasrt_i = n + 2 * ((int64_t)nb + g->npcol); /* PDLASRT's LIWMIN */
  if (lasrt_i > liw) liw = lasrt_i;
  *need = lw;
  *ineed = liw;
  return CLOQ_OK;
}

int cloq_pdist_eig_damped(MPI_Comm comm, int root, const double *H, int64_t n, double damp,
                          int64_t nb, double *s, double *U, int64_t *nclamped) {
  int me = 0, size = 0;
  PD_MPI(MPI_Comm_rank(comm, &me));
  PD_MPI(MPI_Comm_size(comm, &size));

  /* 1. arguments (all ranks) and Hd (root, into U: U is also where the vectors come back) */
  int rc = eig_args(me, size, root, H, n, damp, nb, s, U, nclamped);
  if (rc == CLOQ_OK && me == root) rc = cloq_eig_prepare(H, n, damp, U);
  int64_t damp_bits;
  memcpy(&damp_bits, &damp, sizeof damp_bits);
  const int64_t args[4] = {n, nb, root, damp_bits};
  static const char *const arg_names[4] = {"n", "nb", "root", "damp"};
  rc |= same_args(comm, args, 4, arg_names); /* collective: every rank runs it */
  CLOQ_CALL(AGREE(comm, rc));

  const int in = (int)n, one = 1;
  int inb = 0;
  (void)resolve_nb(nb, &inb); /* checked above */
  pgrid g;
  CLOQ_CALL(pgrid_open(comm, root, &g));
  double *A = NULL, *Z = NULL, *work = NULL;
  int *iwork = NULL;
  int descA[DLEN], descZ[DLEN], descR[DLEN], lld = 1, lwork = 0, liwork = 0, info = 0;
  int64_t nloc = 0, need = 0, ineed = 0;
  double dummy = 0.0;
  double *Uroot = (me == root) ? U : &dummy;

  /* 2. local blocks and descriptors */
  rc = local_shape(in, in, inb, &g, &lld, &nloc);
  if (rc == CLOQ_OK)
    rc = (CLOQ_TRY_ALLOC(A, nloc, "local block of Hd") &&
          CLOQ_TRY_ALLOC(Z, nloc, "local block of the eigenvectors"))
             ? CLOQ_OK
             : CLOQ_ERR;
  if (rc == CLOQ_OK) rc = make_desc(descA, in, in, inb, inb, g.grid, lld);
  if (rc == CLOQ_OK) rc = make_desc(descZ, in, in, inb, inb, g.grid, lld);
  if (rc == CLOQ_OK) rc = make_desc(descR, in, in, inb, inb, g.rootctx, in);
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;

  /* 3. Hd: root -> grid (collective over the line context) */
  Cpdgemr2d(in, in, Uroot, 1, 1, descR, A, 1, 1, descA, g.line);

  /* 4. workspace: queries, the pdsyevd fix, agreement, allocation */
  rc = syevd_workspace(in, inb, &g, A, descA, s, Z, descZ, &need, &ineed);
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;
  rc = agree_lwork(comm, "pdsyevd", need, ineed, &lwork, &liwork);
  if (rc == CLOQ_OK)
    rc = (CLOQ_TRY_ALLOC(work, lwork, "pdsyevd workspace") &&
          CLOQ_TRY_ALLOC(iwork, liwork, "pdsyevd integer workspace"))
             ? CLOQ_OK
             : CLOQ_ERR;
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;

  /* 5. the decomposition (collective over the grid) */
  pdsyevd_("V", "U", &in, A, &one, &one, descA, s, Z, &one, &one, descZ, work, &lwork, iwork,
           &liwork, &info, 1, 1);
  rc = info != 0 ? syevd_fail(info, in) : CLOQ_OK;
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;

  /* 6. eigenvalues from process (0, 0) to every rank; eigenvectors grid -> root */
  if (MPI_Bcast(s, in, MPI_DOUBLE, g.corner, comm) != MPI_SUCCESS)
    rc = CLOQ_FAIL("MPI_Bcast of the eigenvalues failed");
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;
  Cpdgemr2d(in, in, Z, 1, 1, descZ, Uroot, 1, 1, descR, g.line);
  if (me == root) cloq_transpose_square(U, n); /* column-major Z -> row-major U */
  cloq_eig_clamp(s, n, nclamped);
  rc = CLOQ_OK;
done:
  pgrid_close(&g);
  free(A);
  free(Z);
  free(work);
  free(iwork);
  return rc;
}

/* ---- truncated SVD ------------------------------------------------------------------------- */

/* Local checks of cloq_pdist_svd_trunc's arguments (before any collective step); root also
 * scans M. Same messages as svd.c. */
static int svd_args(int me, int size, int root, const double *M, int64_t m, int64_t n, int64_t r,
                    int64_t nb, const double *P, const double *S, const double *Vt) {
  CLOQ_CHECK(root >= 0 && root < size, "root %d outside the communicator (size %d)", root, size);
  CLOQ_CHECK(m >= 1 && n >= 1 && cloq_fits_int(m) && cloq_fits_int(n),
             "invalid matrix shape (%lld, %lld) for SVD", (long long)m, (long long)n);
  const int64_t k = m < n ? m : n;
  CLOQ_CHECK(r >= 1 && r <= k, "SVD rank %lld out of range [1, %lld] for a (%lld, %lld) matrix",
             (long long)r, (long long)k, (long long)m, (long long)n);
  CLOQ_CHECK(m <= INT_MAX / n,
             "matrix (%lld, %lld) exceeds the 32-bit ScaLAPACK redistribution (m n > %d)",
             (long long)m, (long long)n, INT_MAX);
  int inb;
  CLOQ_CALL(resolve_nb(nb, &inb));
  CLOQ_CHECK(S, "singular values must be given on every rank");
  if (me != root) return CLOQ_OK;
  CLOQ_CHECK(M && P && Vt, "M, P and Vt must be given on root");
  const int64_t bad = cloq_first_nonfinite_d(M, m * n);
  CLOQ_CHECK(bad < 0, "non-finite value in matrix for SVD at (%lld, %lld)", (long long)(bad / n),
             (long long)(bad % n));
  return CLOQ_OK;
}

/* pdgesvd's failure codes. */
static int gesvd_fail(int info, int k) {
  if (info < 0) return illegal_arg("pdgesvd", info);
  if (info == k + 1)
    return CLOQ_FAIL("pdgesvd: singular values differ across the process grid (info=%d: "
                     "heterogeneous ranks)",
                     info);
  return CLOQ_FAIL("pdgesvd: DBDSQR failed to converge (info=%d)", info);
}

int cloq_pdist_svd_trunc(MPI_Comm comm, int root, const double *M, int64_t m, int64_t n, int64_t r,
                         int64_t nb, double *P, double *S, double *Vt) {
  int me = 0, size = 0;
  PD_MPI(MPI_Comm_rank(comm, &me));
  PD_MPI(MPI_Comm_size(comm, &size));

  /* 1. arguments (all ranks), finiteness of M (root) */
  int rc = svd_args(me, size, root, M, m, n, r, nb, P, S, Vt);
  const int64_t args[5] = {m, n, r, nb, root};
  static const char *const arg_names[5] = {"m", "n", "r", "nb", "root"};
  rc |= same_args(comm, args, 5, arg_names); /* collective: every rank runs it */
  CLOQ_CALL(AGREE(comm, rc));

  /* The grid works on A = M^T (gm = n rows, gn = m columns); see the top of this file. */
  const int gm = (int)n, gn = (int)m, k = (int)(m < n ? m : n), ir = (int)r, one = 1;
  int inb = 0;
  (void)resolve_nb(nb, &inb); /* checked above */
  pgrid g;
  CLOQ_CALL(pgrid_open(comm, root, &g));
  double *A = NULL, *Uc = NULL, *VTc = NULL, *Sk = NULL, *work = NULL;
  int descA[DLEN], descU[DLEN], descVT[DLEN], descM[DLEN], descP[DLEN], descVt[DLEN];
  int lldA = 1, lldU = 1, lldVT = 1, lwork = 0, liwork = 0, info = 0;
  int64_t nA = 0, nU = 0, nVT = 0;
  double dummy = 0.0;
  /* Cpdgemr2d only reads its source: the cast drops const for the Fortran-style prototype */
  double *Mroot = (me == root) ? (double *)(uintptr_t)M : &dummy;
  double *Proot = (me == root) ? P : &dummy, *Vtroot = (me == root) ? Vt : &dummy;

  /* 2. local blocks and descriptors: A (n, m), Uc (n, k), VTc (k, m) on the grid; on root M as
   * the column-major (n, m), Vt as the column-major (n, r), P as the column-major (r, m) */
  rc = local_shape(gm, gn, inb, &g, &lldA, &nA);
  if (rc == CLOQ_OK) rc = local_shape(gm, k, inb, &g, &lldU, &nU);
  if (rc == CLOQ_OK) rc = local_shape(k, gn, inb, &g, &lldVT, &nVT);
  if (rc == CLOQ_OK)
    rc = (CLOQ_TRY_ALLOC(A, nA, "local block of M^T") &&
          CLOQ_TRY_ALLOC(Uc, nU, "local block of V") &&
          CLOQ_TRY_ALLOC(VTc, nVT, "local block of P^T") &&
          CLOQ_TRY_ALLOC(Sk, k, "singular values"))
             ? CLOQ_OK
             : CLOQ_ERR;
  if (rc == CLOQ_OK) rc = make_desc(descA, gm, gn, inb, inb, g.grid, lldA);
  if (rc == CLOQ_OK) rc = make_desc(descU, gm, k, inb, inb, g.grid, lldU);
  if (rc == CLOQ_OK) rc = make_desc(descVT, k, gn, inb, inb, g.grid, lldVT);
  if (rc == CLOQ_OK) rc = make_desc(descM, gm, gn, inb, inb, g.rootctx, gm);
  if (rc == CLOQ_OK) rc = make_desc(descVt, gm, ir, inb, inb, g.rootctx, gm);
  if (rc == CLOQ_OK) rc = make_desc(descP, ir, gn, inb, inb, g.rootctx, ir);
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;

  /* 3. M^T: root -> grid */
  Cpdgemr2d(gm, gn, Mroot, 1, 1, descM, A, 1, 1, descA, g.line);

  /* 4. workspace: query, agreement (the query is per rank), allocation */
  {
    const int query = -1;
    double wq = 0.0;
    pdgesvd_("V", "V", &gm, &gn, A, &one, &one, descA, Sk, Uc, &one, &one, descU, VTc, &one, &one,
             descVT, &wq, &query, &info, 1, 1);
    rc = info != 0 ? illegal_arg("pdgesvd (workspace query)", info) : CLOQ_OK;
    if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;
    rc = agree_lwork(comm, "pdgesvd", (int64_t)wq, 0, &lwork, &liwork);
    if (rc == CLOQ_OK && !CLOQ_TRY_ALLOC(work, lwork, "pdgesvd workspace")) rc = CLOQ_ERR;
    if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;
  }

  /* 5. the decomposition (collective over the grid) */
  pdgesvd_("V", "V", &gm, &gn, A, &one, &one, descA, Sk, Uc, &one, &one, descU, VTc, &one, &one,
           descVT, work, &lwork, &info, 1, 1);
  rc = info != 0 ? gesvd_fail(info, k) : CLOQ_OK;
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;

  /* 6. singular values from root to every rank (pdgesvd replicates them; root's copy is the
   * one that goes with the vectors gathered there); the r leading vectors grid -> root */
  if (MPI_Bcast(Sk, k, MPI_DOUBLE, root, comm) != MPI_SUCCESS)
    rc = CLOQ_FAIL("MPI_Bcast of the singular values failed");
  if ((rc = AGREE(comm, rc)) != CLOQ_OK) goto done;
  memcpy(S, Sk, (size_t)r * sizeof *S);
  Cpdgemr2d(gm, ir, Uc, 1, 1, descU, Vtroot, 1, 1, descVt, g.line);
  Cpdgemr2d(ir, gn, VTc, 1, 1, descVT, Proot, 1, 1, descP, g.line);
  rc = CLOQ_OK;
done:
  pgrid_close(&g);
  free(A);
  free(Uc);
  free(VTc);
  free(Sk);
  free(work);
  return rc;
}
