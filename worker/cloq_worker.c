/* cloq_worker: owned blocks, forward pass and Gram accumulation. See cloq_worker.h.
 *
 * The forward pass follows Hugging Face's LlamaDecoderLayer in float32: RMSNorm with the sum of
 * squares taken in float64 (HF upcasts to float32 for bf16 models; float64 here costs nothing and
 * keeps the reference goldens within 1e-6), RoPE in the rotate_half layout (pairs (i, i + hd/2)),
 * softmax in float32 with the row maximum subtracted, SwiGLU. Matrix products go through sgemm;
 * attention is one sgemm pair per head on the strided q/k/v buffers.
 */
#include "cloq_worker.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_backend.h"
#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_expf.h"
#include "cloq_linalg.h"
#ifdef CLOQ_HAVE_CUDA
#include "cloq_fwd_cuda.h"
#endif

enum { HEAD_ROWS = 64 }; /* positions per head sgemm */

struct cloq_worker {
  cloq_config cfg;
  cloq_worker_params p;
  int64_t nb;          /* owned block count */
  cloq_block *blocks;  /* nb; with lazy weights only the norms are resident */
  const cloq_ckpt *st;   /* lazy weights: read from here */
  float *lazy_w[CLOQ_NMOD]; /* lazy weights: the linears of block lazy_b, float32 */
  int64_t lazy_b;
  double **gram;       /* nb * CLOQ_NIN matrices, NULL when not accumulated */
  double *fwd_sec;     /* nb */
  int64_t tokens;
  /* head (optional) */
  float *final_norm;   /* (dim) */
  float *head;         /* (vocab, dim) */
  /* RoPE tables: (max_t, head_dim/2) */
  float *rope_cos, *rope_sin;
  /* run state, sized for max_t */
  float *xn;     /* (t, dim) */
  float *q;      /* (t, n_heads*hd) */
  float *k;      /* (t, n_kv*hd) */
  float *v;      /* (t, n_kv*hd) */
  float *att;    /* (t, n_heads*hd) */
  float *scores; /* (t, t) */
  float *g;      /* (t, hidden) */
  float *u;      /* (t, hidden) */
  float *tmp;    /* (t, dim) */
  float *logits; /* (HEAD_ROWS, vocab) */
  double *work;  /* (t, max input width) for the Gram widening */
  /* K/V cache for cloq_worker_decode (kv_cache only) */
  float *kc, *vc; /* (nb, n_kv*hd, max_t) each: roped keys, values, transposed */
  float *dec_x;   /* (dim): the position being decoded */
  int64_t kv_len; /* positions [0, kv_len) of the cache are valid */
#ifdef CLOQ_HAVE_CUDA
  cloq_fwd_cuda *gpu; /* the forward pass on p.dev (NULL on the CPU) */
  int64_t gpu_lazy_b; /* lazy weights: the block whose linears are in the GPU's one slot */
#endif
};

static int load_tensor(const cloq_ckpt *st, const char *name, int ndim, int64_t d0, int64_t d1,
                       float **out) {
  int64_t shape[2] = {d0, d1};
  int64_t n = ndim == 1 ? d0 : 0;
  if (ndim == 2) CLOQ_CALL(cloq_mul64(d0, d1, &n));
  CLOQ_ALLOC(*out, n, name);
  CLOQ_CALL(cloq_ckpt_read_f32(st, name, ndim, shape, *out));
  return CLOQ_OK;
}

