/* config.c: reads a Hugging Face config.json (llama, mistral, qwen2, qwen3) into cloq_config.
 *
 * cloq implements one block (RMSNorm, SwiGLU, RoPE, grouped-query attention) with the variations
 * of these four families: RoPE scaling (linear, llama3), biases, q/k norms, a sliding window. A
 * config asking for anything else (another activation, a MoE, yarn) must stop the run here with
 * the key named, not produce a plausible-looking but wrong initialization later.
 * Optional keys take the transformers LlamaConfig defaults; a JSON null counts as absent, as it
 * does in transformers.
 */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cloq_err.h"
#include "cloq_json.h"
#include "cloq_config.h"

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
             cloq_json_kind(v));
  *out = (int64_t)json_integer_value(v);
  return CLOQ_OK;
}

static int get_num(json_t *root, const char *path, const char *key, double def, double *out) {
  json_t *v = get(root, key);
  if (!v) {
    *out = def;
    return CLOQ_OK;
  }
  CLOQ_CHECK(json_is_number(v), "%s: key %s must be a number, found %s", path, key,
             cloq_json_kind(v));
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
             cloq_json_kind(v));
  *out = json_is_true(v);
  return CLOQ_OK;
}

static const char *const fam_names[CLOQ_NFAM] = {"llama", "mistral", "qwen2", "qwen3"};
static const char *const fam_archs[CLOQ_NFAM] = {"LlamaForCausalLM", "MistralForCausalLM",
                                                 "Qwen2ForCausalLM", "Qwen3ForCausalLM"};

const char *cloq_family_name(cloq_family f) {
  return f >= 0 && f < CLOQ_NFAM ? fam_names[f] : "?";
}
const char *cloq_family_arch(cloq_family f) {
  return f >= 0 && f < CLOQ_NFAM ? fam_archs[f] : "?";
}

/* Number KEY of RoPE object o (`what`, of rope_type `type`), required. */
static int rope_num(json_t *o, const char *path, const char *what, const char *type,
                    const char *key, double *out) {
  json_t *v = get(o, key);
  CLOQ_CHECK(v, "%s: %s of type %s needs %s", path, what, type, key);
  CLOQ_CHECK(json_is_number(v), "%s: %s.%s must be a number, found %s", path, what, key,
             cloq_json_kind(v));
  *out = json_number_value(v);
  return CLOQ_OK;
}

/* RoPE: transformers 5's rope_parameters (rope_theta inside), or transformers 4's rope_theta and
 * rope_scaling ("rope_type", or the older "type"). */
static int parse_rope(json_t *root, const char *path, cloq_config *c) {
  json_t *rp = get(root, "rope_parameters");
  const char *what = "rope_parameters";
  if (!rp) {
    rp = get(root, "rope_scaling");
    what = "rope_scaling";
  }
  c->rope_type = CLOQ_ROPE_DEFAULT;
  c->rope_factor = 1.0;
  CLOQ_CALL(get_num(root, path, "rope_theta", 10000.0, &c->rope_theta));
  if (!rp) return CLOQ_OK;
  CLOQ_CHECK(json_is_object(rp), "%s: key %s must be an object, found %s", path, what,
             cloq_json_kind(rp));
  json_t *ty = get(rp, "rope_type");
  if (!ty) ty = get(rp, "type");
  if (!ty) { /* one entry per layer type (full_attention, sliding_attention) */
    const char *k;
    json_t *v;
    json_object_foreach(rp, k, v) CLOQ_CHECK(!json_is_object(v),
                                             "%s: key %s has one entry per layer type (%s): "
                                             "per-layer RoPE is not supported", path, what, k);
  }
  CLOQ_CHECK(!ty || json_is_string(ty), "%s: %s.rope_type must be a string, found %s", path, what,
             cloq_json_kind(ty));
  const char *t = ty ? json_string_value(ty) : "default";
  if (get(rp, "rope_theta")) CLOQ_CALL(get_num(rp, path, "rope_theta", 10000.0, &c->rope_theta));
  double prf = 1.0;
  CLOQ_CALL(get_num(rp, path, "partial_rotary_factor", 1.0, &prf));
  CLOQ_CHECK(prf == 1.0, "%s: %s.partial_rotary_factor is %g: partial rotary embeddings are not "
             "supported", path, what, prf);
  if (!strcmp(t, "default")) return CLOQ_OK;
  if (!strcmp(t, "linear")) {
    c->rope_type = CLOQ_ROPE_LINEAR;
    CLOQ_CALL(rope_num(rp, path, what, t, "factor", &c->rope_factor));
  } else if (!strcmp(t, "llama3")) {
    double om;
    c->rope_type = CLOQ_ROPE_LLAMA3;
    CLOQ_CALL(rope_num(rp, path, what, t, "factor", &c->rope_factor));
    CLOQ_CALL(rope_num(rp, path, what, t, "low_freq_factor", &c->rope_low));
    CLOQ_CALL(rope_num(rp, path, what, t, "high_freq_factor", &c->rope_high));
    CLOQ_CALL(rope_num(rp, path, what, t, "original_max_position_embeddings", &om));
    CLOQ_CHECK(om >= 1 && om <= 1e12 && om == floor(om), "%s: %s.original_max_position_embeddings"
               " must be a positive integer, found %g", path, what, om);
    c->rope_orig_max = (int64_t)om;
    CLOQ_CHECK(isfinite(c->rope_low) && isfinite(c->rope_high) && c->rope_low > 0 &&
               c->rope_high > c->rope_low,
               "%s: %s needs 0 < low_freq_factor < high_freq_factor, found %g and %g", path, what,
               c->rope_low, c->rope_high);
  } else {
    return CLOQ_FAIL("%s: %s has rope_type \"%s\": only default, linear and llama3 are supported",
                     path, what, t);
  }
  CLOQ_CHECK(isfinite(c->rope_factor) && c->rope_factor > 0,
             "%s: %s.factor must be positive and finite, found %g", path, what, c->rope_factor);
  return CLOQ_OK;
}

