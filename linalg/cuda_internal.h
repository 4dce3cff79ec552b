/* cuda_internal: what the CUDA sources of cloq (linalg/cuda_*.cu, worker/cloq_fwd_cuda.cu) share,
 * and the C entry points that linalg/backend.c calls. Compiled only with -Dcuda (CLOQ_HAVE_CUDA).
 *
 * Every entry point takes host pointers (except the *_dev ones), is synchronous on return, and
 * returns CLOQ_OK or CLOQ_ERR with the reason recorded through cloq_err (CUDA, cuBLAS and
 * cuSOLVER errors are named with the call that failed, as "cudaMalloc: out of memory"). Not
 * collective. The contracts are those of cloq_linalg.h.
 */
#ifndef CLOQ_CUDA_INTERNAL_H
#define CLOQ_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "cloq_err.h"
#include "cloq_linalg.h"

typedef struct cloq_cuda cloq_cuda;

/* Number of CUDA devices (0 with no driver or no device; *why then says why). */
int cloq_cuda_count(int *count, char *why, size_t why_len);
/* Opens device ordinal `ordinal`: a stream, a cuBLAS handle (pedantic float32: no TF32) and a
 * cuSOLVER handle bound to it. name receives "NVIDIA H100 80GB HBM3, 79.1 GiB". */
int cloq_cuda_open(int ordinal, cloq_cuda **out, char *name, size_t name_len);
void cloq_cuda_close(cloq_cuda **c);

int cloq_cuda_gram_accumulate(cloq_cuda *c, double *H, const float *X, int64_t t, int64_t n);
int cloq_cuda_hfactor(cloq_cuda *c, const double *H, int64_t n, double damp, cloq_hfactor *f);
int cloq_cuda_proj_solve(cloq_cuda *c, const double *E, int64_t n_out, int64_t n_in,
                         const cloq_hfactor *f, int64_t r, double *V, double *lam,
                         double *trace);
int cloq_cuda_quant_rtn(cloq_cuda *c, const float *W, int64_t n_out, int64_t n_in, int bits,
                        int64_t group_size, uint8_t *codes, float *scales, float *zeros);
int cloq_cuda_quant_gptq(cloq_cuda *c, const float *W, int64_t n_out, int64_t n_in,
                         const double *H, const cloq_gptq_params *p, uint8_t *codes,
                         float *scales, float *zeros);
int cloq_cuda_sgemm(cloq_cuda *c, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                    const float *B, float beta, float *C);

/* Measured rate of an (n, n, n) device-resident GEMM (float32 with the handle's pedantic math,
 * or float64), TFLOP/s over reps calls after one warm-up call. */
int cloq_cuda_gemm_rate(cloq_cuda *c, int fp64, int64_t n, int reps, double *tflops);

/* Device-resident Gram update: dH (n, n) float64 (row-major upper = column-major lower
 * triangle) += dX^T dX, dX (t, n) float32 on the device, dwork t*n doubles on the device.
 * Enqueued on c's stream (not synchronized). */
int cloq_cuda_gram_acc_dev(cloq_cuda *c, double *dH, const float *dX, int64_t t, int64_t n,
                           double *dwork);

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

struct cloq_cuda {
  int ordinal;
  cudaStream_t stream;
  cublasHandle_t blas;
  cusolverDnHandle_t solver;
};

const char *cloq_cublas_str(cublasStatus_t s);
const char *cloq_cusolver_str(cusolverStatus_t s);

/* Checking macros of the CUDA sources: record "what: why" and return CLOQ_ERR (use them where
 * returning leaks nothing, or through a cleanup label with the _GO variants). */
#define CLOQ_CUDA(expr)                                                                            \
  do {                                                                                             \
    cudaError_t cloq_ce_ = (expr);                                                                 \
    if (cloq_ce_ != cudaSuccess)                                                                   \
      return CLOQ_FAIL("%s: %s", #expr, cudaGetErrorString(cloq_ce_));                            \
  } while (0)
#define CLOQ_CUBLAS(expr)                                                                          \
  do {                                                                                             \
    cublasStatus_t cloq_bs_ = (expr);                                                              \
    if (cloq_bs_ != CUBLAS_STATUS_SUCCESS)                                                         \
      return CLOQ_FAIL("%s: %s", #expr, cloq_cublas_str(cloq_bs_));                               \
  } while (0)
#define CLOQ_CUSOLVER(expr)                                                                        \
  do {                                                                                             \
    cusolverStatus_t cloq_ss_ = (expr);                                                            \
    if (cloq_ss_ != CUSOLVER_STATUS_SUCCESS)                                                       \
      return CLOQ_FAIL("%s: %s", #expr, cloq_cusolver_str(cloq_ss_));                             \
  } while (0)
/* The same, jumping to `label` with rc = CLOQ_ERR (declare `int rc` first). */
#define CLOQ_CUDA_GO(expr, label)                                                                  \
  do {                                                                                             \
    cudaError_t cloq_ce_ = (expr);                                                                 \
    if (cloq_ce_ != cudaSuccess) {                                                                 \
      rc = CLOQ_FAIL("%s: %s", #expr, cudaGetErrorString(cloq_ce_));                              \
      goto label;                                                                                  \
    }                                                                                              \
  } while (0)
#define CLOQ_CUBLAS_GO(expr, label)                                                                \
  do {                                                                                             \
    cublasStatus_t cloq_bs_ = (expr);                                                              \
    if (cloq_bs_ != CUBLAS_STATUS_SUCCESS) {                                                       \
      rc = CLOQ_FAIL("%s: %s", #expr, cloq_cublas_str(cloq_bs_));                                 \
      goto label;                                                                                  \
    }                                                                                              \
  } while (0)
#define CLOQ_CUSOLVER_GO(expr, label)                                                              \
  do {                                                                                             \
    cusolverStatus_t cloq_ss_ = (expr);                                                            \
    if (cloq_ss_ != CUSOLVER_STATUS_SUCCESS) {                                                     \
      rc = CLOQ_FAIL("%s: %s", #expr, cloq_cusolver_str(cloq_ss_));                               \
      goto label;                                                                                  \
    }                                                                                              \
  } while (0)

/* Grid of a grid-stride kernel over `work` items at `per_block` items per thread block (at least
 * 1, at most 2^20 blocks: the loops cover the rest). */
static inline unsigned cloq_cuda_grid(int64_t work, int per_block) {
  int64_t b = (work + per_block - 1) / per_block;
  if (b < 1) b = 1;
  if (b > (1 << 20)) b = 1 << 20;
  return (unsigned)b;
}

/* cudaMalloc of n elements of esz bytes into *p; on failure *p = NULL and the error is recorded
 * naming `what` and the size. */
int cloq_cuda_malloc(void **p, int64_t n, size_t esz, const char *what);

/* A device buffer freed at scope exit (so that the checking macros may return early). */
template <typename T> struct cloq_dbuf {
  T *p = nullptr;
  cloq_dbuf() = default;
  cloq_dbuf(const cloq_dbuf &) = delete;
  cloq_dbuf &operator=(const cloq_dbuf &) = delete;
  ~cloq_dbuf() { if (p) cudaFree(p); }
  /* Allocates n elements (n >= 0; 0 allocates nothing); records the failure naming `what`. */
  int alloc(int64_t n, const char *what) {
    return n <= 0 ? CLOQ_OK : cloq_cuda_malloc((void **)&p, n, sizeof(T), what);
  }
};
#endif

#endif
