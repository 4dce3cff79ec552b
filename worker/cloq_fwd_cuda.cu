/* cloq_fwd_cuda: the forward pass of the owned blocks on a GPU. See cloq_fwd_cuda.h.
 *
 * Layout notes (cuBLAS is column-major, cloq row-major; a row-major (r, c) array is the
 * column-major (c, r) array of its transpose):
 *   linear  y (t, n_out) = x (t, n_in) W^T, W (n_out, n_in):
 *           column-major y^T (n_out, t) = op_T(W as (n_in, n_out)) x^T (n_in, t)
 *           -> gemm(T, N, m = n_out, n = t, k = n_in, A = W lda n_in, B = x ldb n_in, C ldc n_out)
 *   scores  S_h (t, t) = scale q_h k_h^T, q_h = columns [h hd, h hd + hd) of q (t, qd):
 *           column-major S_h^T (t, t) = op_T(k_h as (hd, t)) (q_h as (hd, t))
 *           -> gemm(T, N, m = t, n = t, k = hd, A = k_g lda kd, B = q_h ldb qd, C = S_h ldc t),
 *           strided over the `group` query heads of KV head g (A stride 0, B stride hd, C t*t)
 *   values  att_h (t, hd) = P_h (t, t) v_h (t, hd):
 *           column-major att_h^T (hd, t) = (v_h as (hd, t)) (P_h as (t, t), i.e. P_h^T)
 *           -> gemm(N, N, m = hd, n = t, k = t, A = v_g lda kd, B = P_h ldb t, C = att_h ldc qd)
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cloq_fwd_cuda.h"
extern "C" {
#include "cloq_clock.h"
#include "cloq_modules.h"
}
#include "cuda_internal.h"

enum { NW = CLOQ_NMOD, NI = CLOQ_NIN };

struct cloq_fwd_cuda {
  cloq_cuda *c;
  cloq_config d;
  int64_t nslots, max_t;
  float **wt;        /* nslots * NW device linears */
  float **norms;     /* nslots * 2 device norms */
  float **bias;      /* nslots * NW device biases (NULL: none) */
  float **qkn;       /* nslots * 2 device q/k norms (NULL: none) */
  double **gram;     /* nslots * NI device Gram matrices (NULL: none) */
  double **gram_host;/* nslots * NI host matrices to fetch into */
  float *rc, *rs;    /* rope tables (max_t, hd/2) */
  float *x, *xn, *q, *k, *v, *att, *g, *u, *scores;
  double *work;      /* Gram widening (max_t * widest input) */
  unsigned long long *bad; /* first non-finite element index (ULLONG_MAX: none) */
};

#define DALLOC(ptr, n, what) \
  CLOQ_CALL(cloq_cuda_malloc((void **)&(ptr), (n), sizeof(*(ptr)), (what)))

int cloq_fwd_cuda_create(struct cloq_cuda *c, const cloq_config *cfg, int64_t nslots,
                         int64_t max_t, const float *rope_cos, const float *rope_sin, int gram,
                         cloq_fwd_cuda **out) {
  *out = NULL;
  CLOQ_CHECK(c && nslots >= 1 && max_t >= 1, "invalid GPU forward setup");
  cloq_fwd_cuda *f = (cloq_fwd_cuda *)calloc(1, sizeof *f);
  CLOQ_CHECK(f, "out of memory allocating the GPU forward pass");
  *out = f; /* destroy frees what was made so far */
  f->c = c;
  f->d = *cfg;
  f->nslots = nslots;
  f->max_t = max_t;
  f->wt = (float **)calloc((size_t)(nslots * NW), sizeof(float *));
  f->norms = (float **)calloc((size_t)(nslots * 2), sizeof(float *));
  f->bias = (float **)calloc((size_t)(nslots * NW), sizeof(float *));
  f->qkn = (float **)calloc((size_t)(nslots * 2), sizeof(float *));
  f->gram = (double **)calloc((size_t)(nslots * NI), sizeof(double *));
  f->gram_host = (double **)calloc((size_t)(nslots * NI), sizeof(double *));
  CLOQ_CHECK(f->wt && f->norms && f->bias && f->qkn && f->gram && f->gram_host,
             "out of memory (GPU forward tables)");
  const int64_t T = max_t, D = cfg->dim, hd = cfg->head_dim, H = cfg->hidden_dim;
  const int64_t qd = cfg->n_heads * hd, kd = cfg->n_kv_heads * hd;
  int64_t widest = D > qd ? D : qd;
  if (H > widest) widest = H;
  DALLOC(f->rc, T * (hd / 2), "rope table");
  DALLOC(f->rs, T * (hd / 2), "rope table");
  CLOQ_CUDA(cudaMemcpy(f->rc, rope_cos, (size_t)(T * (hd / 2)) * 4, cudaMemcpyHostToDevice));
  CLOQ_CUDA(cudaMemcpy(f->rs, rope_sin, (size_t)(T * (hd / 2)) * 4, cudaMemcpyHostToDevice));
  DALLOC(f->x, T * D, "activations");
  DALLOC(f->xn, T * D, "activations");
  DALLOC(f->q, T * qd, "activations");
  DALLOC(f->att, T * qd, "activations");
  DALLOC(f->k, T * kd, "activations");
  DALLOC(f->v, T * kd, "activations");
  DALLOC(f->g, T * H, "activations");
  DALLOC(f->u, T * H, "activations");
  int64_t group = cfg->n_heads / cfg->n_kv_heads, tt;
  CLOQ_CALL(cloq_mul64(T * T, group, &tt));
  DALLOC(f->scores, tt, "attention scores");
  if (gram) DALLOC(f->work, T * widest, "Gram workspace");
  DALLOC(f->bad, 1, "flag");
  return CLOQ_OK;
}

