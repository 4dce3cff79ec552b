/* lora: the three LoRA initializations (svd, CLoQ, zero) of the quantization error E = W - Q.
 *
 * CLoQ minimizes the calibrated error tr((E - BA) Hd (E - BA)^T) over rank-r products. With
 * Hd = U diag(s) U^T = R^T R, R = diag(sqrt s) U^T, the objective is ||R (E - BA)^T||_F^2 =
 * ||M - R A^T B^T||_F^2 with M = R E^T, so by Eckart-Young the optimum is R A^T B^T = [M]_r and
 * BA = (R^-1 [M]_r)^T. The singular values are split evenly between B and A, as the header
 * specifies. All intermediate products are float64; only the returned factors are rounded to
 * float32 (and checked to fit: s is floored at 1e-12 * max s by cloq_eig_damped, so s^-1/2 can
 * be large).
 *
 * The fast versions use dgemm and the LAPACK SVD; the _ref versions use loops and the Jacobi SVD.
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_linalg.h"
#include "linalg_internal.h"

typedef int (*svd_fn)(const double *M, int64_t m, int64_t n, int64_t r, double *P, double *S,
                      double *Vt);

static int lora_check(const double *E, int64_t n_out, int64_t n_in, int64_t r) {
  CLOQ_CHECK(n_out >= 1 && n_in >= 1 && cloq_fits_int(n_out) && cloq_fits_int(n_in),
             "invalid error matrix shape (%lld, %lld)", (long long)n_out, (long long)n_in);
  const int64_t k = n_out < n_in ? n_out : n_in;
  CLOQ_CHECK(r >= 1 && r <= k, "LoRA rank %lld out of range [1, %lld] for a (%lld, %lld) layer",
             (long long)r, (long long)k, (long long)n_out, (long long)n_in);
  int64_t nel;
  CLOQ_CALL(cloq_mul64(n_out, n_in, &nel));
  const int64_t bad = cloq_first_nonfinite_d(E, nel);
  CLOQ_CHECK(bad < 0, "non-finite value in quantization error E at (%lld, %lld)",
             (long long)(bad / n_in), (long long)(bad % n_in));
  return CLOQ_OK;
}

static int check_eigs(const double *s, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    CLOQ_CHECK(isfinite(s[i]) && s[i] > 0.0,
               "eigenvalue %lld of the damped Gram matrix is %g; expected > 0 (pass s from "
               "cloq_eig_damped, which floors them)",
               (long long)i, s[i]);
  return CLOQ_OK;
}

/* Rounds x[0..n) to float32 into y, failing when a value does not fit. */
static int to_float(const double *x, int64_t n, float *y, const char *what) {
  for (int64_t i = 0; i < n; i++) {
    y[i] = (float)x[i];
    CLOQ_CHECK(isfinite(y[i]), "LoRA factor %s: entry %lld = %g does not fit in float32", what,
               (long long)i, x[i]);
  }
  return CLOQ_OK;
}

static int lora_svd_with(const double *E, int64_t n_out, int64_t n_in, int64_t r, float *A,
                         float *B, svd_fn svd) {
  CLOQ_CALL(lora_check(E, n_out, n_in, r));
  double *P = NULL, *S = NULL, *Vt = NULL;
  int rc = CLOQ_ERR;
  if (CLOQ_TRY_ALLOC(P, n_out * r, "left singular vectors") &&
      CLOQ_TRY_ALLOC(S, r, "singular values") &&
      CLOQ_TRY_ALLOC(Vt, r * n_in, "right singular vectors") &&
      svd(E, n_out, n_in, r, P, S, Vt) == 0)
    rc = cloq_lora_svd_factors(P, S, Vt, n_out, n_in, r, r, A, B);
  free(P);
  free(S);
  free(Vt);
  return rc;
}

int cloq_lora_svd(const double *E, int64_t n_out, int64_t n_in, int64_t r, float *A, float *B) {
  return lora_svd_with(E, n_out, n_in, r, A, B, cloq_svd_trunc);
}

int cloq_lora_svd_factors(const double *P, const double *S, const double *Vt, int64_t n_out,
                          int64_t n_in, int64_t rmax, int64_t r, float *A, float *B) {
  CLOQ_CHECK(r >= 1 && r <= rmax, "LoRA rank %lld out of range [1, %lld]", (long long)r,
             (long long)rmax);
  for (int64_t j = 0; j < r; j++) {
    const double h = sqrt(S[j]);
    for (int64_t o = 0; o < n_out; o++) {
      B[o * r + j] = (float)(P[o * rmax + j] * h);
      CLOQ_CHECK(isfinite(B[o * r + j]), "LoRA factor B: entry %lld does not fit in float32",
                 (long long)(o * r + j));
    }
    for (int64_t i = 0; i < n_in; i++) {
      A[j * n_in + i] = (float)(Vt[j * n_in + i] * h);
      CLOQ_CHECK(isfinite(A[j * n_in + i]), "LoRA factor A: entry %lld does not fit in float32",
                 (long long)(j * n_in + i));
    }
  }
  return CLOQ_OK;
}

