/* test_pdist: the ScaLAPACK path (cloq_pdist_eig_damped, cloq_pdist_svd_trunc) against the
 * LAPACK path (cloq_eig_damped, cloq_svd_trunc, run on root) on fresh random inputs.
 *
 * Runs in-process under mpiexec at any rank count (also 1). Every case runs on each
 * sub-communicator of ranks 0..q-1, q = 1..size, so that every grid shape the contract can form
 * with that many ranks is exercised (4 ranks: 1x1, 1x2, 1x3, 2x2), with root 0 and root q-1 in
 * turn. Covered: sizes not divisible by the block size, n <= nb (where pdsyevd leaves the right
 * eigenvalues on process (0, 0) only), a sweep over (n, nb) pairs just above and below multiples
 * of nb (the regression test for the pdsyevd/PDORMTR/PDLASRT workspace bug of STACK.md), tall
 * and wide SVDs, and the error paths (every rank must fail, none may hang).
 *
 * MPI and cmocka: a cmocka failure longjmps out of the test, and a rank that left early would
 * leave the others waiting in a collective call. So checks here do not fail on the spot: each
 * rank records its first failure, and sync_verdict() (collective over MPI_COMM_WORLD, called
 * where every rank is at the same point) makes all ranks leave the test together, rank 0 failing
 * it with the lowest failing rank's message. Only rank 0 prints the cmocka report; the exit
 * status is agreed across ranks.
 *
 * The checks on root use cblas (the same OpenBLAS the LAPACK path uses, but not ScaLAPACK):
 * plain loops made the sanitizer builds of this test several times slower.
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

static const double EIGVAL_REL_TOL = 1e-10; /* |s_dist - s_lapack| / max|s| */
static const double EIGVEC_TOL = 1e-10;     /* max ||U_dist^T U_lapack| - I|, separated spectrum */
static const double RECON_TOL = 1e-10;      /* ||U diag(s) U^T - Hd||_F / ||Hd||_F */
static const double ORTHO_TOL = 1e-10;      /* max |U^T U - I| */
static const double SV_REL_TOL = 1e-10;     /* |S_dist - S_lapack| / S_max */
static const double SVEC_TOL = 1e-10;       /* max ||P_dist^T P_lapack| - I| (and Vt), separated */
static const double SVD_RECON_TOL = 1e-10;  /* ||P S Vt - (P S Vt)_lapack||_F, relative */
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

/* ---- inputs and reference quantities ------------------------------------------------------ */

static void damped(const double *H, int64_t n, double damp, double *Hd) {
  double tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += H[i * n + i];
  memcpy(Hd, H, (size_t)(n * n) * sizeof *Hd);
  for (int64_t i = 0; i < n; i++) Hd[i * n + i] += damp * (tr / (double)n);
}

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

/* C (m, n) = A (m, k) diag(d) B^T for B (n, k): the product every construction and check here
 * needs. */
static void mul_diag_bt(const double *A, const double *d, const double *B, int64_t m, int64_t k,
                        int64_t n, double *C) {
  double *Ad = XALLOC(double, m * k);
  for (int64_t i = 0; i < m; i++)
    for (int64_t l = 0; l < k; l++) Ad[i * k + l] = A[i * k + l] * d[l];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0, Ad, (int)k, B,
              (int)k, 0.0, C, (int)n);
  free(Ad);
}

/* Orthonormal columns Q (rows, cols), rows >= cols: left singular vectors of a normal matrix. */
static void random_orthonormal(int64_t rows, int64_t cols, uint64_t seed, double *Q) {
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  double *G = XALLOC(double, rows * cols), *S = XALLOC(double, cols);
  double *Vt = XALLOC(double, cols * cols);
  fill_normal_d(G, rows * cols, &g, 1.0);
  cloq_err_clear();
  if (cloq_svd_trunc(G, rows, cols, cols, Q, S, Vt) != 0)
    note_fail("setup SVD: %s", cloq_err_msg());
  free(G), free(S), free(Vt);
}

