/* safetensors.c: the checkpoint reader (single file or sharded through index.json) and a small
 * single-file writer.
 *
 * Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets
 * [begin, end)}, "__metadata__": {...}}, then the data area, which offsets are relative to.
 * Files are mapped read-only and never copied: a tensor's bytes are touched only when it is read,
 * so opening a multi-GB model costs only the header parses. Every header is validated in full at
 * open time (dtype, shape, offsets inside the data area and consistent with shape x dtype, no two
 * tensors overlapping, no name in two shards), because a corrupt or truncated download must fail
 * at open with the file and tensor named, not as a SIGBUS or garbage weights in the middle of a
 * multi-hour run. Tensors are kept sorted by name and looked up by binary search.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloq_err.h"
#include "cloq_hash.h"
#include "cloq_config.h"
#include "cloq_ckpt.h"
#include "cloq_half.h"
#include "cloq_gguf.h"
#include "gguf_internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is read in place: a little-endian host is required"
#endif

/* Hugging Face's own limit; a larger "length" is a corrupt or non-safetensors file. */
#define ST_MAX_HEADER ((uint64_t)100000000)

typedef struct {
  char *path;
  const unsigned char *base; /* the whole mapping */
  size_t size;
  const unsigned char *data; /* the data area, after the header */
  size_t data_size;
} st_shard;

typedef struct {
  char *name;
  int shard;
  cloq_dtype dtype;
  int ndim;
  int64_t shape[4];
  int64_t numel;
  uint64_t begin, end; /* byte offsets into the shard's data area */
  /* GGUF models only: the tensor in the file (its ggml type and bytes), and for q_proj/k_proj the
   * head count whose rotary row order llama.cpp's converter interleaved (0: none) */
  const cloq_gguf_tensor *gt;
  int rope_heads;
} st_entry;

struct cloq_ckpt {
  char *dir;
  cloq_gguf *gguf; /* a GGUF model: tensors under Hugging Face names (open_gguf) */
  int nshards;
  st_shard *shards;
  int64_t n, cap;
  st_entry *t; /* sorted by name once open */
};

static const char *dtype_name(cloq_dtype d) {
  return d == CLOQ_DT_F32    ? "F32"
         : d == CLOQ_DT_F16  ? "F16"
         : d == CLOQ_DT_BF16 ? "BF16"
         : d == CLOQ_DT_I32  ? "I32"
                             : "?";
}

static size_t dtype_size(cloq_dtype d) { return d == CLOQ_DT_F32 || d == CLOQ_DT_I32 ? 4 : 2; }

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t k = (size_t)snprintf(buf, cap, "(");
  for (int i = 0; i < ndim && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (k < cap) snprintf(buf + k, cap - k, ")");
}

/* numel of a shape and its size in bytes, with overflow checks (both fit int64_t). */
static int shape_bytes(int ndim, const int64_t *shape, cloq_dtype dt, int64_t *numel,
                       int64_t *bytes) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0 || (shape[i] != 0 && n > INT64_MAX / shape[i])) return CLOQ_ERR;
    n *= shape[i];
  }
  if (n > INT64_MAX / (int64_t)dtype_size(dt)) return CLOQ_ERR;
  *numel = n;
  *bytes = n * (int64_t)dtype_size(dt);
  return CLOQ_OK;
}

static char *path_join(const char *dir, const char *file) {
  size_t n = strlen(dir) + strlen(file) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, file);
  return p;
}

static int file_exists(const char *path) {
  struct stat s;
  return stat(path, &s) == 0;
}

/* ---- header parsing --------------------------------------------------------------------------- */

