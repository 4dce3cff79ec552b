/* hf_folder: writing a Hugging Face model folder (hf_folder.h): sharded safetensors with their
 * index, config.json, generation_config.json and the tokenizer files. The tensors' values come
 * from the caller, one shard at a time, so a folder of any size is written in the memory of its
 * largest shard. Nothing here is collective and nothing uses MPI.
 */
#include "hf_folder.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_half.h"

/* ---- small helpers -------------------------------------------------------------------------- */

const char *cloq_hf_dtype_name(cloq_dtype d) {
  return d == CLOQ_DT_F16 ? "float16" : d == CLOQ_DT_BF16 ? "bfloat16" : "float32";
}

size_t cloq_hf_dtype_size(cloq_dtype d) { return d == CLOQ_DT_F32 || d == CLOQ_DT_I32 ? 4 : 2; }

int64_t cloq_hf_numel(const cloq_hf_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  return n;
}

void cloq_hf_tensor_set(cloq_hf_tensor *t, cloq_dtype dt, int64_t d0, int64_t d1, const char *fmt,
                        ...) {
  memset(t, 0, sizeof *t);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->name, sizeof t->name, fmt, ap);
  va_end(ap);
  t->dtype = dt;
  t->ndim = d1 > 0 ? 2 : 1;
  t->shape[0] = d0;
  t->shape[1] = d1 > 0 ? d1 : 0;
}

int cloq_hf_join(char *buf, size_t cap, const char *a, const char *b) {
  int n = snprintf(buf, cap, "%s/%s", a, b);
  CLOQ_CHECK(n > 0 && (size_t)n < cap, "path too long: %s/%s", a, b);
  return CLOQ_OK;
}

json_t *cloq_hf_json_num(double v) {
  if (v == rint(v) && fabs(v) < 9e15) return json_integer((json_int_t)v);
  return json_real(v);
}