void cloq_fwd_cuda_destroy(cloq_fwd_cuda **fp) {
  if (!fp || !*fp) return;
  cloq_fwd_cuda *f = *fp;
  for (int64_t i = 0; f->wt && i < f->nslots * NW; i++) cudaFree(f->wt[i]);
  for (int64_t i = 0; f->norms && i < f->nslots * 2; i++) cudaFree(f->norms[i]);
  for (int64_t i = 0; f->bias && i < f->nslots * NW; i++) cudaFree(f->bias[i]);
  for (int64_t i = 0; f->qkn && i < f->nslots * 2; i++) cudaFree(f->qkn[i]);
  for (int64_t i = 0; f->gram && i < f->nslots * NI; i++) cudaFree(f->gram[i]);
  free(f->wt);
  free(f->norms);
  free(f->bias);
  free(f->qkn);
  free(f->gram);
  free(f->gram_host);
  void *bufs[] = {f->rc, f->rs, f->x, f->xn, f->q, f->att, f->k, f->v, f->g, f->u, f->scores,
                  f->work, f->bad};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) cudaFree(bufs[i]);
  free(f);
  *fp = NULL;
}

/* Copies n floats from host src into the device buffer *p (allocated on first use). */
static int upload(cloq_fwd_cuda *f, float **p, const float *src, int64_t n, const char *what) {
  if (!*p) DALLOC(*p, n, what);
  CLOQ_CUDA(cudaMemcpyAsync(*p, src, (size_t)n * 4, cudaMemcpyHostToDevice, f->c->stream));
  return CLOQ_OK;
}

int cloq_fwd_cuda_load(cloq_fwd_cuda *f, int64_t s, const float *attn_norm, const float *ffn_norm,
                       const float *const w[7], const float *const bias[7], const float *q_norm,
                       const float *k_norm) {
  CLOQ_CHECK(s >= 0 && s < f->nslots, "GPU weight slot %lld out of range", (long long)s);
  const int64_t D = f->d.dim;
  for (int j = 0; j < 2; j++) {
    float **p = &f->norms[s * 2 + j];
    if (!*p) DALLOC(*p, D, "norm weights");
    CLOQ_CUDA(cudaMemcpyAsync(*p, j ? ffn_norm : attn_norm, (size_t)D * 4, cudaMemcpyHostToDevice,
                              f->c->stream));
  }
  for (int m = 0; m < NW; m++) {
    int64_t no, ni;
    cloq_module_shape(&f->d, m, &no, &ni);
    float **p = &f->wt[s * NW + m];
    if (!*p) DALLOC(*p, no * ni, "block weights");
    CLOQ_CUDA(cudaMemcpyAsync(*p, w[m], (size_t)(no * ni) * 4, cudaMemcpyHostToDevice,
                              f->c->stream));
    if (bias[m]) CLOQ_CALL(upload(f, &f->bias[s * NW + m], bias[m], no, "biases"));
  }
  if (q_norm) CLOQ_CALL(upload(f, &f->qkn[s * 2], q_norm, f->d.head_dim, "q/k norms"));
  if (k_norm) CLOQ_CALL(upload(f, &f->qkn[s * 2 + 1], k_norm, f->d.head_dim, "q/k norms"));
  CLOQ_CUDA(cudaStreamSynchronize(f->c->stream)); /* the host buffers may be reused at once */
  return CLOQ_OK;
}

