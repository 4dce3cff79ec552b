/* cloq_backend: the one seam between cloq's math and the hardware it runs on.
 *
 * A cloq_dev is an open compute device: NULL means the CPU (OpenBLAS + LAPACKE, the functions of
 * cloq_linalg.h), otherwise one CUDA GPU with its cuBLAS and cuSOLVER handles and stream. Every
 * cloq_dev_* operation below takes and returns HOST memory in the layouts of cloq_linalg.h and has
 * the same contract as the CPU function it names; on a GPU it uploads, computes and downloads
 * (the worker's forward pass keeps its data resident instead: worker/cloq_fwd_cuda.h).
 *
 * Precision on the GPU (stated in docs/cuda.md and tested against the CPU path):
 *   - forward GEMMs: float32 inputs and outputs, float32 accumulation, TF32 off (cuBLAS default
 *     math mode, CUBLAS_PEDANTIC_MATH requested), so results differ from OpenBLAS by summation
 *     order only;
 *   - Gram: X is widened to float64 and H += X^T X by cublasDsyrk: every product of two float32
 *     values is exact in float64 and the sum is float64, as on the CPU (only the order differs);
 *   - the init's projection form (cloq_proj_solve): F = E C by cublasDtrmm, G or K by cublasDsyrk,
 *     the top r eigenpairs by cusolverDnDsyevdx (range I), F P by cublasDgemm, all float64; the
 *     Cholesky factor of Hd by cusolverDnDpotrf (a matrix that is not positive definite falls
 *     back to the CPU's pivoted Cholesky); the small QR and the balanced split stay on the host;
 *   - quantizers: RTN is float32 elementwise with the CPU's operations in the CPU's order
 *     (bitwise equal); GPTQ keeps float64 errors and updates as on the CPU (the lazy batch update
 *     is a cublasDgemm, whose summation order differs).
 *
 * One GPU per rank: the device with ordinal local_rank % device_count, local_rank being the rank
 * within its node (MPI_COMM_TYPE_SHARED). None of these functions is collective.
 */
#ifndef CLOQ_BACKEND_H
#define CLOQ_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_linalg.h"

typedef struct cloq_dev cloq_dev;

/* 1 when this build has the CUDA backend (meson -Dcuda=enabled, or auto with nvcc found). */
int cloq_backend_has_cuda(void);

/* Opens the device that spec names: "cpu" (*out = NULL, always succeeds), "cuda" (fails with a
 * one-line reason when the build has no CUDA or no device is usable), or "auto" (CUDA when the
 * build has it and a device is present, else the CPU; *notice then receives a one-line reason
 * for the CPU fallback, which the caller prints once, otherwise it is set to ""). local_rank
 * picks the GPU (local_rank % count). notice may be NULL. Not collective. */
int cloq_dev_open(const char *spec, int local_rank, cloq_dev **out, char *notice,
                  size_t notice_len);
void cloq_dev_close(cloq_dev **d);
/* "cpu" or e.g. "cuda:0 (NVIDIA H100 80GB HBM3, 79.1 GiB)". */
const char *cloq_dev_name(const cloq_dev *d);
/* 1 for a GPU, 0 for the CPU (d NULL). */
int cloq_dev_is_gpu(const cloq_dev *d);
/* The CUDA handle of a GPU device (NULL for the CPU): for the CUDA code of other modules. */
struct cloq_cuda *cloq_dev_cuda(const cloq_dev *d);

/* ---- dispatched operations: the contracts of cloq_linalg.h ------------------------------------ */
/* cloq_gram_accumulate (the work argument is used only on the CPU: t*n doubles). */
int cloq_dev_gram_accumulate(cloq_dev *d, double *H, const float *X, int64_t t, int64_t n,
                             double *work);
int cloq_dev_hfactor(cloq_dev *d, const double *H, int64_t n, double damp, cloq_hfactor *f);
int cloq_dev_proj_solve(cloq_dev *d, const double *E, int64_t n_out, int64_t n_in,
                        const cloq_hfactor *f, int64_t r, double *V, double *lam, double *trace);
int cloq_dev_quant_rtn(cloq_dev *d, const float *W, int64_t n_out, int64_t n_in, int bits,
                       int64_t group_size, uint8_t *codes, float *scales, float *zeros);
int cloq_dev_quant_gptq(cloq_dev *d, const float *W, int64_t n_out, int64_t n_in,
                        const double *H, const cloq_gptq_params *p, uint8_t *codes,
                        float *scales, float *zeros);
/* C (m, n) float32 = alpha * A (m, k) B (k, n) + beta * C, row-major, no transposes (sgemm;
 * the forward pass's products and the GEMM rate of bench/gpu). */
int cloq_dev_sgemm(cloq_dev *d, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                   const float *B, float beta, float *C);

/* Measured GEMM rate of the device in TFLOP/s: (n, n, n) products, float32 (fp64 0) or float64,
 * reps calls after a warm-up (device-resident data on a GPU; cblas on the CPU). Benchmarks
 * compare each stage with it. */
int cloq_dev_gemm_rate(cloq_dev *d, int fp64, int64_t n, int reps, double *tflops);

#endif
