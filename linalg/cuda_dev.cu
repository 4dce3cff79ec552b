/* cuda_dev: the CUDA device of one rank (stream, cuBLAS and cuSOLVER handles) and the dense
 * float64 operations of cloq on it: Gram accumulation (cublasDsyrk), the Cholesky factor of the
 * damped Gram matrix (cusolverDnDpotrf) and the init's projection form (cublasDtrmm, cublasDsyrk,
 * cusolverDnDsyevdx for the top r eigenpairs, cublasDgemm), plus float32 sgemm.
 *
 * Layouts. cloq's matrices are row-major; cuBLAS and cuSOLVER are column-major. A row-major
 * (r, c) array is the column-major (c, r) array of the transpose, so:
 *   - Gram: the row-major X (t, n) is the column-major X^T (n, t); dsyrk(lower, 'N') on it gives
 *     X^T X in the column-major lower triangle, which is the row-major upper triangle that the
 *     contract promises (the lower one is left alone, as on the CPU);
 *   - the projection form: see cloq_cuda_proj_solve below.
 * Precision: everything here is float64 except sgemm (float32, TF32 off: the handle's math mode
 * is CUBLAS_PEDANTIC_MATH, so cuBLAS may not substitute reduced-precision tensor-core paths).
 */
#include <limits.h>
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

/* ---- the projection form ----------------------------------------------------------------------
 * Layouts: the row-major E (n_out, n_in) is the column-major Et = E^T (n_in, n_out); the row-major
 * lower factor L is the column-major upper U = L^T. So F = E C becomes Ft = U Et (trmm, left,
 * upper), G = F F^T = Ft^T Ft and K = F^T F = Ft Ft^T (syrk into the column-major lower triangle),
 * and F P = Ft^T P (gemm, op T). syevdx returns the r requested eigenvectors, ascending, in the
 * first r columns of its matrix. */

int cloq_cuda_hfactor(cloq_cuda *c, const double *H, int64_t n, double damp, cloq_hfactor *f) {
  memset(f, 0, sizeof *f);
  CLOQ_CHECK(n >= 1 && cloq_fits_int(n), "invalid Gram matrix order %lld", (long long)n);
  int64_t nn;
  CLOQ_CALL(cloq_mul64(n, n, &nn));
  f->L = (double *)cloq_calloc_checked(nn, sizeof(double));
  CLOQ_CHECK(f->L, "out of memory allocating the factor of the damped Gram matrix (%lld x %lld)",
             (long long)n, (long long)n);
  f->n = n;
  f->rank = n;
  int rc = CLOQ_OK, info = 0, lwork = 0;
  cloq_dbuf<double> dA, dwork;
  cloq_dbuf<int> dinfo;
  if (cloq_eig_prepare(H, n, damp, f->L) != 0) goto fail; /* validates H; L = Hd on the host */
  if (dA.alloc(nn, "Cholesky matrix") != 0 || dinfo.alloc(1, "cuSOLVER info") != 0) goto fail;
  CLOQ_CUDA_GO(cudaMemcpyAsync(dA.p, f->L, (size_t)nn * sizeof(double), cudaMemcpyHostToDevice,
                               c->stream), fail);
  CLOQ_CUSOLVER_GO(cusolverDnDpotrf_bufferSize(c->solver, CUBLAS_FILL_MODE_UPPER, (int)n, dA.p,
                                               (int)n, &lwork), fail);
  if (dwork.alloc(lwork, "potrf workspace") != 0) goto fail;
  CLOQ_CUSOLVER_GO(cusolverDnDpotrf(c->solver, CUBLAS_FILL_MODE_UPPER, (int)n, dA.p, (int)n,
                                    dwork.p, lwork, dinfo.p), fail);
  CLOQ_CUDA_GO(cudaMemcpyAsync(&info, dinfo.p, sizeof info, cudaMemcpyDeviceToHost, c->stream),
               fail);
  CLOQ_CUDA_GO(cudaMemcpyAsync(f->L, dA.p, (size_t)nn * sizeof(double), cudaMemcpyDeviceToHost,
                               c->stream), fail);
  CLOQ_CUDA_GO(cudaStreamSynchronize(c->stream), fail);
  if (info < 0) {
    rc = CLOQ_FAIL("cusolverDnDpotrf: argument %d had an illegal value", -info);
    goto fail;
  }
  if (info == 0 && cloq_hfactor_near_singular(f->L, H, n, damp)) info = 1;
  if (info > 0) { /* not positive definite: the CPU's pivoted Cholesky (cuSOLVER has none) */
    cloq_hfactor_free(f);
    return cloq_hfactor_make(H, n, damp, f);
  }
  cloq_hfactor_clean(f->L, n, n);
  return CLOQ_OK;
fail:
  cloq_hfactor_free(f);
  return rc == CLOQ_OK ? CLOQ_ERR : rc;
}

