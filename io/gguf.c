/* gguf.c: the GGUF reader (llama.cpp's model file, version 3; version 2 has the same layout).
 *
 * Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; the metadata
 * as (string key, u32 type, value); the tensor infos as (string name, u32 n_dims, u64 ne[n_dims],
 * u32 ggml type, u64 offset); then, aligned to general.alignment (default 32), the data area the
 * offsets are relative to. A string is u64 length + bytes (no NUL); an array is u32 element type,
 * u64 count, elements.
 *
 * Everything in the header is validated when the file is opened, before a single weight is read:
 * every length and count against the bytes left, known value and tensor types, 1-4 dimensions,
 * the row length a multiple of the type's block, offsets aligned, inside the data area and not
 * overlapping, no duplicate key or tensor name. A malformed or truncated file therefore fails at
 * open with one line naming the file and what is wrong, never as a crash or a wrong weight later
 * (tests/fuzz/fuzz_gguf.c drives cloq_gguf_parse with libFuzzer).
 *
 * Dequantization follows ggml's reference (ggml-quants.c dequantize_row_*), in float32 like ggml:
 *   Q8_0: 32 values: f16 d, 32 x int8 q           -> d * q
 *   Q4_0: 32 values: f16 d, 16 bytes of nibbles   -> d * (q - 8)   (low nibbles: values 0..15,
 *   Q4_1: 32 values: f16 d, f16 m, 16 bytes       -> d * q + m      high nibbles: 16..31)
 *   Q5_0 / Q5_1: as Q4_* with a 5th bit from u32 qh (bit j for value j), Q5_0 offset 16.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloq_err.h"
#include "cloq_config.h"
#include "cloq_half.h"
#include "cloq_tok.h"
#include "cloq_gguf.h"
#include "gguf_internal.h"

#define GGUF_MAX_DEPTH 4 /* nested arrays */
#define GGUF_MAX_NAME 4096

typedef struct {
  char *key;
  cloq_gguf_value v;
} gguf_kv;

struct cloq_gguf {
  char *name;
  void *map; /* when opened from a file */
  size_t map_len;
  const unsigned char *buf;
  size_t len;
  uint32_t version;
  int64_t n_kv;
  gguf_kv *kv;
  int64_t n_tensors;
  cloq_gguf_tensor *t;
  int64_t *by_name; /* indices of t sorted by name */
  uint64_t alignment;
  const unsigned char *data;
  /* allocated value arrays (items of string/array arrays), freed at close */
  cloq_gguf_value **pool;
  int64_t npool, cappool;
};

typedef struct {
  const unsigned char *p;
  size_t len, pos;
  const char *name;
} reader;

