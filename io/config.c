/* config.c: reads a Hugging Face LlamaForCausalLM config.json into cloq_config.
 *
 * cloq implements exactly one architecture (RMSNorm, SwiGLU, RoPE, grouped-query attention, no
 * biases). A config asking for anything else (another activation, biases, RoPE scaling) must stop
 * the run here with the key named, not produce a plausible-looking but wrong initialization later.
 * Optional keys take the transformers LlamaConfig defaults; a JSON null counts as absent, as it
 * does in transformers.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cloq_err.h"
#include "cloq_config.h"

static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
  }
  return "?";
}

/* The value of KEY, or NULL when absent or null. */
static json_t *get(json_t *root, const char *key) {
  json_t *v = json_object_get(root, key);
  return json_is_null(v) ? NULL : v;
}

/* Integer KEY into *out; when absent, def (required: def < 0 means the key must be present). */
static int get_int(json_t *root, const char *path, const char *key, int64_t def, int required,
                   int64_t *out) {
  json_t *v = get(root, key);
  if (!v) {
    CLOQ_CHECK(!required, "%s: required key %s is missing", path, key);
    *out = def;
    return CLOQ_OK;
  }
  CLOQ_CHECK(json_is_integer(v), "%s: key %s must be an integer, found %s", path, key,
             json_kind(v));
  *out = (int64_t)json_integer_value(v);
  return CLOQ_OK;
}

static int get_num(json_t *root, const char *path, const char *key, double def, double *out) {
  json_t *v = get(root, key);
  if (!v) {
    *out = def;
    return CLOQ_OK;
  }
  CLOQ_CHECK(json_is_number(v), "%s: key %s must be a number, found %s", path, key, json_kind(v));
  *out = json_number_value(v);
  return CLOQ_OK;
}

static int get_bool(json_t *root, const char *path, const char *key, int def, int *out) {
  json_t *v = get(root, key);
  if (!v) {
    *out = def;
    return CLOQ_OK;
  }
  CLOQ_CHECK(json_is_boolean(v), "%s: key %s must be true or false, found %s", path, key,
             json_kind(v));
  *out = json_is_true(v);
  return CLOQ_OK;
}

static int parse_config(json_t *root, const char *path, cloq_config *c) {
  CLOQ_CHECK(json_is_object(root), "%s: top level must be a JSON object, found %s", path,
             json_kind(root));

  json_t *mt = get(root, "model_type");
  CLOQ_CHECK(mt, "%s: required key model_type is missing", path);
  CLOQ_CHECK(json_is_string(mt), "%s: key model_type must be a string, found %s", path,
             json_kind(mt));
  CLOQ_CHECK(!strcmp(json_string_value(mt), "llama") || !strcmp(json_string_value(mt), "mistral"),
             "%s: key model_type is \"%s\": only \"llama\" and \"mistral\" are supported", path,
             json_string_value(mt));

  json_t *act = get(root, "hidden_act");
  if (act) {
    CLOQ_CHECK(json_is_string(act), "%s: key hidden_act must be a string, found %s", path,
               json_kind(act));
    CLOQ_CHECK(!strcmp(json_string_value(act), "silu"),
               "%s: key hidden_act is \"%s\": only \"silu\" (SwiGLU) is supported", path,
               json_string_value(act));
  }
  static const char *const no_bias[] = {"attention_bias", "mlp_bias"};
  for (size_t i = 0; i < sizeof no_bias / sizeof no_bias[0]; i++) {
    int b;
    CLOQ_CALL(get_bool(root, path, no_bias[i], 0, &b));
    CLOQ_CHECK(!b, "%s: key %s is true: biases are not supported", path, no_bias[i]);
  }
  CLOQ_CHECK(!get(root, "rope_scaling"),
             "%s: key rope_scaling is set: RoPE scaling is not supported (must be null)", path);

  CLOQ_CALL(get_int(root, path, "hidden_size", 0, 1, &c->dim));
  CLOQ_CALL(get_int(root, path, "intermediate_size", 0, 1, &c->hidden_dim));
  CLOQ_CALL(get_int(root, path, "num_hidden_layers", 0, 1, &c->n_layers));
  CLOQ_CALL(get_int(root, path, "num_attention_heads", 0, 1, &c->n_heads));
  CLOQ_CALL(get_int(root, path, "vocab_size", 0, 1, &c->vocab_size));
  CLOQ_CALL(get_int(root, path, "num_key_value_heads", c->n_heads, 0, &c->n_kv_heads));
  CLOQ_CALL(get_int(root, path, "max_position_embeddings", 2048, 0, &c->max_pos));
  CLOQ_CALL(get_int(root, path, "bos_token_id", 1, 0, &c->bos_id));
  CLOQ_CALL(get_num(root, path, "rms_norm_eps", 1e-6, &c->norm_eps));
  CLOQ_CALL(get_num(root, path, "rope_theta", 10000.0, &c->rope_theta));
  CLOQ_CALL(get_bool(root, path, "tie_word_embeddings", 0, &c->tied));
  /* transformers' LlamaConfig has no window; MistralConfig's sliding_window (null: none) */
  c->window = 0;
  if (!strcmp(json_string_value(mt), "mistral") && get(root, "sliding_window")) {
    CLOQ_CALL(get_int(root, path, "sliding_window", 0, 1, &c->window));
    CLOQ_CHECK(c->window > 0, "%s: key sliding_window must be positive or null, found %lld", path,
               (long long)c->window);
  }
  c->head_dim = 0;
  if (get(root, "head_dim")) {
    CLOQ_CALL(get_int(root, path, "head_dim", 0, 1, &c->head_dim));
    CLOQ_CHECK(c->head_dim > 0, "%s: key head_dim must be positive, found %lld", path,
               (long long)c->head_dim);
  }

  return cloq_config_check(c, path);
}

