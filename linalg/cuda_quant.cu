/* cuda_quant: RTN and GPTQ quantization on a CUDA device, with the contracts of cloq_quant_rtn
 * (quant.c) and cloq_quant_gptq (gptq.c): the same grid, the same codes/scales/zeros layout,
 * the same failures, checked in the same order and worded the same (only an unexpected solver
 * info code names cuSOLVER where gptq.c names LAPACK).
 *
 * RTN (bitwise equal to quant.c). The host checks the arguments and scans W for non-finite
 * entries (a non-finite W never reaches the device: the host replays quant.c's scan up to the
 * bad entry, so that a scale failure in an earlier group is still the one reported). The device
 * runs one warp per (row, group): each lane takes a strided share of the group's columns, the
 * range [xmin, xmax] is reduced by butterfly shuffles with the reference's strict < / >
 * comparisons from +0.0 (partials are +0.0 or of one sign, so any reduction order gives the
 * sequential scan's bits, -0.0 included), then every lane computes the same scale and zero with
 * the float operations of cloq_quant_scale_zero and codes its columns. Every float operation
 * whose rounding matters is an explicit _rn intrinsic (IEEE division, never a reciprocal or an
 * approximation; no contraction into FMA even without -fmad=false), rintf rounds ties to even.
 * A group whose scale is unusable records its (row, group) in a first-failure word (atomicMin
 * of row * ng + group, i.e. row-major order, the order quant.c reports in) and its range in the
 * scale/zero slots; the host then calls cloq_quant_scale_zero on that range, which fails with
 * exactly the CPU's message.
 *
 * GPTQ (the lazy batch scheme of gptq.c's fast version). Where each step runs:
 *   host:   argument checks and the non-finite scans of W and H (gptq.c's messages), the plan
 *           (dead columns, the act-order permutation by a stable sort of diag H, the damping
 *           shift damp * mean(diag H) after the dead-column fix), the batch boundaries, and the
 *           failure messages;
 *   device: the static scales (act_order or group_size -1; RTN's kernel on the step-1 W with
 *           dead columns read as 0), the permuted damped Gram matrix, its factorizations
 *           (cuSOLVER, float64: potrf, potri, potrf), the working weights, the per-batch
 *           column sweep (one thread per row) and the trailing update (one cublasDgemm a batch).
 * Rows of W are independent given U, the upper Cholesky factor of the damped inverse Gram
 * matrix, so one thread owns one row: for each column j of the batch [i1, i2) in processing
 * order it computes the group's scale/zero when j starts a group (no act_order), quantizes
 * w = W[r, j] exactly as gptq.c's quant_one (float32 grid arithmetic from wf = (float)w),
 * err = (w - q) / U_jj in float64, and subtracts err * U_jk from the batch's later columns k of
 * its row (gptq.c's in-batch dger). The errors of the batch go to Err, and one dgemm brings every
 * column after the batch up to date: W[:, i2:] -= Err (n_out, i2 - i1) U[i1:i2, i2:]. Batches end
 * early at a group that would straddle the batch end (without static groups), exactly as in
 * gptq.c, so that a group's scale is computed from the fully updated W.
 *
 * Layouts. cloq is row-major, cuBLAS/cuSOLVER column-major.
 *   - The working weights are kept as gptq.c keeps them: Wt (n_in, n_out) row-major float64, row
 *     j = column j (processing order) of W. This is the column-major W (n_out, n_in) with
 *     leading dimension n_out, which is what the dgemm wants, and it makes the per-row threads
 *     coalesced: the threads of a warp read W[r..r+31, j], adjacent doubles.
 *   - The factorizations run on the column-major LOWER triangle (see gptq_factor): the upper
 *     factor U of the row-major contract is the transposed lower factor, i.e. the same array.
 *   - Codes, scales and zeros are written by the kernels straight into (n_out, n_in) and
 *     (n_out, ng) arrays in the original column/group order (the thread maps processing
 *     position j to the original column perm[j]), so the download needs no un-permutation.
 *
 * Precision. RTN is bitwise equal to the CPU. GPTQ performs gptq.c's fast-version operations
 * in float64, but not bit for bit: cuSOLVER's blocked factorizations and cuBLAS's dgemm sum in
 * other orders than LAPACK/OpenBLAS (and OpenBLAS uses FMA in dger where this file rounds the
 * product and the difference separately), so the working weights agree with the CPU's to
 * float64 rounding. A code (and the scale of a dynamic group) can therefore differ from the
 * CPU's only where a value lands within rounding distance of a rounding boundary (w / scale at
 * a half-integer, or a float64 -> float32 conversion at a tie); the static scales are bitwise
 * the CPU's. Build requirements: IEEE float32 (no --use_fast_math, -ftz=true or
 * -prec-div=false); -fmad=false is set by the build, and the arithmetic that must match the CPU
 * bitwise uses _rn intrinsics anyway.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" {
#include "linalg_internal.h"
}

/* "No failure recorded" in a first-failure word (atomicMin keeps the smallest key). */
#define QUANT_NO_FAIL ULLONG_MAX