int cloq_hf_write_json(json_t *root, const char *dir, const char *file) {
  char p[CLOQ_HF_PATH_CAP], tmp[CLOQ_HF_PATH_CAP];
  CLOQ_CALL(cloq_hf_join(p, sizeof p, dir, file));
  CLOQ_CHECK(snprintf(tmp, sizeof tmp, "%s.tmp", p) < (int)sizeof tmp, "path too long: %s.tmp", p);
  if (json_dump_file(root, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
    int err = errno;
    remove(tmp);
    return CLOQ_FAIL("cannot write %s: %s", p, strerror(err));
  }
  if (rename(tmp, p) != 0) {
    int err = errno;
    remove(tmp);
    return CLOQ_FAIL("cannot rename %s to %s: %s", tmp, p, strerror(err));
  }
  return CLOQ_OK;
}

static int copy_file(const char *src, const char *dst) {
  FILE *in = fopen(src, "rb");
  CLOQ_CHECK(in, "cannot read %s: %s", src, strerror(errno));
  FILE *out = fopen(dst, "wb");
  if (!out) {
    fclose(in);
    return CLOQ_FAIL("cannot create %s: %s", dst, strerror(errno));
  }
  char buf[1 << 16];
  size_t n;
  int bad = 0;
  while (!bad && (n = fread(buf, 1, sizeof buf, in)) > 0) bad = fwrite(buf, 1, n, out) != n;
  bad |= ferror(in);
  fclose(in);
  bad |= fclose(out) != 0;
  CLOQ_CHECK(!bad, "copying %s to %s failed", src, dst);
  return CLOQ_OK;
}

int cloq_hf_from_f32(const float *x, int64_t n, cloq_dtype dt, void *dst, const char *name) {
  if (dt == CLOQ_DT_F32) {
    if (dst != (const void *)x) memcpy(dst, x, (size_t)n * sizeof *x);
    return CLOQ_OK;
  }
  uint16_t *h = dst;
  for (int64_t i = 0; i < n; i++) {
    h[i] = dt == CLOQ_DT_F16 ? cloq_f32_to_f16(x[i]) : cloq_f32_to_bf16(x[i]);
    float back = dt == CLOQ_DT_F16 ? cloq_f16_to_f32(h[i]) : cloq_bf16_to_f32(h[i]);
    CLOQ_CHECK(isfinite(back), "tensor %s: value %g at flat index %lld does not fit %s", name,
               (double)x[i], (long long)i, cloq_hf_dtype_name(dt));
  }
  return CLOQ_OK;
}

/* ---- sharded safetensors --------------------------------------------------------------------- */

/* Produces tensors [i0, i1) of t and writes them to dir/file. */
static int write_shard(const cloq_hf_tensor *t, int64_t i0, int64_t i1, cloq_hf_produce_fn produce,
                       void *ctx, const char *dir, const char *file) {
  int k = (int)(i1 - i0);
  const char **names = calloc((size_t)k, sizeof *names);
  cloq_dtype *dts = calloc((size_t)k, sizeof *dts);
  int *nd = calloc((size_t)k, sizeof *nd);
  int64_t(*shp)[4] = calloc((size_t)k, sizeof *shp);
  void **data = calloc((size_t)k, sizeof *data);
  int rc = names && dts && nd && shp && data ? CLOQ_OK : CLOQ_FAIL("out of memory (shard table)");
  for (int j = 0; j < k && rc == CLOQ_OK; j++) {
    const cloq_hf_tensor *tj = &t[i0 + j];
    names[j] = tj->name;
    dts[j] = tj->dtype;
    nd[j] = tj->ndim;
    memcpy(shp[j], tj->shape, sizeof shp[j]);
    data[j] = cloq_calloc_checked(cloq_hf_numel(tj), cloq_hf_dtype_size(tj->dtype));
    if (!data[j])
      rc = CLOQ_FAIL("out of memory for tensor %s (%lld elements)", tj->name,
                     (long long)cloq_hf_numel(tj));
    else
      rc = produce(ctx, i0 + j, data[j]);
  }
  char path[CLOQ_HF_PATH_CAP];
  if (rc == CLOQ_OK) rc = cloq_hf_join(path, sizeof path, dir, file);
  if (rc == CLOQ_OK)
    rc = cloq_st_write(path, k, names, dts, nd, (const int64_t(*)[4])shp,
                       (const void *const *)data);
  for (int j = 0; data && j < k; j++) free(data[j]);
  free(names), free(dts), free(nd), free(shp), free(data);
  return rc;
}

int cloq_hf_write_shards(const char *dir, const cloq_hf_tensor *t, int64_t n, const char *single,
                         double shard_mib, cloq_hf_produce_fn produce, void *ctx,
                         const char *what) {
  double lim = shard_mib * 1048576.0;
  int64_t limit = shard_mib <= 0 || lim >= 9e18 ? INT64_MAX : lim < 1 ? 1 : (int64_t)lim;
  /* greedy: a shard closes when the next tensor would push it past the limit */
  int64_t nsh = 0, cur = 0, total = 0;
  int64_t *first;
  CLOQ_ALLOC(first, n + 1, "shard table");
  for (int64_t i = 0; i < n; i++) {
    int64_t b = cloq_hf_numel(&t[i]) * (int64_t)cloq_hf_dtype_size(t[i].dtype);
    if (i == 0 || (cur > 0 && b > limit - cur)) {
      first[nsh++] = i;
      cur = 0;
    }
    cur += b;
    total += b;
  }
  first[nsh] = n;
  int rc = CLOQ_OK;
  json_t *wmap = nsh > 1 ? json_object() : NULL;
  double t0 = cloq_now();
  for (int64_t s = 0; s < nsh && rc == CLOQ_OK; s++) {
    char file[96];
    if (nsh == 1)
      snprintf(file, sizeof file, "%s", single);
    else
      snprintf(file, sizeof file, "model-%05lld-of-%05lld.safetensors", (long long)s + 1,
               (long long)nsh);
    rc = write_shard(t, first[s], first[s + 1], produce, ctx, dir, file);
    for (int64_t i = first[s]; wmap && rc == CLOQ_OK && i < first[s + 1]; i++)
      if (json_object_set_new(wmap, t[i].name, json_string(file)))
        rc = CLOQ_FAIL("out of memory (shard index)");
    if (rc == CLOQ_OK && nsh > 1 && what) {
      double el = cloq_now() - t0;
      printf("  %s: %s (%lld tensors), %.1f s, ETA %.0f s\n", what, file,
             (long long)(first[s + 1] - first[s]), el,
             el / (double)(s + 1) * (double)(nsh - s - 1));
      fflush(stdout);
    }
  }
  if (rc == CLOQ_OK && wmap) {
    json_t *idx = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total,
                            "weight_map", wmap);
    rc = idx ? cloq_hf_write_json(idx, dir, "model.safetensors.index.json")
             : CLOQ_FAIL("out of memory (shard index)");
    json_decref(idx);
  }
  json_decref(wmap);
  free(first);
  if (rc == CLOQ_OK && what) {
    printf("  %s: %lld tensors, %.2f MB in %lld file%s, %.2f s\n", what, (long long)n,
           (double)total / 1e6, (long long)nsh, nsh > 1 ? "s" : "", cloq_now() - t0);
    fflush(stdout);
  }
  return rc;
}