/* The reference differs only in its SVD (Jacobi); the split of S is plain loops either way. */
int cloq_lora_svd_ref(const double *E, int64_t n_out, int64_t n_in, int64_t r, float *A,
                      float *B) {
  return lora_svd_with(E, n_out, n_in, r, A, B, cloq_svd_trunc_ref);
}

/* The reference CLoQ: loops and the Jacobi SVD, step for step what cloq_lora_cloq_matrix, the
 * SVD and cloq_lora_cloq_factors do with dgemm and dgesdd. */
int cloq_lora_cloq_ref(const double *E, int64_t n_out, int64_t n_in, const double *s,
                       const double *U, int64_t r, float *A, float *B) {
  CLOQ_CALL(lora_check(E, n_out, n_in, r));
  CLOQ_CALL(check_eigs(s, n_in));
  double *M = NULL, *P = NULL, *S = NULL, *Vt = NULL, *Ad = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(M, n_in * n_out, "CLoQ matrix M = R E^T") ||
      !CLOQ_TRY_ALLOC(P, n_in * r, "left singular vectors of M") ||
      !CLOQ_TRY_ALLOC(S, r, "singular values of M") ||
      !CLOQ_TRY_ALLOC(Vt, r * n_out, "right singular vectors of M") ||
      !CLOQ_TRY_ALLOC(Ad, r * n_in, "CLoQ factor A"))
    goto done;

  /* M (n_in, n_out) = diag(sqrt s) U^T E^T */
  for (int64_t i = 0; i < n_in; i++)
    for (int64_t o = 0; o < n_out; o++) {
      double acc = 0.0;
      for (int64_t k = 0; k < n_in; k++) acc += U[k * n_in + i] * E[o * n_in + k];
      M[i * n_out + o] = acc;
    }
  for (int64_t i = 0; i < n_in; i++) {
    const double h = sqrt(s[i]);
    for (int64_t o = 0; o < n_out; o++) M[i * n_out + o] *= h;
  }

  /* M ~ P diag(S) Vt, rank r */
  if (cloq_svd_trunc_ref(M, n_in, n_out, r, P, S, Vt) != 0) goto done;

  /* B (n_out, r) = Vt_r^T diag(sqrt S); Vt is scaled in place, then read transposed */
  for (int64_t j = 0; j < r; j++) {
    const double h = sqrt(S[j]);
    for (int64_t o = 0; o < n_out; o++) Vt[j * n_out + o] *= h;
  }
  for (int64_t o = 0; o < n_out; o++)
    for (int64_t j = 0; j < r; j++) M[o * r + j] = Vt[j * n_out + o]; /* M is free: reuse */
  if (to_float(M, n_out * r, B, "B") != 0) goto done;

  /* A (r, n_in) = diag(sqrt S) P_r^T diag(s^-1/2) U^T: scale rows of P by s^-1/2 first */
  for (int64_t i = 0; i < n_in; i++) {
    const double h = 1.0 / sqrt(s[i]);
    for (int64_t j = 0; j < r; j++) P[i * r + j] *= h;
  }
  for (int64_t j = 0; j < r; j++)
    for (int64_t k = 0; k < n_in; k++) {
      double acc = 0.0;
      for (int64_t i = 0; i < n_in; i++) acc += P[i * r + j] * U[k * n_in + i];
      Ad[j * n_in + k] = acc;
    }
  for (int64_t j = 0; j < r; j++) {
    const double h = sqrt(S[j]);
    for (int64_t k = 0; k < n_in; k++) Ad[j * n_in + k] *= h;
  }
  if (to_float(Ad, r * n_in, A, "A") != 0) goto done;
  rc = CLOQ_OK;
done:
  free(M);
  free(P);
  free(S);
  free(Vt);
  free(Ad);
  return rc;
}

