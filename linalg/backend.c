/* backend: device selection and the dispatch of cloq_backend.h. See that header.
 *
 * The CPU path is the functions of cloq_linalg.h, called directly; the CUDA path lives in
 * cuda_dev.cu and cuda_quant.cu (compiled only with CLOQ_HAVE_CUDA). Without CUDA in the build,
 * "cuda" fails with a reason naming the build option and "auto" falls back to the CPU.
 */
#include "cloq_backend.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_clock.h"
#include "cloq_err.h"
#ifdef CLOQ_HAVE_CUDA
#include "cuda_internal.h"
#endif

struct cloq_dev {
  struct cloq_cuda *cuda;
  char name[192];
};

int cloq_backend_has_cuda(void) {
#ifdef CLOQ_HAVE_CUDA
  return 1;
#else
  return 0;
#endif
}

/* Opens the GPU of this local rank, or explains in why (one line) why none can be opened. */
static int open_cuda(int local_rank, cloq_dev **out, char *why, size_t why_len) {
#ifdef CLOQ_HAVE_CUDA
  int count = 0;
  CLOQ_CALL(cloq_cuda_count(&count, why, why_len));
  if (count == 0) return CLOQ_OK; /* *out stays NULL, why says why */
  int ordinal = (local_rank < 0 ? 0 : local_rank) % count;
  cloq_dev *d = calloc(1, sizeof *d);
  CLOQ_CHECK(d, "out of memory allocating the device");
  char pname[160] = "";
  if (cloq_cuda_open(ordinal, &d->cuda, pname, sizeof pname) != CLOQ_OK) {
    cloq_cuda_close(&d->cuda);
    free(d);
    return CLOQ_ERR;
  }
  snprintf(d->name, sizeof d->name, "cuda:%d (%s)", ordinal, pname);
  if (local_rank >= count)
    cloq_warn("local rank %d shares GPU %d with local rank %d (%d GPUs on this node)", local_rank,
              ordinal, ordinal, count);
  *out = d;
  return CLOQ_OK;
#else
  (void)local_rank;
  (void)out;
  snprintf(why, why_len, "this cloq was built without CUDA (-Dcuda=disabled, or no nvcc at build time)");
  return CLOQ_OK;
#endif
}

int cloq_dev_open(const char *spec, int local_rank, cloq_dev **out, char *notice,
                  size_t notice_len) {
  *out = NULL;
  if (notice && notice_len) notice[0] = '\0';
  CLOQ_CHECK(spec && (!strcmp(spec, "cpu") || !strcmp(spec, "cuda") || !strcmp(spec, "auto")),
             "unknown device '%s' (expected cpu, cuda or auto)", spec ? spec : "(null)");
  if (!strcmp(spec, "cpu")) return CLOQ_OK;
  char why[256] = "";
  CLOQ_CALL(open_cuda(local_rank, out, why, sizeof why));
  if (*out) return CLOQ_OK;
  CLOQ_CHECK(strcmp(spec, "cuda") != 0, "--device cuda: %s", why);
  if (notice && notice_len) snprintf(notice, notice_len, "no usable GPU (%s)", why);
  return CLOQ_OK;
}

void cloq_dev_close(cloq_dev **dp) {
  if (!dp || !*dp) return;
#ifdef CLOQ_HAVE_CUDA
  cloq_cuda_close(&(*dp)->cuda);
#endif
  free(*dp);
  *dp = NULL;
}

const char *cloq_dev_name(const cloq_dev *d) { return d ? d->name : "cpu"; }
int cloq_dev_is_gpu(const cloq_dev *d) { return d != NULL; }
struct cloq_cuda *cloq_dev_cuda(const cloq_dev *d) { return d ? d->cuda : NULL; }

/* ---- dispatch ---------------------------------------------------------------------------------
 * Without CUDA in the build no cloq_dev can exist (open never makes one), so d is NULL there. */