int cloq_worker_create(const cloq_config *cfg, const cloq_ckpt *st, const cloq_worker_params *p,
                       cloq_worker **out) {
  *out = NULL;
  CLOQ_CHECK(p->b0 >= 0 && p->b1 >= p->b0 && p->b1 <= cfg->n_layers, "bad block range [%lld, %lld)",
             (long long)p->b0, (long long)p->b1);
  CLOQ_CHECK(p->max_t >= 1, "max_t must be >= 1");
  cloq_worker *w;
  CLOQ_ALLOC(w, 1, "worker");
  *out = w;
  w->cfg = *cfg;
  w->p = *p;
  w->nb = p->b1 - p->b0;
  CLOQ_ALLOC(w->blocks, w->nb, "blocks");
  CLOQ_ALLOC(w->fwd_sec, w->nb, "timers");
  char name[256];
  for (int64_t i = 0; i < w->nb; i++) {
    int64_t b = p->b0 + i;
    cloq_block *bl = &w->blocks[i];
    snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)b);
    CLOQ_CALL(load_tensor(st, name, 1, cfg->dim, 0, &bl->attn_norm));
    snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight", (long long)b);
    CLOQ_CALL(load_tensor(st, name, 1, cfg->dim, 0, &bl->ffn_norm));
    for (int m = 0; m < CLOQ_NMOD && !p->lazy; m++) {
      int64_t no, ni;
      cloq_module_shape(cfg, m, &no, &ni);
      snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)b, cloq_module_name[m]);
      CLOQ_CALL(load_tensor(st, name, 2, no, ni, &bl->w[m]));
    }
    for (int m = 0; m < CLOQ_NMOD; m++) { /* biases stay resident with lazy weights too */
      if (!(cfg->bias & (1u << m))) continue;
      int64_t no, ni;
      cloq_module_shape(cfg, m, &no, &ni);
      snprintf(name, sizeof name, "model.layers.%lld.%s.bias", (long long)b, cloq_module_name[m]);
      CLOQ_CALL(load_tensor(st, name, 1, no, 0, &bl->bias[m]));
    }
    if (cfg->qk_norm) {
      snprintf(name, sizeof name, "model.layers.%lld.self_attn.q_norm.weight", (long long)b);
      CLOQ_CALL(load_tensor(st, name, 1, cfg->head_dim, 0, &bl->q_norm));
      snprintf(name, sizeof name, "model.layers.%lld.self_attn.k_norm.weight", (long long)b);
      CLOQ_CALL(load_tensor(st, name, 1, cfg->head_dim, 0, &bl->k_norm));
    }
  }
  w->st = st;
  w->lazy_b = -1;
  for (int m = 0; m < CLOQ_NMOD && p->lazy; m++) {
    int64_t no, ni, n;
    cloq_module_shape(cfg, m, &no, &ni);
    CLOQ_CALL(cloq_mul64(no, ni, &n));
    CLOQ_ALLOC(w->lazy_w[m], n, "block weights");
  }
  if (p->gram) {
    CLOQ_ALLOC(w->gram, w->nb * CLOQ_NIN, "gram pointers");
    for (int64_t i = 0; i < w->nb && !p->gram_lazy; i++)
      CLOQ_CALL(cloq_worker_alloc_gram(w, p->b0 + i));
  }
  if (p->head) {
    CLOQ_CALL(load_tensor(st, "model.norm.weight", 1, cfg->dim, 0, &w->final_norm));
    const char *hn = (!cfg->tied && cloq_ckpt_has(st, "lm_head.weight")) ? "lm_head.weight"
                                                                       : "model.embed_tokens.weight";
    CLOQ_CHECK(cfg->tied || strcmp(hn, "lm_head.weight") == 0,
               "config says tie_word_embeddings=false but lm_head.weight is missing");
    CLOQ_CALL(load_tensor(st, hn, 2, cfg->vocab_size, cfg->dim, &w->head));
    CLOQ_ALLOC(w->logits, HEAD_ROWS * cfg->vocab_size, "logits");
  }
  /* RoPE: angle = pos * inv_freq_i (cloq_rope_inv_freq: the config's scaling), in float64. */
  int64_t T = p->max_t, hd = cfg->head_dim, half = hd / 2;
  CLOQ_ALLOC(w->rope_cos, T * half, "rope table");
  CLOQ_ALLOC(w->rope_sin, T * half, "rope table");
  double *inv;
  float *freqs = NULL;
  CLOQ_ALLOC(inv, half, "rope frequencies");
  int rc = CLOQ_OK;
  if (cfg->rope_type == CLOQ_ROPE_FREQS) { /* GGUF: llama3's divisors, one per frequency */
    rc = load_tensor(st, "rope_freqs.weight", 1, half, 0, &freqs);
    for (int64_t i = 0; rc == CLOQ_OK && i < half; i++)
      if (!(freqs[i] > 0))
        rc = CLOQ_FAIL("tensor rope_freqs.weight: entry %lld is %g, not positive", (long long)i,
                       (double)freqs[i]);
  }
  if (rc == CLOQ_OK) cloq_rope_inv_freq(cfg, freqs, inv);
  for (int64_t pos = 0; rc == CLOQ_OK && pos < T; pos++)
    for (int64_t i = 0; i < half; i++) {
      double a = (double)pos * inv[i];
      w->rope_cos[pos * half + i] = (float)cos(a);
      w->rope_sin[pos * half + i] = (float)sin(a);
    }
  free(inv);
  free(freqs);
  CLOQ_CALL(rc);
  int64_t qd = cfg->n_heads * hd, kd = cfg->n_kv_heads * hd, H = cfg->hidden_dim;
  int64_t widest = cfg->dim > qd ? cfg->dim : qd;
  if (H > widest) widest = H;
  int64_t tt;
  CLOQ_CALL(cloq_mul64(T, T, &tt));
  CLOQ_ALLOC(w->xn, T * cfg->dim, "activations");
  CLOQ_ALLOC(w->tmp, T * cfg->dim, "activations");
  CLOQ_ALLOC(w->q, T * qd, "activations");
  CLOQ_ALLOC(w->att, T * qd, "activations");
  CLOQ_ALLOC(w->k, T * kd, "activations");
  CLOQ_ALLOC(w->v, T * kd, "activations");
  CLOQ_ALLOC(w->scores, tt, "attention scores");
  CLOQ_ALLOC(w->g, T * H, "activations");
  CLOQ_ALLOC(w->u, T * H, "activations");
  if (p->gram) CLOQ_ALLOC(w->work, T * widest, "Gram workspace");