int cloq_lora_cloq(const double *E, int64_t n_out, int64_t n_in, const double *s,
                   const double *U, int64_t r, float *A, float *B) {
  CLOQ_CALL(lora_check(E, n_out, n_in, r));
  double *M = NULL, *P = NULL, *S = NULL, *Vt = NULL;
  int rc = CLOQ_ERR;
  if (CLOQ_TRY_ALLOC(M, n_in * n_out, "CLoQ matrix M = R E^T") &&
      CLOQ_TRY_ALLOC(P, n_in * r, "left singular vectors of M") &&
      CLOQ_TRY_ALLOC(S, r, "singular values of M") &&
      CLOQ_TRY_ALLOC(Vt, r * n_out, "right singular vectors of M") &&
      cloq_lora_cloq_matrix(E, n_out, n_in, s, U, M) == 0 &&
      cloq_svd_trunc(M, n_in, n_out, r, P, S, Vt) == 0)
    rc = cloq_lora_cloq_factors(s, U, n_out, n_in, P, S, Vt, r, r, A, B);
  free(M);
  free(P);
  free(S);
  free(Vt);
  return rc;
}

int cloq_lora_cloq_matrix(const double *E, int64_t n_out, int64_t n_in, const double *s,
                          const double *U, double *M) {
  CLOQ_CALL(lora_check(E, n_out, n_in, 1));
  CLOQ_CALL(check_eigs(s, n_in));
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)n_in, (int)n_out, (int)n_in, 1.0, U,
              (int)n_in, E, (int)n_in, 0.0, M, (int)n_out);
  for (int64_t i = 0; i < n_in; i++) {
    const double h = sqrt(s[i]);
    for (int64_t o = 0; o < n_out; o++) M[i * n_out + o] *= h;
  }
  return CLOQ_OK;
}

/* The arithmetic is that of cloq_lora_cloq_ref with dgemm for its loops; the leading r
 * columns of P are copied to a contiguous (n_in, r) block first so that the dgemm call is the
 * same for every rmax (its result then does not depend on rmax). */
int cloq_lora_cloq_factors(const double *s, const double *U, int64_t n_out, int64_t n_in,
                           const double *P, const double *S, const double *Vt, int64_t rmax,
                           int64_t r, float *A, float *B) {
  CLOQ_CHECK(r >= 1 && r <= rmax, "LoRA rank %lld out of range [1, %lld]", (long long)r,
             (long long)rmax);
  double *Pr = NULL, *Ad = NULL;
  int rc = CLOQ_ERR;
  if (!CLOQ_TRY_ALLOC(Pr, n_in * r, "CLoQ factor workspace") ||
      !CLOQ_TRY_ALLOC(Ad, r * n_in, "CLoQ factor A"))
    goto done;
  /* B (n_out, r) = Vt_r^T diag(sqrt S) */
  for (int64_t j = 0; j < r; j++) {
    const double h = sqrt(S[j]);
    for (int64_t o = 0; o < n_out; o++) {
      B[o * r + j] = (float)(Vt[j * n_out + o] * h);
      if (!isfinite(B[o * r + j])) {
        CLOQ_FAIL("LoRA factor B: entry %lld = %g does not fit in float32",
                  (long long)(o * r + j), Vt[j * n_out + o] * h);
        goto done;
      }
    }
  }
  /* A (r, n_in) = diag(sqrt S) P_r^T diag(s^-1/2) U^T */
  for (int64_t i = 0; i < n_in; i++) {
    const double h = 1.0 / sqrt(s[i]);
    for (int64_t j = 0; j < r; j++) Pr[i * r + j] = P[i * rmax + j] * h;
  }
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)r, (int)n_in, (int)n_in, 1.0, Pr,
              (int)r, U, (int)n_in, 0.0, Ad, (int)n_in);
  for (int64_t j = 0; j < r; j++) {
    const double h = sqrt(S[j]);
    for (int64_t k = 0; k < n_in; k++) Ad[j * n_in + k] *= h;
  }
  if (to_float(Ad, r * n_in, A, "A") != 0) goto done;
  rc = CLOQ_OK;
done:
  free(Pr);
  free(Ad);
  return rc;
}


void cloq_lora_zero(int64_t n_out, int64_t n_in, int64_t r, uint64_t seed, float *A, float *B) {
  if (n_out > 0 && r > 0) memset(B, 0, (size_t)(n_out * r) * sizeof *B);
  if (n_in <= 0 || r <= 0) return;
  /* PEFT: kaiming_uniform_(a = sqrt(5)) on a (r, n_in) weight gives bound
   * sqrt(6 / ((1 + 5) n_in)) = 1 / sqrt(n_in). Row-major fill order fixes the stream. */
  const double bound = 1.0 / sqrt((double)n_in);
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  for (int64_t i = 0; i < r * n_in; i++)
    A[i] = (float)((2.0 * cloq_rng_uniform(&g) - 1.0) * bound);
}
