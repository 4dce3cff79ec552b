/* cloq_config: a model's hyperparameters, from config.json (io/config.c) or GGUF metadata
 * (cloq_gguf_config). Not collective; errors name the file and the key. */
#ifndef CLOQ_CONFIG_H
#define CLOQ_CONFIG_H

#include <stdint.h>

typedef struct {
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
  int tied;             /* tie_word_embeddings (default 0) */
  int64_t bos_id;       /* bos_token_id (default 1) */
  int64_t window;       /* sliding_window (0: none; null or absent) */
} cloq_config;

/* Reads and validates DIR/config.json (a folder; cloq_model_open recognizes a GGUF file and reads
 * its metadata with cloq_gguf_config): positive sizes, n_heads % n_kv_heads == 0, head_dim even,
 * model_type "llama" (or "mistral"), hidden_act "silu", no attention/mlp bias, rope_scaling null.
 * Anything unsupported is an error naming the key. */
int cloq_config_read(const char *model_dir, cloq_config *cfg);
/* The same checks on a filled config (head_dim 0: dim / n_heads); errors name path. Used for
 * GGUF metadata too. */
int cloq_config_check(cloq_config *cfg, const char *path);

#endif