#ifdef CLOQ_HAVE_CUDA
  if (p->dev) {
    CLOQ_CALL(cloq_fwd_cuda_create(cloq_dev_cuda(p->dev), cfg, p->lazy ? 1 : w->nb, T,
                                   w->rope_cos, w->rope_sin, p->gram, &w->gpu));
    w->gpu_lazy_b = -1;
    for (int64_t i = 0; i < w->nb && !p->lazy; i++) {
      const cloq_block *bl = &w->blocks[i];
      CLOQ_CALL(cloq_fwd_cuda_load(w->gpu, i, bl->attn_norm, bl->ffn_norm,
                                   (const float *const *)bl->w, (const float *const *)bl->bias,
                                   bl->q_norm, bl->k_norm));
    }
  }
#endif
  if (p->kv_cache) {
    CLOQ_CHECK(!p->lazy, "the K/V cache needs resident weights (not lazy)");
    int64_t ckv;
    CLOQ_CALL(cloq_mul64(w->nb * T, kd, &ckv));
    CLOQ_ALLOC(w->kc, ckv, "K/V cache");
    CLOQ_ALLOC(w->vc, ckv, "K/V cache");
    CLOQ_ALLOC(w->dec_x, cfg->dim, "activations");
  }
  return CLOQ_OK;
}

void cloq_worker_destroy(cloq_worker **wp) {
  if (!wp || !*wp) return;
  cloq_worker *w = *wp;
#ifdef CLOQ_HAVE_CUDA
  cloq_fwd_cuda_destroy(&w->gpu);
#endif
  for (int64_t i = 0; w->blocks && i < w->nb; i++) {
    free(w->blocks[i].attn_norm);
    free(w->blocks[i].ffn_norm);
    free(w->blocks[i].q_norm);
    free(w->blocks[i].k_norm);
    for (int m = 0; m < CLOQ_NMOD; m++) free(w->blocks[i].bias[m]);
    for (int m = 0; m < CLOQ_NMOD; m++) free(w->blocks[i].w[m]);
  }
  for (int m = 0; m < CLOQ_NMOD; m++) free(w->lazy_w[m]);
  if (w->gram)
    for (int64_t i = 0; i < w->nb * CLOQ_NIN; i++) free(w->gram[i]);
  free(w->gram);
  free(w->blocks);
  free(w->fwd_sec);
  free(w->final_norm);
  free(w->head);
  free(w->logits);
  free(w->rope_cos);
  free(w->rope_sin);
  free(w->xn);
  free(w->tmp);
  free(w->q);
  free(w->att);
  free(w->k);
  free(w->v);
  free(w->scores);
  free(w->g);
  free(w->u);
  free(w->work);
  free(w->kc);
  free(w->vc);
  free(w->dec_x);
  free(w);
  *wp = NULL;
}

/* Reductions in 8 fixed lanes: they vectorize, and their summation order is set here, not by
 * compiler flags, so results stay reproducible across builds. */
static float row_max(const float *v, int64_t n) {
  float m[8];
  for (int k = 0; k < 8; k++) m[k] = v[0];
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) m[k] = v[j + k] > m[k] ? v[j + k] : m[k];
  for (; j < n; j++) m[0] = v[j] > m[0] ? v[j] : m[0];
  for (int k = 1; k < 8; k++) m[0] = m[k] > m[0] ? m[k] : m[0];
  return m[0];
}

static float row_sum(const float *v, int64_t n) {
  float a[8] = {0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) a[k] += v[j + k];
  for (; j < n; j++) a[0] += v[j];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

static void rmsnorm(float *out, const float *x, const float *weight, int64_t t, int64_t d,
                    double eps) {
  for (int64_t r = 0; r < t; r++) {
    const float *xr = x + r * d;
    double ss = 0;
    for (int64_t j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
    float inv = (float)(1.0 / sqrt(ss / (double)d + eps));
    for (int64_t j = 0; j < d; j++) out[r * d + j] = weight[j] * (xr[j] * inv);
  }
}

/* y (t, n) += bias (n) on every row; nothing when bias is NULL. */
static void add_bias(float *y, const float *bias, int64_t t, int64_t n) {
  if (!bias) return;
  for (int64_t r = 0; r < t; r++)
    for (int64_t j = 0; j < n; j++) y[r * n + j] += bias[j];
}

/* y (t, n_out) = x (t, n_in) W^T + bias, W (n_out, n_in), bias (n_out) or NULL. */
static void linear(float *y, const float *x, const float *W, const float *bias, int64_t t,
                   int64_t n_in, int64_t n_out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)n_out, (int)n_in, 1.0f, x,
              (int)n_in, W, (int)n_in, 0.0f, y, (int)n_out);
  add_bias(y, bias, t, n_out);
}

