/* test_pdist: the ScaLAPACK top-r solve (cloq_pdist_proj_solve) against the LAPACK one
 * (cloq_proj_solve, run on root) on fresh random inputs.
 *
 * Runs in-process under mpiexec at any rank count (also 1). Every case runs on each
 * sub-communicator of ranks 0..q-1, q = 1..size, so that every grid shape the contract can form
 * with that many ranks is exercised (4 ranks: 1x1, 1x2, 1x3, 2x2), with root 0 and root q-1 in
 * turn. Covered: output side (out <= in), input side (out > in) and square; sizes not divisible
 * by the block size and smaller than it; r = 1, a middle rank and r = min side; the svd init
 * (C = I), a Cholesky factor and a pivoted one (a singular, undamped Hd); a sweep over (n, nb)
 * pairs just above and below multiples of nb (pdsyevr's per-rank workspace, the family of the
 * pdsyevd bug of STACK.md); and the error paths (every rank must fail, none may hang).
 *
 * Tolerances: eigenvalues within 1e-10 lambda_1, traces 1e-12, products V V^T E within 1e-10
 * relative where lambda_r - lambda_{r+1} > 1e-6 lambda_1.
 *
 * MPI and cmocka: a cmocka failure longjmps out of the test, and a rank that left early would
 * leave the others waiting in a collective call. So checks here do not fail on the spot: each
 * rank records its first failure, and sync_verdict() (collective over MPI_COMM_WORLD, called
 * where every rank is at the same point) makes all ranks leave the test together, rank 0 failing
 * it with the lowest failing rank's message. Only rank 0 prints the cmocka report; the exit
 * status is agreed across ranks.
 */
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>
#include <cmocka.h>
#include <mpi.h>

#include "cloq_pdist.h"
#include "test_util.h"

static const double LAM_REL_TOL = 1e-10;   /* |lam_dist - lam_lapack| / lam_1 */
static const double TRACE_REL_TOL = 1e-12; /* ||F||^2 */
static const double PROD_REL_TOL = 1e-10;  /* ||L_dist - L_lapack||_F / ||L_lapack||_F */
static const double GAP_REL = 1e-6;        /* products compared where the gap exceeds this x lam_1 */
static const double DAMP = 0.01;

static MPI_Comm world = MPI_COMM_WORLD;
static int wrank, wsize;

/* ---- non-fatal checks and the collective verdict ------------------------------------------ */

static char fail_buf[1024];
static int failed;

static void note_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_fail(const char *fmt, ...) {
  if (failed) return; /* keep the first */
  failed = 1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(fail_buf, sizeof fail_buf, fmt, ap);
  va_end(ap);
}
#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) note_fail(__VA_ARGS__);                                                           \
  } while (0)

/* |got - want| <= tol * scale, else record both with the context. */
static void check_close(double got, double want, double tol, double scale, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void check_close(double got, double want, double tol, double scale, const char *fmt, ...) {
  if (fabs(got - want) <= tol * scale) return;
  char ctx[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx, sizeof ctx, fmt, ap);
  va_end(ap);
  note_fail("%s: expected %.17g, got %.17g (|diff| = %.3g > %.3g = tol %.1e * scale %.3g)", ctx,
            want, got, fabs(got - want), tol * scale, tol, scale);
}

/* Collective over MPI_COMM_WORLD: when any rank recorded a failure, every rank leaves the
 * current test here: rank 0 fails it with the lowest failing rank's message, the other ranks
 * (whose report is silenced, see main) skip out of it so as not to repeat the message on stderr.
 * The exit status is agreed in main. */
static void sync_verdict(void) {
  int mine = failed ? wrank : INT_MAX, first = INT_MAX;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
  failed = 0;
  if (first == INT_MAX) return;
  char msg[sizeof fail_buf];
  if (wrank == first) memcpy(msg, fail_buf, sizeof msg);
  MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, world);
  if (wrank != 0) skip();
  fail_msg("rank %d: %s", first, msg);
}

/* Ranks 0..q-1 of the world (MPI_COMM_NULL on the others). Collective over the world. */
static MPI_Comm sub_comm(int q) {
  MPI_Comm sub;
  MPI_Comm_split(world, wrank < q ? 0 : MPI_UNDEFINED, wrank, &sub);
  return sub;
}

/* ---- inputs ----------------------------------------------------------------------------------- */

/* Copies the upper triangle of H (n, n) onto the lower one: exactly symmetric. */
static void mirror_upper(double *H, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < i; j++) H[i * n + j] = H[j * n + i];
}