/* A host buffer freed at scope exit (the host side of cloq_dbuf), zeroed on allocation. */
template <typename T> struct quant_hbuf {
  T *p = nullptr;
  quant_hbuf() = default;
  quant_hbuf(const quant_hbuf &) = delete;
  quant_hbuf &operator=(const quant_hbuf &) = delete;
  ~quant_hbuf() { free(p); }
  int alloc(int64_t n, const char *what) {
    p = (T *)cloq_calloc_checked(n, sizeof(T));
    if (!p)
      return CLOQ_FAIL("out of memory allocating %s (%lld elements of %zu bytes)", what,
                       (long long)n, sizeof(T));
    return CLOQ_OK;
  }
};

/* ---- the grid (shared by RTN and GPTQ) ------------------------------------------------------- */

/* cloq_quant_scale_zero on the device: the same three float operations (IEEE, round to nearest
 * even, never fused). Returns false, writing nothing, when the scale is not finite and > 0. */
static __device__ bool quant_grid(float xmin, float xmax, float maxq, float *scale, float *zero) {
  if (xmin == 0.0f && xmax == 0.0f) { /* all-zero group: GPTQ's rule */
    xmin = -1.0f;
    xmax = 1.0f;
  }
  const float sc = __fdiv_rn(__fsub_rn(xmax, xmin), maxq);
  if (!(isfinite(sc) && sc > 0.0f)) return false;
  *scale = sc;
  *zero = __fadd_rn(rintf(__fdiv_rn(-xmin, sc)), 0.0f); /* + 0: never a -0.0 zero point */
  return true;
}

/* The code of one float32 value: clamp(rintf(w / scale) + zero, 0, maxq), as quant.c/gptq.c. */
static __device__ float quant_code(float w, float scale, float zero, float maxq) {
  float q = __fadd_rn(rintf(__fdiv_rn(w, scale)), zero);
  q = q < 0.0f ? 0.0f : q;
  q = q > maxq ? maxq : q;
  return q;
}

/* One warp per (row, group) of W (n_out, n_in) float32, groups of gs columns (the last may be
 * shorter), ng a row: the 0-extended range, the scale and zero into scales/zeros[r * ng + g],
 * and, when codes is not NULL, the codes of the group. dead (may be NULL): columns read as 0
 * (GPTQ's step 1; GPTQ passes codes NULL). A group with an unusable scale stores xmin/xmax in
 * its scale/zero slots and atomicMin's r * ng + g into *fail. blockDim.x: a multiple of 32. */
static __global__ void quant_groups_kernel(const float *W, int64_t n_out, int64_t n_in,
                                           int64_t gs, int64_t ng, float maxq,
                                           const uint8_t *dead, uint8_t *codes, float *scales,
                                           float *zeros, unsigned long long *fail) {
  const unsigned full = 0xffffffffu;
  const int lane = (int)(threadIdx.x & 31u);
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  /* t is uniform across the warp, so every lane reaches every shuffle */
  for (int64_t t = warp; t < n_out * ng; t += nwarps) {
    const int64_t r = t / ng, g = t % ng, c0 = g * gs;
    const int64_t len = (c0 + gs < n_in) ? gs : n_in - c0;
    const float *w = W + r * n_in + c0;
    float xmin = 0.0f, xmax = 0.0f; /* the reference's scan: strict comparisons from +0 */
    for (int64_t k = lane; k < len; k += 32) {
      const float v = (dead && dead[c0 + k]) ? 0.0f : w[k];
      xmin = v < xmin ? v : xmin;
      xmax = v > xmax ? v : xmax;
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float a = __shfl_xor_sync(full, xmin, o), b = __shfl_xor_sync(full, xmax, o);
      xmin = a < xmin ? a : xmin;
      xmax = b > xmax ? b : xmax;
    }
    float scale = 0.0f, zero = 0.0f;
    if (!quant_grid(xmin, xmax, maxq, &scale, &zero)) { /* same outcome in every lane */
      if (lane == 0) {
        scales[t] = xmin;
        zeros[t] = xmax;
        atomicMin(fail, (unsigned long long)t);
      }
      continue;
    }
    if (lane == 0) {
      scales[t] = scale;
      zeros[t] = zero;
    }
    if (codes) {
      uint8_t *q8 = codes + r * n_in + c0;
      for (int64_t k = lane; k < len; k += 32) q8[k] = (uint8_t)quant_code(w[k], scale, zero, maxq);
    }
  }
}