/* Qwen3's q/k norms, where the block has them: RMSNorm over each head's hd values of q (rows of
 * nh heads) and k (nkv heads), in place, before RoPE. */
static void qk_norm(const cloq_block *bl, const cloq_config *c, float *q, float *k, int64_t t) {
  if (!bl->q_norm) return;
  rmsnorm(q, q, bl->q_norm, t * c->n_heads, c->head_dim, c->norm_eps);
  rmsnorm(k, k, bl->k_norm, t * c->n_kv_heads, c->head_dim, c->norm_eps);
}

/* The first key position query i attends to: i - window + 1 with a sliding window, else 0. */
static int64_t first_key(const cloq_config *c, int64_t i) {
  return c->window && i >= c->window ? i - c->window + 1 : 0;
}

/* rotate_half RoPE on every head of buf (t, nh*hd). */
static void rope(float *buf, int64_t t, int64_t nh, int64_t hd, const float *cs, const float *sn) {
  int64_t half = hd / 2;
  for (int64_t pos = 0; pos < t; pos++)
    for (int64_t h = 0; h < nh; h++) {
      float *v = buf + pos * nh * hd + h * hd;
      const float *c = cs + pos * half, *s = sn + pos * half;
      for (int64_t i = 0; i < half; i++) {
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c[i] - x2 * s[i];
        v[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
}

static int check_finite(const float *x, int64_t n, int64_t block, const char *stage) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return CLOQ_FAIL("non-finite activation in block %lld at %s (element %lld)",
                       (long long)block, stage, (long long)i);
  return CLOQ_OK;
}

static void accumulate(cloq_worker *w, int64_t bi, int input, const float *X, int64_t t) {
  if (!w->gram || !w->gram[bi * CLOQ_NIN + input]) return; /* not wanted for this block */
  int64_t n = cloq_input_dim(&w->cfg, input);
  cloq_gram_accumulate(w->gram[bi * CLOQ_NIN + input], X, t, n, w->work);
}

/* Lazy weights: the linears of owned block bi, converted from the checkpoint for this sample (its
 * pages dropped again) into the previous block's buffers. */
static int lazy_load(cloq_worker *w, int64_t bi) {
  int64_t b = w->p.b0 + bi;
  if (w->lazy_b == b) return CLOQ_OK;
  char name[256];
  for (int m = 0; m < CLOQ_NMOD; m++) {
    int64_t shape[2];
    cloq_module_shape(&w->cfg, m, &shape[0], &shape[1]);
    snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)b, cloq_module_name[m]);
    w->lazy_b = -1;
    CLOQ_CALL(cloq_ckpt_read_f32(w->st, name, 2, shape, w->lazy_w[m]));
  }
  w->lazy_b = b;
  return CLOQ_OK;
}