static int parse_entry(cloq_ckpt *st, int si, const char *name, json_t *e) {
  const st_shard *sh = &st->shards[si];
  const char *path = sh->path;
  CLOQ_CHECK(json_is_object(e), "%s: tensor %s: header entry is not a JSON object", path, name);

  json_t *jd = json_object_get(e, "dtype");
  CLOQ_CHECK(json_is_string(jd), "%s: tensor %s: missing or non-string \"dtype\"", path, name);
  const char *ds = json_string_value(jd);
  cloq_dtype dt;
  if (!strcmp(ds, "F32"))
    dt = CLOQ_DT_F32;
  else if (!strcmp(ds, "F16"))
    dt = CLOQ_DT_F16;
  else if (!strcmp(ds, "BF16"))
    dt = CLOQ_DT_BF16;
  else
    return CLOQ_FAIL("%s: unsupported dtype %s for tensor %s (supported: F32, F16, BF16)", path,
                     ds, name);

  json_t *js = json_object_get(e, "shape");
  CLOQ_CHECK(json_is_array(js), "%s: tensor %s: missing or non-array \"shape\"", path, name);
  size_t nd = json_array_size(js);
  CLOQ_CHECK(nd <= 4, "%s: tensor %s: shape has %zu dimensions (at most 4 are supported)", path,
             name, nd);
  int64_t shape[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < nd; i++) {
    json_t *d = json_array_get(js, i);
    CLOQ_CHECK(json_is_integer(d) && json_integer_value(d) >= 0,
               "%s: tensor %s: shape entry %zu is not a non-negative integer", path, name, i);
    shape[i] = (int64_t)json_integer_value(d);
  }
  char sbuf[128];
  fmt_shape(sbuf, sizeof sbuf, (int)nd, shape);
  int64_t numel, bytes;
  CLOQ_CHECK(shape_bytes((int)nd, shape, dt, &numel, &bytes) == CLOQ_OK,
             "%s: tensor %s: shape %s of %s overflows 64-bit sizes", path, name, sbuf, ds);

  json_t *jo = json_object_get(e, "data_offsets");
  CLOQ_CHECK(json_is_array(jo) && json_array_size(jo) == 2 &&
                 json_is_integer(json_array_get(jo, 0)) && json_is_integer(json_array_get(jo, 1)),
             "%s: tensor %s: \"data_offsets\" must be an array of two integers", path, name);
  json_int_t b = json_integer_value(json_array_get(jo, 0));
  json_int_t en = json_integer_value(json_array_get(jo, 1));
  CLOQ_CHECK(b >= 0 && en >= b, "%s: tensor %s: data_offsets [%lld, %lld] are not an interval",
             path, name, (long long)b, (long long)en);
  CLOQ_CHECK((uint64_t)en <= (uint64_t)sh->data_size,
             "%s: tensor %s: data_offsets [%lld, %lld] exceed the file's data area (%zu bytes): "
             "file truncated or header corrupt",
             path, name, (long long)b, (long long)en, sh->data_size);
  CLOQ_CHECK(en - b == bytes,
             "%s: tensor %s: data_offsets [%lld, %lld] span %lld bytes but shape %s of %s needs "
             "%lld bytes",
             path, name, (long long)b, (long long)en, (long long)(en - b), sbuf, ds,
             (long long)bytes);

  if (st->n == st->cap) {
    int64_t nc = st->cap ? 2 * st->cap : 64;
    st_entry *g = realloc(st->t, (size_t)nc * sizeof *g);
    CLOQ_CHECK(g, "%s: out of memory (%lld tensors)", path, (long long)nc);
    st->t = g;
    st->cap = nc;
  }
  st_entry *t = &st->t[st->n];
  memset(t, 0, sizeof *t);
  t->name = strdup(name);
  CLOQ_CHECK(t->name, "%s: out of memory", path);
  st->n++;
  t->shard = si;
  t->dtype = dt;
  t->ndim = (int)nd;
  memcpy(t->shape, shape, sizeof shape);
  t->numel = numel;
  t->begin = (uint64_t)b;
  t->end = (uint64_t)en;
  return CLOQ_OK;
}

static int cmp_begin(const void *a, const void *b) {
  const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

/* Two tensors sharing bytes means a corrupt header (the format forbids it). */
static int check_overlap(const cloq_ckpt *st, int64_t first, const char *path) {
  int64_t k = st->n - first;
  if (k < 2) return CLOQ_OK;
  st_entry **v = malloc((size_t)k * sizeof *v);
  CLOQ_CHECK(v, "%s: out of memory", path);
  for (int64_t i = 0; i < k; i++) v[i] = &st->t[first + i];
  qsort(v, (size_t)k, sizeof *v, cmp_begin);
  int rc = CLOQ_OK;
  for (int64_t i = 1; i < k && rc == CLOQ_OK; i++)
    if (v[i]->begin < v[i - 1]->end)
      rc = CLOQ_FAIL("%s: tensors %s [%llu, %llu] and %s [%llu, %llu] overlap in the data area",
                     path, v[i - 1]->name, (unsigned long long)v[i - 1]->begin,
                     (unsigned long long)v[i - 1]->end, v[i]->name,
                     (unsigned long long)v[i]->begin, (unsigned long long)v[i]->end);
  free(v);
  return rc;
}

static int parse_header(cloq_ckpt *st, int si) {
  st_shard *sh = &st->shards[si];
  const char *path = sh->path;
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)sh->base[i] << (8 * i);
  CLOQ_CHECK(hlen <= ST_MAX_HEADER,
             "%s: header length %llu exceeds the 100 MB limit: not a safetensors file or corrupt",
             path, (unsigned long long)hlen);
  CLOQ_CHECK(hlen <= sh->size - 8,
             "%s: header length %llu exceeds the file (%zu bytes after the length field): file "
             "truncated or not a safetensors file",
             path, (unsigned long long)hlen, sh->size - 8);
  sh->data = sh->base + 8 + hlen;
  sh->data_size = sh->size - 8 - (size_t)hlen;

  json_error_t jerr;
  json_t *root = json_loadb((const char *)sh->base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
  CLOQ_CHECK(root, "%s: header is not valid JSON: %s (at byte %d of the %llu-byte header)", path,
             jerr.text, jerr.position, (unsigned long long)hlen);
  int rc = CLOQ_OK;
  int64_t first = st->n;
  if (!json_is_object(root)) {
    rc = CLOQ_FAIL("%s: header JSON is not an object", path);
  } else {
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
      if (!strcmp(key, "__metadata__")) continue;
      rc = parse_entry(st, si, key, val);
      if (rc != CLOQ_OK) break;
    }
  }
  json_decref(root);
  if (rc == CLOQ_OK) rc = check_overlap(st, first, path);
  return rc;
}