static const struct {
  int type;
  const char *name;
  uint32_t block, size;
} ggml_types[] = {
    {GGML_F32, "F32", 1, 4},       {GGML_F16, "F16", 1, 2},       {GGML_Q4_0, "Q4_0", 32, sizeof(block_q4_0)},
    {GGML_Q4_1, "Q4_1", 32, sizeof(block_q4_1)},   {GGML_Q5_0, "Q5_0", 32, sizeof(block_q5_0)},
    {GGML_Q5_1, "Q5_1", 32, sizeof(block_q5_1)},
    {GGML_Q8_0, "Q8_0", 32, sizeof(block_q8_0)},   {GGML_Q8_1, "Q8_1", 32, 36},   {GGML_Q2_K, "Q2_K", 256, 84},
    {GGML_Q3_K, "Q3_K", 256, 110}, {GGML_Q4_K, "Q4_K", 256, 144}, {GGML_Q5_K, "Q5_K", 256, 176},
    {GGML_Q6_K, "Q6_K", 256, 210}, {GGML_Q8_K, "Q8_K", 256, 292}, {GGML_I8, "I8", 1, 1},
    {GGML_I16, "I16", 1, 2},       {GGML_I32, "I32", 1, 4},       {GGML_I64, "I64", 1, 8},
    {GGML_F64, "F64", 1, 8},       {GGML_BF16, "BF16", 1, 2},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

static int type_index(int type) {
  for (size_t i = 0; i < N_GGML_TYPES; i++)
    if (ggml_types[i].type == type) return (int)i;
  return -1;
}

const char *cloq_ggml_type_name(int type) {
  int i = type_index(type);
  return i < 0 ? "?" : ggml_types[i].name;
}

int cloq_ggml_can_dequant(int type) {
  switch (type) {
  case GGML_F32: case GGML_F16: case GGML_BF16: case GGML_Q4_0: case GGML_Q4_1:
  case GGML_Q5_0: case GGML_Q5_1: case GGML_Q8_0: return 1;
  default: return 0;
  }
}

/* ---- little-endian reads with bounds ---------------------------------------------------------- */

static uint64_t le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static int need(reader *r, uint64_t n, const char *what) {
  CLOQ_CHECK(n <= r->len - r->pos, "%s: truncated GGUF: %s needs %llu bytes at offset %zu, %zu left",
             r->name, what, (unsigned long long)n, r->pos, r->len - r->pos);
  return CLOQ_OK;
}

static int rd_u32(reader *r, const char *what, uint32_t *v) {
  CLOQ_CALL(need(r, 4, what));
  *v = (uint32_t)le(r->p + r->pos, 4);
  r->pos += 4;
  return CLOQ_OK;
}

static int rd_u64(reader *r, const char *what, uint64_t *v) {
  CLOQ_CALL(need(r, 8, what));
  *v = le(r->p + r->pos, 8);
  r->pos += 8;
  return CLOQ_OK;
}

static int rd_str(reader *r, const char *what, const char **s, uint64_t *len) {
  CLOQ_CALL(rd_u64(r, what, len));
  CLOQ_CALL(need(r, *len, what));
  *s = (const char *)r->p + r->pos;
  r->pos += (size_t)*len;
  return CLOQ_OK;
}

static int scalar_size(int type) {
  switch (type) {
  case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
  case GGUF_U16: case GGUF_I16: return 2;
  case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
  case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
  default: return 0;
  }
}

static void decode_scalar(int type, const unsigned char *p, cloq_gguf_value *v) {
  uint64_t x = le(p, scalar_size(type));
  v->type = type;
  switch (type) {
  case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64: v->u = x; break;
  case GGUF_I8: v->i = (int8_t)x; break;
  case GGUF_I16: v->i = (int16_t)x; break;
  case GGUF_I32: v->i = (int32_t)x; break;
  case GGUF_I64: v->i = (int64_t)x; break;
  case GGUF_BOOL: v->i = x != 0; break;
  case GGUF_F32: {
    uint32_t b = (uint32_t)x;
    float f;
    memcpy(&f, &b, 4);
    v->f = f;
    break;
  }
  case GGUF_F64: memcpy(&v->f, &x, 8); break;
  default: break;
  }
}

static int pool_add(cloq_gguf *g, cloq_gguf_value *items) {
  if (g->npool == g->cappool) {
    int64_t cap = g->cappool ? 2 * g->cappool : 64;
    cloq_gguf_value **p = realloc(g->pool, (size_t)cap * sizeof *p);
    if (!p) {
      free(items);
      return CLOQ_FAIL("out of memory reading %s", g->name);
    }
    g->pool = p;
    g->cappool = cap;
  }
  g->pool[g->npool++] = items;
  return CLOQ_OK;
}

static int rd_value(cloq_gguf *g, reader *r, int type, int depth, const char *key,
                    cloq_gguf_value *v) {
  memset(v, 0, sizeof *v);
  v->type = type;
  if (type == GGUF_STR) return rd_str(r, key, &v->s, &v->len);
  if (type != GGUF_ARR) {
    int n = scalar_size(type);
    CLOQ_CHECK(n > 0, "%s: metadata %s: unknown value type %d", r->name, key, type);
    CLOQ_CALL(need(r, (uint64_t)n, key));
    decode_scalar(type, r->p + r->pos, v);
    if (type == GGUF_BOOL)
      CLOQ_CHECK(r->p[r->pos] <= 1, "%s: metadata %s: bool byte is %d, not 0 or 1", r->name, key,
                 r->p[r->pos]);
    r->pos += (size_t)n;
    return CLOQ_OK;
  }
  CLOQ_CHECK(depth < GGUF_MAX_DEPTH, "%s: metadata %s: arrays nested deeper than %d", r->name,
             key, GGUF_MAX_DEPTH);
  uint32_t et;
  CLOQ_CALL(rd_u32(r, key, &et));
  CLOQ_CALL(rd_u64(r, key, &v->n));
  v->elem_type = (int)et;
  int es = scalar_size((int)et);
  if (es > 0) {
    CLOQ_CHECK(v->n <= (r->len - r->pos) / (uint64_t)es,
               "%s: truncated GGUF: metadata %s: array of %llu elements of %d bytes at offset "
               "%zu, %zu bytes left",
               r->name, key, (unsigned long long)v->n, es, r->pos, r->len - r->pos);
    v->raw = r->p + r->pos;
    if (et == GGUF_BOOL)
      for (uint64_t k = 0; k < v->n; k++)
        CLOQ_CHECK(v->raw[k] <= 1, "%s: metadata %s: bool element %llu is %d, not 0 or 1",
                   r->name, key, (unsigned long long)k, v->raw[k]);
    r->pos += (size_t)(v->n * (uint64_t)es);
    return CLOQ_OK;
  }
  CLOQ_CHECK(et == GGUF_STR || et == GGUF_ARR, "%s: metadata %s: unknown array element type %u",
             r->name, key, et);
  /* every string or array element takes at least 8 (12) bytes */
  uint64_t min = et == GGUF_STR ? 8 : 12;
  CLOQ_CHECK(v->n <= (r->len - r->pos) / min,
             "%s: truncated GGUF: metadata %s: array of %llu elements at offset %zu, %zu bytes "
             "left",
             r->name, key, (unsigned long long)v->n, r->pos, r->len - r->pos);
  cloq_gguf_value *items = calloc(v->n ? (size_t)v->n : 1, sizeof *items);
  CLOQ_CHECK(items, "out of memory reading metadata %s of %s", key, r->name);
  CLOQ_CALL(pool_add(g, items));
  v->items = items;
  for (uint64_t k = 0; k < v->n; k++) CLOQ_CALL(rd_value(g, r, (int)et, depth + 1, key, &items[k]));
  return CLOQ_OK;
}

/* ---- open / parse ----------------------------------------------------------------------------- */

static int cmp_kv(const void *a, const void *b) {
  return strcmp(((const gguf_kv *)a)->key, ((const gguf_kv *)b)->key);
}

static const cloq_gguf_tensor *sort_base; /* qsort has no context argument */
static int cmp_by_name(const void *a, const void *b) {
  return strcmp(sort_base[*(const int64_t *)a].name, sort_base[*(const int64_t *)b].name);
}
static int cmp_by_offset(const void *a, const void *b) {
  uint64_t x = sort_base[*(const int64_t *)a].offset, y = sort_base[*(const int64_t *)b].offset;
  return x < y ? -1 : x > y;
}

static char *dup_n(const char *s, uint64_t n) {
  char *d = malloc((size_t)n + 1);
  if (d) {
    memcpy(d, s, (size_t)n);
    d[n] = 0;
  }
  return d;
}

static int parse_kv(cloq_gguf *g, reader *r) {
  uint64_t n_kv = (uint64_t)g->n_kv;
  /* a key-value pair takes at least 8 + 4 + 1 bytes */
  CLOQ_CHECK(n_kv <= (r->len - r->pos) / 13,
             "%s: metadata count %llu is impossible for a file of %zu bytes", r->name,
             (unsigned long long)n_kv, r->len);
  g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
  CLOQ_CHECK(g->kv, "out of memory reading %s", r->name);
  for (uint64_t i = 0; i < n_kv; i++) {
    const char *k;
    uint64_t kl;
    CLOQ_CALL(rd_str(r, "metadata key", &k, &kl));
    CLOQ_CHECK(kl > 0 && kl < GGUF_MAX_NAME, "%s: metadata key %llu has length %llu", r->name,
               (unsigned long long)i, (unsigned long long)kl);
    CLOQ_CHECK(!memchr(k, 0, (size_t)kl), "%s: metadata key %llu contains a NUL byte", r->name,
               (unsigned long long)i);
    g->kv[i].key = dup_n(k, kl);
    CLOQ_CHECK(g->kv[i].key, "out of memory reading %s", r->name);
    uint32_t type;
    CLOQ_CALL(rd_u32(r, g->kv[i].key, &type));
    CLOQ_CALL(rd_value(g, r, (int)type, 0, g->kv[i].key, &g->kv[i].v));
  }
  qsort(g->kv, (size_t)n_kv, sizeof *g->kv, cmp_kv);
  for (uint64_t i = 1; i < n_kv; i++)
    CLOQ_CHECK(strcmp(g->kv[i - 1].key, g->kv[i].key), "%s: metadata key %s appears twice",
               r->name, g->kv[i].key);
  return CLOQ_OK;
}

static int parse_tensor_info(cloq_gguf *g, reader *r, int64_t i) {
  cloq_gguf_tensor *t = &g->t[i];
  const char *s;
  uint64_t sl;
  CLOQ_CALL(rd_str(r, "tensor name", &s, &sl));
  CLOQ_CHECK(sl > 0 && sl < GGUF_MAX_NAME, "%s: tensor %lld has a name of length %llu", r->name,
             (long long)i, (unsigned long long)sl);
  CLOQ_CHECK(!memchr(s, 0, (size_t)sl), "%s: tensor %lld: name contains a NUL byte", r->name,
             (long long)i);
  t->name = dup_n(s, sl);
  CLOQ_CHECK(t->name, "out of memory reading %s", r->name);
  uint32_t nd;
  CLOQ_CALL(rd_u32(r, t->name, &nd));
  CLOQ_CHECK(nd >= 1 && nd <= 4, "%s: tensor %s has %u dimensions (1 to 4 are valid)", r->name,
             t->name, nd);
  t->n_dims = (int)nd;
  int64_t numel = 1;
  for (int d = 0; d < 4; d++) t->ne[d] = 1;
  for (uint32_t d = 0; d < nd; d++) {
    uint64_t ne;
    CLOQ_CALL(rd_u64(r, t->name, &ne));
    CLOQ_CHECK(ne >= 1 && ne <= (uint64_t)INT64_MAX && (int64_t)ne <= INT64_MAX / numel,
               "%s: tensor %s: dimension %u is %llu (empty or too large)", r->name, t->name, d,
               (unsigned long long)ne);
    t->ne[d] = (int64_t)ne;
    numel *= (int64_t)ne;
  }
  uint32_t type;
  CLOQ_CALL(rd_u32(r, t->name, &type));
  int ti = type_index((int)type);
  CLOQ_CHECK(ti >= 0, "%s: tensor %s has unknown ggml type %u", r->name, t->name, type);
  t->type = (int)type;
  uint32_t blk = ggml_types[ti].block, sz = ggml_types[ti].size;
  CLOQ_CHECK(t->ne[0] % blk == 0, "%s: tensor %s: row length %lld is not a multiple of %s's block %u",
             r->name, t->name, (long long)t->ne[0], ggml_types[ti].name, blk);
  uint64_t blocks = (uint64_t)(numel / blk);
  CLOQ_CHECK(blocks <= UINT64_MAX / sz, "%s: tensor %s is too large", r->name, t->name);
  t->nbytes = blocks * sz;
  CLOQ_CALL(rd_u64(r, t->name, &t->offset));
  return CLOQ_OK;
}

static int check_layout(cloq_gguf *g, const char *name, size_t data_start) {
  int64_t n = g->n_tensors;
  uint64_t avail = g->len - data_start;
  for (int64_t i = 0; i < n; i++) {
    cloq_gguf_tensor *t = &g->t[i];
    CLOQ_CHECK(t->offset % g->alignment == 0,
               "%s: tensor %s: offset %llu is not a multiple of the alignment %llu", name, t->name,
               (unsigned long long)t->offset, (unsigned long long)g->alignment);
    CLOQ_CHECK(t->offset <= avail && t->nbytes <= avail - t->offset,
               "%s: truncated GGUF: tensor %s needs bytes [%llu, %llu) of the data area, which "
               "has %llu",
               name, t->name, (unsigned long long)t->offset,
               (unsigned long long)(t->offset + t->nbytes), (unsigned long long)avail);
    t->data = g->data + t->offset;
  }
  g->by_name = malloc((size_t)(n ? n : 1) * sizeof *g->by_name);
  CLOQ_CHECK(g->by_name, "out of memory reading %s", name);
  for (int64_t i = 0; i < n; i++) g->by_name[i] = i;
  sort_base = g->t;
  qsort(g->by_name, (size_t)n, sizeof *g->by_name, cmp_by_offset);
  for (int64_t i = 1; i < n; i++) {
    const cloq_gguf_tensor *a = &g->t[g->by_name[i - 1]], *b = &g->t[g->by_name[i]];
    CLOQ_CHECK(a->offset + a->nbytes <= b->offset, "%s: tensors %s and %s overlap", name,
               a->name, b->name);
  }
  qsort(g->by_name, (size_t)n, sizeof *g->by_name, cmp_by_name);
  for (int64_t i = 1; i < n; i++)
    CLOQ_CHECK(strcmp(g->t[g->by_name[i - 1]].name, g->t[g->by_name[i]].name),
               "%s: tensor %s appears twice", name, g->t[g->by_name[i]].name);
  return CLOQ_OK;
}

static int parse(cloq_gguf *g) {
  reader r = {g->buf, g->len, 0, g->name};
  CLOQ_CHECK(g->len >= 4 && !memcmp(g->buf, "GGUF", 4), "%s: not a GGUF file (no GGUF magic)",
             g->name);
  r.pos = 4;
  CLOQ_CALL(rd_u32(&r, "version", &g->version));
  CLOQ_CHECK(g->version == 2 || g->version == 3,
             "%s: GGUF version %u is not supported (2 and 3 are)", g->name, g->version);
  uint64_t nt, nkv;
  CLOQ_CALL(rd_u64(&r, "tensor count", &nt));
  CLOQ_CALL(rd_u64(&r, "metadata count", &nkv));
  g->n_kv = (int64_t)(nkv > (uint64_t)INT64_MAX ? INT64_MAX : nkv);
  CLOQ_CHECK(nkv <= (uint64_t)INT64_MAX, "%s: metadata count %llu is impossible", g->name,
             (unsigned long long)nkv);
  CLOQ_CALL(parse_kv(g, &r));

  g->alignment = 32;
  const cloq_gguf_value *al = cloq_gguf_get(g, "general.alignment");
  if (al) {
    CLOQ_CHECK(al->type == GGUF_U32 && al->u > 0 && (al->u & (al->u - 1)) == 0,
               "%s: general.alignment must be a u32 power of two", g->name);
    g->alignment = al->u;
  }
  /* a tensor info takes at least 8 + 1 + 4 + 8 + 4 + 8 bytes */
  CLOQ_CHECK(nt <= (r.len - r.pos) / 33,
             "%s: tensor count %llu is impossible for a file of %zu bytes", g->name,
             (unsigned long long)nt, r.len);
  g->n_tensors = (int64_t)nt;
  g->t = calloc(nt ? (size_t)nt : 1, sizeof *g->t);
  CLOQ_CHECK(g->t, "out of memory reading %s", g->name);
  for (int64_t i = 0; i < g->n_tensors; i++) CLOQ_CALL(parse_tensor_info(g, &r, i));
  size_t data_start = (size_t)(((uint64_t)r.pos + g->alignment - 1) / g->alignment * g->alignment);
  CLOQ_CHECK(data_start <= g->len || g->n_tensors == 0,
             "%s: truncated GGUF: the data area would start at %zu, past the end (%zu bytes)",
             g->name, data_start, g->len);
  if (data_start > g->len) data_start = g->len;
  g->data = g->buf + data_start;
  return check_layout(g, g->name, data_start);
}

int cloq_gguf_parse(const void *buf, size_t len, const char *name, cloq_gguf **out) {
  *out = NULL;
  cloq_gguf *g = calloc(1, sizeof *g);
  CLOQ_CHECK(g, "out of memory");
  g->name = strdup(name ? name : "GGUF");
  g->buf = buf;
  g->len = len;
  if (!g->name) {
    free(g);
    return CLOQ_FAIL("out of memory");
  }
  if (parse(g) != CLOQ_OK) {
    cloq_gguf_close(&g);
    return CLOQ_ERR;
  }
  *out = g;
  return CLOQ_OK;
}

int cloq_gguf_open(const char *path, cloq_gguf **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY);
  CLOQ_CHECK(fd >= 0, "cannot open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return CLOQ_FAIL("%s is not a regular file", path);
  }
  size_t len = (size_t)st.st_size;
  void *map = NULL;
  if (len > 0) {
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      close(fd);
      return CLOQ_FAIL("cannot map %s: %s", path, strerror(errno));
    }
  }
  close(fd);
  static const unsigned char empty[1];
  if (cloq_gguf_parse(map ? map : empty, len, path, out) != CLOQ_OK) {
    if (map) munmap(map, len);
    return CLOQ_ERR;
  }
  (*out)->map = map;
  (*out)->map_len = len;
  return CLOQ_OK;
}

