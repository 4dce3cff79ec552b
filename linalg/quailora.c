/* quailora: QuAILoRA's calibrated refinement of LoRA factors (contract in cloq_linalg.h).
 *
 * Lawton et al. 2024 start from the svd init and alternate exact block minimizations of the
 * damped objective f(A, B) = tr((E - BA) Hd (E - BA)^T). One alternation, with r the LoRA rank:
 *   AH = A Hd                       dsymm (+ shift A), 2 r n_in^2 flops
 *   Xt = AH E^T, G = AH A^T         dgemm, 2 n_out n_in r + 2 r^2 n_in
 *   B-step: G B^T = Xt              Cholesky of the r x r G, 2 r^2 n_out
 *   A-step: (B^T B) A = B^T E       dgemm + Cholesky, 2 n_out n_in r
 * so nothing of order n^3 is repeated. Once per call: a Cholesky of Hd (n_in^3 / 3: it proves Hd
 * positive definite, which the B-step's minimizer needs) and, only when objectives are asked
 * for, c0 = tr(E Hd E^T) = ||E C||_F^2 (one dtrmm with that factor). Each objective is then
 * c0 - 2 <Xt, B^T> + <B^T B, G> from the products the next B-step needs anyway; its rounding is
 * relative to c0, the cancellation CLoQ's own objective (trace - eigenvalues) has too.
 *
 * The r x r normal equations go through cloq_hfactor_make / _ref (dpotrf, or a diagonal-pivoted
 * Cholesky when singular or nearly so): a singular G or B^T B gets the basic solution of its
 * leading nonsingular block (see the contract). The reference does every product in loops and
 * orthonormalizes by modified Gram-Schmidt instead of Householder QR.
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_linalg.h"
#include "linalg_internal.h"

/* The iteration's float64 state; every matrix row-major. */
typedef struct {
  const double *E, *H; /* (n_out, n_in), (n_in, n_in) full symmetric */
  int64_t n_out, n_in, r;
  double shift; /* damp * mean(diag H): Hd = H + shift I */
  int ref;      /* loops and the _ref kernels */
  double *A;    /* (r, n_in) */
  double *B;    /* (n_out, r) */
  double *AH;   /* A Hd (r, n_in) */
  double *Xt;   /* A Hd E^T (r, n_out) */
  double *G;    /* A Hd A^T, or B^T B (r, r) */
  double *R;    /* right-hand sides, then solutions (r, max(n_out, n_in)) */
  double *Y;    /* their pivoted copy (r, max(n_out, n_in)) */
} qstate;

/* C (m, n) = op(X) op(Z), op = transpose when tx / tz; ldx, ldz: the stored row lengths. */
static void gemm(int ref, int tx, int tz, int64_t m, int64_t n, int64_t k, const double *X,
                 int64_t ldx, const double *Z, int64_t ldz, double *C) {
  if (!ref) {
    cblas_dgemm(CblasRowMajor, tx ? CblasTrans : CblasNoTrans, tz ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, 1.0, X, (int)ldx, Z, (int)ldz, 0.0, C, (int)n);
    return;
  }
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0.0;
      for (int64_t l = 0; l < k; l++)
        acc += (tx ? X[l * ldx + i] : X[i * ldx + l]) * (tz ? Z[j * ldz + l] : Z[l * ldz + j]);
      C[i * n + j] = acc;
    }
}

/* ---- checks and once-per-call work ---------------------------------------------------------- */

static int check_factor(const float *x, int64_t rows, int64_t cols, const char *name) {
  for (int64_t i = 0; i < rows * cols; i++)
    CLOQ_CHECK(isfinite(x[i]), "QuAILoRA: non-finite value in starting LoRA factor %s at (%lld, "
               "%lld)", name, (long long)(i / cols), (long long)(i % cols));
  return CLOQ_OK;
}

static int check_args(const double *E, int64_t n_out, int64_t n_in, const double *H, int64_t r,
                      int iters, const float *A, const float *B) {
  CLOQ_CALL(cloq_proj_check(E, n_out, n_in, NULL, r)); /* shape, rank range, finite E */
  CLOQ_CHECK(H, "QuAILoRA needs the Gram matrix");
  CLOQ_CHECK(iters >= 0, "QuAILoRA: invalid alternation count %d (expected >= 0)", iters);
  CLOQ_CHECK(A && B, "QuAILoRA needs the starting factors A and B");
  CLOQ_CALL(check_factor(A, r, n_in, "A"));
  return check_factor(B, n_out, r, "B");
}

