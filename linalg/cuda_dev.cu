/* cuda_dev: the CUDA device of one rank (stream, cuBLAS and cuSOLVER handles) and the dense
 * float64 operations of cloq on it: Gram accumulation (cublasDsyrk), the damped eigendecomposition
 * (cusolverDnDsyevd) and the truncated SVD (cusolverDnDgesvd), plus float32 sgemm.
 *
 * Layouts. cloq's matrices are row-major; cuBLAS and cuSOLVER are column-major. A row-major
 * (r, c) array is the column-major (c, r) array of the transpose, so:
 *   - Gram: the row-major X (t, n) is the column-major X^T (n, t); dsyrk(lower, 'N') on it gives
 *     X^T X in the column-major lower triangle, which is the row-major upper triangle that the
 *     contract promises (the lower one is left alone, as on the CPU);
 *   - eig: Hd is symmetric, so its row-major array is its column-major array; syevd returns the
 *     eigenvectors as columns of a column-major matrix and the caller transposes (as eig.c does);
 *   - SVD: see svd_trunc below.
 * Precision: everything here is float64 except sgemm (float32, TF32 off: the handle's math mode
 * is CUBLAS_PEDANTIC_MATH, so cuBLAS may not substitute reduced-precision tensor-core paths).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" {
#include "linalg_internal.h"
}

const char *cloq_cublas_str(cublasStatus_t s) {
  switch (s) {
  case CUBLAS_STATUS_SUCCESS: return "success";
  case CUBLAS_STATUS_NOT_INITIALIZED: return "cuBLAS not initialized";
  case CUBLAS_STATUS_ALLOC_FAILED: return "cuBLAS allocation failed";
  case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
  case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
  case CUBLAS_STATUS_MAPPING_ERROR: return "mapping error";
  case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
  case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
  case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
  default: return "unknown cuBLAS status";
  }
}

const char *cloq_cusolver_str(cusolverStatus_t s) {
  switch (s) {
  case CUSOLVER_STATUS_SUCCESS: return "success";
  case CUSOLVER_STATUS_NOT_INITIALIZED: return "cuSOLVER not initialized";
  case CUSOLVER_STATUS_ALLOC_FAILED: return "cuSOLVER allocation failed";
  case CUSOLVER_STATUS_INVALID_VALUE: return "invalid value";
  case CUSOLVER_STATUS_ARCH_MISMATCH: return "architecture mismatch";
  case CUSOLVER_STATUS_EXECUTION_FAILED: return "execution failed";
  case CUSOLVER_STATUS_INTERNAL_ERROR: return "internal error";
  case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "matrix type not supported";
  default: return "unknown cuSOLVER status";
  }
}

int cloq_cuda_malloc(void **p, int64_t n, size_t esz, const char *what) {
  cudaError_t e = cudaMalloc(p, (size_t)n * esz);
  if (e != cudaSuccess) {
    *p = NULL;
    return CLOQ_FAIL("cudaMalloc of %s (%lld elements of %zu bytes): %s", what, (long long)n, esz,
                     cudaGetErrorString(e));
  }
  return CLOQ_OK;
}

int cloq_cuda_count(int *count, char *why, size_t why_len) {
  int n = 0; /* cudaGetDeviceCount leaves it untouched without a driver (STACK.md) */
  cudaError_t e = cudaGetDeviceCount(&n);
  if (why && why_len) why[0] = '\0';
  if (e != cudaSuccess) {
    if (why && why_len) snprintf(why, why_len, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
    cudaGetLastError(); /* reset the runtime's last-error state */
    n = 0;
  } else if (n == 0 && why && why_len) {
    snprintf(why, why_len, "no CUDA device present");
  }
  *count = n;
  return CLOQ_OK;
}

int cloq_cuda_open(int ordinal, cloq_cuda **out, char *name, size_t name_len) {
  *out = NULL;
  CLOQ_CUDA(cudaSetDevice(ordinal));
  cudaDeviceProp prop;
  CLOQ_CUDA(cudaGetDeviceProperties(&prop, ordinal));
  cloq_cuda *c = (cloq_cuda *)calloc(1, sizeof *c);
  CLOQ_CHECK(c, "out of memory allocating the CUDA context");
  c->ordinal = ordinal;
  *out = c; /* cloq_cuda_close frees what was made so far */
  CLOQ_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  CLOQ_CUBLAS(cublasCreate(&c->blas));
  CLOQ_CUBLAS(cublasSetStream(c->blas, c->stream));
  CLOQ_CUBLAS(cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH));
  CLOQ_CUSOLVER(cusolverDnCreate(&c->solver));
  CLOQ_CUSOLVER(cusolverDnSetStream(c->solver, c->stream));
  if (name && name_len)
    snprintf(name, name_len, "%s, %.1f GiB", prop.name,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
  return CLOQ_OK;
}