int cloq_fwd_cuda_gram_alloc(cloq_fwd_cuda *f, int64_t s, double *const H[4]) {
  CLOQ_CHECK(s >= 0 && s < f->nslots && f->work, "GPU Gram slot %lld unavailable", (long long)s);
  for (int i = 0; i < NI; i++) {
    if (!H[i] || f->gram[s * NI + i]) continue;
    const int64_t n = cloq_input_dim(&f->d, i);
    DALLOC(f->gram[s * NI + i], n * n, "Gram matrix");
    CLOQ_CUDA(cudaMemcpyAsync(f->gram[s * NI + i], H[i], (size_t)(n * n) * 8,
                              cudaMemcpyHostToDevice, f->c->stream));
    f->gram_host[s * NI + i] = H[i];
  }
  CLOQ_CUDA(cudaStreamSynchronize(f->c->stream));
  return CLOQ_OK;
}

int cloq_fwd_cuda_gram_live(const cloq_fwd_cuda *f, int64_t s) {
  for (int i = 0; i < NI; i++)
    if (f->gram[s * NI + i]) return 1;
  return 0;
}

int cloq_fwd_cuda_gram_fetch(cloq_fwd_cuda *f, int64_t s) {
  for (int i = 0; i < NI; i++) {
    double *dH = f->gram[s * NI + i];
    if (!dH) continue;
    const int64_t n = cloq_input_dim(&f->d, i);
    CLOQ_CUDA(cudaMemcpy(f->gram_host[s * NI + i], dH, (size_t)(n * n) * 8,
                         cudaMemcpyDeviceToHost));
  }
  cloq_fwd_cuda_gram_drop(f, s);
  return CLOQ_OK;
}

void cloq_fwd_cuda_gram_drop(cloq_fwd_cuda *f, int64_t s) {
  for (int i = 0; i < NI; i++) {
    cudaFree(f->gram[s * NI + i]);
    f->gram[s * NI + i] = NULL;
    f->gram_host[s * NI + i] = NULL;
  }
}

/* ---- kernels ----------------------------------------------------------------------------------- */

/* out[r] = weight * (x[r] * inv), inv = 1 / sqrt(mean(x[r]^2) + eps), the sum in float64. One
 * block of 256 threads per row. */
__global__ void rmsnorm_kernel(float *out, const float *x, const float *weight, int64_t d,
                               double eps) {
  __shared__ double part[256];
  const float *xr = x + blockIdx.x * d;
  double ss = 0.0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) ss += (double)xr[j] * (double)xr[j];
  part[threadIdx.x] = ss;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  const float inv = (float)(1.0 / sqrt(part[0] / (double)d + eps));
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    out[blockIdx.x * d + j] = weight[j] * (xr[j] * inv);
}

/* rotate_half RoPE on buf (t, nh*hd), one thread per (pos, head, i < hd/2). */
__global__ void rope_kernel(float *buf, int64_t t, int64_t nh, int64_t hd, const float *cs,
                            const float *sn) {
  const int64_t half = hd / 2, total = t * nh * half;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e % half, h = (e / half) % nh, pos = e / (half * nh);
    float *v = buf + pos * nh * hd + h * hd;
    const float c = cs[pos * half + i], s = sn[pos * half + i];
    const float x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c - x2 * s;
    v[i + half] = x2 * c + x1 * s;
  }
}

/* Causal softmax of each row of S (rows of t; row i of each (t, t) matrix keeps j0 <= j <= i, j0 =
 * i - window + 1 with a sliding window, else 0): one block of 256 threads per row; the rest of the
 * row is zeroed. */
__global__ void softmax_kernel(float *S, int64_t t, int64_t window) {
  __shared__ float red[256];
  const int64_t row = blockIdx.x, i = row % t, j0 = window && i >= window ? i - window + 1 : 0;
  float *r = S + row * t;
  float mx = -INFINITY;
  for (int64_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, r[j]);
  red[threadIdx.x] = mx;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if ((int)threadIdx.x < w) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + w]);
    __syncthreads();
  }
  mx = red[0];
  __syncthreads();
  float sum = 0.0f;
  for (int64_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) {
    const float e = expf(r[j] - mx);
    r[j] = e;
    sum += e;
  }
  red[threadIdx.x] = sum;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if ((int)threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  const float inv = 1.0f / red[0];
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) r[j] = j >= j0 && j <= i ? r[j] * inv : 0.0f;
}