/* H = X^T X for X (t, n) standard normal (float32 values, products in float64). */
static void random_gram(int64_t t, int64_t n, uint64_t seed, double *H) {
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  float *Xf = XALLOC(float, t * n);
  double *X = XALLOC(double, t * n);
  fill_normal_f(Xf, t * n, &g, 1.0);
  for (int64_t i = 0; i < t * n; i++) X[i] = (double)Xf[i];
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)t, 1.0, X, (int)n, 0.0, H,
              (int)n);
  mirror_upper(H, n);
  free(Xf), free(X);
}

/* L = V V^T E for V (no, r), E (no, ni). */
static void projector_product(const double *V, const double *E, int64_t no, int64_t ni, int64_t r,
                              double *L) {
  double *Z = XALLOC(double, r * ni);
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)ni, (int)no, 1.0, V, (int)r, E,
              (int)ni, 0.0, Z, (int)ni);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)no, (int)ni, (int)r, 1.0, V, (int)r,
              Z, (int)ni, 0.0, L, (int)ni);
  free(Z);
}

/* ---- one case on comm -------------------------------------------------------------------------- */

enum { C_IDENTITY, C_CHOLESKY, C_PIVOTED };

/* Collective over comm. Compares cloq_pdist_proj_solve with cloq_proj_solve (root). */
static void proj_case(MPI_Comm comm, int root, int64_t no, int64_t ni, int64_t r, int64_t nb,
                      int ck, uint64_t seed) {
  int me, q;
  MPI_Comm_rank(comm, &me);
  MPI_Comm_size(comm, &q);
  char ctx[200];
  snprintf(ctx, sizeof ctx, "solve %s, (%lld, %lld), r = %lld, nb = %lld, %d ranks, root %d",
           ck == C_IDENTITY ? "C = I" : ck == C_CHOLESKY ? "Cholesky" : "pivoted", (long long)no,
           (long long)ni, (long long)r, (long long)nb, q, root);
  const int is_root = me == root, weighted = ck != C_IDENTITY;
  const int64_t k = no < ni ? no : ni, nel = no * ni;
  double *E = NULL, *H = NULL, *V = NULL, *lam = NULL, *Vl = NULL, *laml = NULL, tr = 0, trl = 0;
  cloq_hfactor f = {0};
  int ok_ref = 1;
  if (is_root) { /* only root has the input: the others pass NULL, as the contract allows */
    cloq_rng g;
    cloq_rng_seed(&g, seed);
    E = XALLOC(double, nel), V = XALLOC(double, no * r), lam = XALLOC(double, r);
    Vl = XALLOC(double, no * (r + 1)), laml = XALLOC(double, r + 1);
    fill_normal_d(E, nel, &g, 1.0);
    cloq_err_clear();
    if (weighted) {
      H = XALLOC(double, ni * ni);
      /* pivoted: fewer tokens than inputs and no damping, so Hd is singular */
      random_gram(ck == C_PIVOTED ? (ni + 1) / 2 : 2 * ni + 3, ni, seed + 1, H);
      ok_ref = cloq_hfactor_make(H, ni, ck == C_PIVOTED ? 0.0 : DAMP, &f) == 0;
      /* (a tiny singular H may still pass dpotrf with a rounding-level last pivot: fine, C C^T
       * is Hd either way) */
      if (ok_ref && ck == C_PIVOTED && ni >= 20 && !f.piv)
        note_fail("%s: expected a pivoted factor (rank %lld of %lld)", ctx, (long long)f.rank,
                  (long long)ni);
    }
    /* the LAPACK reference, at r + 1 where possible for the gap */
    const int64_t rr = r < k ? r + 1 : r;
    if (ok_ref) ok_ref = cloq_proj_solve(E, no, ni, weighted ? &f : NULL, rr, Vl, laml, &trl) == 0;
    if (!ok_ref) note_fail("%s: LAPACK reference failed: %s", ctx, cloq_err_msg());
    if (ok_ref && rr > r) { /* keep the leading r columns of Vl, (no, r) */
      for (int64_t i = 0; i < no; i++)
        for (int64_t j = 0; j < r; j++) Vl[i * r + j] = Vl[i * rr + j];
    }
  }
  cloq_err_clear();
  const int rc = cloq_pdist_proj_solve(comm, root, E, no, ni, is_root && weighted ? &f : NULL,
                                       weighted, r, nb, V, lam, &tr);
  CHECK(rc == 0, "%s: cloq_pdist_proj_solve failed: %s", ctx, cloq_err_msg());
  if (is_root && rc == 0 && ok_ref) {
    check_close(tr, trl, TRACE_REL_TOL, trl, "%s: trace", ctx);
    for (int64_t j = 0; j < r; j++)
      check_close(lam[j], laml[j], LAM_REL_TOL, laml[0], "%s: eigenvalue %lld", ctx, (long long)j);
    const double gap = r < k ? laml[r - 1] - laml[r] : INFINITY;
    if (gap > GAP_REL * laml[0] && (!weighted || f.rank == ni)) {
      double *L = XALLOC(double, nel), *Ll = XALLOC(double, nel), num = 0, den = 0;
      projector_product(V, E, no, ni, r, L);
      projector_product(Vl, E, no, ni, r, Ll);
      for (int64_t i = 0; i < nel; i++) {
        num += (L[i] - Ll[i]) * (L[i] - Ll[i]);
        den += Ll[i] * Ll[i];
      }
      check_close(sqrt(num), 0.0, PROD_REL_TOL, sqrt(den), "%s: ||V V^T E - (V V^T E)_lapack||",
                  ctx);
      free(L), free(Ll);
    }
    double maxo = 0.0; /* V orthonormal */
    for (int64_t a = 0; a < r; a++)
      for (int64_t b = 0; b < r; b++) {
        double acc = 0.0;
        for (int64_t o = 0; o < no; o++) acc += V[o * r + a] * V[o * r + b];
        maxo = fmax(maxo, fabs(acc - (a == b ? 1.0 : 0.0)));
      }
    check_close(maxo, 0.0, 1e-12, 1.0, "%s: max |V^T V - I|", ctx);
  }
  cloq_hfactor_free(&f);
  free(E), free(H), free(V), free(lam), free(Vl), free(laml);
}