/* H = Q diag(d) Q^T with d_i = 1 + i: eigenvalues one apart, so the eigenvectors are well
 * determined and comparable across the two paths. */
static void separated_sym(int64_t n, uint64_t seed, double *H) {
  double *Q = XALLOC(double, n * n), *d = XALLOC(double, n);
  random_orthonormal(n, n, seed, Q);
  for (int64_t k = 0; k < n; k++) d[k] = 1.0 + (double)k;
  mul_diag_bt(Q, d, Q, n, n, n, H);
  mirror_upper(H, n);
  free(Q), free(d);
}

/* M (m, n) = Qa diag(sig) Qb^T, sig_i = k - i (k = min(m, n)): singular values one apart. */
static void separated_mat(int64_t m, int64_t n, uint64_t seed, double *M) {
  const int64_t k = m < n ? m : n;
  double *Qa = XALLOC(double, m * k), *Qb = XALLOC(double, n * k), *sig = XALLOC(double, k);
  random_orthonormal(m, k, seed, Qa);
  random_orthonormal(n, k, seed + 1, Qb);
  for (int64_t l = 0; l < k; l++) sig[l] = (double)(k - l);
  mul_diag_bt(Qa, sig, Qb, m, k, n, M);
  free(Qa), free(Qb), free(sig);
}

/* Reconstruction and orthogonality of U diag(s) U^T = Hd (root). */
static void check_eig_decomposition(const char *ctx, const double *Hd, int64_t n, const double *s,
                                    const double *U) {
  double *R = XALLOC(double, n * n), *G = XALLOC(double, n * n);
  mul_diag_bt(U, s, U, n, n, n, R); /* U diag(s) U^T */
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0, U, (int)n, U,
              (int)n, 0.0, G, (int)n); /* U^T U */
  double num = 0.0, maxo = 0.0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      num += (R[i * n + j] - Hd[i * n + j]) * (R[i * n + j] - Hd[i * n + j]);
      maxo = fmax(maxo, fabs(G[i * n + j] - (i == j ? 1.0 : 0.0)));
    }
  free(R), free(G);
  check_close(sqrt(num), 0.0, RECON_TOL, frob_d(Hd, n * n), "%s: ||U diag(s) U^T - Hd||_F", ctx);
  check_close(maxo, 0.0, ORTHO_TOL, 1.0, "%s: max |U^T U - I|", ctx);
  for (int64_t k = 1; k < n; k++)
    CHECK(s[k - 1] <= s[k], "%s: eigenvalues not ascending at %lld: %g > %g", ctx, (long long)k,
          s[k - 1], s[k]);
}

/* max | |A^T B| - I | over the leading r columns of A (rows, lda) and B (rows, ldb): 0 when the
 * columns agree up to sign. */
static double signed_identity_dev(const double *A, int64_t lda, const double *B, int64_t ldb,
                                  int64_t rows, int64_t r) {
  double *G = XALLOC(double, r * r), dev = 0.0;
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)r, (int)rows, 1.0, A,
              (int)lda, B, (int)ldb, 0.0, G, (int)r);
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < r; j++)
      dev = fmax(dev, fabs(fabs(G[i * r + j]) - (i == j ? 1.0 : 0.0)));
  free(G);
  return dev;
}

/* ---- one eigendecomposition case on comm -------------------------------------------------- */

enum { GEN_GRAM, GEN_SEPARATED, GEN_DEFICIENT };

/* Collective over comm. Compares cloq_pdist_eig_damped with cloq_eig_damped (root) and checks
 * that s and nclamped are the same on every rank. */
