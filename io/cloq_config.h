/* cloq_config: a model's hyperparameters, from config.json (io/config.c) or GGUF metadata
 * (cloq_gguf_config). Not collective; errors name the file and the key. */
#ifndef CLOQ_CONFIG_H
#define CLOQ_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* The families cloq implements (config.json model_type; GGUF general.architecture). */
typedef enum {
  CLOQ_FAM_LLAMA = 0, /* llama: Llama 2, Llama 3.x (rope_scaling), TinyLlama, SmolLM, ... */
  CLOQ_FAM_MISTRAL,   /* mistral: Llama's block with a sliding attention window */
  CLOQ_FAM_QWEN2,     /* qwen2: biases on q/k/v (Qwen2, Qwen2.5) */
  CLOQ_FAM_QWEN3,     /* qwen3: per-head RMSNorm of q and k before RoPE (q_norm, k_norm) */
  CLOQ_NFAM
} cloq_family;

/* RoPE's inverse frequencies (transformers' rope_type): default theta^(-2i/hd); linear divides
 * them by factor; llama3 divides the low frequencies by factor and blends the middle band
 * (transformers' _compute_llama3_parameters); GGUF's rope_freqs.weight divides each by its
 * entry (what llama.cpp's converter stores for llama3). */
typedef enum {
  CLOQ_ROPE_DEFAULT = 0, CLOQ_ROPE_LINEAR, CLOQ_ROPE_LLAMA3, CLOQ_ROPE_FREQS
} cloq_rope_type;

/* cloq_config.bias masks (bit m: module m in cloq_modules.h order q, k, v, o, gate, up, down). */
enum {
  CLOQ_BIAS_QKV = 0x7u,  /* qwen2 */
  CLOQ_BIAS_ATTN = 0xfu, /* attention_bias: q, k, v, o */
  CLOQ_BIAS_MLP = 0x70u  /* mlp_bias: gate, up, down */
};

typedef struct {
  cloq_family family;
  int64_t dim;          /* hidden_size */
  int64_t hidden_dim;   /* intermediate_size */
  int64_t n_layers;     /* num_hidden_layers */
  int64_t n_heads;      /* num_attention_heads */
  int64_t n_kv_heads;   /* num_key_value_heads (default n_heads) */
  int64_t head_dim;     /* head_dim (default dim / n_heads) */
  int64_t vocab_size;
  int64_t max_pos;      /* max_position_embeddings (default 2048) */
  double norm_eps;      /* rms_norm_eps (default 1e-6) */
  double rope_theta;    /* rope_theta (default 10000) */
  cloq_rope_type rope_type;
  double rope_factor;   /* linear, llama3: factor */
  double rope_low, rope_high; /* llama3: low_freq_factor, high_freq_factor */
  int64_t rope_orig_max;      /* llama3: original_max_position_embeddings */
  int tied;             /* tie_word_embeddings (default 0) */
  int64_t bos_id;       /* bos_token_id (default 1) */
  int64_t window;       /* sliding_window (0: none): position i attends to j in (i - window, i] */
  unsigned bias;        /* bit m set: linear module m (cloq_modules.h order) has a bias */
  int qk_norm;          /* q_norm and k_norm (head_dim each) per block */
} cloq_config;

/* "llama", "mistral", "qwen2", "qwen3". */
const char *cloq_family_name(cloq_family f);
/* The Hugging Face class transformers builds for family f ("LlamaForCausalLM", ...). */
const char *cloq_family_arch(cloq_family f);
/* One line of the features a config uses beyond Llama's (for --dry-run and errors): e.g.
 * "rope llama3 x8, q/k/v biases, q/k norm, window 4096, tied embeddings" or "none". */
void cloq_config_features(const cloq_config *cfg, char *buf, size_t cap);
/* inv[0..head_dim/2): RoPE's inverse frequencies, float64. freqs: GGUF's rope_freqs (head_dim/2
 * values) for CLOQ_ROPE_FREQS, else unused (may be NULL). */
void cloq_rope_inv_freq(const cloq_config *cfg, const float *freqs, double *inv);

/* Reads and validates DIR/config.json (a folder; cloq_model_open recognizes a GGUF file and reads
 * its metadata with cloq_gguf_config): positive sizes, n_heads % n_kv_heads == 0, head_dim even,
 * model_type llama, mistral, qwen2 or qwen3, hidden_act "silu", rope_scaling / rope_parameters
 * of type default, linear or llama3 (either the transformers 4 keys rope_theta + rope_scaling or
 * the transformers 5 rope_parameters). Anything unsupported (another model_type, a MoE, a rope
 * type such as yarn, partial rotary, a per-layer window) is an error naming it. */
int cloq_config_read(const char *model_dir, cloq_config *cfg);
/* The same checks on a filled config (head_dim 0: dim / n_heads); errors name path. Used for
 * GGUF metadata too. */
int cloq_config_check(cloq_config *cfg, const char *path);

#endif