void cloq_cuda_close(cloq_cuda **cp) {
  if (!cp || !*cp) return;
  cloq_cuda *c = *cp;
  if (c->solver) cusolverDnDestroy(c->solver);
  if (c->blas) cublasDestroy(c->blas);
  if (c->stream) cudaStreamDestroy(c->stream);
  free(c);
  *cp = NULL;
}

/* ---- Gram ------------------------------------------------------------------------------------ */

__global__ void widen_kernel(double *dst, const float *src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = (double)src[i];
}

int cloq_cuda_gram_acc_dev(cloq_cuda *c, double *dH, const float *dX, int64_t t, int64_t n,
                           double *dwork) {
  if (t <= 0 || n <= 0) return CLOQ_OK;
  CLOQ_CHECK(cloq_fits_int(n) && cloq_fits_int(t), "Gram update of (%lld, %lld) too large",
             (long long)t, (long long)n);
  widen_kernel<<<cloq_cuda_grid(t * n, 256), 256, 0, c->stream>>>(dwork, dX, t * n);
  CLOQ_CUDA(cudaGetLastError());
  const double one = 1.0;
  /* column-major: C (n, n) lower += A A^T, A = X^T (n, t), lda n */
  CLOQ_CUBLAS(cublasDsyrk(c->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)n, (int)t, &one,
                          dwork, (int)n, &one, dH, (int)n));
  return CLOQ_OK;
}