static int block_forward(cloq_worker *w, int64_t bi, float *x, int64_t t) {
  const cloq_config *c = &w->cfg;
  cloq_block lz, *bl = &w->blocks[bi];
  if (w->p.lazy) {
    CLOQ_CALL(lazy_load(w, bi));
    lz = *bl;
    for (int m = 0; m < CLOQ_NMOD; m++) lz.w[m] = w->lazy_w[m];
    bl = &lz;
  }
  int64_t b = w->p.b0 + bi, d = c->dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
  int64_t qd = nh * hd, kd = nkv * hd, H = c->hidden_dim;

  /* attention */
  rmsnorm(w->xn, x, bl->attn_norm, t, d, c->norm_eps);
  accumulate(w, bi, CLOQ_IN_ATTN, w->xn, t);
  linear(w->q, w->xn, bl->w[CLOQ_M_Q], bl->bias[CLOQ_M_Q], t, d, qd);
  linear(w->k, w->xn, bl->w[CLOQ_M_K], bl->bias[CLOQ_M_K], t, d, kd);
  linear(w->v, w->xn, bl->w[CLOQ_M_V], bl->bias[CLOQ_M_V], t, d, kd);
  qk_norm(bl, c, w->q, w->k, t);
  rope(w->q, t, nh, hd, w->rope_cos, w->rope_sin);
  rope(w->k, t, nkv, hd, w->rope_cos, w->rope_sin);
  float scale = (float)(1.0 / sqrt((double)hd));
  int64_t group = nh / nkv;
  for (int64_t h = 0; h < nh; h++) {
    const float *qh = w->q + h * hd, *kh = w->k + (h / group) * hd, *vh = w->v + (h / group) * hd;
    /* scores (t, t) = scale * q_h k_h^T; only the causal lower triangle is used */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)t, (int)hd, scale, qh,
                (int)qd, kh, (int)kd, 0.0f, w->scores, (int)t);
    for (int64_t i = 0; i < t; i++) {
      float *row = w->scores + i * t;
      int64_t j0 = first_key(c, i); /* keys [j0, i] (causal, within the window) */
      float mx = row_max(row + j0, i + 1 - j0);
      for (int64_t j = 0; j < j0; j++) row[j] = 0.0f;
      for (int64_t j = j0; j <= i; j++) row[j] = exp_nonpos(row[j] - mx);
      float inv = 1.0f / row_sum(row + j0, i + 1 - j0);
      for (int64_t j = j0; j <= i; j++) row[j] *= inv;
      for (int64_t j = i + 1; j < t; j++) row[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t, (int)hd, (int)t, 1.0f,
                w->scores, (int)t, vh, (int)kd, 0.0f, w->att + h * hd, (int)qd);
  }
  accumulate(w, bi, CLOQ_IN_O, w->att, t);
  linear(w->tmp, w->att, bl->w[CLOQ_M_O], bl->bias[CLOQ_M_O], t, qd, d);
  for (int64_t i = 0; i < t * d; i++) x[i] += w->tmp[i];
  CLOQ_CALL(check_finite(x, t * d, b, "attention output"));

  /* MLP */
  rmsnorm(w->xn, x, bl->ffn_norm, t, d, c->norm_eps);
  accumulate(w, bi, CLOQ_IN_MLP, w->xn, t);
  linear(w->g, w->xn, bl->w[CLOQ_M_GATE], bl->bias[CLOQ_M_GATE], t, d, H);
  linear(w->u, w->xn, bl->w[CLOQ_M_UP], bl->bias[CLOQ_M_UP], t, d, H);
  for (int64_t i = 0; i < t * H; i++) {
    float gv = w->g[i];
    w->g[i] = gv / (1.0f + expf(-gv)) * w->u[i];
  }
  accumulate(w, bi, CLOQ_IN_DOWN, w->g, t);
  linear(w->tmp, w->g, bl->w[CLOQ_M_DOWN], bl->bias[CLOQ_M_DOWN], t, H, d);
  for (int64_t i = 0; i < t * d; i++) x[i] += w->tmp[i];
  CLOQ_CALL(check_finite(x, t * d, b, "MLP output"));
  return CLOQ_OK;
}

#ifdef CLOQ_HAVE_CUDA
/* The GPU forward pass of owned blocks [bi0, bi1) on x (t, dim) in place: weights (lazy: the one
 * slot, block by block) and Gram matrices are made resident first; x crosses the bus once per
 * call (lazy: once per block). */
static int gpu_forward(cloq_worker *w, int64_t bi0, int64_t bi1, float *x, int64_t t) {
  for (int64_t bi = bi0; bi < bi1; bi++) {
    double *H[CLOQ_NIN];
    int any = 0;
    for (int i = 0; i < CLOQ_NIN; i++) {
      H[i] = w->gram ? w->gram[bi * CLOQ_NIN + i] : NULL;
      any |= H[i] != NULL;
    }
    int64_t slot = w->p.lazy ? 0 : bi, b = w->p.b0 + bi;
    if (any && !w->p.lazy) CLOQ_CALL(cloq_fwd_cuda_gram_alloc(w->gpu, slot, H));
    if (!w->p.lazy) continue;
    /* lazy: one slot, so one block per call (the Gram matrices go back to the host after it) */
    if (w->gpu_lazy_b != b) {
      CLOQ_CALL(lazy_load(w, bi));
      w->gpu_lazy_b = -1;
      const cloq_block *bl = &w->blocks[bi];
      CLOQ_CALL(cloq_fwd_cuda_load(w->gpu, 0, bl->attn_norm, bl->ffn_norm,
                                   (const float *const *)w->lazy_w,
                                   (const float *const *)bl->bias, bl->q_norm, bl->k_norm));
      w->gpu_lazy_b = b;
    }
    if (any) CLOQ_CALL(cloq_fwd_cuda_gram_alloc(w->gpu, 0, H));
    CLOQ_CALL(cloq_fwd_cuda_run(w->gpu, &slot, &b, 1, x, t, &w->fwd_sec[bi]));
    if (any) CLOQ_CALL(cloq_fwd_cuda_gram_fetch(w->gpu, 0));
  }
  if (w->p.lazy) return CLOQ_OK;
  int64_t n = bi1 - bi0, *slots = NULL;
  CLOQ_ALLOC(slots, 2 * n, "block list");
  for (int64_t i = 0; i < n; i++) {
    slots[i] = bi0 + i;
    slots[n + i] = w->p.b0 + bi0 + i; /* global block numbers, for messages */
  }
  int rc = cloq_fwd_cuda_run(w->gpu, slots, slots + n, n, x, t, w->fwd_sec + bi0);
  free(slots);
  return rc;
}
#endif