/* Hd's Cholesky factor (validates H and damp); fails unless Hd is positive definite. */
static int factor_hd(const qstate *s, double damp, cloq_hfactor *f) {
  CLOQ_CALL((s->ref ? cloq_hfactor_ref : cloq_hfactor_make)(s->H, s->n_in, damp, f));
  if (f->rank == s->n_in) return CLOQ_OK;
  (void)CLOQ_FAIL("QuAILoRA: the damped Gram matrix (order %lld, damp %g) is not positive definite "
                  "(numerical rank %lld); use a larger damp", (long long)s->n_in, damp,
                  (long long)f->rank);
  cloq_hfactor_free(f);
  return CLOQ_ERR;
}

/* *c0 = tr(E Hd E^T) = ||E C||_F^2 (fast: one dtrmm; ref: E Hd E^T in loops). */
static int trace_ehe(const qstate *s, const cloq_hfactor *f, double *c0) {
  const int64_t no = s->n_out, n = s->n_in;
  double acc = 0.0;
  if (s->ref) {
    for (int64_t o = 0; o < no; o++)
      for (int64_t i = 0; i < n; i++) {
        double hi = s->shift * s->E[o * n + i];
        for (int64_t j = 0; j < n; j++) hi += s->H[i * n + j] * s->E[o * n + j];
        acc += s->E[o * n + i] * hi;
      }
    *c0 = acc;
    return CLOQ_OK;
  }
  double *F = NULL;
  CLOQ_ALLOC(F, no * n, "E C");
  int rc = cloq_proj_apply(s->E, no, n, f, F);
  for (int64_t i = 0; i < no * n; i++) acc += F[i] * F[i];
  free(F);
  *c0 = acc;
  return rc;
}

/* ---- one alternation ------------------------------------------------------------------------ */

/* AH = A Hd, Xt = AH E^T, G = AH A^T for the current A. */
static void eval_a(qstate *s) {
  const int64_t r = s->r, n = s->n_in;
  if (s->ref)
    gemm(1, 0, 0, r, n, n, s->A, n, s->H, n, s->AH);
  else
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, (int)r, (int)n, 1.0, s->H, (int)n, s->A,
                (int)n, 0.0, s->AH, (int)n);
  for (int64_t i = 0; i < r * n; i++) s->AH[i] += s->shift * s->A[i];
  gemm(s->ref, 0, 1, r, s->n_out, n, s->AH, n, s->E, n, s->Xt);
  gemm(s->ref, 0, 1, r, r, n, s->AH, n, s->A, n, s->G);
}

/* f(A, B) = c0 - 2 tr(B Xt) + tr(B^T B G), after eval_a; R holds B^T B. */
static double objective(qstate *s, double c0) {
  const int64_t r = s->r, no = s->n_out;
  gemm(s->ref, 1, 0, r, r, no, s->B, r, s->B, r, s->R);
  double cross = 0.0, quad = 0.0;
  for (int64_t j = 0; j < r; j++)
    for (int64_t o = 0; o < no; o++) cross += s->Xt[j * no + o] * s->B[o * r + j];
  for (int64_t i = 0; i < r * r; i++) quad += s->R[i] * s->G[i];
  return c0 - 2.0 * cross + quad;
}

/* Triangular solves L L^T Z = Y (r, m) in place on the leading `rank` rows of Y. */
static void chol_solve(const cloq_hfactor *f, double *Y, int64_t m, int ref) {
  const int64_t r = f->n, k = f->rank;
  if (k == 0) return;
  if (!ref) {
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, (int)k, (int)m,
                1.0, f->L, (int)r, Y, (int)m);
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit, (int)k, (int)m,
                1.0, f->L, (int)r, Y, (int)m);
    return;
  }
  for (int64_t a = 0; a < k; a++) { /* L W = Y */
    for (int64_t b = 0; b < a; b++)
      for (int64_t c = 0; c < m; c++) Y[a * m + c] -= f->L[a * r + b] * Y[b * m + c];
    for (int64_t c = 0; c < m; c++) Y[a * m + c] /= f->L[a * r + a];
  }
  for (int64_t a = k - 1; a >= 0; a--) { /* L^T Z = W */
    for (int64_t b = a + 1; b < k; b++)
      for (int64_t c = 0; c < m; c++) Y[a * m + c] -= f->L[b * r + a] * Y[b * m + c];
    for (int64_t c = 0; c < m; c++) Y[a * m + c] /= f->L[a * r + a];
  }
}

/* G Z = R (r, m) in place on R, G symmetric positive semidefinite (destroyed: it is only read by
 * the factorization). With G = P L L^T P^T of rank k: the leading k pivoted unknowns from the
 * nonsingular block, the others 0 (the basic solution; exact when R lies in G's range). */