static void eig_case(MPI_Comm comm, int root, int64_t n, int64_t nb, int gen, uint64_t seed) {
  int me, q;
  MPI_Comm_rank(comm, &me);
  MPI_Comm_size(comm, &q);
  char ctx[160];
  snprintf(ctx, sizeof ctx, "eig %s, n = %lld, nb = %lld, %d ranks, root %d",
           gen == GEN_SEPARATED ? "separated" : gen == GEN_GRAM ? "Gram" : "rank-deficient Gram",
           (long long)n, (long long)nb, q, root);
  const int is_root = me == root;
  double *H = NULL, *U = NULL, *Hd = NULL, *Ul = NULL;
  double *s = XALLOC(double, n), *sl = XALLOC(double, n);
  int64_t kl = -1, kd = -1;
  const double damp = gen == GEN_DEFICIENT ? 0.0 : DAMP;
  if (is_root) { /* only root has the input: the others pass NULL, as the contract allows */
    H = XALLOC(double, n * n), U = XALLOC(double, n * n);
    Hd = XALLOC(double, n * n), Ul = XALLOC(double, n * n);
    if (gen == GEN_SEPARATED)
      separated_sym(n, seed, H);
    else
      random_gram(gen == GEN_DEFICIENT ? (n + 1) / 2 : 2 * n + 3, n, seed, H);
    damped(H, n, damp, Hd);
    cloq_err_clear();
    if (cloq_eig_damped(H, n, damp, sl, Ul, &kl) != 0)
      note_fail("%s: LAPACK reference failed: %s", ctx, cloq_err_msg());
  }
  cloq_err_clear();
  const int rc = cloq_pdist_eig_damped(comm, root, H, n, damp, nb, s, U, &kd);
  CHECK(rc == 0, "%s: cloq_pdist_eig_damped failed: %s", ctx, cloq_err_msg());
  /* every rank: its s and nclamped against root's reference */
  MPI_Bcast(sl, (int)n, MPI_DOUBLE, root, comm);
  MPI_Bcast(&kl, 1, MPI_INT64_T, root, comm);
  if (rc == 0) {
    double smax = 0.0;
    for (int64_t i = 0; i < n; i++) smax = fmax(smax, fabs(sl[i]));
    for (int64_t i = 0; i < n; i++)
      check_close(s[i], sl[i], EIGVAL_REL_TOL, smax, "%s: eigenvalue %lld on rank %d", ctx,
                  (long long)i, me);
    CHECK(kd == kl, "%s: rank %d: %lld eigenvalues clamped, LAPACK path %lld", ctx, me,
          (long long)kd, (long long)kl);
    CHECK(gen != GEN_DEFICIENT || kd == n - (n + 1) / 2,
          "%s: expected %lld clamped eigenvalues, got %lld", ctx, (long long)(n - (n + 1) / 2),
          (long long)kd);
  }
  /* every rank holds the same s, bit for bit */
  double *s0 = XALLOC(double, n);
  memcpy(s0, s, (size_t)n * sizeof *s0);
  MPI_Bcast(s0, (int)n, MPI_DOUBLE, root, comm);
  CHECK(memcmp(s0, s, (size_t)n * sizeof *s) == 0, "%s: rank %d's eigenvalues differ from root's",
        ctx, me);
  if (is_root && rc == 0) {
    check_eig_decomposition(ctx, Hd, n, s, U);
    if (gen == GEN_SEPARATED)
      check_close(signed_identity_dev(U, n, Ul, n, n, n), 0.0, EIGVEC_TOL, 1.0,
                  "%s: max ||U_dist^T U_lapack| - I|", ctx);
  }
  free(H), free(U), free(Hd), free(Ul), free(s), free(sl), free(s0);
}

/* ---- one SVD case on comm ------------------------------------------------------------------ */

/* Collective over comm. Compares cloq_pdist_svd_trunc with cloq_svd_trunc (root). separated:
 * singular values one apart, so the vectors are compared too; otherwise a normal matrix and
 * only S and the product. */