/* A sliding window on some layers only (Qwen2's use_sliding_window with max_window_layers, or
 * layer_types naming sliding_attention) is refused: cloq applies one window to every layer. */
static int check_layer_types(json_t *root, const char *path, int all_sliding_ok) {
  json_t *lt = get(root, "layer_types");
  if (!lt) return CLOQ_OK;
  CLOQ_CHECK(json_is_array(lt), "%s: key layer_types must be an array, found %s", path,
             cloq_json_kind(lt));
  size_t i;
  json_t *v;
  json_array_foreach(lt, i, v) {
    const char *k = json_string_value(v);
    CLOQ_CHECK(k && (!strcmp(k, "full_attention") ||
                     (all_sliding_ok && !strcmp(k, "sliding_attention"))),
               "%s: layer_types[%zu] is %s%s%s: only full_attention layers are supported for "
               "this model_type", path, i, k ? "\"" : "", k ? k : cloq_json_kind(v), k ? "\"" : "");
  }
  return CLOQ_OK;
}

static int parse_config(json_t *root, const char *path, cloq_config *c) {
  CLOQ_CHECK(json_is_object(root), "%s: top level must be a JSON object, found %s", path,
             cloq_json_kind(root));

  json_t *mt = get(root, "model_type");
  CLOQ_CHECK(mt, "%s: required key model_type is missing", path);
  CLOQ_CHECK(json_is_string(mt), "%s: key model_type must be a string, found %s", path,
             cloq_json_kind(mt));
  const char *type = json_string_value(mt);
  int fam = -1;
  for (int f = 0; f < CLOQ_NFAM; f++)
    if (!strcmp(type, fam_names[f])) fam = f;
  CLOQ_CHECK(fam >= 0, "%s: model_type \"%s\" is not supported (cloq supports llama, mistral, "
             "qwen2 and qwen3%s)", path, type,
             strstr(type, "moe") || !strcmp(type, "mixtral") ? "; mixture-of-experts models are "
             "not" : "");
  c->family = (cloq_family)fam;

  json_t *act = get(root, "hidden_act");
  if (act) {
    CLOQ_CHECK(json_is_string(act), "%s: key hidden_act must be a string, found %s", path,
               cloq_json_kind(act));
    CLOQ_CHECK(!strcmp(json_string_value(act), "silu"),
               "%s: key hidden_act is \"%s\": only \"silu\" (SwiGLU) is supported", path,
               json_string_value(act));
  }
  /* biases: Llama's and Qwen3's attention_bias (q, k, v, o) and Llama's mlp_bias (gate, up,
   * down); Qwen2's q/k/v always; Mistral has none (its config has no such keys) */
  int ab = 0, mb = 0;
  if (c->family == CLOQ_FAM_LLAMA || c->family == CLOQ_FAM_QWEN3)
    CLOQ_CALL(get_bool(root, path, "attention_bias", 0, &ab));
  if (c->family == CLOQ_FAM_LLAMA) CLOQ_CALL(get_bool(root, path, "mlp_bias", 0, &mb));
  c->bias = (ab ? CLOQ_BIAS_ATTN : 0u) | (mb ? CLOQ_BIAS_MLP : 0u) |
            (c->family == CLOQ_FAM_QWEN2 ? CLOQ_BIAS_QKV : 0u);
  c->qk_norm = c->family == CLOQ_FAM_QWEN3;
  CLOQ_CALL(parse_rope(root, path, c));

  CLOQ_CALL(get_int(root, path, "hidden_size", 0, 1, &c->dim));
  CLOQ_CALL(get_int(root, path, "intermediate_size", 0, 1, &c->hidden_dim));
  CLOQ_CALL(get_int(root, path, "num_hidden_layers", 0, 1, &c->n_layers));
  CLOQ_CALL(get_int(root, path, "num_attention_heads", 0, 1, &c->n_heads));
  CLOQ_CALL(get_int(root, path, "vocab_size", 0, 1, &c->vocab_size));
  CLOQ_CALL(get_int(root, path, "num_key_value_heads", c->n_heads, 0, &c->n_kv_heads));
  CLOQ_CALL(get_int(root, path, "max_position_embeddings", 2048, 0, &c->max_pos));
  CLOQ_CALL(get_int(root, path, "bos_token_id", 1, 0, &c->bos_id));
  CLOQ_CALL(get_num(root, path, "rms_norm_eps", 1e-6, &c->norm_eps));
  CLOQ_CALL(get_bool(root, path, "tie_word_embeddings", 0, &c->tied));
  /* the window: Mistral's sliding_window on every layer (null: none); Qwen's only with
   * use_sliding_window, on the layers from max_window_layers on, which cloq refuses */
  c->window = 0;
  if (c->family == CLOQ_FAM_MISTRAL && get(root, "sliding_window")) {
    CLOQ_CALL(get_int(root, path, "sliding_window", 0, 1, &c->window));
    CLOQ_CHECK(c->window > 0, "%s: key sliding_window must be positive or null, found %lld", path,
               (long long)c->window);
  }
  if (c->family == CLOQ_FAM_QWEN2 || c->family == CLOQ_FAM_QWEN3) {
    int usw;
    CLOQ_CALL(get_bool(root, path, "use_sliding_window", 0, &usw));
    CLOQ_CHECK(!usw, "%s: key use_sliding_window is true: a window on some layers only is not "
               "supported", path);
  }
  CLOQ_CALL(check_layer_types(root, path, c->family == CLOQ_FAM_MISTRAL));
  /* head_dim: Qwen3Config's default is 128, the others' hidden_size / num_attention_heads */
  c->head_dim = c->family == CLOQ_FAM_QWEN3 ? 128 : 0;
  if (get(root, "head_dim")) {
    CLOQ_CALL(get_int(root, path, "head_dim", 0, 1, &c->head_dim));
    CLOQ_CHECK(c->head_dim > 0, "%s: key head_dim must be positive, found %lld", path,
               (long long)c->head_dim);
  }

  return cloq_config_check(c, path);
}