/* After a device scale failure at flat index t = r * ng + g (whose slots hold the range):
 * reproduces the CPU's message by calling cloq_quant_scale_zero on that range. */
static int quant_scale_fail(cloq_cuda *c, const float *dscales, const float *dzeros, int64_t t,
                            int64_t ng, int bits) {
  float xmin = 0.0f, xmax = 0.0f, scale = 0.0f, zero = 0.0f;
  CLOQ_CUDA(cudaMemcpyAsync(&xmin, dscales + t, sizeof xmin, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(&xmax, dzeros + t, sizeof xmax, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  CLOQ_CALL(cloq_quant_scale_zero(xmin, xmax, bits, t / ng, t % ng, &scale, &zero));
  return CLOQ_FAIL("internal error: the device rejected the scale of row %lld, group %lld "
                   "(range [%g, %g]) but the host accepts it",
                   (long long)(t / ng), (long long)(t % ng), (double)xmin, (double)xmax);
}

/* ---- RTN ------------------------------------------------------------------------------------- */

/* W holds a non-finite entry, the first (row-major) at index bad: quant.c's scan, which checks
 * every earlier group's scale before it meets the bad group, replayed on the host up to there.
 * Returns CLOQ_ERR with the first failure quant.c reports. */
static int rtn_nonfinite_fail(const float *W, int64_t n_in, int bits, int64_t gs, int64_t ng,
                              int64_t bad) {
  const int64_t rb = bad / n_in, gb = (bad % n_in) / gs;
  for (int64_t r = 0; r <= rb; r++)
    for (int64_t g = 0, c0 = 0; g < (r == rb ? gb : ng); g++, c0 += gs) {
      const int64_t c1 = (c0 + gs < n_in) ? c0 + gs : n_in;
      float xmin = 0.0f, xmax = 0.0f, scale = 0.0f, zero = 0.0f;
      for (int64_t k = c0; k < c1; k++) {
        const float w = W[r * n_in + k];
        if (w < xmin) xmin = w;
        if (w > xmax) xmax = w;
      }
      CLOQ_CALL(cloq_quant_scale_zero(xmin, xmax, bits, r, g, &scale, &zero));
    }
  return CLOQ_FAIL("non-finite weight %g at row %lld, column %lld", (double)W[bad],
                   (long long)rb, (long long)(bad % n_in));
}

/* cloq_quant_rtn on the device: checks and the non-finite scan on the host, then one warp per
 * (row, group) computes scale, zero and codes; downloads them. Bitwise equal to the CPU. */
int cloq_cuda_quant_rtn(cloq_cuda *c, const float *W, int64_t n_out, int64_t n_in, int bits,
                        int64_t group_size, uint8_t *codes, float *scales, float *zeros) {
  int64_t gs = 0, ng = 0; /* set by cloq_quant_check_args */
  CLOQ_CALL(cloq_quant_check_args(W, n_out, n_in, bits, group_size, codes, scales, zeros, &gs,
                                  &ng));
  const int64_t nel = n_out * n_in, nsz = n_out * ng;
  if (nel == 0) return CLOQ_OK;
  for (int64_t i = 0; i < nel; i++)
    if (!isfinite(W[i])) return rtn_nonfinite_fail(W, n_in, bits, gs, ng, i);

  cloq_dbuf<float> dW, dscales, dzeros;
  cloq_dbuf<uint8_t> dcodes;
  cloq_dbuf<unsigned long long> dfail;
  CLOQ_CALL(dW.alloc(nel, "RTN weights"));
  CLOQ_CALL(dcodes.alloc(nel, "RTN codes"));
  CLOQ_CALL(dscales.alloc(nsz, "RTN scales"));
  CLOQ_CALL(dzeros.alloc(nsz, "RTN zero points"));
  CLOQ_CALL(dfail.alloc(1, "RTN failure flag"));
  CLOQ_CUDA(cudaMemcpyAsync(dW.p, W, (size_t)nel * sizeof(float), cudaMemcpyHostToDevice,
                            c->stream));
  CLOQ_CUDA(cudaMemsetAsync(dfail.p, 0xff, sizeof(unsigned long long), c->stream));
  const float maxq = (float)((1 << bits) - 1);
  quant_groups_kernel<<<cloq_cuda_grid(nsz * 32, 256), 256, 0, c->stream>>>(
      dW.p, n_out, n_in, gs, ng, maxq, nullptr, dcodes.p, dscales.p, dzeros.p, dfail.p);
  CLOQ_CUDA(cudaGetLastError());
  unsigned long long fail = 0;
  CLOQ_CUDA(cudaMemcpyAsync(&fail, dfail.p, sizeof fail, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  if (fail != QUANT_NO_FAIL)
    return quant_scale_fail(c, dscales.p, dzeros.p, (int64_t)fail, ng, bits);
  CLOQ_CUDA(cudaMemcpyAsync(codes, dcodes.p, (size_t)nel, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(scales, dscales.p, (size_t)nsz * sizeof(float),
                            cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(zeros, dzeros.p, (size_t)nsz * sizeof(float),
                            cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  return CLOQ_OK;
}

/* ---- GPTQ: host side of the plan ------------------------------------------------------------- */

/* gptq.c's plan: what the arithmetic derives from the arguments. */
typedef struct {
  int64_t gs, ng;    /* effective group width (n_in for group_size -1) and groups per row */
  int static_groups; /* scales fixed from the step-1 W (group_size -1, or act_order) */
  double shift;      /* damp * mean(diag H) after step 1 */
} gptq_dplan;

/* The act-order key travels with its index (qsort has no context), as in gptq.c. */
typedef struct {
  double d;
  int64_t j;
} gptq_diag_key;

static int gptq_by_decreasing_diag(const void *a, const void *b) {
  const gptq_diag_key *x = (const gptq_diag_key *)a, *y = (const gptq_diag_key *)b;
  if (x->d != y->d) return x->d > y->d ? -1 : 1;
  return (x->j > y->j) - (x->j < y->j); /* ties keep index order: a stable sort */
}

/* gptq.c's plan_make without the static scales (those run on the device): dead columns
 * (dead[j] = H_jj == 0), the damping shift from the diagonal with dead entries read as 1, and
 * perm (processing position -> original column), by decreasing diagonal with act_order. */
static int gptq_plan(const double *H, int64_t n_in, const cloq_gptq_params *p, int64_t *perm,
                     uint8_t *dead, gptq_dplan *pl) {
  pl->gs = (p->group_size == -1 || p->group_size > n_in) ? n_in : p->group_size;
  pl->ng = cloq_quant_ngroups(n_in, p->group_size);
  pl->static_groups = p->group_size == -1 || p->act_order;
  quant_hbuf<gptq_diag_key> keys;
  CLOQ_CALL(keys.alloc(n_in, "GPTQ act-order keys"));
  double tr = 0.0;
  for (int64_t j = 0; j < n_in; j++) {
    const double d = H[j * n_in + j];
    dead[j] = d == 0.0;
    keys.p[j].d = dead[j] ? 1.0 : d;
    keys.p[j].j = j;
    tr += keys.p[j].d;
  }
  pl->shift = n_in > 0 ? p->damp * (tr / (double)n_in) : 0.0;
  if (p->act_order) qsort(keys.p, (size_t)n_in, sizeof *keys.p, gptq_by_decreasing_diag);
  for (int64_t j = 0; j < n_in; j++) perm[j] = keys.p[j].j;
  return CLOQ_OK;
}

/* gptq.c's message for a failed Cholesky factorization. */
static int gptq_not_pd(const char *stage, int64_t col, double damp) {
  return CLOQ_FAIL("GPTQ: the damped Gram matrix is not positive definite (%s failed at "
                   "processing column %lld with damp %g); use a larger --damp",
                   stage, (long long)col, damp);
}

/* ---- GPTQ: device kernels -------------------------------------------------------------------- */

/* A (n, n) = the permuted, damped Gram matrix Hp (gptq.c's damped_permuted:
 * Hp[a][b] = H[perm a][perm b], a dead diagonal entry set to 1, shift added to the diagonal),
 * stored COLUMN-major: A[b * n + a] = Hp[a][b]. The lower triangle that cuSOLVER reads is then
 * Hp[a][b] for a >= b, the row-major lower triangle, which is also what gptq.c's column-major
 * 'U' LAPACK calls read (the results agree even for an H that is not exactly symmetric). */
static __global__ void gptq_hp_kernel(double *A, const double *H, const int64_t *perm,
                                      const uint8_t *dead, int64_t n, double shift) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / n, a = i % n; /* A[i] = A[b * n + a] = Hp[a][b] */
    double v = H[perm[a] * n + perm[b]];
    if (a == b) {
      if (dead[perm[a]]) v = 1.0;
      v = __dadd_rn(v, shift);
    }
    A[i] = v;
  }
}

/* Wt (n_in, n_out) row-major float64: Wt[j * n_out + r] = step-1 W[r][perm j] (0 for a dead
 * column), i.e. the permuted W (n_out, n_in) in column-major order (leading dimension n_out). */
static __global__ void gptq_load_kernel(double *Wt, const float *W, const int64_t *perm,
                                        const uint8_t *dead, int64_t n_out, int64_t n_in) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_in * n_out;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = i / n_out, r = i % n_out, c = perm[j];
    Wt[i] = dead[c] ? 0.0 : (double)W[r * n_in + c];
  }
}

/* Order of gptq.c's loop failures: processing column j first; at one column the group scales of
 * every row (phase 0) are checked before any quantization (phase 1); then the row. The smallest
 * key among the failures is the one the CPU reports (rows are independent, so a row fails at
 * the same place whatever the other rows do). */
static __host__ __device__ unsigned long long gptq_fail_key(int64_t j, int phase, int64_t r,
                                                            int64_t n_out) {
  return ((unsigned long long)j * 2ull + (unsigned long long)phase) *
             (unsigned long long)n_out +
         (unsigned long long)r;
}

/* What the batch kernel reads and writes. */
typedef struct {
  double *Wt;               /* (n_in, n_out) working weights, see gptq_load_kernel */
  const double *U;          /* (n_in, n_in) row-major upper factor: U[j * n_in + k], k >= j */
  const int64_t *perm;      /* (n_in) processing position -> original column */
  double *Err;              /* (block, n_out): Err[(j - i1) * n_out + r] */
  uint8_t *codes;           /* (n_out, n_in), original column order */
  float *scales, *zeros;    /* (n_out, ng), original group order */
  unsigned long long *fail; /* first failure key (gptq_fail_key), QUANT_NO_FAIL when none */
  double *failw;            /* (n_out) the updated weight that failed to convert, per row */
  int64_t n_out, n_in, gs, ng;
  float maxq;
  int static_groups;
} gptq_args;

/* The columns [i1, i2) of one batch, one thread per row r, in processing order (gptq.c's
 * per-column loop and in-batch dger, for one row): the group grid at a group's first column
 * (dynamic groups), the code, err = (w - q) / U_jj, and W[r, k] -= err * U_jk for k in (j, i2).
 * A failure records its key (and, for phase 1, the value) and stops the row; a failure of an
 * earlier batch (key below this batch's first) stops every row. */
static __global__ void gptq_batch_kernel(gptq_args a, int64_t i1, int64_t i2) {
  const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t n_out = a.n_out, n_in = a.n_in;
  /* a plain read: a key written by this launch may or may not be seen, and either way is >=
   * this batch's first key, so only earlier batches' failures stop the kernel */
  if (r >= n_out || *a.fail < gptq_fail_key(i1, 0, 0, n_out)) return;
  double *wr = a.Wt + r; /* W[r, k] = wr[k * n_out] */
  for (int64_t j = i1; j < i2; j++) {
    const int64_t c = a.perm[j], g = c / a.gs, s = r * a.ng + g;
    if (!a.static_groups && j % a.gs == 0) {
      /* gptq.c's group_scales for this row: columns [j, j + gs) of the updated W (without
       * act_order processing positions are original columns, and the batch boundaries make
       * every one of them fully updated here: see the top of gptq.c) */
      const int64_t c1 = (j + a.gs < n_in) ? j + a.gs : n_in;
      float xmin = 0.0f, xmax = 0.0f;
      for (int64_t k = j; k < c1; k++) {
        const float w = __double2float_rn(wr[k * n_out]);
        xmin = w < xmin ? w : xmin;
        xmax = w > xmax ? w : xmax;
      }
      float scale = 0.0f, zero = 0.0f;
      if (!quant_grid(xmin, xmax, a.maxq, &scale, &zero)) {
        a.scales[s] = xmin;
        a.zeros[s] = xmax;
        atomicMin(a.fail, gptq_fail_key(j, 0, r, n_out));
        return;
      }
      a.scales[s] = scale;
      a.zeros[s] = zero;
    }
    /* gptq.c's quant_one */
    const double w = wr[j * n_out];
    const float wf = __double2float_rn(w);
    if (!isfinite(wf)) {
      a.failw[r] = w;
      atomicMin(a.fail, gptq_fail_key(j, 1, r, n_out));
      return;
    }
    const float scale = a.scales[s], zero = a.zeros[s];
    const float code = quant_code(wf, scale, zero, a.maxq);
    a.codes[r * n_in + c] = (uint8_t)code;
    const double q = (double)__fmul_rn(__fsub_rn(code, zero), scale);
    const double *u = a.U + j * n_in; /* row j of U: u[k] = U_jk */
    const double err = __ddiv_rn(__dsub_rn(w, q), u[j]);
    a.Err[(j - i1) * n_out + r] = err;
    /* W[r, k] -= err * U_jk, k in (j, i2). Unrolled by hand, loads first: Wt and U could alias
     * as far as the compiler knows, so it would not overlap the loads of consecutive k itself;
     * one thread per row gives few warps, and this keeps four loads in flight each. */
    int64_t k = j + 1;
    for (; k + 4 <= i2; k += 4) {
      const double w0 = wr[k * n_out], w1 = wr[(k + 1) * n_out];
      const double w2 = wr[(k + 2) * n_out], w3 = wr[(k + 3) * n_out];
      const double u0 = u[k], u1 = u[k + 1], u2 = u[k + 2], u3 = u[k + 3];
      wr[k * n_out] = __dsub_rn(w0, __dmul_rn(err, u0));
      wr[(k + 1) * n_out] = __dsub_rn(w1, __dmul_rn(err, u1));
      wr[(k + 2) * n_out] = __dsub_rn(w2, __dmul_rn(err, u2));
      wr[(k + 3) * n_out] = __dsub_rn(w3, __dmul_rn(err, u3));
    }
    for (; k < i2; k++) wr[k * n_out] = __dsub_rn(wr[k * n_out], __dmul_rn(err, u[k]));
  }
}

/* ---- GPTQ: host driver ----------------------------------------------------------------------- */

/* dU (n, n) <- U, the upper Cholesky factor of Hp^-1 (Hp^-1 = U^T U), read row-major:
 * U[j * n + k] for k >= j (the strict lower triangle of the row-major array is garbage, as in
 * gptq.c, and never read). dU holds Hp in column-major order on entry (gptq_hp_kernel).
 *
 * Row-/column-major: cuSOLVER sees the column-major matrix A = Hp and works on its LOWER
 * triangle throughout:
 *   potrf(L): A = L L^T, L in the lower triangle;
 *   potri(L): the lower triangle of A^-1 = Hp^-1 from L;
 *   potrf(L): Hp^-1 = L' L'^T, L' in the lower triangle.
 * The column-major lower entry L'(k, j) (k >= j) lies at dU[k + j * n], which the row-major
 * reading sees as element (j, k): the row-major array holds L'^T = U, upper, with
 * Hp^-1 = L' L'^T = U^T U. That is the unique upper factor gptq.c gets from its column-major
 * 'U' calls followed by a transpose; here no transpose is needed. cuSOLVER's info is 1-based
 * like LAPACK's (info = i > 0: the leading minor of order i is not positive definite), so the
 * failing processing column is info - 1, as in gptq.c.
 *
 * Failures are reported in gptq.c's order: a static scale failure (recorded by the kernel that
 * ran before, *dfail_static) comes before a Cholesky failure. */
static int gptq_factor(cloq_cuda *c, double *dU, int64_t n_in, const cloq_gptq_params *p,
                       const float *dscales, const float *dzeros,
                       const unsigned long long *dfail_static, int64_t ng) {
  const int n = (int)n_in;
  cloq_dbuf<double> dwork;
  cloq_dbuf<int> dinfo;
  CLOQ_CALL(dinfo.alloc(3, "cuSOLVER info"));
  int lw_potrf = 0, lw_potri = 0;
  /* the two potrf calls have the same arguments, hence the same workspace size */
  CLOQ_CUSOLVER(cusolverDnDpotrf_bufferSize(c->solver, CUBLAS_FILL_MODE_LOWER, n, dU, n,
                                            &lw_potrf));
  CLOQ_CUSOLVER(cusolverDnDpotri_bufferSize(c->solver, CUBLAS_FILL_MODE_LOWER, n, dU, n,
                                            &lw_potri));
  const int lwork = lw_potrf > lw_potri ? lw_potrf : lw_potri;
  CLOQ_CALL(dwork.alloc(lwork, "GPTQ potrf/potri workspace"));

  CLOQ_CUSOLVER(cusolverDnDpotrf(c->solver, CUBLAS_FILL_MODE_LOWER, n, dU, n, dwork.p, lwork,
                                 dinfo.p));
  int info[3] = {0, 0, 0};
  unsigned long long fail = QUANT_NO_FAIL;
  CLOQ_CUDA(cudaMemcpyAsync(&fail, dfail_static, sizeof fail, cudaMemcpyDeviceToHost,
                            c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(info, dinfo.p, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  if (fail != QUANT_NO_FAIL)
    return quant_scale_fail(c, dscales, dzeros, (int64_t)fail, ng, p->bits);
  if (info[0] > 0) return gptq_not_pd("Cholesky of H", (int64_t)info[0] - 1, p->damp);
  if (info[0] < 0) return CLOQ_FAIL("GPTQ: cuSOLVER dpotrf returned info=%d", info[0]);

  CLOQ_CUSOLVER(cusolverDnDpotri(c->solver, CUBLAS_FILL_MODE_LOWER, n, dU, n, dwork.p, lwork,
                                 dinfo.p + 1));
  CLOQ_CUSOLVER(cusolverDnDpotrf(c->solver, CUBLAS_FILL_MODE_LOWER, n, dU, n, dwork.p, lwork,
                                 dinfo.p + 2));
  CLOQ_CUDA(cudaMemcpyAsync(info + 1, dinfo.p + 1, 2 * sizeof(int), cudaMemcpyDeviceToHost,
                            c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  if (info[1] != 0) return CLOQ_FAIL("GPTQ: cuSOLVER dpotri returned info=%d", info[1]);
  if (info[2] > 0) return gptq_not_pd("Cholesky of H^-1", (int64_t)info[2] - 1, p->damp);
  if (info[2] < 0) return CLOQ_FAIL("GPTQ: cuSOLVER dpotrf returned info=%d", info[2]);
  return CLOQ_OK;
}

/* cloq_quant_gptq on the device (see the top of the file): host checks and plan, device static
 * scales, factorization, working weights, then per batch one sweep kernel and one dgemm;
 * downloads codes, scales and zeros (already in the original column order). */
int cloq_cuda_quant_gptq(cloq_cuda *c, const float *W, int64_t n_out, int64_t n_in,
                         const double *H, const cloq_gptq_params *p, uint8_t *codes,
                         float *scales, float *zeros) {
  CLOQ_CALL(cloq_gptq_check(W, n_out, n_in, H, p, codes, scales, zeros));
  if (n_out == 0 || n_in == 0) return CLOQ_OK;
  quant_hbuf<int64_t> perm;
  quant_hbuf<uint8_t> dead;
  gptq_dplan pl;
  CLOQ_CALL(perm.alloc(n_in, "GPTQ column order"));
  CLOQ_CALL(dead.alloc(n_in, "GPTQ dead-column flags"));
  CLOQ_CALL(gptq_plan(H, n_in, p, perm.p, dead.p, &pl));
  /* n_out, n_in fit in int (cloq_gptq_check), so these products fit in int64 */
  const int64_t nel = n_out * n_in, nn = n_in * n_in, nsz = n_out * pl.ng;
  const int64_t block = p->block < n_in ? p->block : n_in;
  const float maxq = (float)((1 << p->bits) - 1);

  cloq_dbuf<float> dW, dscales, dzeros;
  cloq_dbuf<double> dH, dU, dWt, dErr, dfailw;
  cloq_dbuf<int64_t> dperm;
  cloq_dbuf<uint8_t> ddead, dcodes;
  cloq_dbuf<unsigned long long> dfail; /* [0]: static scales, [1]: the column loop */
  CLOQ_CALL(dW.alloc(nel, "GPTQ weights"));
  CLOQ_CALL(dH.alloc(nn, "GPTQ Gram matrix"));
  CLOQ_CALL(dU.alloc(nn, "GPTQ inverse Cholesky factor"));
  CLOQ_CALL(dperm.alloc(n_in, "GPTQ column order"));
  CLOQ_CALL(ddead.alloc(n_in, "GPTQ dead-column flags"));
  CLOQ_CALL(dscales.alloc(nsz, "GPTQ scales"));
  CLOQ_CALL(dzeros.alloc(nsz, "GPTQ zero points"));
  CLOQ_CALL(dfail.alloc(2, "GPTQ failure flags"));
  CLOQ_CUDA(cudaMemcpyAsync(dW.p, W, (size_t)nel * sizeof(float), cudaMemcpyHostToDevice,
                            c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(dH.p, H, (size_t)nn * sizeof(double), cudaMemcpyHostToDevice,
                            c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(dperm.p, perm.p, (size_t)n_in * sizeof(int64_t),
                            cudaMemcpyHostToDevice, c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(ddead.p, dead.p, (size_t)n_in, cudaMemcpyHostToDevice, c->stream));
  CLOQ_CUDA(cudaMemsetAsync(dfail.p, 0xff, 2 * sizeof(unsigned long long), c->stream));

  /* static groups: gptq.c's static_scales, from the step-1 W (dead columns read as 0) */
  if (pl.static_groups) {
    quant_groups_kernel<<<cloq_cuda_grid(nsz * 32, 256), 256, 0, c->stream>>>(
        dW.p, n_out, n_in, pl.gs, pl.ng, maxq, ddead.p, nullptr, dscales.p, dzeros.p, dfail.p);
    CLOQ_CUDA(cudaGetLastError());
  }
  gptq_hp_kernel<<<cloq_cuda_grid(nn, 256), 256, 0, c->stream>>>(dU.p, dH.p, dperm.p, ddead.p,
                                                               n_in, pl.shift);
  CLOQ_CUDA(cudaGetLastError());
  CLOQ_CALL(gptq_factor(c, dU.p, n_in, p, dscales.p, dzeros.p, dfail.p, pl.ng));
  { /* the stream is synchronized (gptq_factor), so H's copy can go before the big buffers */
    double *h = dH.p;
    dH.p = nullptr;
    CLOQ_CUDA(cudaFree(h));
  }

  CLOQ_CALL(dWt.alloc(nel, "GPTQ working weights (n_in, n_out)"));
  CLOQ_CALL(dErr.alloc(block * n_out, "GPTQ batch errors"));
  CLOQ_CALL(dcodes.alloc(nel, "GPTQ codes"));
  CLOQ_CALL(dfailw.alloc(n_out, "GPTQ failing weights"));
  gptq_load_kernel<<<cloq_cuda_grid(nel, 256), 256, 0, c->stream>>>(dWt.p, dW.p, dperm.p,
                                                                   ddead.p, n_out, n_in);
  CLOQ_CUDA(cudaGetLastError());

  gptq_args a;
  a.Wt = dWt.p;
  a.U = dU.p;
  a.perm = dperm.p;
  a.Err = dErr.p;
  a.codes = dcodes.p;
  a.scales = dscales.p;
  a.zeros = dzeros.p;
  a.fail = dfail.p + 1;
  a.failw = dfailw.p;
  a.n_out = n_out;
  a.n_in = n_in;
  a.gs = pl.gs;
  a.ng = pl.ng;
  a.maxq = maxq;
  a.static_groups = pl.static_groups;
  /* one thread per row: n_out / 32 warps in all, so one warp per block spreads them over as
   * many multiprocessors (and L1 caches, which serve the broadcast reads of U) as possible */
  const int threads = 32;
  const unsigned row_blocks = (unsigned)((n_out + threads - 1) / threads);
  const double minus_one = -1.0, one = 1.0;
  for (int64_t i1 = 0; i1 < n_in;) { /* gptq.c's batch boundaries, verbatim */
    int64_t i2 = i1 + block < n_in ? i1 + block : n_in;
    if (!pl.static_groups && i2 < n_in) {
      /* a group straddling the batch end must start a batch of its own (see gptq.c) */
      const int64_t g0 = ((i2 - 1) / pl.gs) * pl.gs;
      if (g0 > i1 && g0 + pl.gs > i2) i2 = g0;
    }
    gptq_batch_kernel<<<row_blocks, threads, 0, c->stream>>>(a, i1, i2);
    CLOQ_CUDA(cudaGetLastError());
    if (i2 < n_in) {
      /* W[:, i2:] -= Err U[i1:i2, i2:], all column-major with m = n_out, n = n_in - i2,
       * k = i2 - i1:
       *   C = W[:, i2:]: (n_out, n_in - i2) at dWt + i2 * n_out, ldc = n_out (Wt's rows are
       *       W's columns, see gptq_load_kernel);
       *   A = Err: (n_out, i2 - i1) at dErr, lda = n_out (Err[(j - i1) * n_out + r]), op N;
       *   B: the row-major block U[i1:i2, i2:] starts at dU + i1 * n_in + i2 with row stride
       *       n_in, which column-major is its transpose, (n_in - i2, i2 - i1) with ldb = n_in;
       *       op T gives back U[i1:i2, i2:] (k x n). */
      CLOQ_CUBLAS(cublasDgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)n_out, (int)(n_in - i2),
                              (int)(i2 - i1), &minus_one, dErr.p, (int)n_out,
                              dU.p + i1 * n_in + i2, (int)n_in, &one, dWt.p + i2 * n_out,
                              (int)n_out));
    }
    i1 = i2;
  }

  unsigned long long fail = QUANT_NO_FAIL;
  CLOQ_CUDA(cudaMemcpyAsync(&fail, dfail.p + 1, sizeof fail, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  if (fail != QUANT_NO_FAIL) {
    const unsigned long long jp = fail / (unsigned long long)n_out;
    const int64_t r = (int64_t)(fail % (unsigned long long)n_out), j = (int64_t)(jp / 2);
    if (jp % 2 == 0) /* a dynamic group's scale (no act_order: column j is original column j) */
      return quant_scale_fail(c, dscales.p, dzeros.p, r * pl.ng + j / pl.gs, pl.ng, p->bits);
    double w = 0.0;
    CLOQ_CUDA(cudaMemcpyAsync(&w, dfailw.p + r, sizeof w, cudaMemcpyDeviceToHost, c->stream));
    CLOQ_CUDA(cudaStreamSynchronize(c->stream));
    return CLOQ_FAIL("GPTQ: updated weight at row %lld, column %lld is %g (not finite in "
                     "float32); the Gram matrix is too ill-conditioned, use a larger --damp",
                     (long long)r, (long long)perm.p[j], w);
  }
  CLOQ_CUDA(cudaMemcpyAsync(codes, dcodes.p, (size_t)nel, cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(scales, dscales.p, (size_t)nsz * sizeof(float),
                            cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaMemcpyAsync(zeros, dzeros.p, (size_t)nsz * sizeof(float),
                            cudaMemcpyDeviceToHost, c->stream));
  CLOQ_CUDA(cudaStreamSynchronize(c->stream));
  return CLOQ_OK;
}