#ifdef CLOQ_HAVE_CUDA
#define ON_GPU(d, call) \
  if (d) return call
#else
#define ON_GPU(d, call) (void)(d)
#endif

int cloq_dev_gram_accumulate(cloq_dev *d, double *H, const float *X, int64_t t, int64_t n,
                             double *work) {
  ON_GPU(d, cloq_cuda_gram_accumulate(d->cuda, H, X, t, n));
  cloq_gram_accumulate(H, X, t, n, work);
  return CLOQ_OK;
}

int cloq_dev_hfactor(cloq_dev *d, const double *H, int64_t n, double damp, cloq_hfactor *f) {
  ON_GPU(d, cloq_cuda_hfactor(d->cuda, H, n, damp, f));
  return cloq_hfactor_make(H, n, damp, f);
}

int cloq_dev_proj_solve(cloq_dev *d, const double *E, int64_t n_out, int64_t n_in,
                        const cloq_hfactor *f, int64_t r, double *V, double *lam, double *trace) {
  ON_GPU(d, cloq_cuda_proj_solve(d->cuda, E, n_out, n_in, f, r, V, lam, trace));
  return cloq_proj_solve(E, n_out, n_in, f, r, V, lam, trace);
}

int cloq_dev_quant_rtn(cloq_dev *d, const float *W, int64_t n_out, int64_t n_in, int bits,
                       int64_t group_size, uint8_t *codes, float *scales, float *zeros) {
  ON_GPU(d, cloq_cuda_quant_rtn(d->cuda, W, n_out, n_in, bits, group_size, codes, scales, zeros));
  return cloq_quant_rtn(W, n_out, n_in, bits, group_size, codes, scales, zeros);
}

int cloq_dev_quant_gptq(cloq_dev *d, const float *W, int64_t n_out, int64_t n_in,
                        const double *H, const cloq_gptq_params *p, uint8_t *codes,
                        float *scales, float *zeros) {
  ON_GPU(d, cloq_cuda_quant_gptq(d->cuda, W, n_out, n_in, H, p, codes, scales, zeros));
  return cloq_quant_gptq(W, n_out, n_in, H, p, codes, scales, zeros);
}

int cloq_dev_sgemm(cloq_dev *d, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                   const float *B, float beta, float *C) {
  ON_GPU(d, cloq_cuda_sgemm(d->cuda, m, n, k, alpha, A, B, beta, C));
  CLOQ_CHECK(m >= 1 && n >= 1 && k >= 1 && m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX,
             "invalid sgemm shape (%lld, %lld, %lld)", (long long)m, (long long)n, (long long)k);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, alpha, A, (int)k,
              B, (int)n, beta, C, (int)n);
  return CLOQ_OK;
}

int cloq_dev_gemm_rate(cloq_dev *d, int fp64, int64_t n, int reps, double *tflops) {
  ON_GPU(d, cloq_cuda_gemm_rate(d->cuda, fp64, n, reps, tflops));
  CLOQ_CHECK(n >= 1 && n <= 46340 && reps >= 1, "invalid GEMM rate size %lld", (long long)n);
  const int64_t nn = n * n;
  double *buf = NULL;
  CLOQ_ALLOC(buf, 3 * nn, "GEMM rate matrices");
  float *fb = (float *)buf;
  double sec = 0.0;
  for (int pass = 0; pass < 2; pass++) { /* pass 0 warms up */
    const double t0 = cloq_now();
    for (int r = 0; r < (pass ? reps : 1); r++) {
      if (fp64)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0, buf,
                    (int)n, buf + nn, (int)n, 0.0, buf + 2 * nn, (int)n);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, fb,
                    (int)n, fb + nn, (int)n, 0.0f, fb + 2 * nn, (int)n);
    }
    sec = cloq_now() - t0;
  }
  free(buf);
  *tflops = 2.0 * (double)n * (double)n * (double)n * reps / sec / 1e12;
  return CLOQ_OK;
}
