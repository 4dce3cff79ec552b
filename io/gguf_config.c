/* gguf_config: a GGUF model's hyperparameters, from its {arch}.* metadata (cloq_gguf_config,
 * declared in cloq_gguf.h): the architectures llama, qwen2 and qwen3, with llama.cpp's key names.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cloq_config.h"
#include "cloq_err.h"
#include "cloq_gguf.h"
#include "gguf_internal.h"

/* A non-negative integer value of any integer type. */
static int as_uint(const cloq_gguf *g, const cloq_gguf_value *v, const char *key, uint64_t *out) {
  const char *gn = cloq_gguf_name(g);
  switch (v->type) {
  case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64: *out = v->u; return CLOQ_OK;
  case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64:
    CLOQ_CHECK(v->i >= 0, "%s: metadata %s is negative (%lld)", gn, key, (long long)v->i);
    *out = (uint64_t)v->i;
    return CLOQ_OK;
  default: return CLOQ_FAIL("%s: metadata %s must be an integer (type %d)", gn, key, v->type);
  }
}

int cloq_gguf__get_int(const cloq_gguf *g, const char *key, int64_t def, int required,
                       int64_t *out) {
  const char *gn = cloq_gguf_name(g);
  const cloq_gguf_value *v = cloq_gguf_get(g, key);
  if (!v) {
    CLOQ_CHECK(!required, "%s: required metadata %s is missing", gn, key);
    *out = def;
    return CLOQ_OK;
  }
  uint64_t u = 0;
  CLOQ_CALL(as_uint(g, v, key, &u));
  CLOQ_CHECK(u <= (uint64_t)INT32_MAX, "%s: metadata %s is too large (%llu)", gn, key,
             (unsigned long long)u);
  *out = (int64_t)u;
  return CLOQ_OK;
}

static int get_real(const cloq_gguf *g, const char *key, double def, double *out) {
  const char *gn = cloq_gguf_name(g);
  const cloq_gguf_value *v = cloq_gguf_get(g, key);
  if (!v) {
    *out = def;
    return CLOQ_OK;
  }
  CLOQ_CHECK(v->type == GGUF_F32 || v->type == GGUF_F64, "%s: metadata %s must be a float",
             gn, key);
  *out = v->f;
  return CLOQ_OK;
}

/* KEY under the architecture's prefix: "ARCH.KEY". */
static const char *akey(char *buf, size_t cap, const char *arch, const char *key) {
  snprintf(buf, cap, "%s.%s", arch, key);
  return buf;
}