static void svd_case(MPI_Comm comm, int root, int64_t m, int64_t n, int64_t r, int64_t nb,
                     int separated, uint64_t seed) {
  int me, q;
  MPI_Comm_rank(comm, &me);
  MPI_Comm_size(comm, &q);
  char ctx[160];
  snprintf(ctx, sizeof ctx, "svd %s, (%lld, %lld), r = %lld, nb = %lld, %d ranks, root %d",
           separated ? "separated" : "normal", (long long)m, (long long)n, (long long)r,
           (long long)nb, q, root);
  const int is_root = me == root;
  double *M = NULL, *P = NULL, *Vt = NULL, *Pl = NULL, *Vtl = NULL;
  double *S = XALLOC(double, r), *Sl = XALLOC(double, r);
  if (is_root) {
    M = XALLOC(double, m * n), P = XALLOC(double, m * r), Vt = XALLOC(double, r * n);
    Pl = XALLOC(double, m * r), Vtl = XALLOC(double, r * n);
    if (separated) {
      separated_mat(m, n, seed, M);
    } else {
      cloq_rng g;
      cloq_rng_seed(&g, seed);
      fill_normal_d(M, m * n, &g, 1.0);
    }
    cloq_err_clear();
    if (cloq_svd_trunc(M, m, n, r, Pl, Sl, Vtl) != 0)
      note_fail("%s: LAPACK reference failed: %s", ctx, cloq_err_msg());
  }
  cloq_err_clear();
  const int rc = cloq_pdist_svd_trunc(comm, root, M, m, n, r, nb, P, S, Vt);
  CHECK(rc == 0, "%s: cloq_pdist_svd_trunc failed: %s", ctx, cloq_err_msg());
  MPI_Bcast(Sl, (int)r, MPI_DOUBLE, root, comm);
  if (rc == 0)
    for (int64_t i = 0; i < r; i++)
      check_close(S[i], Sl[i], SV_REL_TOL, Sl[0], "%s: singular value %lld on rank %d", ctx,
                  (long long)i, me);
  if (is_root && rc == 0) {
    for (int64_t i = 1; i < r; i++)
      CHECK(S[i - 1] >= S[i], "%s: singular values not descending at %lld", ctx, (long long)i);
    /* V = Vt^T (n, r), so that the right vectors are columns like the left ones */
    double *V = XALLOC(double, n * r), *Vl = XALLOC(double, n * r);
    for (int64_t i = 0; i < r; i++)
      for (int64_t j = 0; j < n; j++) V[j * r + i] = Vt[i * n + j], Vl[j * r + i] = Vtl[i * n + j];
    if (separated) {
      check_close(signed_identity_dev(P, r, Pl, r, m, r), 0.0, SVEC_TOL, 1.0,
                  "%s: max ||P_dist^T P_lapack| - I|", ctx);
      check_close(signed_identity_dev(V, r, Vl, r, n, r), 0.0, SVEC_TOL, 1.0,
                  "%s: max ||V_dist^T V_lapack| - I|", ctx);
    }
    double *Ad = XALLOC(double, m * n), *Al = XALLOC(double, m * n);
    mul_diag_bt(P, S, V, m, r, n, Ad);    /* P diag(S) Vt */
    mul_diag_bt(Pl, Sl, Vl, m, r, n, Al); /* the LAPACK truncation */
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < m * n; i++) {
      num += (Ad[i] - Al[i]) * (Ad[i] - Al[i]);
      den += Al[i] * Al[i];
    }
    free(V), free(Vl), free(Ad), free(Al);
    check_close(sqrt(num), 0.0, SVD_RECON_TOL, sqrt(den), "%s: ||P S Vt - (P S Vt)_lapack||_F",
                ctx);
  }
  free(M), free(P), free(Vt), free(Pl), free(Vtl), free(S), free(Sl);
}

/* ---- tests ------------------------------------------------------------------------------- */

typedef struct {
  int64_t n, nb;
} eig_size;

/* Sizes not divisible by nb, and n <= nb (1, 7 with 16/32/64; 50 with 64). The largest run on
 * the full communicator only (the smaller grids get every other size), to keep the test quick. */
enum { SMALL_GRID_MAX_N = 130 };
static const eig_size EIG_SIZES[] = {{1, 16},  {7, 16},   {7, 64},   {50, 64},  {97, 16},
                                     {97, 32}, {130, 32}, {130, 64}, {257, 64}, {257, 32}};

