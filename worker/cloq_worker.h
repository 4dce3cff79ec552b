/* cloq_worker: the blocks a rank owns: their float32 weights, the forward pass (RMSNorm, RoPE in
 * the Hugging Face rotate_half layout with the config's inverse frequencies (cloq_rope_inv_freq),
 * grouped-query causal attention with the family's variations (biases on the linears, Qwen3's
 * per-head q/k RMSNorm before RoPE, Mistral's sliding window), SwiGLU MLP), the float64
 * Gram matrix of each distinct linear input, and, for the rank owning the last block of an eval,
 * the final norm, the head and the log-likelihood.
 *
 * Nothing here is collective: a worker is local state. Activations x are (t, dim) float32,
 * row-major. The result of a forward pass depends only on the weights and the input, never on
 * which rank runs it, which is what makes stores identical across rank counts.
 */
#ifndef CLOQ_WORKER_H
#define CLOQ_WORKER_H

#include <stdint.h>

#include "cloq_config.h"
#include "cloq_ckpt.h"
#include "cloq_modules.h"

typedef struct {
  float *attn_norm;    /* (dim) */
  float *ffn_norm;     /* (dim) */
  float *w[CLOQ_NMOD]; /* module m: (n_out, n_in), see cloq_module_shape */
  float *bias[CLOQ_NMOD]; /* module m's bias (n_out) where the config has one, else NULL; never
                          * quantized, never part of B A */
  float *q_norm, *k_norm; /* (head_dim) with cfg.qk_norm (Qwen3), else NULL */
} cloq_block;

typedef struct cloq_worker cloq_worker;

typedef struct {
  int64_t b0, b1;  /* owned blocks [b0, b1) */
  int gram;        /* accumulate Gram matrices during forward */
  int gram_lazy;   /* with gram: allocate a block's matrices only in cloq_worker_alloc_gram */
  int head;        /* load final norm + head (for the NLL) */
  int64_t max_t;   /* longest sequence that will be run */
  int lazy;        /* keep only the norms resident: each block's linears are converted from the
                    * checkpoint when a sample reaches it (one block's worth of float32 per rank;
                    * cloq_worker_block then returns NULL) */
  int kv_cache;    /* allocate a K/V cache of max_t positions per owned block, for
                    * cloq_worker_decode (resident weights only: not with lazy) */
  struct cloq_dev *dev; /* run the forward pass (and Gram accumulation) here; NULL: the CPU.
                    * The weights are then also resident on the GPU (one block with lazy); the
                    * head (NLL) and decoding stay on the CPU. Not owned by the worker. */
} cloq_worker_params;

/* Loads the owned blocks' weights from the checkpoint as float32 (checking shapes and that every
 * value is finite; the error names the tensor). Touches only those tensors (plus model.norm and
 * the head when params->head). */
int cloq_worker_create(const cloq_config *cfg, const cloq_ckpt *st, const cloq_worker_params *p,
                       cloq_worker **out);
void cloq_worker_destroy(cloq_worker **w);

/* Runs the owned blocks on x (t, dim) in place; accumulates Gram matrices when enabled. Fails on
 * non-finite activations, naming the block and stage. */
int cloq_worker_forward(cloq_worker *w, float *x, int64_t t);

/* Runs owned block b alone on x (t, dim) in place (accumulating its Gram matrices if allocated). */
int cloq_worker_forward_block(cloq_worker *w, int64_t b, float *x, int64_t t);
/* Allocates (zeroed) the Gram matrices of owned block b; those of a block without them are not
 * accumulated. */
int cloq_worker_alloc_gram(cloq_worker *w, int64_t b);

/* Final RMSNorm + head on x (t, dim); adds -log p(ids[i+1] | ..i) for i in [0, t-1) to *nll and
 * t-1 to *count. If logits != NULL, the first min(nlog, t) rows of logits (vocab each) are
 * copied there. */
int cloq_worker_nll(cloq_worker *w, const float *x, const int32_t *ids, int64_t t, double *nll,
                    int64_t *count, float *logits, int64_t nlog);

/* Incremental decoding (generation) with the K/V cache of params->kv_cache; needs the head.
 * Runs the single position pos through the owned blocks: x_in (dim) is the position's input
 * (the token's embedding row when b0 == 0), its keys and values are stored in the cache at pos,
 * and its queries attend to the cached positions [0, pos]. Then the final RMSNorm and the head
 * write logits (vocab, float32). Positions must be run in order: pos may be at most one past the
 * last position decoded (pos 0 starts a new sequence, and any pos <= that rewinds the cache to
 * pos); pos < max_t. Same float32 arithmetic as cloq_worker_forward + cloq_worker_nll, one row
 * at a time (the products go through sgemv/sgemm with one row, so results agree with the full
 * forward to float32 rounding, not bitwise). No Gram accumulation, token count or timers. Fails
 * on non-finite activations or logits, naming the block and stage. Not collective. */
int cloq_worker_decode(cloq_worker *w, const float *x_in, int64_t pos, float *logits);

/* The owned block b (global index; NULL with lazy weights) and its Gram matrix for input i: (n, n) float64, upper
 * triangle accumulated (symmetrize before use). Samples and tokens seen so far. */
cloq_block *cloq_worker_block(cloq_worker *w, int64_t b);
double *cloq_worker_gram(cloq_worker *w, int64_t b, int input);
int64_t cloq_worker_tokens(const cloq_worker *w);
/* Seconds spent in the forward pass (with Gram accumulation) of block b. */
double cloq_worker_forward_seconds(const cloq_worker *w, int64_t b);
/* Tells the worker that the host weights of owned block b were changed in place (sequential
 * propagation replaces W by Q + B A): a GPU copy is refreshed. */
int cloq_worker_weights_changed(cloq_worker *w, int64_t b);
/* Not collective. Replaces module m's weight of block b by the effective weight of a quantized
 * module, dequant(codes, scales, zeros) + B A (float32, the one formula eval and sequential
 * propagation use); call cloq_worker_weights_changed once the block's modules are all set. */
void cloq_worker_apply_qmodule(cloq_worker *w, int64_t b, int m, const cloq_qmodule *q,
                               int64_t group_size);
/* Frees the Gram matrices of block b once initialized. */
void cloq_worker_free_gram(cloq_worker *w, int64_t b);

#endif