/* y (t, n) += b (n) on every row. */
__global__ void bias_kernel(float *y, const float *b, int64_t t, int64_t n) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < t * n;
       e += (int64_t)gridDim.x * blockDim.x)
    y[e] += b[e % n];
}

/* g = silu(g) * u. */
__global__ void swiglu_kernel(float *g, const float *u, int64_t n) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
       e += (int64_t)gridDim.x * blockDim.x) {
    const float gv = g[e];
    g[e] = gv / (1.0f + expf(-gv)) * u[e];
  }
}

/* *bad = min(*bad, first index of a non-finite x). */
__global__ void finite_kernel(const float *x, int64_t n, unsigned long long *bad) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
       e += (int64_t)gridDim.x * blockDim.x)
    if (!isfinite(x[e])) atomicMin(bad, (unsigned long long)e);
}

/* ---- the block --------------------------------------------------------------------------------- */

/* y (t, n_out) = x (t, n_in) W^T + beta y, then + its bias where it has one: module m of slot s
 * (shape from cloq_module_shape). */
static int linear(cloq_fwd_cuda *f, int64_t s, int m, float *y, const float *x, int64_t t,
                  float beta) {
  int64_t n_out, n_in;
  cloq_module_shape(&f->d, m, &n_out, &n_in);
  const float one = 1.0f;
  CLOQ_CUBLAS(cublasSgemm(f->c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)t, (int)n_in,
                          &one, f->wt[s * NW + m], (int)n_in, x, (int)n_in, &beta, y, (int)n_out));
  const float *b = f->bias[s * NW + m];
  if (b) {
    bias_kernel<<<cloq_cuda_grid(t * n_out, 256), 256, 0, f->c->stream>>>(y, b, t, n_out);
    CLOQ_CUDA(cudaGetLastError());
  }
  return CLOQ_OK;
}

static int gram_acc(cloq_fwd_cuda *f, int64_t s, int input, const float *X, int64_t t) {
  double *dH = f->gram[s * NI + input];
  if (!dH) return CLOQ_OK;
  return cloq_cuda_gram_acc_dev(f->c, dH, X, t, cloq_input_dim(&f->d, input), f->work);
}