/* Ft[k + o ld] = Et[piv[k] + o ld]: F = E P, column k of F is column piv[k] of E. */
__global__ void permute_kernel(double *Ft, const double *Et, const int64_t *piv, int64_t ld,
                               int64_t ncols) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ld * ncols;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t k = i % ld, o = i / ld;
    Ft[i] = Et[piv[k] + o * ld];
  }
}

int cloq_cuda_proj_solve(cloq_cuda *c, const double *E, int64_t n_out, int64_t n_in,
                         const cloq_hfactor *f, int64_t r, double *V, double *lam,
                         double *trace) {
  CLOQ_CALL(cloq_proj_check(E, n_out, n_in, f, r)); /* proj.c's checks and messages */
  const int out_side = n_out <= n_in;
  const int64_t n = out_side ? n_out : n_in, nel = n_out * n_in;
  const int ino = (int)n_out, ini = (int)n_in, in_ = (int)n;
  cloq_dbuf<double> dE, dF, dL, dS, dW, dU, dwork;
  cloq_dbuf<int64_t> dpiv;
  cloq_dbuf<int> dinfo;
  CLOQ_CALL(dE.alloc(nel, "E"));
  CLOQ_CALL(dS.alloc(n * n, "G or K"));
  CLOQ_CALL(dW.alloc(n, "eigenvalues"));
  CLOQ_CALL(dinfo.alloc(1, "cuSOLVER info"));
  CLOQ_CUDA(cudaMemcpyAsync(dE.p, E, (size_t)nel * sizeof(double), cudaMemcpyHostToDevice,
                            c->stream));
  double *Ft = dE.p;
  if (f) {
    CLOQ_CALL(dL.alloc(n_in * n_in, "factor L"));
    CLOQ_CUDA(cudaMemcpyAsync(dL.p, f->L, (size_t)(n_in * n_in) * sizeof(double),
                              cudaMemcpyHostToDevice, c->stream));
    if (f->piv) {
      CLOQ_CALL(dF.alloc(nel, "E P"));
      CLOQ_CALL(dpiv.alloc(n_in, "pivots"));
      CLOQ_CUDA(cudaMemcpyAsync(dpiv.p, f->piv, (size_t)n_in * sizeof(int64_t),
                                cudaMemcpyHostToDevice, c->stream));
      permute_kernel<<<cloq_cuda_grid(nel, 256), 256, 0, c->stream>>>(dF.p, dE.p, dpiv.p, n_in,
                                                                       n_out);
      CLOQ_CUDA(cudaGetLastError());
      Ft = dF.p;
    }
    const double one = 1.0;
    CLOQ_CUBLAS(cublasDtrmm(c->blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N,
                            CUBLAS_DIAG_NON_UNIT, ini, ino, &one, dL.p, ini, Ft, ini, Ft, ini));
  }
  double tr = 0.0;
  for (int64_t off = 0; off < nel; off += INT_MAX / 2) { /* cuBLAS counts are int */
    const int cnt = (int)(nel - off < INT_MAX / 2 ? nel - off : INT_MAX / 2);
    double part = 0.0;
    CLOQ_CUBLAS(cublasDdot(c->blas, cnt, Ft + off, 1, Ft + off, 1, &part)); /* host mode: syncs */
    tr += part;
  }
  *trace = tr;
  {
    const double one = 1.0, zero = 0.0;
    if (out_side)
      CLOQ_CUBLAS(cublasDsyrk(c->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, ino, ini, &one, Ft,
                              ini, &zero, dS.p, ino));
    else
      CLOQ_CUBLAS(cublasDsyrk(c->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, ini, ino, &one, Ft,
                              ini, &zero, dS.p, ini));
  }
  int lwork = 0, meig = 0, info = 0;
  const int il = (int)(n - r + 1), iu = in_;
  CLOQ_CUSOLVER(cusolverDnDsyevdx_bufferSize(c->solver, CUSOLVER_EIG_MODE_VECTOR,
                                             CUSOLVER_EIG_RANGE_I, CUBLAS_FILL_MODE_LOWER, in_,
                                             dS.p, in_, 0.0, 0.0, il, iu, &meig, dW.p, &lwork));
  CLOQ_CALL(dwork.alloc(lwork, "syevdx workspace"));
  CLOQ_CUSOLVER(cusolverDnDsyevdx(c->solver, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                                  CUBLAS_FILL_MODE_LOWER, in_, dS.p, in_, 0.0, 0.0, il, iu, &meig,
                                  dW.p, dwork.p, lwork, dinfo.p));
  CLOQ_CUDA(cudaMemcpyAsync(&info, dinfo.p, sizeof info, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  CLOQ_LAPACK("cusolverDnDsyevdx", info);
  CLOQ_CHECK(meig == (int)r, "cusolverDnDsyevdx: %d of %lld eigenpairs", meig, (long long)r);
  /* the columns to bring back: Z (n, r) itself, or F Z (n_out, r), both column-major */
  const double *dZ = dS.p;
  if (!out_side) {
    const double one = 1.0, zero = 0.0;
    CLOQ_CALL(dU.alloc(n_out * r, "F P"));
    CLOQ_CUBLAS(cublasDgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, ino, (int)r, ini, &one, Ft, ini,
                            dS.p, in_, &zero, dU.p, ino));
    dZ = dU.p;
  }
  double *hZ = (double *)malloc((size_t)(n_out * r) * sizeof(double));
  double *hw = (double *)malloc((size_t)r * sizeof(double));
  double *hU = (double *)malloc((size_t)(n_out * r) * sizeof(double));
  int rc = CLOQ_OK;
  if (!hZ || !hw || !hU) {
    rc = CLOQ_FAIL("out of memory for the basis (%lld x %lld)", (long long)n_out, (long long)r);
    goto done;
  }
  CLOQ_CUDA_GO(cudaMemcpyAsync(hZ, dZ, (size_t)(n_out * r) * sizeof(double),
                               cudaMemcpyDeviceToHost, c->stream), done);
  CLOQ_CUDA_GO(cudaMemcpyAsync(hw, dW.p, (size_t)r * sizeof(double), cudaMemcpyDeviceToHost,
                               c->stream), done);
  CLOQ_CUDA_GO(cudaStreamSynchronize(c->stream), done);
  /* ascending column-major -> descending row-major */
  for (int64_t j = 0; j < r; j++) {
    const int64_t src = r - 1 - j;
    lam[j] = hw[src] > 0.0 ? hw[src] : 0.0;
    for (int64_t i = 0; i < n_out; i++) (out_side ? V : hU)[i * r + j] = hZ[i + src * n_out];
  }
  if (!out_side) rc = cloq_orth_columns(hU, n_out, r, V);
done:
  free(hZ);
  free(hw);
  free(hU);
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