int cloq_gguf_config(const cloq_gguf *g, cloq_config *c) {
  const char *gn = cloq_gguf_name(g);
  memset(c, 0, sizeof *c);
  const cloq_gguf_value *av = cloq_gguf_get(g, "general.architecture");
  CLOQ_CHECK(av && av->type == GGUF_STR, "%s: metadata general.architecture is missing",
             gn);
  /* llama.cpp writes Mistral 7B as "llama" (its window is not in the file) */
  static const struct { const char *arch; cloq_family fam; } archs[] = {
      {"llama", CLOQ_FAM_LLAMA}, {"qwen2", CLOQ_FAM_QWEN2}, {"qwen3", CLOQ_FAM_QWEN3}};
  const char *arch = NULL;
  for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
    if (av->len == strlen(archs[i].arch) && !memcmp(av->s, archs[i].arch, av->len)) {
      arch = archs[i].arch;
      c->family = archs[i].fam;
    }
  CLOQ_CHECK(arch, "%s: general.architecture is \"%.*s\": only llama, qwen2 and qwen3 are "
             "supported", gn, (int)(av->len < 64 ? av->len : 64), av->s);
  char k[96];
  int64_t rope_dims, experts, key_len, val_len;
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "embedding_length"), 0, 1, &c->dim));
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "feed_forward_length"), 0, 1,
                               &c->hidden_dim));
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "block_count"), 0, 1, &c->n_layers));
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "attention.head_count"), 0, 1,
                               &c->n_heads));
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "attention.head_count_kv"), c->n_heads, 0,
                    &c->n_kv_heads));
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "context_length"), 2048, 0, &c->max_pos));
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "expert_count"), 0, 0, &experts));
  CLOQ_CHECK(experts == 0, "%s: %s is %lld: mixture-of-experts models are not supported",
             gn, k, (long long)experts);
  CLOQ_CALL(get_real(g, akey(k, sizeof k, arch, "attention.layer_norm_rms_epsilon"), 1e-6,
                     &c->norm_eps));
  CLOQ_CALL(get_real(g, akey(k, sizeof k, arch, "rope.freq_base"), 10000.0, &c->rope_theta));
  /* RoPE scaling: "linear" (factor), or llama3's per-frequency divisors in rope_freqs.weight */
  const cloq_gguf_value *rs = cloq_gguf_get(g, akey(k, sizeof k, arch, "rope.scaling.type"));
  c->rope_factor = 1.0;
  if (rs && !(rs->type == GGUF_STR && rs->len == 4 && !memcmp(rs->s, "none", 4))) {
    CLOQ_CHECK(rs->type == GGUF_STR && rs->len == 6 && !memcmp(rs->s, "linear", 6),
               "%s: %s is \"%.*s\": only none and linear RoPE scaling are supported", gn, k,
               rs->type == GGUF_STR ? (int)(rs->len < 64 ? rs->len : 64) : 1,
               rs->type == GGUF_STR ? rs->s : "?");
    c->rope_type = CLOQ_ROPE_LINEAR;
    CLOQ_CALL(get_real(g, akey(k, sizeof k, arch, "rope.scaling.factor"), 0.0, &c->rope_factor));
    CLOQ_CHECK(isfinite(c->rope_factor) && c->rope_factor > 0,
               "%s: %s must be positive, found %g", gn, k, c->rope_factor);
  }
  if (cloq_gguf_find_tensor(g, "rope_freqs.weight")) {
    CLOQ_CHECK(c->rope_type == CLOQ_ROPE_DEFAULT, "%s: rope_freqs.weight together with %s "
               "scaling is not supported", gn, "linear");
    c->rope_type = CLOQ_ROPE_FREQS;
  }
  CLOQ_CHECK(c->n_heads > 0 && c->dim > 0, "%s: embedding_length and head_count must be positive",
             gn);
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "attention.key_length"),
                    c->dim % c->n_heads ? 0 : c->dim / c->n_heads, 0, &key_len));
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "attention.value_length"), key_len, 0,
                               &val_len));
  CLOQ_CHECK(key_len > 0 && key_len == val_len,
             "%s: attention key_length %lld and value_length %lld must be equal and positive",
             gn, (long long)key_len, (long long)val_len);
  c->head_dim = key_len;
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "rope.dimension_count"), c->head_dim, 0,
                    &rope_dims));
  CLOQ_CHECK(rope_dims == c->head_dim,
             "%s: %s %lld differs from the head size %lld: partial rotary embeddings are not "
             "supported", gn, k, (long long)rope_dims, (long long)c->head_dim);
  CLOQ_CHECK(!cloq_gguf_get(g, akey(k, sizeof k, arch, "attention.sliding_window")),
             "%s: %s is set: a sliding window read from GGUF is not supported", gn, k);
  const cloq_gguf_tensor *emb = cloq_gguf_find_tensor(g, "token_embd.weight");
  CLOQ_CHECK(emb, "%s: tensor token_embd.weight is missing", gn);
  CLOQ_CHECK(emb->n_dims == 2, "%s: tensor token_embd.weight must have 2 dimensions", gn);
  CLOQ_CALL(cloq_gguf__get_int(g, akey(k, sizeof k, arch, "vocab_size"), emb->ne[1], 0,
                               &c->vocab_size));
  c->tied = cloq_gguf_find_tensor(g, "output.weight") == NULL;
  CLOQ_CALL(cloq_gguf__get_int(g, "tokenizer.ggml.bos_token_id", 1, 0, &c->bos_id));
  /* biases and q/k norms: qwen2's q/k/v always; llama's and qwen3's where block 0 has them (the
   * worker then reads every block's by name) */
  if (c->family == CLOQ_FAM_QWEN2) c->bias = CLOQ_BIAS_QKV;
  c->qk_norm = c->family == CLOQ_FAM_QWEN3;
  if ((c->family == CLOQ_FAM_QWEN3 || c->family == CLOQ_FAM_LLAMA) &&
      cloq_gguf_find_tensor(g, "blk.0.attn_q.bias"))
    c->bias = CLOQ_BIAS_ATTN;
  if (c->family == CLOQ_FAM_LLAMA && cloq_gguf_find_tensor(g, "blk.0.ffn_gate.bias"))
    c->bias |= CLOQ_BIAS_MLP;
  return cloq_config_check(c, gn);
}