/* ---- config, tokenizer ----------------------------------------------------------------------- */

/* The tokenizer's end-of-sequence id, from tokenizer_config.json in dir ("eos_token", a string or
 * {"content": ...}) looked up among the pieces; -1 when unknown. */
static int64_t eos_from_dir(const cloq_tok *tok, const char *dir) {
  char p[CLOQ_HF_PATH_CAP];
  if (!tok || cloq_hf_join(p, sizeof p, dir, "tokenizer_config.json") != CLOQ_OK) return -1;
  json_t *root = json_load_file(p, 0, NULL);
  if (!root) return -1;
  json_t *e = json_object_get(root, "eos_token");
  if (json_is_object(e)) e = json_object_get(e, "content");
  int64_t id = -1;
  const char *s = json_string_value(e);
  for (int64_t i = 0; s && id < 0 && i < cloq_tok_size(tok); i++) {
    const char *pc = cloq_tok_piece(tok, (int32_t)i);
    if (pc && !strcmp(pc, s)) id = i;
  }
  json_decref(root);
  return id;
}

json_t *cloq_hf_config_json(const cloq_config *g) {
  if (g->rope_type == CLOQ_ROPE_FREQS) {
    (void)CLOQ_FAIL("the model's RoPE frequencies come from a GGUF rope_freqs tensor, which a "
                    "config.json cannot state: export from the Hugging Face model instead");
    return NULL;
  }
  json_t *rope = json_null();
  if (g->rope_type == CLOQ_ROPE_LINEAR)
    rope = json_pack("{s:s, s:f}", "rope_type", "linear", "factor", g->rope_factor);
  else if (g->rope_type == CLOQ_ROPE_LLAMA3)
    rope = json_pack("{s:s, s:f, s:f, s:f, s:I}", "rope_type", "llama3", "factor", g->rope_factor,
                     "low_freq_factor", g->rope_low, "high_freq_factor", g->rope_high,
                     "original_max_position_embeddings", (json_int_t)g->rope_orig_max);
  json_t *root = json_pack(
      "{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:o, s:s, s:b}",
      "architectures", cloq_family_arch(g->family), "model_type", cloq_family_name(g->family),
      "hidden_size", (json_int_t)g->dim, "intermediate_size", (json_int_t)g->hidden_dim,
      "num_hidden_layers", (json_int_t)g->n_layers, "num_attention_heads", (json_int_t)g->n_heads,
      "num_key_value_heads", (json_int_t)g->n_kv_heads, "head_dim", (json_int_t)g->head_dim,
      "vocab_size", (json_int_t)g->vocab_size, "max_position_embeddings", (json_int_t)g->max_pos,
      "rms_norm_eps", g->norm_eps, "rope_theta", g->rope_theta, "rope_scaling", rope,
      "hidden_act", "silu", "tie_word_embeddings", g->tied ? 1 : 0);
  int bad = !root;
  /* the family's own keys, in the places LlamaConfig had them */
  if (!bad && g->family == CLOQ_FAM_LLAMA)
    bad = json_object_set_new(root, "attention_bias",
                              json_boolean(g->bias & CLOQ_BIAS_ATTN)) ||
          json_object_set_new(root, "mlp_bias", json_boolean(g->bias & CLOQ_BIAS_MLP));
  if (!bad && g->family == CLOQ_FAM_QWEN3)
    bad = json_object_set_new(root, "attention_bias",
                              json_boolean(g->bias & CLOQ_BIAS_ATTN));
  if (!bad && (g->family == CLOQ_FAM_QWEN2 || g->family == CLOQ_FAM_QWEN3))
    bad = json_object_set_new(root, "use_sliding_window", json_false());
  if (!bad && g->family == CLOQ_FAM_MISTRAL)
    bad = json_object_set_new(root, "sliding_window",
                              g->window ? json_integer((json_int_t)g->window) : json_null());
  if (!bad) bad = json_object_set_new(root, "bos_token_id", json_integer((json_int_t)g->bos_id));
  if (bad) {
    json_decref(root);
    (void)CLOQ_FAIL("out of memory (config.json)");
    return NULL;
  }
  return root;
}