static void test_eig_separated(void **state) {
  (void)state;
  for (int q = 1; q <= wsize; q++) {
    MPI_Comm sub = sub_comm(q);
    if (sub != MPI_COMM_NULL) {
      for (size_t c = 0; c < sizeof EIG_SIZES / sizeof EIG_SIZES[0]; c++)
        if (q == wsize || EIG_SIZES[c].n <= SMALL_GRID_MAX_N)
          eig_case(sub, (int)(c % 2) * (q - 1), EIG_SIZES[c].n, EIG_SIZES[c].nb, GEN_SEPARATED,
                   cloq_seed_mix(11, (uint64_t)q, c));
      MPI_Comm_free(&sub);
    }
    sync_verdict();
  }
}

static void test_eig_gram(void **state) {
  (void)state;
  for (int q = 1; q <= wsize; q++) {
    MPI_Comm sub = sub_comm(q);
    if (sub != MPI_COMM_NULL) {
      for (size_t c = 0; c < sizeof EIG_SIZES / sizeof EIG_SIZES[0]; c++)
        if (q == wsize || EIG_SIZES[c].n <= SMALL_GRID_MAX_N)
          eig_case(sub, (int)((c + 1) % 2) * (q - 1), EIG_SIZES[c].n, EIG_SIZES[c].nb, GEN_GRAM,
                   cloq_seed_mix(12, (uint64_t)q, c));
      /* rank-deficient (fewer tokens than columns, no damping): the same clamping count */
      eig_case(sub, q - 1, 40, 16, GEN_DEFICIENT, cloq_seed_mix(13, (uint64_t)q, 0));
      eig_case(sub, 0, 9, 16, GEN_DEFICIENT, cloq_seed_mix(13, (uint64_t)q, 1));
      MPI_Comm_free(&sub);
    }
    sync_verdict();
  }
}

/* Regression test for the pdsyevd workspace bug (STACK.md): many (n, nb) pairs with n just
 * below and above multiples of nb (by 1 and by nb/4), at every grid shape. Measured here with
 * the plain queried workspace: about a quarter of these cases return garbage eigenvectors with
 * INFO = 0 (PDORMTR, e.g. n = nb +- 1 on any grid; caught by the reconstruction check), and
 * cases like n = 20, nb = 16 on 1x2 deadlock in PDLASRT (the test would time out). */
static void test_eig_workspace_sweep(void **state) {
  (void)state;
  static const int64_t NBS[] = {2, 3, 4, 8, 16, 32};
  static const int64_t MULTS[] = {1, 2, 3, 5, 8};
  enum { MAX_N = 170 }; /* keeps the sweep quick on an oversubscribed machine */
  for (int q = 1; q <= wsize; q++) {
    MPI_Comm sub = sub_comm(q);
    if (sub != MPI_COMM_NULL) {
      uint64_t c = 0;
      for (size_t a = 0; a < sizeof NBS / sizeof NBS[0]; a++)
        for (size_t b = 0; b < sizeof MULTS / sizeof MULTS[0]; b++) {
          const int64_t nb = NBS[a], offs[3] = {-1, 1, nb / 4};
          for (int o = 0; o < 3; o++) {
            const int64_t n = MULTS[b] * nb + offs[o];
            if (n < 1 || n > MAX_N || (o == 2 && offs[o] < 2)) continue;
            eig_case(sub, (int)(c % 2) * (q - 1), n, nb, GEN_GRAM,
                     cloq_seed_mix(14, (uint64_t)q, c));
            c++;
          }
        }
      MPI_Comm_free(&sub);
    }
    sync_verdict();
  }
}

typedef struct {
  int64_t m, n, nb;
} svd_size;

/* tall and wide, sizes not divisible by nb, and smaller than nb */
static const svd_size SVD_SIZES[] = {{1, 1, 16},   {7, 3, 16},   {3, 7, 16},    {97, 40, 32},
                                     {40, 97, 32}, {130, 65, 64}, {65, 130, 16}, {257, 33, 64},
                                     {33, 257, 32}, {20, 20, 8}};