void cloq_gguf_close(cloq_gguf **pg) {
  if (!pg || !*pg) return;
  cloq_gguf *g = *pg;
  if (g->kv)
    for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].key);
  if (g->t)
    for (int64_t i = 0; i < g->n_tensors; i++) free(g->t[i].name);
  for (int64_t i = 0; i < g->npool; i++) free(g->pool[i]);
  free(g->pool);
  free(g->kv);
  free(g->t);
  free(g->by_name);
  if (g->map) munmap(g->map, g->map_len);
  free(g->name);
  free(g);
  *pg = NULL;
}

int cloq_is_gguf(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  char m[4];
  int ok = fread(m, 1, 4, f) == 4 && !memcmp(m, "GGUF", 4);
  fclose(f);
  return ok;
}

/* ---- lookups ---------------------------------------------------------------------------------- */

const cloq_gguf_value *cloq_gguf_get(const cloq_gguf *g, const char *key) {
  int64_t lo = 0, hi = g->n_kv - 1;
  while (lo <= hi) {
    int64_t mid = lo + (hi - lo) / 2;
    int c = strcmp(g->kv[mid].key, key);
    if (!c) return &g->kv[mid].v;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return NULL;
}

int64_t cloq_gguf_n_tensors(const cloq_gguf *g) { return g->n_tensors; }
const cloq_gguf_tensor *cloq_gguf_tensor_at(const cloq_gguf *g, int64_t i) { return &g->t[i]; }
const char *cloq_gguf_name(const cloq_gguf *g) { return g->name; }

const cloq_gguf_tensor *cloq_gguf_find_tensor(const cloq_gguf *g, const char *name) {
  int64_t lo = 0, hi = g->n_tensors - 1;
  while (lo <= hi) {
    int64_t mid = lo + (hi - lo) / 2;
    const cloq_gguf_tensor *t = &g->t[g->by_name[mid]];
    int c = strcmp(t->name, name);
    if (!c) return t;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return NULL;
}

/* ---- dequantization --------------------------------------------------------------------------- */

static float f16le(const unsigned char *p) { return cloq_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

void cloq_gguf_dequant(int type, const unsigned char *src, int64_t n, float *out) {
  switch (type) {
  case GGML_F32: memcpy(out, src, (size_t)n * 4); return;
  case GGML_F16:
    for (int64_t i = 0; i < n; i++) out[i] = f16le(src + 2 * i);
    return;
  case GGML_BF16:
    for (int64_t i = 0; i < n; i++) out[i] = cloq_bf16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
    return;
  default: break;
  }
  /* each block is copied out of the file's bytes (a tensor need not be aligned for ggml_half) */
#define BLOCK(T) \
  T blk;         \
  memcpy(&blk, src + (size_t)b * sizeof blk, sizeof blk)
  for (int64_t b = 0; b < n / GGML_QK; b++, out += GGML_QK) {
    switch (type) {
    case GGML_Q8_0: {
      BLOCK(block_q8_0);
      float d = cloq_f16_to_f32(blk.d);
      for (int j = 0; j < GGML_QK; j++) out[j] = (float)blk.qs[j] * d;
      break;
    }
    case GGML_Q4_0: {
      BLOCK(block_q4_0);
      float d = cloq_f16_to_f32(blk.d);
      for (int j = 0; j < GGML_QK / 2; j++) {
        out[j] = (float)((blk.qs[j] & 0x0F) - 8) * d;
        out[j + 16] = (float)((blk.qs[j] >> 4) - 8) * d;
      }
      break;
    }
    case GGML_Q4_1: {
      BLOCK(block_q4_1);
      float d = cloq_f16_to_f32(blk.d), m = cloq_f16_to_f32(blk.m);
      for (int j = 0; j < GGML_QK / 2; j++) {
        out[j] = (float)(blk.qs[j] & 0x0F) * d + m;
        out[j + 16] = (float)(blk.qs[j] >> 4) * d + m;
      }
      break;
    }
    case GGML_Q5_0: {
      BLOCK(block_q5_0);
      float d = cloq_f16_to_f32(blk.d);
      uint32_t qh = (uint32_t)le(blk.qh, 4);
      for (int j = 0; j < GGML_QK / 2; j++) {
        int xh0 = (int)(((qh >> j) << 4) & 0x10), xh1 = (int)((qh >> (j + 12)) & 0x10);
        out[j] = (float)(((blk.qs[j] & 0x0F) | xh0) - 16) * d;
        out[j + 16] = (float)(((blk.qs[j] >> 4) | xh1) - 16) * d;
      }
      break;
    }
    case GGML_Q5_1: {
      BLOCK(block_q5_1);
      float d = cloq_f16_to_f32(blk.d), m = cloq_f16_to_f32(blk.m);
      uint32_t qh = (uint32_t)le(blk.qh, 4);
      for (int j = 0; j < GGML_QK / 2; j++) {
        int xh0 = (int)(((qh >> j) << 4) & 0x10), xh1 = (int)((qh >> (j + 12)) & 0x10);
        out[j] = (float)((blk.qs[j] & 0x0F) | xh0) * d + m;
        out[j + 16] = (float)((blk.qs[j] >> 4) | xh1) * d + m;
      }
      break;
    }
    default: return; /* callers check cloq_ggml_can_dequant */
    }
  }
#undef BLOCK
}

/* ---- tokenizer -------------------------------------------------------------------------------- */

static int str_is(const cloq_gguf_value *v, const char *s) {
  return v && v->type == GGUF_STR && v->len == strlen(s) && !memcmp(v->s, s, v->len);
}

static int get_id(const cloq_gguf *g, const char *key, int32_t *out) {
  int64_t v;
  CLOQ_CALL(cloq_gguf__get_int(g, key, -1, 0, &v));
  *out = (int32_t)v;
  return CLOQ_OK;
}

static int get_flag(const cloq_gguf *g, const char *key, int def, int *out) {
  const cloq_gguf_value *v = cloq_gguf_get(g, key);
  if (!v) {
    *out = def;
    return CLOQ_OK;
  }
  CLOQ_CHECK(v->type == GGUF_BOOL, "%s: metadata %s must be a bool", g->name, key);
  *out = (int)v->i;
  return CLOQ_OK;
}

/* NUL-terminated copies of a string array (NULL-padded list freed by free_strs). */
static int copy_strs(const cloq_gguf *g, const cloq_gguf_value *v, const char *key, char ***out) {
  CLOQ_CHECK(v->type == GGUF_ARR && v->elem_type == GGUF_STR,
             "%s: metadata %s must be an array of strings", g->name, key);
  char **s = calloc((size_t)v->n + 1, sizeof *s);
  CLOQ_CHECK(s, "out of memory reading %s", key);
  *out = s;
  for (uint64_t i = 0; i < v->n; i++) {
    CLOQ_CHECK(!memchr(v->items[i].s, 0, (size_t)v->items[i].len),
               "%s: metadata %s: entry %llu contains a NUL byte", g->name, key,
               (unsigned long long)i);
    s[i] = dup_n(v->items[i].s, v->items[i].len);
    CLOQ_CHECK(s[i], "out of memory reading %s", key);
  }
  return CLOQ_OK;
}

static void free_strs(char **s) {
  for (char **p = s; p && *p; p++) free(*p);
  free(s);
}

static int gguf_vocab(const cloq_gguf *g, char ***tokens, char ***merges, float **scores,
                      int32_t **types, char pre_buf[128], cloq_tok_vocab *v) {
  memset(v, 0, sizeof *v);
  const cloq_gguf_value *model = cloq_gguf_get(g, "tokenizer.ggml.model");
  CLOQ_CHECK(model && model->type == GGUF_STR, "%s: metadata tokenizer.ggml.model is missing: "
             "the file has no tokenizer", g->name);
  if (str_is(model, "gpt2")) v->kind = CLOQ_TOK_BPE;
  else if (str_is(model, "llama")) v->kind = CLOQ_TOK_SPM;
  else
    return CLOQ_FAIL("%s: tokenizer.ggml.model \"%.*s\" is not supported (gpt2, llama are)",
                     g->name, (int)(model->len < 64 ? model->len : 64), model->s);
  const cloq_gguf_value *tv = cloq_gguf_get(g, "tokenizer.ggml.tokens");
  CLOQ_CHECK(tv, "%s: metadata tokenizer.ggml.tokens is missing", g->name);
  CLOQ_CALL(copy_strs(g, tv, "tokenizer.ggml.tokens", tokens));
  v->n_tokens = (int64_t)tv->n;
  v->tokens = (const char *const *)*tokens;
  const cloq_gguf_value *sv = cloq_gguf_get(g, "tokenizer.ggml.scores");
  if (sv) {
    CLOQ_CHECK(sv->type == GGUF_ARR && sv->elem_type == GGUF_F32 && sv->n == tv->n,
               "%s: tokenizer.ggml.scores must be %llu float32 values", g->name,
               (unsigned long long)tv->n);
    *scores = malloc((size_t)(tv->n ? tv->n : 1) * sizeof **scores);
    CLOQ_CHECK(*scores, "out of memory reading tokenizer.ggml.scores");
    memcpy(*scores, sv->raw, (size_t)tv->n * 4);
    v->scores = *scores;
  }
  CLOQ_CHECK(v->kind != CLOQ_TOK_SPM || sv, "%s: tokenizer.ggml.scores is missing (the llama "
             "tokenizer merges by score)", g->name);
  const cloq_gguf_value *yv = cloq_gguf_get(g, "tokenizer.ggml.token_type");
  if (yv) {
    CLOQ_CHECK(yv->type == GGUF_ARR && yv->elem_type == GGUF_I32 && yv->n == tv->n,
               "%s: tokenizer.ggml.token_type must be %llu int32 values", g->name,
               (unsigned long long)tv->n);
    *types = malloc((size_t)(tv->n ? tv->n : 1) * sizeof **types);
    CLOQ_CHECK(*types, "out of memory reading tokenizer.ggml.token_type");
    memcpy(*types, yv->raw, (size_t)tv->n * 4);
    v->types = *types;
  }
  const cloq_gguf_value *mv = cloq_gguf_get(g, "tokenizer.ggml.merges");
  if (mv) {
    CLOQ_CALL(copy_strs(g, mv, "tokenizer.ggml.merges", merges));
    v->n_merges = (int64_t)mv->n;
    v->merges = (const char *const *)*merges;
  }
  CLOQ_CHECK(v->kind != CLOQ_TOK_BPE || mv, "%s: tokenizer.ggml.merges is missing (gpt2 "
             "tokenizer)", g->name);
  const cloq_gguf_value *pre = cloq_gguf_get(g, "tokenizer.ggml.pre");
  if (pre && pre->type == GGUF_STR) {
    snprintf(pre_buf, 128, "%.*s", (int)(pre->len < 127 ? pre->len : 127), pre->s);
    v->pre = pre_buf;
  }
  CLOQ_CALL(get_id(g, "tokenizer.ggml.bos_token_id", &v->bos_id));
  CLOQ_CALL(get_id(g, "tokenizer.ggml.eos_token_id", &v->eos_id));
  CLOQ_CALL(get_id(g, "tokenizer.ggml.unknown_token_id", &v->unk_id));
  CLOQ_CALL(get_id(g, "tokenizer.ggml.padding_token_id", &v->pad_id));
  CLOQ_CALL(get_flag(g, "tokenizer.ggml.add_bos_token", v->kind == CLOQ_TOK_SPM, &v->add_bos));
  CLOQ_CALL(get_flag(g, "tokenizer.ggml.add_space_prefix", v->kind == CLOQ_TOK_SPM,
                     &v->add_space_prefix));
  return CLOQ_OK;
}

int cloq_gguf_tok(const cloq_gguf *g, int64_t vocab_size, cloq_tok **out) {
  *out = NULL;
  char **tokens = NULL, **merges = NULL;
  float *scores = NULL;
  int32_t *types = NULL;
  cloq_tok_vocab v;
  char pre[128];
  int rc = gguf_vocab(g, &tokens, &merges, &scores, &types, pre, &v);
  v.name = g->name;
  if (rc == CLOQ_OK && vocab_size > 0 && v.n_tokens > vocab_size)
    rc = CLOQ_FAIL("%s: the tokenizer has %lld tokens, more than the model's vocab_size %lld",
                   g->name, (long long)v.n_tokens, (long long)vocab_size);
  if (rc == CLOQ_OK) rc = cloq_tok_from_vocab(&v, out);
  free_strs(tokens);
  free_strs(merges);
  free(scores);
  free(types);
  return rc;
}

int cloq_gguf_tok_load(const char *path, int64_t vocab_size, cloq_tok **out) {
  *out = NULL;
  cloq_gguf *g = NULL;
  CLOQ_CALL(cloq_gguf_open(path, &g));
  int rc = cloq_gguf_tok(g, vocab_size, out);
  cloq_gguf_close(&g);
  return rc;
}