int cloq_hf_write_config(const char *dir, const char *model_dir, const cloq_config *cfg,
                         const cloq_tok *tok, cloq_dtype dtype, json_t *quant) {
  char src[CLOQ_HF_PATH_CAP];
  json_t *root = NULL;
  int rc = CLOQ_OK;
  if (model_dir && cloq_hf_join(src, sizeof src, model_dir, "config.json") == CLOQ_OK &&
      access(src, R_OK) == 0) {
    json_error_t err;
    root = json_load_file(src, 0, &err);
    if (!root || !json_is_object(root))
      rc = CLOQ_FAIL("%s: line %d: %s", src, err.line, root ? "not an object" : err.text);
  } else {
    root = cloq_hf_config_json(cfg);
    if (!root) rc = CLOQ_ERR;
    int64_t eos = eos_from_dir(tok, dir);
    if (root && eos >= 0) json_object_set_new(root, "eos_token_id", json_integer(eos));
  }
  if (rc == CLOQ_OK) {
    json_object_set_new(root, "torch_dtype", json_string(cloq_hf_dtype_name(dtype))); /* tf 4 */
    json_object_set_new(root, "dtype", json_string(cloq_hf_dtype_name(dtype)));       /* tf 5 */
    json_object_del(root, "quantization_config");
    if (quant) json_object_set(root, "quantization_config", quant);
    rc = cloq_hf_write_json(root, dir, "config.json");
  }
  json_decref(root);
  json_decref(quant);
  if (rc == CLOQ_OK && model_dir &&
      cloq_hf_join(src, sizeof src, model_dir, "generation_config.json") == CLOQ_OK &&
      access(src, R_OK) == 0) {
    char dst[CLOQ_HF_PATH_CAP];
    CLOQ_CALL(cloq_hf_join(dst, sizeof dst, dir, "generation_config.json"));
    rc = copy_file(src, dst);
  }
  return rc;
}

static const char *const hf_tok_files[] = {"tokenizer.json", "tokenizer_config.json",
                                           "special_tokens_map.json", "tokenizer.model"};
#define N_TOK_FILES (int)(sizeof hf_tok_files / sizeof hf_tok_files[0])

int cloq_hf_copy_tokenizer(const char *model_dir, const char *dir, int *copied) {
  char src[CLOQ_HF_PATH_CAP], dst[CLOQ_HF_PATH_CAP];
  *copied = 0;
  CLOQ_CALL(cloq_hf_join(src, sizeof src, model_dir, "tokenizer.json"));
  if (access(src, R_OK) != 0) return CLOQ_OK;
  for (int i = 0; i < N_TOK_FILES; i++) {
    CLOQ_CALL(cloq_hf_join(src, sizeof src, model_dir, hf_tok_files[i]));
    CLOQ_CALL(cloq_hf_join(dst, sizeof dst, dir, hf_tok_files[i]));
    if (access(src, R_OK) == 0) CLOQ_CALL(copy_file(src, dst));
  }
  *copied = 1;
  return CLOQ_OK;
}

int cloq_hf_write_tokenizer(const cloq_tok *t, const char *dir) {
  if (cloq_tok_write_hf(t, dir) == CLOQ_OK) return CLOQ_OK;
  /* no half-written tokenizer: a loader would find it before the user's own files */
  char dst[CLOQ_HF_PATH_CAP];
  for (int i = 0; i < N_TOK_FILES; i++) {
    int k = snprintf(dst, sizeof dst, "%s/%s", dir, hf_tok_files[i]);
    if (k > 0 && (size_t)k < sizeof dst) remove(dst);
  }
  return CLOQ_ERR;
}