static int solve_normal(qstate *s, int64_t m) {
  const int64_t r = s->r;
  cloq_hfactor f = {0};
  CLOQ_CALL((s->ref ? cloq_hfactor_ref : cloq_hfactor_make)(s->G, r, 0.0, &f));
  for (int64_t a = 0; a < r; a++) {
    const int64_t src = f.piv ? f.piv[a] : a;
    for (int64_t c = 0; c < m; c++) s->Y[a * m + c] = a < f.rank ? s->R[src * m + c] : 0.0;
  }
  chol_solve(&f, s->Y, m, s->ref);
  for (int64_t a = 0; a < r; a++) {
    const int64_t dst = f.piv ? f.piv[a] : a;
    memcpy(s->R + dst * m, s->Y + a * m, (size_t)m * sizeof *s->R);
  }
  cloq_hfactor_free(&f);
  return CLOQ_OK;
}

static int check_iterate(const double *x, int64_t n, const char *name, int k) {
  const int64_t bad = cloq_first_nonfinite_d(x, n);
  CLOQ_CHECK(bad < 0, "QuAILoRA alternation %d: non-finite entry %lld of factor %s", k + 1,
             (long long)bad, name);
  return CLOQ_OK;
}

/* B = E Hd A^T (A Hd A^T)^-1, i.e. G B^T = Xt, after eval_a. */
static int b_step(qstate *s, int k) {
  const int64_t r = s->r, no = s->n_out;
  memcpy(s->R, s->Xt, (size_t)(r * no) * sizeof *s->R);
  CLOQ_CALL(solve_normal(s, no));
  for (int64_t o = 0; o < no; o++)
    for (int64_t j = 0; j < r; j++) s->B[o * r + j] = s->R[j * no + o];
  return check_iterate(s->B, no * r, "B", k);
}

/* A = (B^T B)^-1 B^T E (Hd cancels: see the contract). */
static int a_step(qstate *s, int k) {
  const int64_t r = s->r, no = s->n_out, n = s->n_in;
  gemm(s->ref, 1, 0, r, r, no, s->B, r, s->B, r, s->G);
  gemm(s->ref, 1, 0, r, n, no, s->B, r, s->E, n, s->R);
  CLOQ_CALL(solve_normal(s, n));
  memcpy(s->A, s->R, (size_t)(r * n) * sizeof *s->A);
  return check_iterate(s->A, r * n, "A", k);
}

/* ---- the balanced re-split ------------------------------------------------------------------- */

/* Column j of V (n_out, r) = column j of U minus its projection on V's first j columns, twice
 * (twice is enough unless the column lies in their span); *n0, *n2: its norms before and after. */
static void mgs_column(const double *U, int64_t no, int64_t r, int64_t j, double *V, double *n0,
                       double *n2) {
  double s0 = 0.0, s2 = 0.0;
  for (int64_t o = 0; o < no; o++) {
    V[o * r + j] = U[o * r + j];
    s0 += U[o * r + j] * U[o * r + j];
  }
  for (int pass = 0; pass < 2; pass++)
    for (int64_t k = 0; k < j; k++) {
      double dot = 0.0;
      for (int64_t o = 0; o < no; o++) dot += V[o * r + k] * V[o * r + j];
      for (int64_t o = 0; o < no; o++) V[o * r + j] -= dot * V[o * r + k];
    }
  for (int64_t o = 0; o < no; o++) s2 += V[o * r + j] * V[o * r + j];
  *n0 = sqrt(s0), *n2 = sqrt(s2);
}

/* Relative norm below which a column of B counts as inside the span of the earlier ones (a zero
 * column of a rank-deficient B, or one dependent to rounding): it is replaced by a unit vector
 * orthogonal to them, which V V^T (B A) = B A does not need. */
static const double MGS_DEPENDENT = 1e-12;

/* V (n_out, r) = an orthonormal basis containing the columns of U (n_out, r): modified
 * Gram-Schmidt (the fast version's Householder QR). A dependent column is replaced by the unit
 * vector e_i farthest from the span so far (the smallest row of V's first j columns: its residual
 * is at least 1 / sqrt(n_out)); e (n_out, r) holds it. */
static void orth_mgs(const double *U, int64_t no, int64_t r, double *V, double *e) {
  for (int64_t j = 0; j < r; j++) {
    double n0, n2;
    mgs_column(U, no, r, j, V, &n0, &n2);
    if (!(n2 > MGS_DEPENDENT * n0)) {
      int64_t best = 0;
      double best_sq = INFINITY;
      for (int64_t o = 0; o < no; o++) {
        double sq = 0.0;
        for (int64_t k = 0; k < j; k++) sq += V[o * r + k] * V[o * r + k];
        if (sq < best_sq) best_sq = sq, best = o;
      }
      for (int64_t o = 0; o < no; o++) e[o * r + j] = o == best ? 1.0 : 0.0;
      mgs_column(e, no, r, j, V, &n0, &n2);
    }
    for (int64_t o = 0; o < no; o++) V[o * r + j] /= n2;
  }
}