static void test_svd(void **state) {
  (void)state;
  for (int q = 1; q <= wsize; q++) {
    MPI_Comm sub = sub_comm(q);
    if (sub != MPI_COMM_NULL) {
      for (size_t c = 0; c < sizeof SVD_SIZES / sizeof SVD_SIZES[0]; c++) {
        const svd_size z = SVD_SIZES[c];
        const int64_t k = z.m < z.n ? z.m : z.n;
        const int64_t ranks[3] = {1, (k + 1) / 2, k};
        for (int v = 0; v < 3; v++)
          svd_case(sub, (int)((c + (size_t)v) % 2) * (q - 1), z.m, z.n, ranks[v], z.nb, 1,
                   cloq_seed_mix(21, (uint64_t)q, c * 3 + (size_t)v));
        svd_case(sub, 0, z.m, z.n, k, z.nb, 0, cloq_seed_mix(22, (uint64_t)q, c));
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
  const int64_t n = 6;
  double H[36], U[36], s[6], M[6 * 4], P[6 * 4], S[4], Vt[4 * 4];
  int64_t k = -1;
  random_gram(2 * n, n, 7, H);
  cloq_rng g;
  cloq_rng_seed(&g, 8);
  fill_normal_d(M, 6 * 4, &g, 1.0);

  /* non-finite entry of H, seen on root only */
  H[1 * n + 0] = is_root ? NAN : 0.0;
  cloq_err_clear();
  int rc = cloq_pdist_eig_damped(world, root, is_root ? H : NULL, n, DAMP, 4, s, is_root ? U : NULL,
                                 &k);
  expect_fail_everywhere(rc, "eig with NaN", "non-finite value in Gram matrix", root);
  H[1 * n + 0] = H[0 * n + 1];

  /* non-finite entry of M, seen on root only */
  M[5 * 4 + 3] = is_root ? INFINITY : 0.0;
  cloq_err_clear();
  rc = cloq_pdist_svd_trunc(world, root, M, 6, 4, 2, 4, P, S, Vt);
  expect_fail_everywhere(rc, "svd with inf", "non-finite value in matrix for SVD", root);
  M[5 * 4 + 3] = 0.5;

  /* rank out of range (every rank finds it) */
  rc = cloq_pdist_svd_trunc(world, root, M, 6, 4, 0, 4, P, S, Vt);
  expect_fail_everywhere(rc, "svd with r = 0", "out of range", -1);
  rc = cloq_pdist_svd_trunc(world, root, M, 6, 4, 5, 4, P, S, Vt);
  expect_fail_everywhere(rc, "svd with r = 5 > min(m, n)", "out of range", -1);

  /* damping and order, as cloq_eig_damped */
  rc = cloq_pdist_eig_damped(world, root, H, n, -0.5, 4, s, U, &k);
  expect_fail_everywhere(rc, "eig with negative damping", "damping", -1);
  rc = cloq_pdist_eig_damped(world, root, H, 0, DAMP, 4, s, U, &k);
  expect_fail_everywhere(rc, "eig with n = 0", "order", -1);
  rc = cloq_pdist_eig_damped(world, wsize, H, n, DAMP, 4, s, U, &k);
  expect_fail_everywhere(rc, "eig with root outside the communicator", "root", -1);

  /* arguments that differ across ranks are caught instead of hanging */
  if (wsize > 1) {
    rc = cloq_pdist_eig_damped(world, root, H, wrank == 0 ? 5 : 6, DAMP, 4, s, U, &k);
    expect_fail_everywhere(rc, "eig with n differing across ranks", "differs across", -1);
  }

  /* and the grid still works afterwards */
  cloq_err_clear();
  rc = cloq_pdist_eig_damped(world, root, H, n, DAMP, 4, s, U, &k);
  CHECK(rc == 0, "eig after the failures, rank %d: %s", wrank, cloq_err_msg());
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
      cmocka_unit_test(test_eig_separated),       cmocka_unit_test(test_eig_gram),
      cmocka_unit_test(test_eig_workspace_sweep), cmocka_unit_test(test_svd),
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