int cloq_cuda_gram_accumulate(cloq_cuda *c, double *H, const float *X, int64_t t, int64_t n) {
  if (t <= 0 || n <= 0) return CLOQ_OK;
  int64_t nn, tn;
  CLOQ_CALL(cloq_mul64(n, n, &nn));
  CLOQ_CALL(cloq_mul64(t, n, &tn));
  cloq_dbuf<double> dH, dW;
  cloq_dbuf<float> dX;
  CLOQ_CALL(dH.alloc(nn, "Gram matrix"));
  CLOQ_CALL(dW.alloc(tn, "Gram workspace"));
  CLOQ_CALL(dX.alloc(tn, "activations"));
  CLOQ_CUDA(cudaMemcpyAsync(dH.p, H, (size_t)nn * sizeof(double), cudaMemcpyHostToDevice,
                            c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(dX.p, X, (size_t)tn * sizeof(float), cudaMemcpyHostToDevice,
                            c->stream));
  CLOQ_CALL(cloq_cuda_gram_acc_dev(c, dH.p, dX.p, t, n, dW.p));
  CLOQ_CUDA(cudaMemcpyAsync(H, dH.p, (size_t)nn * sizeof(double), cudaMemcpyDeviceToHost,
                            c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  return CLOQ_OK;
}

/* ---- eigendecomposition ---------------------------------------------------------------------- */

int cloq_cuda_eig_damped(cloq_cuda *c, const double *H, int64_t n, double damp, double *s,
                         double *U, int64_t *nclamped) {
  CLOQ_CALL(cloq_eig_prepare(H, n, damp, U)); /* validates, U = Hd on the host */
  const int64_t nn = n * n;
  cloq_dbuf<double> dA, dW, dwork;
  cloq_dbuf<int> dinfo;
  CLOQ_CALL(dA.alloc(nn, "eigendecomposition matrix"));
  CLOQ_CALL(dW.alloc(n, "eigenvalues"));
  CLOQ_CALL(dinfo.alloc(1, "cuSOLVER info"));
  CLOQ_CUDA(cudaMemcpyAsync(dA.p, U, (size_t)nn * sizeof(double), cudaMemcpyHostToDevice,
                            c->stream));
  int lwork = 0;
  CLOQ_CUSOLVER(cusolverDnDsyevd_bufferSize(c->solver, CUSOLVER_EIG_MODE_VECTOR,
                                            CUBLAS_FILL_MODE_UPPER, (int)n, dA.p, (int)n, dW.p,
                                            &lwork));
  CLOQ_CALL(dwork.alloc(lwork, "syevd workspace"));
  CLOQ_CUSOLVER(cusolverDnDsyevd(c->solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER,
                                 (int)n, dA.p, (int)n, dW.p, dwork.p, lwork, dinfo.p));
  int info = 0;
  CLOQ_CUDA(cudaMemcpyAsync(&info, dinfo.p, sizeof info, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(U, dA.p, (size_t)nn * sizeof(double), cudaMemcpyDeviceToHost,
                            c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(s, dW.p, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost,
                            c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  CLOQ_LAPACK("cusolverDnDsyevd", info);
  cloq_transpose_square(U, n); /* column-major vectors -> row-major U with vector columns */
  cloq_eig_clamp(s, n, nclamped);
  return CLOQ_OK;
}

/* ---- truncated SVD ----------------------------------------------------------------------------
 * cusolverDnDgesvd needs rows >= columns. The row-major M (m, n) is the column-major M^T (n, m):
 *   - n >= m: gesvd of A = M^T (n, m) = Ua S VTa gives M = VTa^T S Ua^T, so Vt's rows are Ua's
 *     columns (the same memory: Vt = the first r*n entries of Ua) and P[i][j] = VTa[j + i k];
 *     this is exactly what svd.c does with dgesdd;
 *   - n < m: transpose on the device (dgeam) to the column-major M (m, n), gesvd of it,
 *     M = Ub S VTb: P[i][j] = Ub[i + j m] and Vt[j][l] = VTb[j + l k].
 * jobu = jobvt = 'S' (k = min(m, n) vectors each). */
int cloq_cuda_svd_trunc(cloq_cuda *c, const double *M, int64_t m, int64_t n, int64_t r,
                        double *P, double *S, double *Vt) {
  CLOQ_CALL(cloq_svd_check_args(M, m, n, r)); /* svd.c's checks and messages */
  const int64_t k = m < n ? m : n, mn = m * n;
  const int tall = n >= m; /* A = M^T is already tall */
  const int rows = tall ? (int)n : (int)m, cols = tall ? (int)m : (int)n;
  cloq_dbuf<double> dM, dA, dS, dU, dVT, dwork, drwork;
  cloq_dbuf<int> dinfo;
  CLOQ_CALL(dM.alloc(mn, "SVD input"));
  CLOQ_CALL(dS.alloc(k, "singular values"));
  CLOQ_CALL(dU.alloc((int64_t)rows * k, "left singular vectors"));
  CLOQ_CALL(dVT.alloc(k * (int64_t)cols, "right singular vectors"));
  CLOQ_CALL(drwork.alloc(k, "gesvd rwork"));
  CLOQ_CALL(dinfo.alloc(1, "cuSOLVER info"));
  CLOQ_CUDA(cudaMemcpyAsync(dM.p, M, (size_t)mn * sizeof(double), cudaMemcpyHostToDevice,
                            c->stream));
  double *A = dM.p;
  if (!tall) {
    CLOQ_CALL(dA.alloc(mn, "SVD transpose"));
    const double one = 1.0, zero = 0.0;
    /* dM is column-major (n, m); C = dM^T is column-major (m, n), ldc m */
    CLOQ_CUBLAS(cublasDgeam(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)m, (int)n, &one, dM.p,
                            (int)n, &zero, dM.p, (int)m, dA.p, (int)m));
    A = dA.p;
  }
  int lwork = 0;
  CLOQ_CUSOLVER(cusolverDnDgesvd_bufferSize(c->solver, rows, cols, &lwork));
  CLOQ_CALL(dwork.alloc(lwork, "gesvd workspace"));
  signed char job = 'S';
  CLOQ_CUSOLVER(cusolverDnDgesvd(c->solver, job, job, rows, cols, A, rows, dS.p, dU.p, rows,
                                 dVT.p, (int)k, dwork.p, lwork, drwork.p, dinfo.p));
  int info = 0;
  CLOQ_CUDA(cudaMemcpyAsync(&info, dinfo.p, sizeof info, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  CLOQ_LAPACK("cusolverDnDgesvd", info);
  double *hU = (double *)malloc((size_t)rows * (size_t)k * sizeof(double));
  double *hVT = (double *)malloc((size_t)k * (size_t)cols * sizeof(double));
  int rc = CLOQ_OK;
  if (!hU || !hVT) {
    rc = CLOQ_FAIL("out of memory for the SVD's singular vectors (%lld x %lld)", (long long)m,
                   (long long)n);
    goto done;
  }
  CLOQ_CUDA_GO(cudaMemcpyAsync(S, dS.p, (size_t)r * sizeof(double), cudaMemcpyDeviceToHost,
                               c->stream), done);
  CLOQ_CUDA_GO(cudaMemcpyAsync(hU, dU.p, (size_t)rows * k * sizeof(double),
                               cudaMemcpyDeviceToHost, c->stream), done);
  CLOQ_CUDA_GO(cudaMemcpyAsync(hVT, dVT.p, (size_t)k * cols * sizeof(double),
                               cudaMemcpyDeviceToHost, c->stream), done);
  CLOQ_CUDA_GO(cudaStreamSynchronize(c->stream), done);
  if (tall) {
    memcpy(Vt, hU, (size_t)(r * n) * sizeof(double));
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < r; j++) P[i * r + j] = hVT[j + i * k];
  } else {
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < r; j++) P[i * r + j] = hU[i + j * m];
    for (int64_t j = 0; j < r; j++)
      for (int64_t l = 0; l < n; l++) Vt[j * n + l] = hVT[j + l * k];
  }
done:
  free(hU);
  free(hVT);
  return rc;
}

/* ---- sgemm ------------------------------------------------------------------------------------ */

int cloq_cuda_sgemm(cloq_cuda *c, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                    const float *B, float beta, float *C) {
  CLOQ_CHECK(m >= 1 && n >= 1 && k >= 1 && cloq_fits_int(m) && cloq_fits_int(n) &&
                 cloq_fits_int(k),
             "invalid sgemm shape (%lld, %lld, %lld)", (long long)m, (long long)n, (long long)k);
  int64_t mk, kn, mn;
  CLOQ_CALL(cloq_mul64(m, k, &mk));
  CLOQ_CALL(cloq_mul64(k, n, &kn));
  CLOQ_CALL(cloq_mul64(m, n, &mn));
  cloq_dbuf<float> dA, dB, dC;
  CLOQ_CALL(dA.alloc(mk, "sgemm A"));
  CLOQ_CALL(dB.alloc(kn, "sgemm B"));
  CLOQ_CALL(dC.alloc(mn, "sgemm C"));
  CLOQ_CUDA(cudaMemcpyAsync(dA.p, A, (size_t)mk * 4, cudaMemcpyHostToDevice, c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(dB.p, B, (size_t)kn * 4, cudaMemcpyHostToDevice, c->stream));
  if (beta != 0.0f)
    CLOQ_CUDA(cudaMemcpyAsync(dC.p, C, (size_t)mn * 4, cudaMemcpyHostToDevice, c->stream));
  /* row-major C = A B is column-major C^T = B^T A^T: gemm(n, m, k) on (B, ldb n), (A, lda k) */
  CLOQ_CUBLAS(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha,
                          dB.p, (int)n, dA.p, (int)k, &beta, dC.p, (int)n));
  CLOQ_CUDA(cudaMemcpyAsync(C, dC.p, (size_t)mn * 4, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  return CLOQ_OK;
}

/* ---- GEMM rate --------------------------------------------------------------------------------- */

int cloq_cuda_gemm_rate(cloq_cuda *c, int fp64, int64_t n, int reps, double *tflops) {
  CLOQ_CHECK(n >= 1 && cloq_fits_int(n) && reps >= 1, "invalid GEMM rate size %lld", (long long)n);
  const size_t esz = fp64 ? sizeof(double) : sizeof(float);
  const int64_t nn = n * n;
  cloq_dbuf<unsigned char> dA, dB, dC;
  CLOQ_CALL(dA.alloc(nn * (int64_t)esz, "GEMM rate A"));
  CLOQ_CALL(dB.alloc(nn * (int64_t)esz, "GEMM rate B"));
  CLOQ_CALL(dC.alloc(nn * (int64_t)esz, "GEMM rate C"));
  /* zeros: the rate of a dense GEMM does not depend on the values */
  CLOQ_CUDA(cudaMemsetAsync(dA.p, 0, (size_t)nn * esz, c->stream));
  CLOQ_CUDA(cudaMemsetAsync(dB.p, 0, (size_t)nn * esz, c->stream));
  cudaEvent_t e0, e1;
  CLOQ_CUDA(cudaEventCreate(&e0));
  CLOQ_CUDA(cudaEventCreate(&e1));
  int rc = CLOQ_OK;
  float ms = 0.0f;
  for (int pass = 0; pass < 2 && rc == CLOQ_OK; pass++) { /* pass 0 warms up */
    CLOQ_CUDA_GO(cudaEventRecord(e0, c->stream), out);
    for (int r = 0; r < (pass ? reps : 1); r++) {
      if (fp64) {
        const double one = 1.0, zero = 0.0;
        CLOQ_CUBLAS_GO(cublasDgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)n, (int)n, &one,
                                   (const double *)dA.p, (int)n, (const double *)dB.p, (int)n,
                                   &zero, (double *)dC.p, (int)n), out);
      } else {
        const float one = 1.0f, zero = 0.0f;
        CLOQ_CUBLAS_GO(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)n, (int)n, &one,
                                   (const float *)dA.p, (int)n, (const float *)dB.p, (int)n, &zero,
                                   (float *)dC.p, (int)n), out);
      }
    }
    CLOQ_CUDA_GO(cudaEventRecord(e1, c->stream), out);
    CLOQ_CUDA_GO(cudaEventSynchronize(e1), out);
    CLOQ_CUDA_GO(cudaEventElapsedTime(&ms, e0, e1), out);
  }
  *tflops = 2.0 * (double)n * (double)n * (double)n * reps / ((double)ms * 1e-3) / 1e12;
out:
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return rc;
}