int cloq_worker_forward(cloq_worker *w, float *x, int64_t t) {
  CLOQ_CHECK(t >= 1 && t <= w->p.max_t, "sequence of %lld tokens exceeds the planned %lld",
             (long long)t, (long long)w->p.max_t);
  CLOQ_CALL(check_finite(x, t * w->cfg.dim, w->p.b0, "block input"));
#ifdef CLOQ_HAVE_CUDA
  if (w->gpu) {
    CLOQ_CALL(gpu_forward(w, 0, w->nb, x, t));
    w->tokens += t;
    return CLOQ_OK;
  }
#endif
  for (int64_t bi = 0; bi < w->nb; bi++) {
    double t0 = cloq_now();
    CLOQ_CALL(block_forward(w, bi, x, t));
    w->fwd_sec[bi] += cloq_now() - t0;
  }
  w->tokens += t;
  return CLOQ_OK;
}

int cloq_worker_forward_block(cloq_worker *w, int64_t b, float *x, int64_t t) {
  CLOQ_CHECK(b >= w->p.b0 && b < w->p.b1, "block %lld is not owned here", (long long)b);
  CLOQ_CHECK(t >= 1 && t <= w->p.max_t, "sequence of %lld tokens exceeds the planned %lld",
             (long long)t, (long long)w->p.max_t);
  CLOQ_CALL(check_finite(x, t * w->cfg.dim, b, "block input"));
#ifdef CLOQ_HAVE_CUDA
  if (w->gpu) return gpu_forward(w, b - w->p.b0, b - w->p.b0 + 1, x, t);
#endif
  double t0 = cloq_now();
  CLOQ_CALL(block_forward(w, b - w->p.b0, x, t));
  w->fwd_sec[b - w->p.b0] += cloq_now() - t0;
  return CLOQ_OK;
}

int cloq_worker_alloc_gram(cloq_worker *w, int64_t b) {
  CLOQ_CHECK(w->gram && b >= w->p.b0 && b < w->p.b1, "block %lld has no Gram slots here",
             (long long)b);
  for (int i = 0; i < CLOQ_NIN; i++) {
    double **g = &w->gram[(b - w->p.b0) * CLOQ_NIN + i];
    if (*g) continue;
    int64_t n = cloq_input_dim(&w->cfg, i), nn;
    CLOQ_CALL(cloq_mul64(n, n, &nn));
    CLOQ_ALLOC(*g, nn, "Gram matrix");
  }
  return CLOQ_OK;
}

int cloq_worker_nll(cloq_worker *w, const float *x, const int32_t *ids, int64_t t, double *nll,
                    int64_t *count, float *logits, int64_t nlog) {
  CLOQ_CHECK(w->head, "this worker has no head loaded");
  const cloq_config *c = &w->cfg;
  int64_t d = c->dim, V = c->vocab_size;
  rmsnorm(w->tmp, x, w->final_norm, t, d, c->norm_eps);
  /* logits for HEAD_ROWS positions at a time: one sgemm instead of a gemv per token */
  for (int64_t i0 = 0; i0 < t; i0 += HEAD_ROWS) {
    int64_t nr = t - i0 < HEAD_ROWS ? t - i0 : HEAD_ROWS;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)V, (int)d, 1.0f,
                w->tmp + i0 * d, (int)d, w->head, (int)d, 0.0f, w->logits, (int)V);
    for (int64_t k = 0; k < nr; k++) {
      int64_t i = i0 + k;
      const float *lg = w->logits + k * V;
      if (logits && i < nlog) memcpy(logits + i * V, lg, (size_t)V * sizeof(float));
      if (i + 1 >= t) break;
      float mx = row_max(lg, V);
      double s = 0;
      for (int64_t j = 0; j < V; j++) s += (double)exp_nonpos(lg[j] - mx);
      int32_t tgt = ids[i + 1];
      CLOQ_CHECK(tgt >= 0 && tgt < V, "token id %d out of range", (int)tgt);
      double lp = (double)lg[tgt] - (double)mx - log(s);
      CLOQ_CHECK(isfinite(lp), "non-finite log-likelihood at position %lld", (long long)i);
      *nll -= lp;
    }
  }
  *count += t - 1;
  return CLOQ_OK;
}

cloq_block *cloq_worker_block(cloq_worker *w, int64_t b) {
  if (b < w->p.b0 || b >= w->p.b1 || w->p.lazy) return NULL;
  return &w->blocks[b - w->p.b0];
}