/* The checks shared by config.json and GGUF metadata (keys named as in config.json). */
int cloq_config_check(cloq_config *c, const char *path) {
  static const char *const pos_keys[] = {"hidden_size", "intermediate_size", "num_hidden_layers",
                                         "num_attention_heads", "vocab_size",
                                         "num_key_value_heads", "max_position_embeddings"};
  const int64_t pos_vals[] = {c->dim,     c->hidden_dim, c->n_layers, c->n_heads,
                              c->vocab_size, c->n_kv_heads, c->max_pos};
  for (size_t i = 0; i < sizeof pos_keys / sizeof pos_keys[0]; i++)
    CLOQ_CHECK(pos_vals[i] > 0, "%s: key %s must be positive, found %lld", path, pos_keys[i],
               (long long)pos_vals[i]);
  /* token ids are int32 everywhere downstream */
  CLOQ_CHECK(c->vocab_size <= (int64_t)INT32_MAX, "%s: key vocab_size %lld is too large", path,
             (long long)c->vocab_size);

  if (c->head_dim != 0) {
    CLOQ_CHECK(c->head_dim > 0, "%s: key head_dim must be positive, found %lld", path,
               (long long)c->head_dim);
  } else {
    CLOQ_CHECK(c->dim % c->n_heads == 0,
               "%s: key head_dim is absent and hidden_size %lld is not a multiple of "
               "num_attention_heads %lld",
               path, (long long)c->dim, (long long)c->n_heads);
    c->head_dim = c->dim / c->n_heads;
  }
  CLOQ_CHECK(c->head_dim % 2 == 0, "%s: key head_dim is %lld: RoPE needs an even head_dim", path,
             (long long)c->head_dim);
  CLOQ_CHECK(c->n_heads % c->n_kv_heads == 0,
             "%s: key num_key_value_heads %lld does not divide num_attention_heads %lld", path,
             (long long)c->n_kv_heads, (long long)c->n_heads);
  CLOQ_CHECK(c->head_dim <= INT32_MAX / c->n_heads,
             "%s: num_attention_heads %lld x head_dim %lld is too large", path,
             (long long)c->n_heads, (long long)c->head_dim);
  CLOQ_CHECK(c->bos_id >= 0 && c->bos_id < c->vocab_size,
             "%s: key bos_token_id %lld is outside the vocabulary (vocab_size %lld)", path,
             (long long)c->bos_id, (long long)c->vocab_size);
  CLOQ_CHECK(isfinite(c->norm_eps) && c->norm_eps > 0,
             "%s: key rms_norm_eps must be positive and finite, found %g", path, c->norm_eps);
  CLOQ_CHECK(isfinite(c->rope_theta) && c->rope_theta > 0,
             "%s: key rope_theta must be positive and finite, found %g", path, c->rope_theta);
  return CLOQ_OK;
}

int cloq_config_read(const char *model_dir, cloq_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  size_t plen = strlen(model_dir) + sizeof "/config.json";
  char *path = malloc(plen);
  if (!path) return CLOQ_FAIL("out of memory");
  snprintf(path, plen, "%s/config.json", model_dir);

  json_error_t jerr;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  int rc;
  if (!root)
    rc = CLOQ_FAIL("%s: cannot read as JSON: %s (line %d, column %d)", path, jerr.text, jerr.line,
                   jerr.column);
  else
    rc = parse_config(root, path, cfg);
  json_decref(root);
  free(path);
  if (rc != CLOQ_OK) memset(cfg, 0, sizeof *cfg);
  return rc;
}