/* A, B = the balanced split of the product B A of the float64 iterates: V = orth(B), then
 * cloq_lora_split(V, B A). */
static int resplit(const qstate *s, float *A, float *B) {
  const int64_t no = s->n_out, n = s->n_in, r = s->r;
  double *V = NULL, *M = NULL, *e = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(V, no * r, "basis of B") || !CLOQ_TRY_ALLOC(M, no * n, "product B A") ||
      !CLOQ_TRY_ALLOC(e, no * r, "Gram-Schmidt candidate"))
    goto done;
  if (s->ref)
    orth_mgs(s->B, no, r, V, e);
  else if (cloq_orth_columns(s->B, no, r, V) != 0)
    goto done;
  gemm(s->ref, 0, 0, no, n, r, s->B, r, s->A, n, M);
  rc = (s->ref ? cloq_lora_split_ref : cloq_lora_split)(V, M, no, n, r, r, A, B);
done:
  free(V), free(M), free(e);
  return rc;
}

/* ---- the whole refinement -------------------------------------------------------------------- */

static int alloc_state(qstate *s) {
  const int64_t r = s->r, w = s->n_out > s->n_in ? s->n_out : s->n_in;
  return CLOQ_TRY_ALLOC(s->A, r * s->n_in, "QuAILoRA factor A") &&
         CLOQ_TRY_ALLOC(s->B, s->n_out * r, "QuAILoRA factor B") &&
         CLOQ_TRY_ALLOC(s->AH, r * s->n_in, "A Hd") &&
         CLOQ_TRY_ALLOC(s->Xt, r * s->n_out, "A Hd E^T") && CLOQ_TRY_ALLOC(s->G, r * r, "r x r") &&
         CLOQ_TRY_ALLOC(s->R, r * w, "right-hand sides") &&
         CLOQ_TRY_ALLOC(s->Y, r * w, "pivoted right-hand sides");
}

static void free_state(qstate *s) {
  free(s->A), free(s->B), free(s->AH), free(s->Xt), free(s->G), free(s->R), free(s->Y);
}

/* obj[0..iters] (may be NULL) and the alternations on the float64 iterates in s. */
static int alternate(qstate *s, int iters, double c0, double *obj) {
  for (int k = 0; k < iters; k++) {
    eval_a(s);
    if (obj) obj[k] = objective(s, c0);
    CLOQ_CALL(b_step(s, k));
    CLOQ_CALL(a_step(s, k));
  }
  if (obj) {
    eval_a(s);
    obj[iters] = objective(s, c0);
  }
  return CLOQ_OK;
}

static int quailora(const double *E, int64_t n_out, int64_t n_in, const double *H, double damp,
                    int64_t r, int iters, float *A, float *B, double *obj, int ref) {
  CLOQ_CALL(check_args(E, n_out, n_in, H, r, iters, A, B));
  qstate s = {.E = E, .H = H, .n_out = n_out, .n_in = n_in, .r = r, .ref = ref};
  cloq_hfactor f = {0};
  double c0 = 0.0;
  CLOQ_CALL(factor_hd(&s, damp, &f)); /* validates H and damp first */
  s.shift = cloq_gram_shift(H, n_in, damp);
  int rc = CLOQ_ERR;
  if (!alloc_state(&s) || (obj && trace_ehe(&s, &f, &c0) != 0)) goto done;
  for (int64_t i = 0; i < r * n_in; i++) s.A[i] = (double)A[i];
  for (int64_t i = 0; i < n_out * r; i++) s.B[i] = (double)B[i];
  if (alternate(&s, iters, c0, obj) == 0 && resplit(&s, A, B) == 0) rc = CLOQ_OK;
done:
  cloq_hfactor_free(&f);
  free_state(&s);
  return rc;
}

int cloq_lora_quailora(const double *E, int64_t n_out, int64_t n_in, const double *H, double damp,
                       int64_t r, int iters, float *A, float *B, double *obj) {
  return quailora(E, n_out, n_in, H, damp, r, iters, A, B, obj, 0);
}

int cloq_lora_quailora_ref(const double *E, int64_t n_out, int64_t n_in, const double *H,
                           double damp, int64_t r, int iters, float *A, float *B, double *obj) {
  return quailora(E, n_out, n_in, H, damp, r, iters, A, B, obj, 1);
}