/* ---- tests ------------------------------------------------------------------------------- */

typedef struct {
  int64_t no, ni, nb;
} shape;

/* output side, input side, square; not divisible by nb; smaller than nb */
static const shape SHAPES[] = {{1, 1, 16},   {7, 3, 16},    {3, 7, 16},    {40, 97, 32},
                               {97, 40, 32}, {65, 130, 16}, {130, 65, 64}, {33, 257, 32},
                               {257, 33, 64}, {20, 20, 8},  {50, 50, 64}};
enum { SMALL_GRID_MAX = 130 }; /* the largest shapes run on the full communicator only */

static void test_solve(void **state) {
  (void)state;
  for (int q = 1; q <= wsize; q++) {
    MPI_Comm sub = sub_comm(q);
    if (sub != MPI_COMM_NULL) {
      for (size_t c = 0; c < sizeof SHAPES / sizeof SHAPES[0]; c++) {
        const shape z = SHAPES[c];
        if (q < wsize && (z.no > SMALL_GRID_MAX || z.ni > SMALL_GRID_MAX)) continue;
        const int64_t k = z.no < z.ni ? z.no : z.ni;
        const int64_t ranks[3] = {1, (k + 1) / 2, k};
        for (int v = 0; v < 3; v++)
          for (int ck = C_IDENTITY; ck <= C_PIVOTED; ck++)
            proj_case(sub, (int)((c + (size_t)v + (size_t)ck) % 2) * (q - 1), z.no, z.ni, ranks[v],
                      z.nb, ck, cloq_seed_mix(21 + (uint64_t)ck, (uint64_t)q, c * 3 + (size_t)v));
      }
      MPI_Comm_free(&sub);
    }
    sync_verdict();
  }
}

/* Many (n, nb) pairs with n just below and above multiples of nb (by 1 and by nb/4), at every
 * grid shape, both sides: pdsyevr's workspace is queried per rank and agreed (pdsyevd's query
 * undercounted on about a quarter of such cases: STACK.md). */
static void test_workspace_sweep(void **state) {
  (void)state;
  static const int64_t NBS[] = {2, 3, 4, 8, 16, 32};
  static const int64_t MULTS[] = {1, 2, 3, 5};
  enum { MAX_N = 130 }; /* keeps the sweep quick on an oversubscribed machine */
  for (int q = 1; q <= wsize; q++) {
    MPI_Comm sub = sub_comm(q);
    if (sub != MPI_COMM_NULL) {
      uint64_t c = 0;
      for (size_t a = 0; a < sizeof NBS / sizeof NBS[0]; a++)
        for (size_t b = 0; b < sizeof MULTS / sizeof MULTS[0]; b++) {
          const int64_t nb = NBS[a], offs[3] = {-1, 1, nb / 4};
          for (int o = 0; o < 3; o++) {
            const int64_t n = MULTS[b] * nb + offs[o];
            if (n < 2 || n > MAX_N || (o == 2 && offs[o] < 2)) continue;
            const int64_t other = n + 1 + (int64_t)(c % 5); /* alternate the sides */
            proj_case(sub, (int)(c % 2) * (q - 1), c % 2 ? n : other, c % 2 ? other : n,
                      (n + 1) / 2, nb, C_CHOLESKY, cloq_seed_mix(14, (uint64_t)q, c));
            c++;
          }
        }
      MPI_Comm_free(&sub);
    }
    sync_verdict();
  }
}