/* Appends ", " (after the first item) and printf(fmt, ...) to buf, cut to cap; *n is its length. */
static void add_feature(char *buf, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add_feature(char *buf, size_t cap, size_t *n, const char *fmt, ...) {
  if (*n && *n < cap) *n += (size_t)snprintf(buf + *n, cap - *n, ", ");
  if (*n >= cap) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(buf + *n, cap - *n, fmt, ap);
  va_end(ap);
  *n += k > 0 ? (size_t)k : 0;
}

void cloq_config_features(const cloq_config *c, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = 0;
  if (c->rope_type == CLOQ_ROPE_LINEAR)
    add_feature(buf, cap, &n, "rope linear x%g", c->rope_factor);
  if (c->rope_type == CLOQ_ROPE_LLAMA3)
    add_feature(buf, cap, &n, "rope llama3 x%g (low %g, high %g, original %lld)", c->rope_factor,
                c->rope_low, c->rope_high, (long long)c->rope_orig_max);
  if (c->rope_type == CLOQ_ROPE_FREQS)
    add_feature(buf, cap, &n, "rope frequency factors (rope_freqs)");
  if (c->bias) {
    static const char *const mn[7] = {"q", "k", "v", "o", "gate", "up", "down"};
    char b[64] = "";
    for (int m = 0; m < 7; m++)
      if (c->bias & (1u << m)) snprintf(b + strlen(b), sizeof b - strlen(b), "%s%s",
                                        b[0] ? "/" : "", mn[m]);
    add_feature(buf, cap, &n, "%s biases", b);
  }
  if (c->qk_norm) add_feature(buf, cap, &n, "q/k norm");
  if (c->window) add_feature(buf, cap, &n, "sliding window %lld", (long long)c->window);
  if (c->head_dim * c->n_heads != c->dim)
    add_feature(buf, cap, &n, "head_dim %lld", (long long)c->head_dim);
  if (c->n_kv_heads != c->n_heads)
    add_feature(buf, cap, &n, "GQA %lld/%lld", (long long)c->n_heads, (long long)c->n_kv_heads);
  if (c->tied) add_feature(buf, cap, &n, "tied embeddings");
  if (!n) snprintf(buf, cap, "none");
}

void cloq_rope_inv_freq(const cloq_config *c, const float *freqs, double *inv) {
  const int64_t hd = c->head_dim, half = hd / 2;
  for (int64_t i = 0; i < half; i++) {
    double f = pow(c->rope_theta, -(double)(2 * i) / (double)hd);
    if (c->rope_type == CLOQ_ROPE_LINEAR) {
      f /= c->rope_factor;
    } else if (c->rope_type == CLOQ_ROPE_FREQS) {
      f /= (double)freqs[i];
    } else if (c->rope_type == CLOQ_ROPE_LLAMA3) {
      /* transformers' _compute_llama3_parameters, in float64 */
      const double om = (double)c->rope_orig_max, low_wl = om / c->rope_low,
                   high_wl = om / c->rope_high, wl = 2 * M_PI / f;
      if (wl > low_wl) {
        f /= c->rope_factor;
      } else if (wl >= high_wl) {
        double sm = (om / wl - c->rope_low) / (c->rope_high - c->rope_low);
        f = (1 - sm) * f / c->rope_factor + sm * f;
      }
    }
    inv[i] = f;
  }
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