/* Reads the non-finite flag (synchronizing) and fails with the CPU path's message. */
static int check_finite(cloq_fwd_cuda *f, int64_t n, int64_t block, const char *stage) {
  const unsigned long long none = ~0ULL;
  CLOQ_CUDA(cudaMemcpyAsync(f->bad, &none, sizeof none, cudaMemcpyHostToDevice, f->c->stream));
  finite_kernel<<<cloq_cuda_grid(n, 256), 256, 0, f->c->stream>>>(f->x, n, f->bad);
  CLOQ_CUDA(cudaGetLastError());
  unsigned long long bad = none;
  CLOQ_CUDA(cudaMemcpyAsync(&bad, f->bad, sizeof bad, cudaMemcpyDeviceToHost, f->c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(f->c->stream));
  CLOQ_CHECK(bad == none, "non-finite activation in block %lld at %s (element %llu)",
             (long long)block, stage, bad);
  return CLOQ_OK;
}

static int block(cloq_fwd_cuda *f, int64_t s, int64_t b, int64_t t) {
  const cloq_config *d = &f->d;
  cudaStream_t st = f->c->stream;
  const int64_t D = d->dim, hd = d->head_dim, nh = d->n_heads, nkv = d->n_kv_heads;
  const int64_t qd = nh * hd, kd = nkv * hd, H = d->hidden_dim, group = nh / nkv;
  const float *an = f->norms[s * 2], *fn = f->norms[s * 2 + 1];

  /* attention */
  rmsnorm_kernel<<<(unsigned)t, 256, 0, st>>>(f->xn, f->x, an, D, d->norm_eps);
  CLOQ_CUDA(cudaGetLastError());
  CLOQ_CALL(gram_acc(f, s, 0, f->xn, t));
  CLOQ_CALL(linear(f, s, 0, f->q, f->xn, t, 0.0f));
  CLOQ_CALL(linear(f, s, 1, f->k, f->xn, t, 0.0f));
  CLOQ_CALL(linear(f, s, 2, f->v, f->xn, t, 0.0f));
  if (f->qkn[s * 2]) { /* Qwen3: RMSNorm over each head's hd values, before RoPE */
    rmsnorm_kernel<<<(unsigned)(t * nh), 256, 0, st>>>(f->q, f->q, f->qkn[s * 2], hd, d->norm_eps);
    rmsnorm_kernel<<<(unsigned)(t * nkv), 256, 0, st>>>(f->k, f->k, f->qkn[s * 2 + 1], hd,
                                                        d->norm_eps);
    CLOQ_CUDA(cudaGetLastError());
  }
  rope_kernel<<<cloq_cuda_grid(t * nh * hd / 2, 256), 256, 0, st>>>(f->q, t, nh, hd, f->rc, f->rs);
  rope_kernel<<<cloq_cuda_grid(t * nkv * hd / 2, 256), 256, 0, st>>>(f->k, t, nkv, hd, f->rc, f->rs);
  CLOQ_CUDA(cudaGetLastError());
  const float scale = (float)(1.0 / sqrt((double)hd)), one = 1.0f, zero = 0.0f;
  for (int64_t g = 0; g < nkv; g++) {
    /* scores of the `group` query heads of KV head g: (group, t, t) */
    CLOQ_CUBLAS(cublasSgemmStridedBatched(
        f->c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)t, (int)t, (int)hd, &scale, f->k + g * hd,
        (int)kd, 0, f->q + g * group * hd, (int)qd, hd, &zero, f->scores, (int)t, t * t,
        (int)group));
    softmax_kernel<<<(unsigned)(group * t), 256, 0, st>>>(f->scores, t, d->window);
    CLOQ_CUDA(cudaGetLastError());
    CLOQ_CUBLAS(cublasSgemmStridedBatched(
        f->c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)hd, (int)t, (int)t, &one, f->v + g * hd,
        (int)kd, 0, f->scores, (int)t, t * t, &zero, f->att + g * group * hd, (int)qd, hd,
        (int)group));
  }
  CLOQ_CALL(gram_acc(f, s, 1, f->att, t));
  CLOQ_CALL(linear(f, s, 3, f->x, f->att, t, 1.0f)); /* x += att W_o^T (+ b_o) */
  CLOQ_CALL(check_finite(f, t * D, b, "attention output"));

  /* MLP */
  rmsnorm_kernel<<<(unsigned)t, 256, 0, st>>>(f->xn, f->x, fn, D, d->norm_eps);
  CLOQ_CUDA(cudaGetLastError());
  CLOQ_CALL(gram_acc(f, s, 2, f->xn, t));
  CLOQ_CALL(linear(f, s, 4, f->g, f->xn, t, 0.0f));
  CLOQ_CALL(linear(f, s, 5, f->u, f->xn, t, 0.0f));
  swiglu_kernel<<<cloq_cuda_grid(t * H, 256), 256, 0, st>>>(f->g, f->u, t * H);
  CLOQ_CUDA(cudaGetLastError());
  CLOQ_CALL(gram_acc(f, s, 3, f->g, t));
  CLOQ_CALL(linear(f, s, 6, f->x, f->g, t, 1.0f)); /* x += g W_down^T (+ b_down) */
  CLOQ_CALL(check_finite(f, t * D, b, "MLP output"));
  return CLOQ_OK;
}

int cloq_fwd_cuda_run(cloq_fwd_cuda *f, const int64_t *slots, const int64_t *blocks, int64_t n,
                      float *x, int64_t t, double *sec) {
  CLOQ_CHECK(t >= 1 && t <= f->max_t, "sequence of %lld tokens exceeds the planned %lld",
             (long long)t, (long long)f->max_t);
  const int64_t D = f->d.dim;
  CLOQ_CUDA(cudaSetDevice(f->c->ordinal));
  CLOQ_CUDA(cudaMemcpyAsync(f->x, x, (size_t)(t * D) * 4, cudaMemcpyHostToDevice, f->c->stream));
  for (int64_t i = 0; i < n; i++) {
    const int64_t s = slots[i];
    CLOQ_CHECK(s >= 0 && s < f->nslots && f->wt[s * NW], "GPU slot %lld has no weights",
               (long long)s);
    const double t0 = cloq_now();
    CLOQ_CALL(block(f, s, blocks[i], t)); /* ends synchronized (check_finite) */
    sec[i] += cloq_now() - t0;
  }
  CLOQ_CUDA(cudaMemcpyAsync(x, f->x, (size_t)(t * D) * 4, cudaMemcpyDeviceToHost, f->c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(f->c->stream));
  return CLOQ_OK;
}