double *cloq_worker_gram(cloq_worker *w, int64_t b, int input) {
  if (!w->gram || b < w->p.b0 || b >= w->p.b1) return NULL;
#ifdef CLOQ_HAVE_CUDA
  /* accumulated on the GPU: bring the block's matrices home (once) */
  if (w->gpu && !w->p.lazy && cloq_fwd_cuda_gram_live(w->gpu, b - w->p.b0) &&
      cloq_fwd_cuda_gram_fetch(w->gpu, b - w->p.b0) != CLOQ_OK)
    return NULL;
#endif
  return w->gram[(b - w->p.b0) * CLOQ_NIN + input];
}

void cloq_worker_apply_qmodule(cloq_worker *w, int64_t b, int m, const cloq_qmodule *q,
                               int64_t group_size) {
  float *W = cloq_worker_block(w, b)->w[m];
  cloq_dequant(q->codes, q->scales, q->zeros, q->n_out, q->n_in, group_size, W);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)q->n_out, (int)q->n_in,
              (int)q->rank, 1.0f, q->B, (int)q->rank, q->A, (int)q->n_in, 1.0f, W, (int)q->n_in);
}

int cloq_worker_weights_changed(cloq_worker *w, int64_t b) {
  CLOQ_CHECK(b >= w->p.b0 && b < w->p.b1, "block %lld is not owned here", (long long)b);
#ifdef CLOQ_HAVE_CUDA
  if (w->gpu && !w->p.lazy) {
    const cloq_block *bl = &w->blocks[b - w->p.b0];
    CLOQ_CALL(cloq_fwd_cuda_load(w->gpu, b - w->p.b0, bl->attn_norm, bl->ffn_norm,
                                 (const float *const *)bl->w, (const float *const *)bl->bias,
                                 bl->q_norm, bl->k_norm));
  }
#endif
  return CLOQ_OK;
}

int64_t cloq_worker_tokens(const cloq_worker *w) { return w->tokens; }

double cloq_worker_forward_seconds(const cloq_worker *w, int64_t b) {
  return w->fwd_sec[b - w->p.b0];
}

void cloq_worker_free_gram(cloq_worker *w, int64_t b) {
  if (!w->gram) return;
#ifdef CLOQ_HAVE_CUDA
  if (w->gpu && !w->p.lazy) cloq_fwd_cuda_gram_drop(w->gpu, b - w->p.b0);
#endif
  for (int i = 0; i < CLOQ_NIN; i++) {
    free(w->gram[(b - w->p.b0) * CLOQ_NIN + i]);
    w->gram[(b - w->p.b0) * CLOQ_NIN + i] = NULL;
  }
}

/* ---- incremental decoding with the K/V cache ------------------------------------------------- */

/* linear() for one row: y (n_out) = W x + bias. OpenBLAS packs W on every sgemm call, which costs
 * more than the product itself when there is one row; sgemv reads W once. */
static void linear_row(float *y, const float *x, const float *W, const float *bias, int64_t n_in,
                       int64_t n_out) {
  cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n_out, (int)n_in, 1.0f, W, (int)n_in, x, 1, 0.0f,
              y, 1);
  add_bias(y, bias, 1, n_out);
}