/* Maps shard si (path already set) and parses its header. */
static int open_shard(cloq_ckpt *st, int si) {
  st_shard *sh = &st->shards[si];
  const char *path = sh->path;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  CLOQ_CHECK(fd >= 0, "%s: cannot open: %s", path, strerror(errno));
  struct stat s;
  if (fstat(fd, &s) != 0 || !S_ISREG(s.st_mode)) {
    close(fd);
    return CLOQ_FAIL("%s: not a regular file", path);
  }
  if (s.st_size < 8) {
    close(fd);
    if (s.st_size == 0) return CLOQ_FAIL("%s: empty file (0 bytes): truncated download?", path);
    return CLOQ_FAIL("%s: truncated: %lld bytes, too short for the 8-byte header length", path,
                     (long long)s.st_size);
  }
  void *m = mmap(NULL, (size_t)s.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  int merr = errno;
  close(fd); /* the mapping keeps the file alive */
  CLOQ_CHECK(m != MAP_FAILED, "%s: mmap of %lld bytes failed: %s", path, (long long)s.st_size,
             strerror(merr));
  sh->base = m;
  sh->size = (size_t)s.st_size;
  return parse_header(st, si);
}

static int cmp_entry_name(const void *a, const void *b) {
  return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int add_shard(cloq_ckpt *st, const char *file) {
  st_shard *g = realloc(st->shards, (size_t)(st->nshards + 1) * sizeof *g);
  CLOQ_CHECK(g, "out of memory");
  st->shards = g;
  memset(&st->shards[st->nshards], 0, sizeof *g);
  st->shards[st->nshards].path = path_join(st->dir, file);
  CLOQ_CHECK(st->shards[st->nshards].path, "out of memory");
  st->nshards++;
  return open_shard(st, st->nshards - 1);
}

static const st_entry *lookup(const cloq_ckpt *st, const char *name) {
  int64_t lo = 0, hi = st->n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    int c = strcmp(st->t[mid].name, name);
    if (c == 0) return &st->t[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

/* Sharded form: the weight map names the files; every file is opened once, and every mapping
 * must point at a file that really holds the tensor (a stale index is a broken download). */
static int open_index(cloq_ckpt *st, const char *ipath) {
  json_error_t jerr;
  json_t *root = json_load_file(ipath, JSON_REJECT_DUPLICATES, &jerr);
  CLOQ_CHECK(root, "%s: not valid JSON: %s (line %d, column %d)", ipath, jerr.text, jerr.line,
             jerr.column);
  int rc = CLOQ_OK;
  const char **files = NULL;
  size_t nfiles = 0;
  json_t *wm = json_object_get(root, "weight_map");
  if (!json_is_object(root) || !json_is_object(wm)) {
    rc = CLOQ_FAIL("%s: no \"weight_map\" object", ipath);
    goto done;
  }
  files = malloc((json_object_size(wm) + 1) * sizeof *files);
  if (!files) {
    rc = CLOQ_FAIL("%s: out of memory", ipath);
    goto done;
  }
  const char *key;
  json_t *val;
  json_object_foreach(wm, key, val) {
    if (!json_is_string(val) || json_string_value(val)[0] == '\0' ||
        json_string_value(val)[0] == '/') {
      rc = CLOQ_FAIL("%s: weight_map entry %s is not a relative file name", ipath, key);
      goto done;
    }
    files[nfiles++] = json_string_value(val);
  }
  if (nfiles == 0) {
    rc = CLOQ_FAIL("%s: weight_map is empty", ipath);
    goto done;
  }
  qsort(files, nfiles, sizeof *files, cmp_str);
  for (size_t i = 0; i < nfiles && rc == CLOQ_OK; i++)
    if (i == 0 || strcmp(files[i], files[i - 1])) rc = add_shard(st, files[i]);
  if (rc != CLOQ_OK) goto done;
  if (st->n > 1) qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_entry_name); /* NULL when empty */
  for (int64_t i = 1; i < st->n && rc == CLOQ_OK; i++)
    if (!strcmp(st->t[i].name, st->t[i - 1].name))
      rc = CLOQ_FAIL("tensor %s is in two shards: %s and %s", st->t[i].name,
                     st->shards[st->t[i - 1].shard].path, st->shards[st->t[i].shard].path);
  if (rc != CLOQ_OK) goto done;
  json_object_foreach(wm, key, val) {
    const st_entry *t = lookup(st, key);
    if (!t) {
      rc = CLOQ_FAIL("%s: tensor %s is mapped to %s, which does not contain it", ipath, key,
                     json_string_value(val));
      break;
    }
    char *want = path_join(st->dir, json_string_value(val));
    int same = want && !strcmp(want, st->shards[t->shard].path);
    free(want);
    if (!same) {
      rc = CLOQ_FAIL("%s: tensor %s is mapped to %s but found in %s", ipath, key,
                     json_string_value(val), st->shards[t->shard].path);
      break;
    }
  }
done:
  free(files);
  json_decref(root);
  return rc;
}

/* ---- GGUF models ------------------------------------------------------------------------------
 * llama.cpp's names map to Hugging Face's; shapes are ne reversed (ne[0] is the contiguous
 * dimension, so the bytes are already row-major). llama.cpp's converter interleaves the rows of
 * q_proj and k_proj within each head for the llama architecture (its rotary layout, as in Meta's
 * checkpoints; qwen2 and qwen3 keep Hugging Face's): GGUF row h*hd + 2i + j holds Hugging Face
 * row h*hd + j*hd/2 + i. read_f32 undoes that, so the model is the Hugging Face one everywhere
 * else in cloq. */
enum { ROT_NONE, ROT_Q, ROT_KV }; /* rows permuted in heads of q (n_heads) or k (n_kv_heads) */
static const struct {
  const char *gguf, *hf;
  int rot; /* llama: rows (q/k and their biases) in llama.cpp's interleaved rotary order */
} gguf_names[] = {
    {"attn_norm.weight", "input_layernorm.weight", ROT_NONE},
    {"ffn_norm.weight", "post_attention_layernorm.weight", ROT_NONE},
    {"attn_q.weight", "self_attn.q_proj.weight", ROT_Q},
    {"attn_k.weight", "self_attn.k_proj.weight", ROT_KV},
    {"attn_v.weight", "self_attn.v_proj.weight", ROT_NONE},
    {"attn_output.weight", "self_attn.o_proj.weight", ROT_NONE},
    {"ffn_gate.weight", "mlp.gate_proj.weight", ROT_NONE},
    {"ffn_up.weight", "mlp.up_proj.weight", ROT_NONE},
    {"ffn_down.weight", "mlp.down_proj.weight", ROT_NONE},
    /* qwen2 (and llama or qwen3 with attention_bias) */
    {"attn_q.bias", "self_attn.q_proj.bias", ROT_Q},
    {"attn_k.bias", "self_attn.k_proj.bias", ROT_KV},
    {"attn_v.bias", "self_attn.v_proj.bias", ROT_NONE},
    {"attn_output.bias", "self_attn.o_proj.bias", ROT_NONE},
    {"ffn_gate.bias", "mlp.gate_proj.bias", ROT_NONE}, /* llama with mlp_bias */
    {"ffn_up.bias", "mlp.up_proj.bias", ROT_NONE},
    {"ffn_down.bias", "mlp.down_proj.bias", ROT_NONE},
    {"attn_q_norm.weight", "self_attn.q_norm.weight", ROT_NONE}, /* qwen3 */
    {"attn_k_norm.weight", "self_attn.k_norm.weight", ROT_NONE},
};

static cloq_dtype gguf_dtype(int type) {
  switch (type) {
  case GGML_F32: return CLOQ_DT_F32;
  case GGML_F16: return CLOQ_DT_F16;
  case GGML_BF16: return CLOQ_DT_BF16;
  case GGML_Q4_0: return CLOQ_DT_Q4_0;
  case GGML_Q4_1: return CLOQ_DT_Q4_1;
  case GGML_Q5_0: return CLOQ_DT_Q5_0;
  case GGML_Q5_1: return CLOQ_DT_Q5_1;
  default: return CLOQ_DT_Q8_0; /* Q8_0, and types read_f32 refuses by the ggml type */
  }
}

static int open_gguf(cloq_ckpt *st, const char *path, const cloq_config *cfgp) {
  const cloq_config cfg = *cfgp;
  int64_t n = cloq_gguf_n_tensors(st->gguf);
  st->t = calloc((size_t)(n ? n : 1), sizeof *st->t);
  CLOQ_CHECK(st->t, "out of memory");
  st->cap = n;
  for (int64_t i = 0; i < n; i++) {
    const cloq_gguf_tensor *gt = cloq_gguf_tensor_at(st->gguf, i);
    st_entry *e = &st->t[st->n];
    char name[512];
    const char *hf = NULL;
    int layer = -1, off = 0;
    if (!strcmp(gt->name, "token_embd.weight")) hf = "model.embed_tokens.weight";
    else if (!strcmp(gt->name, "output_norm.weight")) hf = "model.norm.weight";
    else if (!strcmp(gt->name, "output.weight")) hf = "lm_head.weight";
    else if (sscanf(gt->name, "blk.%d.%n", &layer, &off) == 1 && off > 0 && layer >= 0) {
      for (size_t k = 0; k < sizeof gguf_names / sizeof gguf_names[0]; k++)
        if (!strcmp(gt->name + off, gguf_names[k].gguf)) {
          snprintf(name, sizeof name, "model.layers.%d.%s", layer, gguf_names[k].hf);
          hf = name;
          /* only llama.cpp's llama converter permutes (qwen2/qwen3 use the NEOX layout) */
          if (cfg.family == CLOQ_FAM_LLAMA && gguf_names[k].rot != ROT_NONE)
            e->rope_heads = (int)(gguf_names[k].rot == ROT_Q ? cfg.n_heads : cfg.n_kv_heads);
        }
    }
    e->name = strdup(hf ? hf : gt->name);
    CLOQ_CHECK(e->name, "out of memory");
    st->n++; /* counted now, so that cloq_ckpt_close frees the name if a check below fails */
    e->gt = gt;
    e->dtype = gguf_dtype(gt->type);
    e->ndim = gt->n_dims;
    e->numel = 1;
    for (int d = 0; d < gt->n_dims; d++) {
      e->shape[d] = gt->ne[gt->n_dims - 1 - d];
      e->numel *= gt->ne[d];
    }
    if (e->rope_heads) {
      int64_t rows = e->ndim == 2 || e->ndim == 1 ? e->shape[0] : 0;
      CLOQ_CHECK(rows > 0 && rows % e->rope_heads == 0 && (rows / e->rope_heads) % 2 == 0,
                 "%s: tensor %s: %lld rows do not split into %d heads of even size", path,
                 gt->name, (long long)rows, e->rope_heads);
    }
  }
  qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_entry_name);
  for (int64_t i = 1; i < st->n; i++)
    CLOQ_CHECK(strcmp(st->t[i - 1].name, st->t[i].name), "%s: tensor %s appears twice", path,
               st->t[i].name);
  return CLOQ_OK;
}

/* The GGUF row that holds Hugging Face row r of a tensor permuted in heads of hd rows: HF row
 * r = h*hd + j*hd/2 + i comes from GGUF row h*hd + 2i + j. */
static int64_t rot_src(int64_t r, int64_t hd) {
  int64_t h = r / hd, k = r % hd, j = k / (hd / 2), i = k % (hd / 2);
  return h * hd + 2 * i + j;
}

/* GGUF: dequantize row by row (undoing the rotary row order of q/k) into out. */
static int read_gguf(const cloq_ckpt *st, const st_entry *e, float *out) {
  const cloq_gguf_tensor *gt = e->gt;
  CLOQ_CHECK(cloq_ggml_can_dequant(gt->type),
             "%s: tensor %s has type %s; cloq reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and "
             "Q8_0", st->dir, gt->name, cloq_ggml_type_name(gt->type));
  int64_t cols = gt->ne[0], rows = e->numel / cols;
  if (e->ndim == 1 && e->rope_heads) { /* a q/k bias: its elements are the rows to reorder */
    float *tmp = malloc((size_t)e->numel * sizeof *tmp);
    CLOQ_CHECK(tmp, "out of memory reading %s", gt->name);
    cloq_gguf_dequant(gt->type, gt->data, e->numel, tmp);
    int64_t hd = e->numel / e->rope_heads;
    for (int64_t r = 0; r < e->numel; r++) out[r] = tmp[rot_src(r, hd)];
    free(tmp);
    return CLOQ_OK;
  }
  size_t row_bytes = (size_t)(gt->nbytes / (uint64_t)rows);
  int64_t hd = e->rope_heads ? rows / e->rope_heads : 0;
  for (int64_t r = 0; r < rows; r++) {
    int64_t src = hd ? rot_src(r, hd) : r;
    cloq_gguf_dequant(gt->type, gt->data + (size_t)src * row_bytes, cols, out + r * cols);
  }
  return CLOQ_OK;
}

int cloq_ckpt_open(const char *model_dir, cloq_ckpt **out) {
  *out = NULL;
  cloq_ckpt *st = calloc(1, sizeof *st);
  CLOQ_CHECK(st, "out of memory");
  int rc = CLOQ_OK;
  char *ipath = NULL, *spath = NULL;
  st->dir = strdup(model_dir);
  ipath = path_join(model_dir, "model.safetensors.index.json");
  spath = path_join(model_dir, "model.safetensors");
  if (!st->dir || !ipath || !spath) {
    rc = CLOQ_FAIL("out of memory");
  } else if (file_exists(spath)) { /* the single file wins, as in transformers */
    rc = add_shard(st, "model.safetensors");
    if (rc == CLOQ_OK && st->n > 1) /* st->t is NULL when the header names no tensor */
      qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_entry_name);
  } else if (file_exists(ipath)) {
    rc = open_index(st, ipath);
  } else {
    rc = CLOQ_FAIL("%s: neither model.safetensors nor model.safetensors.index.json found",
                   model_dir);
  }
  free(ipath);
  free(spath);
  if (rc != CLOQ_OK) {
    cloq_ckpt_close(&st);
    return rc;
  }
  *out = st;
  return CLOQ_OK;
}

/* Every tensor's name, dtype and shape, and its bytes: all of them for a tensor of up to 256 KiB,
 * else 64 slices of 4 KiB spread evenly over it (a whole 13B checkpoint costs ~90 MiB of reads). */
static void fill(const cloq_ckpt *st, const st_entry *e, cloq_tensor *t);
uint64_t cloq_ckpt_digest(const cloq_ckpt *st) {
  enum { SLICE = 4096, NSLICE = 64 };
  uint64_t h = CLOQ_HASH_INIT;
  for (int64_t i = 0; i < st->n; i++) {
    const st_entry *e = &st->t[i];
    cloq_tensor t;
    fill(st, e, &t);
    uint64_t nbytes = e->gt ? e->gt->nbytes : e->end - e->begin;
    h = cloq_hash(h, e->name, strlen(e->name) + 1);
    h = cloq_hash_i64(h, e->dtype);
    for (int d = 0; d < e->ndim; d++) h = cloq_hash_i64(h, e->shape[d]);
    const unsigned char *p = t.data;
    if (nbytes <= (uint64_t)SLICE * NSLICE) {
      h = cloq_hash(h, p, (size_t)nbytes);
    } else {
      uint64_t step = (nbytes - SLICE) / (NSLICE - 1);
      for (int k = 0; k < NSLICE; k++) h = cloq_hash(h, p + (uint64_t)k * step, SLICE);
    }
  }
  return h;
}

/* A checkpoint with blocks beyond the config's num_hidden_layers would be cut short silently. */
int cloq_ckpt_check_layers(const cloq_ckpt *st, int64_t n_layers) {
  int64_t top = -1;
  const char *seen = NULL;
  for (int64_t i = 0; i < st->n; i++) {
    long long k = -1;
    int off = 0;
    if (sscanf(st->t[i].name, "model.layers.%lld.%n", &k, &off) == 1 && off > 0 && k > top) {
      top = k;
      seen = st->t[i].name;
    }
  }
  CLOQ_CHECK(top < n_layers,
             "%s: tensor %s belongs to block %lld, but the config has num_hidden_layers %lld",
             st->dir, seen, (long long)top, (long long)n_layers);
  return CLOQ_OK;
}

int cloq_ckpt_from_gguf(cloq_gguf **g, const char *path, const cloq_config *cfg, cloq_ckpt **out) {
  *out = NULL;
  cloq_ckpt *st = calloc(1, sizeof *st);
  if (!st) {
    cloq_gguf_close(g);
    return CLOQ_FAIL("out of memory");
  }
  st->gguf = *g; /* owned from here on, freed with st */
  *g = NULL;
  st->dir = strdup(path);
  int rc = st->dir ? open_gguf(st, path, cfg) : CLOQ_FAIL("out of memory");
  if (rc != CLOQ_OK) {
    cloq_ckpt_close(&st);
    return rc;
  }
  *out = st;
  return CLOQ_OK;
}

const cloq_gguf *cloq_ckpt_gguf(const cloq_ckpt *st) { return st->gguf; }

void cloq_ckpt_close(cloq_ckpt **pst) {
  if (!pst || !*pst) return;
  cloq_ckpt *st = *pst;
  for (int i = 0; i < st->nshards; i++) {
    if (st->shards[i].base) munmap((void *)st->shards[i].base, st->shards[i].size);
    free(st->shards[i].path);
  }
  for (int64_t i = 0; i < st->n; i++) free(st->t[i].name);
  free(st->shards);
  free(st->t);
  cloq_gguf_close(&st->gguf);
  free(st->dir);
  free(st);
  *pst = NULL;
}

static void fill(const cloq_ckpt *st, const st_entry *e, cloq_tensor *t) {
  t->name = e->name;
  t->dtype = e->dtype;
  t->ndim = e->ndim;
  memcpy(t->shape, e->shape, sizeof t->shape);
  t->numel = e->numel;
  if (e->gt) {
    t->data = e->gt->data;
    t->file = st->dir;
    return;
  }
  const st_shard *sh = &st->shards[e->shard];
  t->data = sh->data + e->begin;
  t->file = sh->path;
}

int cloq_ckpt_find(const cloq_ckpt *st, const char *name, cloq_tensor *t) {
  const st_entry *e = lookup(st, name);
  CLOQ_CHECK(e, "tensor %s not found in %s", name, st->dir);
  fill(st, e, t);
  return CLOQ_OK;
}

int cloq_ckpt_has(const cloq_ckpt *st, const char *name) { return lookup(st, name) != NULL; }

int cloq_ckpt_read_f32(const cloq_ckpt *st, const char *name, int ndim, const int64_t *shape,
                     float *out) {
  const st_entry *ent = lookup(st, name);
  CLOQ_CHECK(ent, "tensor %s not found in %s", name, st->dir);
  cloq_tensor t;
  fill(st, ent, &t);
  int same = ndim == t.ndim;
  for (int i = 0; same && i < ndim; i++) same = shape[i] == t.shape[i];
  if (!same) {
    char want[128], got[128];
    if (ndim < 0 || ndim > 4)
      snprintf(want, sizeof want, "(%d dimensions)", ndim);
    else
      fmt_shape(want, sizeof want, ndim, shape);
    fmt_shape(got, sizeof got, t.ndim, t.shape);
    return CLOQ_FAIL("%s: tensor %s: shape mismatch: expected %s, found %s", t.file, name, want,
                     got);
  }
  const unsigned char *p = t.data;
  size_t nbytes = ent->gt ? (size_t)ent->gt->nbytes : (size_t)t.numel * dtype_size(t.dtype);
  if (ent->gt) {
    CLOQ_CALL(read_gguf(st, ent, out));
  } else if (t.dtype == CLOQ_DT_F32) {
    memcpy(out, p, (size_t)t.numel * 4); /* data may be unaligned */
  } else {
    float (*conv)(uint16_t) = t.dtype == CLOQ_DT_F16 ? cloq_f16_to_f32 : cloq_bf16_to_f32;
    for (int64_t i = 0; i < t.numel; i++)
      out[i] = conv((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
  }
  /* The float32 copy is what the caller keeps: let the kernel drop the mapped pages (whole pages
   * inside the tensor only; they are clean file pages, re-read if ever touched again), so that
   * a rank's RSS holds each weight once, not twice. */
  const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1);
  uintptr_t e = ((uintptr_t)p + nbytes) & ~(pg - 1);
  if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
  for (int64_t i = 0; i < t.numel; i++)
    if (!isfinite(out[i]))
      return CLOQ_FAIL("%s: tensor %s: non-finite value %g at flat index %lld (%s data)", t.file,
                       name, (double)out[i], (long long)i,
                       ent->gt ? cloq_ggml_type_name(ent->gt->type) : dtype_name(t.dtype));
  return CLOQ_OK;
}

/* ---- writer ----------------------------------------------------------------------------------- */

static int build_header(int n, const char *const *names, const cloq_dtype *dtypes,
                        const int *ndims, const int64_t (*shapes)[4], const char *path,
                        char **hdr, int64_t *bytes) {
  json_t *root = json_object();
  CLOQ_CHECK(root, "%s: out of memory", path);
  int rc = CLOQ_OK;
  json_t *meta = json_pack("{s:s}", "format", "pt"); /* transformers checks this key */
  if (!meta || json_object_set_new(root, "__metadata__", meta)) {
    rc = CLOQ_FAIL("%s: out of memory", path);
    goto done;
  }
  int64_t off = 0;
  for (int i = 0; i < n && rc == CLOQ_OK; i++) {
    const char *nm = names[i];
    if (!nm || !nm[0] || !strcmp(nm, "__metadata__") || json_object_get(root, nm)) {
      rc = CLOQ_FAIL("%s: tensor %d: name \"%s\" is empty, reserved or repeated", path, i,
                     nm ? nm : "(null)");
      break;
    }
    if (dtypes[i] != CLOQ_DT_F32 && dtypes[i] != CLOQ_DT_F16 && dtypes[i] != CLOQ_DT_BF16 &&
        dtypes[i] != CLOQ_DT_I32) {
      rc = CLOQ_FAIL("%s: tensor %s: unknown dtype code %d", path, nm, (int)dtypes[i]);
      break;
    }
    if (ndims[i] < 0 || ndims[i] > 4) {
      rc = CLOQ_FAIL("%s: tensor %s: ndim %d outside 0..4", path, nm, ndims[i]);
      break;
    }
    int64_t numel, nb;
    if (shape_bytes(ndims[i], shapes[i], dtypes[i], &numel, &nb) != CLOQ_OK ||
        off > INT64_MAX - nb) {
      rc = CLOQ_FAIL("%s: tensor %s: negative or overflowing shape", path, nm);
      break;
    }
    json_t *shp = json_array();
    int bad = !shp;
    for (int d = 0; d < ndims[i] && !bad; d++)
      bad = json_array_append_new(shp, json_integer((json_int_t)shapes[i][d]));
    json_t *e = bad ? NULL
                    : json_pack("{s:s, s:O, s:[I,I]}", "dtype", dtype_name(dtypes[i]), "shape",
                                shp, "data_offsets", (json_int_t)off, (json_int_t)(off + nb));
    json_decref(shp);
    if (!e || json_object_set_new(root, nm, e)) { /* set_new releases e on failure */
      rc = CLOQ_FAIL("%s: tensor %s: cannot build the header entry (name not UTF-8?)", path, nm);
      break;
    }
    bytes[i] = nb;
    off += nb;
  }
  if (rc == CLOQ_OK) {
    *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!*hdr) rc = CLOQ_FAIL("%s: cannot serialize the header", path);
  }
done:
  json_decref(root);
  return rc;
}

static int write_all(FILE *f, const char *tmp, const void *p, size_t n) {
  CLOQ_CHECK(n == 0 || fwrite(p, 1, n, f) == n, "%s: write failed: %s", tmp, strerror(errno));
  return CLOQ_OK;
}

static int write_body(FILE *f, const char *tmp, const char *hdr, int n, const void *const *data,
                      const int64_t *bytes) {
  size_t hl = strlen(hdr);
  size_t padded = (hl + 7) / 8 * 8; /* HF pads with spaces so the data area is 8-aligned */
  unsigned char len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  CLOQ_CALL(write_all(f, tmp, len8, 8));
  CLOQ_CALL(write_all(f, tmp, hdr, hl));
  CLOQ_CALL(write_all(f, tmp, "        ", padded - hl));
  for (int i = 0; i < n; i++) {
    CLOQ_CHECK(bytes[i] == 0 || data[i], "%s: tensor %d has no data", tmp, i);
    CLOQ_CALL(write_all(f, tmp, data[i], (size_t)bytes[i]));
  }
  return CLOQ_OK;
}

int cloq_st_write(const char *path, int n, const char *const *names, const cloq_dtype *dtypes,
                  const int *ndims, const int64_t (*shapes)[4], const void *const *data) {
  CLOQ_CHECK(n >= 0, "%s: negative tensor count %d", path, n);
  int64_t *bytes = calloc((size_t)n + 1, sizeof *bytes);
  CLOQ_CHECK(bytes, "%s: out of memory", path);
  char *hdr = NULL;
  int rc = build_header(n, names, dtypes, ndims, shapes, path, &hdr, bytes);
  if (rc != CLOQ_OK) {
    free(bytes);
    return rc;
  }
  size_t tl = strlen(path) + sizeof ".tmp";
  char *tmp = malloc(tl);
  FILE *f = NULL;
  if (!tmp) {
    rc = CLOQ_FAIL("%s: out of memory", path);
  } else {
    snprintf(tmp, tl, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) rc = CLOQ_FAIL("%s: cannot create: %s", tmp, strerror(errno));
  }
  if (rc == CLOQ_OK) rc = write_body(f, tmp, hdr, n, data, bytes);
  if (f && fclose(f) != 0 && rc == CLOQ_OK)
    rc = CLOQ_FAIL("%s: close failed: %s", tmp, strerror(errno));
  if (rc == CLOQ_OK && rename(tmp, path) != 0)
    rc = CLOQ_FAIL("%s: cannot rename to %s: %s", tmp, path, strerror(errno));
  if (rc != CLOQ_OK && f) remove(tmp);
  free(tmp);
  free(hdr);
  free(bytes);
  return rc;
}
