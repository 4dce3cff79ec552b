/* cloq_fwd_cuda: the worker's forward pass on a CUDA GPU (the CUDA side of cloq_worker.c's
 * block_forward), with weights, activations and Gram matrices resident on the device.
 *
 * Same computation as the CPU path (Hugging Face LlamaDecoderLayer in float32):
 *   - RMSNorm: one thread block per row, sum of squares in float64 (tree order), as on the CPU;
 *   - the seven linears: cublasSgemm, float32, TF32 off (the handle is pedantic, see
 *     cloq_backend.h); the o and down products add into the residual (beta = 1);
 *   - biases (where the family has them) added by a kernel after each product;
 *   - Qwen3's q/k norms: the RMSNorm kernel on rows of head_dim;
 *   - RoPE (rotate_half) from the worker's float32 tables;
 *   - attention: per KV head one strided-batched sgemm for the scores of its query heads, a causal
 *     softmax kernel (row maximum subtracted, expf, float32 sum; keys outside a sliding window
 *     masked like the future), one strided-batched sgemm for the weighted values; the full (t, t)
 *     score matrix is formed (the masked part is zeroed);
 *   - SwiGLU with expf;
 *   - Gram: X widened to float64, cublasDsyrk (products exact, float64 sums).
 * Results differ from the CPU path by summation order and the exp implementation only
 * (tests/gpu/gpu_check.sh measures it). Non-finite activations stop the run with the CPU's message
 * (block, stage, first element). Not collective; one instance per worker.
 */
#ifndef CLOQ_FWD_CUDA_H
#define CLOQ_FWD_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "cloq_config.h"

struct cloq_cuda;
typedef struct cloq_fwd_cuda cloq_fwd_cuda;

/* nslots weight slots (one per owned block, or 1 with lazy weights); activations for max_t
 * positions; rope_cos/rope_sin (max_t, head_dim/2) are copied. gram: allocate the Gram
 * workspace (Gram matrices themselves come from cloq_fwd_cuda_gram_alloc). */
int cloq_fwd_cuda_create(struct cloq_cuda *c, const cloq_config *cfg, int64_t nslots,
                         int64_t max_t, const float *rope_cos, const float *rope_sin, int gram,
                         cloq_fwd_cuda **out);
void cloq_fwd_cuda_destroy(cloq_fwd_cuda **f);

/* Uploads one block's weights into slot s: norms (dim), the seven linears in cloq's module
 * order (cloq_modules.h; each (n_out, n_in) row-major), their biases (n_out; an entry is NULL
 * where the config has none) and Qwen3's q/k norms (head_dim; NULL without cfg.qk_norm). */
int cloq_fwd_cuda_load(cloq_fwd_cuda *f, int64_t s, const float *attn_norm, const float *ffn_norm,
                       const float *const w[7], const float *const bias[7], const float *q_norm,
                       const float *k_norm);

/* Gram matrices of slot s on the device, one per input (cloq_modules.h: n = cloq_input_dim),
 * initialized from the host matrices H[i] (n, n) (NULL: that input is not
 * accumulated). Accumulation then happens in cloq_fwd_cuda_run. */
int cloq_fwd_cuda_gram_alloc(cloq_fwd_cuda *f, int64_t s, double *const H[4]);
/* Whether slot s has device Gram matrices. */
int cloq_fwd_cuda_gram_live(const cloq_fwd_cuda *f, int64_t s);
/* Copies slot s's device Gram matrices back into the host matrices given to gram_alloc (upper
 * triangle; the lower one is left as it was) and frees the device copies. */
int cloq_fwd_cuda_gram_fetch(cloq_fwd_cuda *f, int64_t s);
/* Frees slot s's device Gram matrices without copying. */
void cloq_fwd_cuda_gram_drop(cloq_fwd_cuda *f, int64_t s);

/* Runs the blocks in slots[0..n) (global block numbers blocks[0..n), for messages) on x
 * (t, dim) host float32, in place: x is uploaded once and downloaded once. sec[i] += the
 * seconds of block i (the stream is synchronized after each block). */
int cloq_fwd_cuda_run(cloq_fwd_cuda *f, const int64_t *slots, const int64_t *blocks, int64_t n,
                      float *x, int64_t t, double *sec);

#ifdef __cplusplus
}
#endif

#endif