/* x . y over n, in row_sum's 8 fixed lanes (vectorizes; order fixed here). */
static float dot_lanes(const float *x, const float *y, int64_t n) {
  float a[8] = {0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) a[k] += x[j + k] * y[j + k];
  for (; j < n; j++) a[0] += x[j] * y[j];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* block_forward for the single position pos (x: (dim), in place): the same stages with t = 1,
 * except that the position's keys and values go into block bi's cache and its queries attend to
 * cached positions [0, pos]. The cache is stored transposed, (n_kv, hd, max_t) per block, so that
 * with head dims as small as 8 both attention products run over contiguous positions: the scores
 * as hd axpys, the output as hd dot products (one sgemv per head over an (n, hd) slice with a
 * row stride of n_kv*hd ran 3x slower). */
static int block_decode(cloq_worker *w, int64_t bi, float *x, int64_t pos) {
  const cloq_config *c = &w->cfg;
  const cloq_block *bl = &w->blocks[bi];
  int64_t b = w->p.b0 + bi, d = c->dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
  int64_t qd = nh * hd, kd = nkv * hd, H = c->hidden_dim, half = hd / 2, n = pos + 1;
  int64_t T = w->p.max_t;
  float *kc = w->kc + bi * kd * T, *vc = w->vc + bi * kd * T; /* (n_kv, hd, T) */

  /* attention */
  rmsnorm(w->xn, x, bl->attn_norm, 1, d, c->norm_eps);
  linear_row(w->q, w->xn, bl->w[CLOQ_M_Q], bl->bias[CLOQ_M_Q], d, qd);
  linear_row(w->k, w->xn, bl->w[CLOQ_M_K], bl->bias[CLOQ_M_K], d, kd);
  linear_row(w->v, w->xn, bl->w[CLOQ_M_V], bl->bias[CLOQ_M_V], d, kd);
  qk_norm(bl, c, w->q, w->k, 1);
  rope(w->q, 1, nh, hd, w->rope_cos + pos * half, w->rope_sin + pos * half);
  rope(w->k, 1, nkv, hd, w->rope_cos + pos * half, w->rope_sin + pos * half);
  for (int64_t i = 0; i < kd; i++) { /* row i of the transposed cache is (kv head, dim) i */
    kc[i * T + pos] = w->k[i];
    vc[i * T + pos] = w->v[i];
  }
  float scale = (float)(1.0 / sqrt((double)hd));
  int64_t group = nh / nkv, j0 = first_key(c, pos);
  n -= j0; /* keys [j0, pos] (within the window) */
  float *row = w->scores; /* (n) */
  for (int64_t h = 0; h < nh; h++) {
    const float *qh = w->q + h * hd;
    const float *kt = kc + (h / group) * hd * T + j0, *vt = vc + (h / group) * hd * T + j0;
    for (int64_t j = 0; j < n; j++) row[j] = 0.0f;
    for (int64_t i = 0; i < hd; i++) {
      float qi = qh[i];
      const float *ki = kt + i * T;
      for (int64_t j = 0; j < n; j++) row[j] += qi * ki[j];
    }
    for (int64_t j = 0; j < n; j++) row[j] *= scale;
    float mx = row_max(row, n);
    for (int64_t j = 0; j < n; j++) row[j] = exp_nonpos(row[j] - mx);
    float inv = 1.0f / row_sum(row, n);
    for (int64_t j = 0; j < n; j++) row[j] *= inv;
    for (int64_t i = 0; i < hd; i++) w->att[h * hd + i] = dot_lanes(row, vt + i * T, n);
  }
  linear_row(w->tmp, w->att, bl->w[CLOQ_M_O], bl->bias[CLOQ_M_O], qd, d);
  for (int64_t i = 0; i < d; i++) x[i] += w->tmp[i];
  CLOQ_CALL(check_finite(x, d, b, "attention output"));

  /* MLP */
  rmsnorm(w->xn, x, bl->ffn_norm, 1, d, c->norm_eps);
  linear_row(w->g, w->xn, bl->w[CLOQ_M_GATE], bl->bias[CLOQ_M_GATE], d, H);
  linear_row(w->u, w->xn, bl->w[CLOQ_M_UP], bl->bias[CLOQ_M_UP], d, H);
  for (int64_t i = 0; i < H; i++) {
    float gv = w->g[i];
    w->g[i] = gv / (1.0f + expf(-gv)) * w->u[i];
  }
  linear_row(w->tmp, w->g, bl->w[CLOQ_M_DOWN], bl->bias[CLOQ_M_DOWN], H, d);
  for (int64_t i = 0; i < d; i++) x[i] += w->tmp[i];
  CLOQ_CALL(check_finite(x, d, b, "MLP output"));
  return CLOQ_OK;
}
int cloq_worker_decode(cloq_worker *w, const float *x_in, int64_t pos, float *logits) {
  CLOQ_CHECK(w->kc, "this worker has no K/V cache (create it with kv_cache)");
  CLOQ_CHECK(w->head, "this worker has no head loaded");
  CLOQ_CHECK(pos >= 0 && pos < w->p.max_t && pos <= w->kv_len,
             "decode position %lld: the cache holds %lld positions of at most %lld",
             (long long)pos, (long long)w->kv_len, (long long)w->p.max_t);
  const cloq_config *c = &w->cfg;
  int64_t d = c->dim, V = c->vocab_size;
  float *x = w->dec_x;
  memcpy(x, x_in, (size_t)d * sizeof *x);
  w->kv_len = pos; /* rows >= pos are rewritten below; valid again only on success */
  CLOQ_CALL(check_finite(x, d, w->p.b0, "block input"));
  for (int64_t bi = 0; bi < w->nb; bi++) CLOQ_CALL(block_decode(w, bi, x, pos));
  rmsnorm(w->tmp, x, w->final_norm, 1, d, c->norm_eps);
  cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)V, (int)d, 1.0f, w->head, (int)d, w->tmp, 1,
              0.0f, logits, 1);
  for (int64_t j = 0; j < V; j++)
    CLOQ_CHECK(isfinite(logits[j]), "non-finite logit at position %lld (token %lld)",
               (long long)pos, (long long)j);
  w->kv_len = pos + 1;
  return CLOQ_OK;
}