/* A failing call must fail on every rank (none may hang) with the reason on every rank. */
static void expect_fail_everywhere(int rc, const char *what, const char *needle, int root) {
  const char *msg = cloq_err_msg();
  CHECK(rc != 0, "%s succeeded on rank %d; expected a failure mentioning \"%s\"", what, wrank,
        needle);
  CHECK(strstr(msg, needle) != NULL, "%s on rank %d failed with \"%s\"; expected \"%s\"", what,
        wrank, msg, needle);
  if (root >= 0 && wrank != root)
    CHECK(strstr(msg, "failed on rank") != NULL,
          "%s on rank %d: \"%s\" does not name the failing rank", what, wrank, msg);
  cloq_err_clear();
}

static void test_errors(void **state) {
  (void)state;
  const int root = wsize - 1; /* not rank 0 when there are several */
  const int is_root = wrank == root;
  const int64_t no = 6, ni = 4;
  double E[6 * 4], H[16], V[6 * 4], lam[4], tr;
  cloq_rng g;
  cloq_rng_seed(&g, 8);
  fill_normal_d(E, no * ni, &g, 1.0);
  random_gram(9, ni, 7, H);
  cloq_hfactor f = {0};
  cloq_err_clear();
  CHECK(cloq_hfactor_make(H, ni, DAMP, &f) == 0, "factor: %s", cloq_err_msg());

  /* non-finite entry of E, seen on root only */
  E[5 * 4 + 3] = is_root ? INFINITY : 0.0;
  cloq_err_clear();
  int rc = cloq_pdist_proj_solve(world, root, is_root ? E : NULL, no, ni, is_root ? &f : NULL, 1,
                                 2, 4, V, lam, &tr);
  expect_fail_everywhere(rc, "solve with inf", "non-finite value in quantization error", root);
  E[5 * 4 + 3] = 0.5;

  /* rank out of range (every rank finds it) */
  rc = cloq_pdist_proj_solve(world, root, E, no, ni, &f, 1, 0, 4, V, lam, &tr);
  expect_fail_everywhere(rc, "solve with r = 0", "out of range", -1);
  rc = cloq_pdist_proj_solve(world, root, E, no, ni, &f, 1, 5, 4, V, lam, &tr);
  expect_fail_everywhere(rc, "solve with r = 5 > min(out, in)", "out of range", -1);
  rc = cloq_pdist_proj_solve(world, wsize, E, no, ni, &f, 1, 2, 4, V, lam, &tr);
  expect_fail_everywhere(rc, "solve with root outside the communicator", "root", -1);

  /* arguments that differ across ranks are caught instead of hanging */
  if (wsize > 1) {
    rc = cloq_pdist_proj_solve(world, root, E, wrank == 0 ? 5 : 6, ni, &f, 1, 2, 4, V, lam, &tr);
    expect_fail_everywhere(rc, "solve with n_out differing across ranks", "differs across", -1);
  }

  /* and the grid still works afterwards */
  cloq_err_clear();
  rc = cloq_pdist_proj_solve(world, root, E, no, ni, &f, 1, 2, 4, V, lam, &tr);
  CHECK(rc == 0, "solve after the failures, rank %d: %s", wrank, cloq_err_msg());
  cloq_hfactor_free(&f);
  sync_verdict();
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(world, &wrank);
  MPI_Comm_size(world, &wsize);
  cloq_err_set_rank(wrank);
  /* Only rank 0 prints the cmocka report (all ranks leave a failing test together, and rank 0
   * reports the failing rank's message). The other ranks switch cmocka to TAP, which writes its
   * report to stdout, and silence stdout: their stderr stays open for real diagnostics
   * (sanitizers, BLACS aborts, cloq_warn). */
  if (wrank != 0) {
    cmocka_set_message_output(CM_OUTPUT_TAP);
    if (!freopen("/dev/null", "w", stdout))
      fprintf(stderr, "rank %d: could not silence stdout\n", wrank);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_solve),
      cmocka_unit_test(test_workspace_sweep),
      cmocka_unit_test(test_errors),
  };
  char name[64];
  snprintf(name, sizeof name, "linalg_pdist (%d rank%s)", wsize, wsize == 1 ? "" : "s");
  int nfail = cmocka_run_group_tests_name(name, tests, NULL, NULL);
  int worst = 0; /* rank 0's count: the others skip where it fails */
  MPI_Allreduce(&nfail, &worst, 1, MPI_INT, MPI_MAX, world);
  MPI_Finalize();
  return worst ? 1 : 0;
}
