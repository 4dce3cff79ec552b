/* test_safetensors.c: the checkpoint reader on the real stories260K-hf model, the writer (round
 * trips in all three dtypes, sharded checkpoints), every corruption the reader must refuse with a
 * one-line message, and the F16/BF16 conversions (known values, ties to even, and against the
 * compiler's own _Float16 where it has one). */
#include "test_io.h"
#include "cloq_ckpt.h"
#include "cloq_half.h"
#include "cloq_data.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* reading F32 must give the file's bytes, and F16/BF16 their exact float values */
#define ST_VALUE_TOL 0.0f

static const char *const layer_names[9] = {
    "input_layernorm.weight",      "mlp.down_proj.weight",        "mlp.gate_proj.weight",
    "mlp.up_proj.weight",          "post_attention_layernorm.weight", "self_attn.k_proj.weight",
    "self_attn.o_proj.weight",     "self_attn.q_proj.weight",     "self_attn.v_proj.weight"};
static const int layer_ndim[9] = {1, 2, 2, 2, 1, 2, 2, 2, 2};
static const int64_t layer_shapes[9][2] = {{64, 0},  {64, 172}, {172, 64}, {172, 64}, {64, 0},
                                           {32, 64}, {64, 64},  {64, 64},  {32, 64}};

#define N_STORIES_TENSORS (5 * 9 + 2)

typedef struct {
  char name[96];
  int ndim;
  int64_t shape[4];
} expected_tensor;

static void stories_expected(expected_tensor *e) {
  int k = 0;
  snprintf(e[k].name, sizeof e[k].name, "model.embed_tokens.weight");
  e[k].ndim = 2;
  e[k].shape[0] = 512;
  e[k++].shape[1] = 64;
  snprintf(e[k].name, sizeof e[k].name, "model.norm.weight");
  e[k].ndim = 1;
  e[k++].shape[0] = 64;
  for (int l = 0; l < 5; l++)
    for (int j = 0; j < 9; j++, k++) {
      snprintf(e[k].name, sizeof e[k].name, "model.layers.%d.%s", l, layer_names[j]);
      e[k].ndim = layer_ndim[j];
      e[k].shape[0] = layer_shapes[j][0];
      e[k].shape[1] = layer_shapes[j][1];
    }
}

static void test_st_stories_names(void **state) {
  (void)state;
  char *dir = asset_path("stories260K-hf");
  cloq_ckpt *st = NULL;
  CHECK_OK(cloq_ckpt_open(dir, &st));
  expected_tensor e[N_STORIES_TENSORS];
  stories_expected(e);
  for (int i = 0; i < N_STORIES_TENSORS; i++) {
    cloq_tensor t;
    if (!cloq_ckpt_has(st, e[i].name)) {
      print_error("tensor %s: expected present, got absent\n", e[i].name);
      fail();
    }
    CHECK_OK(cloq_ckpt_find(st, e[i].name, &t));
    assert_string_equal(t.name, e[i].name);
    assert_int_equal(t.dtype, CLOQ_DT_F32);
    assert_int_equal(t.ndim, e[i].ndim);
    int64_t numel = 1;
    for (int d = 0; d < e[i].ndim; d++) {
      assert_int_equal(t.shape[d], e[i].shape[d]);
      numel *= e[i].shape[d];
    }
    assert_int_equal(t.numel, numel);
    assert_non_null(strstr(t.file, "model.safetensors"));
  }
  cloq_tensor t;
  CHECK_OK(cloq_ckpt_find(st, "model.layers.0.self_attn.k_proj.weight", &t));
  assert_int_equal(t.shape[0], 32);
  assert_int_equal(t.shape[1], 64);
  assert_int_equal(cloq_ckpt_has(st, "lm_head.weight"), 0); /* tied */
  assert_int_equal(cloq_ckpt_has(st, "__metadata__"), 0);
  EXPECT_FAIL(cloq_ckpt_find(st, "lm_head.weight", &t), "tensor lm_head.weight not found in");
  cloq_ckpt_close(&st);
  assert_null(st);
  cloq_ckpt_close(&st);
  cloq_ckpt_close(NULL);
  free(dir);
}

/* read_f32 of an F32 tensor must give exactly the bytes at the header's offsets (parsed here
 * independently of the reader). */
static void test_st_read_matches_file(void **state) {
  (void)state;
  char *path = asset_path("stories260K-hf/model.safetensors");
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  unsigned char len8[8];
  assert_int_equal(fread(len8, 1, 8, f), 8);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)len8[i] << (8 * i);
  char *hdr = malloc(hlen);
  assert_non_null(hdr);
  assert_int_equal(fread(hdr, 1, hlen, f), hlen);
  json_error_t err;
  json_t *root = json_loadb(hdr, hlen, 0, &err);
  assert_non_null(root);
  const char *name = "model.layers.0.self_attn.q_proj.weight";
  json_t *offs = json_object_get(json_object_get(root, name), "data_offsets");
  long begin = (long)json_integer_value(json_array_get(offs, 0));
  long end = (long)json_integer_value(json_array_get(offs, 1));
  assert_int_equal(end - begin, 64 * 64 * 4);
  float *want = malloc(64 * 64 * sizeof *want);
  assert_non_null(want);
  assert_int_equal(fseek(f, 8 + (long)hlen + begin, SEEK_SET), 0);
  assert_int_equal(fread(want, 4, 64 * 64, f), 64 * 64);
  fclose(f);

  char *dir = asset_path("stories260K-hf");
  cloq_ckpt *st;
  CHECK_OK(cloq_ckpt_open(dir, &st));
  float *got = malloc(64 * 64 * sizeof *got);
  assert_non_null(got);
  const int64_t shape[2] = {64, 64};
  CHECK_OK(cloq_ckpt_read_f32(st, name, 2, shape, got));
  for (int i = 0; i < 64 * 64; i++)
    if (memcmp(&want[i], &got[i], 4)) {
      print_error("%s[%d]: expected %.9g, got %.9g\n", name, i, (double)want[i], (double)got[i]);
      fail();
    }
  cloq_ckpt_close(&st);
  json_decref(root);
  free(hdr);
  free(want);
  free(got);
  free(path);
  free(dir);
}

/* ---- writer round trips ------------------------------------------------------------------------ */

static uint32_t rng_state = 12345u;
static uint32_t rng(void) { /* xorshift32: reproducible */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}
static float rng_float(void) { return ((float)(rng() >> 8) / 16777216.0f - 0.5f) * 8.0f; }

static void check_floats(const char *what, const float *want, const float *got, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!(fabsf(want[i] - got[i]) <= ST_VALUE_TOL)) {
      print_error("%s[%lld]: expected %.9g, got %.9g\n", what, (long long)i, (double)want[i],
                  (double)got[i]);
      fail();
    }
}

static void test_st_write_roundtrip(void **state) {
  (void)state;
  enum { N = 6 };
  const char *names[N] = {"a.f32", "b.f16", "c.bf16", "scalar", "empty", "d.4d"};
  const cloq_dtype dt[N] = {CLOQ_DT_F32, CLOQ_DT_F16, CLOQ_DT_BF16, CLOQ_DT_F32, CLOQ_DT_F16,
                            CLOQ_DT_BF16};
  const int ndims[N] = {2, 1, 3, 0, 2, 4};
  const int64_t shapes[N][4] = {{3, 5}, {7}, {2, 3, 4}, {0}, {0, 4}, {2, 1, 3, 2}};
  const int64_t numel[N] = {15, 7, 24, 1, 0, 12};
  float vals[N][32];
  uint16_t half[N][32];
  const void *data[N];
  for (int i = 0; i < N; i++) {
    for (int64_t k = 0; k < numel[i]; k++) {
      float v = rng_float();
      if (dt[i] == CLOQ_DT_F16) {
        half[i][k] = cloq_f32_to_f16(v);
        v = cloq_f16_to_f32(half[i][k]);
      } else if (dt[i] == CLOQ_DT_BF16) {
        half[i][k] = cloq_f32_to_bf16(v);
        v = cloq_bf16_to_f32(half[i][k]);
      }
      vals[i][k] = v;
    }
    data[i] = dt[i] == CLOQ_DT_F32 ? (const void *)vals[i] : (const void *)half[i];
  }
  char *dir = make_tmpdir();
  char *path = join_path(dir, "model.safetensors");
  CHECK_OK(cloq_st_write(path, N, names, dt, ndims, shapes, data));
  char *tmp = join_path(dir, "model.safetensors.tmp");
  assert_int_equal(access(tmp, F_OK), -1); /* renamed into place */
  free(tmp);

  /* the header is padded with spaces to a multiple of 8 bytes */
  char *buf;
  size_t len;
  CHECK_OK(cloq_read_file(path, &buf, &len));
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)(unsigned char)buf[i] << (8 * i);
  assert_int_equal(hlen % 8, 0);
  assert_int_equal(buf[8], '{');
  size_t last = 8 + (size_t)hlen - 1;
  while (buf[last] == ' ') last--;
  assert_int_equal(buf[last], '}');
  assert_true(8 + (size_t)hlen - 1 - last < 8);
  free(buf);

  cloq_ckpt *st;
  CHECK_OK(cloq_ckpt_open(dir, &st));
  for (int i = 0; i < N; i++) {
    cloq_tensor t;
    CHECK_OK(cloq_ckpt_find(st, names[i], &t));
    assert_int_equal(t.dtype, dt[i]);
    assert_int_equal(t.ndim, ndims[i]);
    for (int d = 0; d < ndims[i]; d++) assert_int_equal(t.shape[d], shapes[i][d]);
    assert_int_equal(t.numel, numel[i]);
    size_t bytes = (size_t)numel[i] * (dt[i] == CLOQ_DT_F32 ? 4 : 2);
    if (bytes) assert_memory_equal(t.data, data[i], bytes);
    float got[32];
    CHECK_OK(cloq_ckpt_read_f32(st, names[i], ndims[i], shapes[i], got));
    check_floats(names[i], vals[i], got, numel[i]);
  }
  cloq_ckpt_close(&st);

  /* the writer refuses what it could not write correctly */
  const char *dup[2] = {"x", "x"};
  const cloq_dtype dt2[2] = {CLOQ_DT_F32, CLOQ_DT_F32};
  const int nd2[2] = {1, 1};
  const int64_t sh2[2][4] = {{1}, {1}};
  const float one = 1.0f;
  const void *d2[2] = {&one, &one};
  EXPECT_FAIL(cloq_st_write(path, 2, dup, dt2, nd2, sh2, d2), "repeated");
  const int64_t neg[2][4] = {{-1}, {1}};
  const char *nm2[2] = {"x", "y"};
  EXPECT_FAIL(cloq_st_write(path, 2, nm2, dt2, nd2, neg, d2), "negative");
  rm_dir(dir);
  free(path);
  free(dir);
}

/* Two shards + index.json holding the stories260K tensors read the same as the single file. */
static void test_st_sharded(void **state) {
  (void)state;
  char *src = asset_path("stories260K-hf");
  cloq_ckpt *st;
  CHECK_OK(cloq_ckpt_open(src, &st));
  expected_tensor e[N_STORIES_TENSORS];
  stories_expected(e);
  const char *names[N_STORIES_TENSORS];
  cloq_dtype dt[N_STORIES_TENSORS];
  int ndims[N_STORIES_TENSORS];
  int64_t shapes[N_STORIES_TENSORS][4];
  const void *data[N_STORIES_TENSORS];
  float *vals[N_STORIES_TENSORS];
  int64_t numel[N_STORIES_TENSORS];
  for (int i = 0; i < N_STORIES_TENSORS; i++) {
    cloq_tensor t;
    CHECK_OK(cloq_ckpt_find(st, e[i].name, &t));
    names[i] = e[i].name;
    dt[i] = CLOQ_DT_F32;
    ndims[i] = t.ndim;
    memcpy(shapes[i], t.shape, sizeof shapes[i]);
    numel[i] = t.numel;
    vals[i] = malloc((size_t)t.numel * sizeof(float));
    assert_non_null(vals[i]);
    CHECK_OK(cloq_ckpt_read_f32(st, e[i].name, t.ndim, t.shape, vals[i]));
    data[i] = vals[i];
  }
  cloq_ckpt_close(&st);

  char *dir = make_tmpdir();
  const int split = 20;
  char *p1 = join_path(dir, "model-00001-of-00002.safetensors");
  char *p2 = join_path(dir, "model-00002-of-00002.safetensors");
  /* the contract takes const int64_t (*)[4]: C17 wants the cast from a non-const array */
  const int64_t(*cshapes)[4] = (const int64_t(*)[4])shapes;
  CHECK_OK(cloq_st_write(p1, split, names, dt, ndims, cshapes, data));
  CHECK_OK(cloq_st_write(p2, N_STORIES_TENSORS - split, names + split, dt + split, ndims + split,
                         cshapes + split, data + split));
  json_t *wm = json_object();
  for (int i = 0; i < N_STORIES_TENSORS; i++)
    json_object_set_new(wm, names[i], json_string(i < split ? "model-00001-of-00002.safetensors"
                                                            : "model-00002-of-00002.safetensors"));
  json_t *idx = json_pack("{s:{s:i}, s:o}", "metadata", "total_size", 1040128, "weight_map", wm);
  char *ip = join_path(dir, "model.safetensors.index.json");
  assert_int_equal(json_dump_file(idx, ip, JSON_INDENT(2)), 0);

  CHECK_OK(cloq_ckpt_open(dir, &st));
  float *got = malloc(512 * 64 * sizeof *got);
  assert_non_null(got);
  for (int i = 0; i < N_STORIES_TENSORS; i++) {
    cloq_tensor t;
    CHECK_OK(cloq_ckpt_find(st, names[i], &t));
    assert_non_null(strstr(t.file, i < split ? "model-00001" : "model-00002"));
    CHECK_OK(cloq_ckpt_read_f32(st, names[i], ndims[i], shapes[i], got));
    check_floats(names[i], vals[i], got, numel[i]);
  }
  cloq_ckpt_close(&st);

  /* a name in two shards, and an index pointing at the wrong shard, are errors */
  char *p3 = join_path(dir, "extra.safetensors");
  CHECK_OK(cloq_st_write(p3, 1, names, dt, ndims, cshapes, data));
  json_object_set_new(wm, "model.embed_tokens.weight", json_string("extra.safetensors"));
  assert_int_equal(json_dump_file(idx, ip, JSON_INDENT(2)), 0);
  EXPECT_FAIL(cloq_ckpt_open(dir, &st), "is in two shards");
  assert_null(st);
  unlink(p3);
  json_object_set_new(wm, "model.embed_tokens.weight",
                      json_string("model-00002-of-00002.safetensors"));
  assert_int_equal(json_dump_file(idx, ip, JSON_INDENT(2)), 0);
  EXPECT_FAIL(cloq_ckpt_open(dir, &st), "mapped to model-00002-of-00002.safetensors");
  json_object_set_new(wm, "model.embed_tokens.weight", json_string("missing.safetensors"));
  assert_int_equal(json_dump_file(idx, ip, JSON_INDENT(2)), 0);
  EXPECT_FAIL(cloq_ckpt_open(dir, &st), "missing.safetensors: cannot open");
  write_bytes(ip, "{\"weight_map\": 3}", 17);
  EXPECT_FAIL(cloq_ckpt_open(dir, &st), "weight_map");

  json_decref(idx);
  rm_dir(dir);
  for (int i = 0; i < N_STORIES_TENSORS; i++) free(vals[i]);
  free(got);
  free(p1);
  free(p2);
  free(p3);
  free(ip);
  free(dir);
  free(src);
}

/* ---- corruption ---------------------------------------------------------------------------------- */

/* DIR/model.safetensors = u64 length of header, header, data. */
static void write_raw(const char *dir, const char *header, const void *data, size_t dlen) {
  size_t hl = strlen(header);
  unsigned char *buf = malloc(8 + hl + dlen + 1);
  assert_non_null(buf);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
  memcpy(buf + 8, header, hl);
  if (dlen) memcpy(buf + 8 + hl, data, dlen);
  char *p = join_path(dir, "model.safetensors");
  write_bytes(p, buf, 8 + hl + dlen);
  free(p);
  free(buf);
}

static void test_st_truncated(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  char *path = join_path(dir, "model.safetensors");
  const char *names[2] = {"w", "v"};
  const cloq_dtype dt[2] = {CLOQ_DT_F32, CLOQ_DT_BF16};
  const int nd[2] = {2, 1};
  const int64_t sh[2][4] = {{4, 4}, {8}};
  float w[16] = {0};
  uint16_t v[8] = {0};
  const void *data[2] = {w, v};
  CHECK_OK(cloq_st_write(path, 2, names, dt, nd, sh, data));
  char *full;
  size_t flen;
  CHECK_OK(cloq_read_file(path, &full, &flen));
  size_t hlen = (size_t)(unsigned char)full[0] | (size_t)(unsigned char)full[1] << 8;
  const size_t cuts[] = {0, 1, 7, 8, 9, 8 + hlen / 2, 8 + hlen, 8 + hlen + 10, flen - 1};
  cloq_ckpt *st;
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    write_bytes(path, full, cuts[i]);
    printf("    truncated to %zu of %zu bytes\n", cuts[i], flen);
    EXPECT_FAIL(cloq_ckpt_open(dir, &st), "truncated");
    assert_null(st);
  }
  write_bytes(path, full, flen);
  CHECK_OK(cloq_ckpt_open(dir, &st));
  cloq_ckpt_close(&st);

  /* a header length beyond the file, and beyond the 100 MB limit */
  uint64_t big = flen;
  for (int i = 0; i < 8; i++) full[i] = (char)(big >> (8 * i));
  write_bytes(path, full, flen);
  EXPECT_FAIL(cloq_ckpt_open(dir, &st), "exceeds the file");
  big = (uint64_t)1 << 40;
  for (int i = 0; i < 8; i++) full[i] = (char)(big >> (8 * i));
  write_bytes(path, full, flen);
  EXPECT_FAIL(cloq_ckpt_open(dir, &st), "100 MB");
  free(full);
  free(path);
  rm_dir(dir);
  free(dir);
}

static void test_st_corrupt_headers(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  const float d[4] = {1, 2, 3, 4};
  static const struct {
    const char *header, *word;
  } cases[] = {
      {"{not json at all", "header is not valid JSON"},
      {"", "header is not valid JSON"},
      {"[1, 2]", "header JSON is not an object"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
       " \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
       "not valid JSON"}, /* duplicate name in one header */
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [8], \"data_offsets\": [0, 32]}}",
       "tensor a: data_offsets [0, 32] exceed the file's data area (16 bytes)"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [12, 20]}}",
       "exceed the file's data area"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
       "tensor a: data_offsets [0, 8] span 8 bytes but shape (3) of F32 needs 12 bytes"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 4]}}",
       "not an interval"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
       " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
       "overlap"},
      {"{\"a\": {\"dtype\": \"I8\", \"shape\": [16], \"data_offsets\": [0, 16]}}",
       "unsupported dtype I8 for tensor a (supported: F32, F16, BF16)"},
      {"{\"a\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [0, 16]}}",
       "unsupported dtype F64 for tensor a"},
      {"{\"a\": {\"dtype\": 32, \"shape\": [2], \"data_offsets\": [0, 8]}}", "dtype"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2, -1], \"data_offsets\": [0, 8]}}",
       "shape entry 1 is not a non-negative integer"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1, 2], \"data_offsets\": [0, 8]}}",
       "5 dimensions"},
      {"{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", "shape"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", "data_offsets"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, "
       "8]}}",
       "overflows"},
      {"{\"a\": [1]}", "not a JSON object"},
  };
  cloq_ckpt *st;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_raw(dir, cases[i].header, d, sizeof d);
    EXPECT_FAIL(cloq_ckpt_open(dir, &st), cases[i].word);
    assert_null(st);
  }
  char *p = join_path(dir, "model.safetensors");
  unlink(p);
  free(p);
  EXPECT_FAIL(cloq_ckpt_open(dir, &st), "neither model.safetensors nor");
  rm_dir(dir);
  free(dir);
}

/* Errors found when reading: NaN/inf values, a shape other than the caller's, a missing name;
 * and a valid file whose data area is not 4-byte aligned. */
static void test_st_read_errors(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  float d[6] = {1, 2, 3, 4, 5, 6};
  d[4] = nanf("");
  uint16_t h[2] = {0x3c00, 0x7c00}; /* 1.0, +inf in F16 */
  unsigned char data[6 * 4 + 4];
  memcpy(data, d, sizeof d);
  memcpy(data + sizeof d, h, sizeof h);
  /* header length 151 (odd): the data area starts unaligned */
  char header[256];
  snprintf(header, sizeof header,
           "{\"__metadata__\": {\"format\": \"pt\"}, \"m\": {\"dtype\": \"F32\", \"shape\": [2, 3], "
           "\"data_offsets\": [0, 24]}, \"h\": {\"dtype\": \"F16\", \"shape\": [2], "
           "\"data_offsets\": [24, 28]}}");
  assert_true(strlen(header) % 4 != 0);
  write_raw(dir, header, data, sizeof data);
  cloq_ckpt *st;
  CHECK_OK(cloq_ckpt_open(dir, &st));
  float out[6];
  const int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s6[1] = {6}, s2[1] = {2};
  EXPECT_FAIL(cloq_ckpt_read_f32(st, "m", 2, s23, out), "tensor m: non-finite value nan at flat index 4");
  for (int i = 0; i < 4; i++) assert_true(out[i] == (float)(i + 1)); /* unaligned F32 read */
  EXPECT_FAIL(cloq_ckpt_read_f32(st, "h", 1, s2, out), "tensor h: non-finite value inf at flat index 1");
  assert_true(out[0] == 1.0f);
  EXPECT_FAIL(cloq_ckpt_read_f32(st, "m", 2, s32, out),
              "tensor m: shape mismatch: expected (3, 2), found (2, 3)");
  EXPECT_FAIL(cloq_ckpt_read_f32(st, "m", 1, s6, out), "shape mismatch: expected (6), found (2, 3)");
  EXPECT_FAIL(cloq_ckpt_read_f32(st, "nope", 1, s6, out), "tensor nope not found in");
  cloq_ckpt_close(&st);
  rm_dir(dir);
  free(dir);
}

/* A header that names no tensor (only __metadata__) opens as an empty model, and an index whose
 * shard holds none fails naming the tensor (found by fuzz_safetensors: both sorted a NULL array,
 * which UBSan reports). */
static void test_st_no_tensors(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  write_raw(dir, "{\"__metadata__\": {\"format\": \"pt\"}}", NULL, 0);
  cloq_ckpt *st;
  CHECK_OK(cloq_ckpt_open(dir, &st));
  assert_false(cloq_ckpt_has(st, "a"));
  cloq_tensor t;
  EXPECT_FAIL(cloq_ckpt_find(st, "a", &t), "tensor a not found");
  cloq_ckpt_close(&st);
  char *p = join_path(dir, "model.safetensors"), *q = join_path(dir, "s1.safetensors");
  assert_int_equal(rename(p, q), 0);
  free(p);
  free(q);
  p = join_path(dir, "model.safetensors.index.json");
  const char *index = "{\"weight_map\": {\"a\": \"s1.safetensors\"}}";
  write_bytes(p, index, strlen(index));
  free(p);
  EXPECT_FAIL(cloq_ckpt_open(dir, &st),
              "tensor a is mapped to s1.safetensors, which does not contain it");
  assert_null(st);
  rm_dir(dir);
  free(dir);
}

int run_safetensors_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_st_stories_names),   cmocka_unit_test(test_st_read_matches_file),
      cmocka_unit_test(test_st_write_roundtrip), cmocka_unit_test(test_st_sharded),
      cmocka_unit_test(test_st_truncated),       cmocka_unit_test(test_st_corrupt_headers),
      cmocka_unit_test(test_st_read_errors),     cmocka_unit_test(test_st_no_tensors),
  };
  return cmocka_run_group_tests_name("io/safetensors", tests, NULL, NULL);
}

/* ---- F16 / BF16 ------------------------------------------------------------------------------- */

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint32_t to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static void check_to_half(const char *fn, float x, uint16_t want, uint16_t got) {
  if (want != got) {
    print_error("%s(%.9g = 0x%08x): expected 0x%04x, got 0x%04x\n", fn, (double)x, to_bits(x),
                want, got);
    fail();
  }
}

static void check_from_half(const char *fn, uint16_t h, float want, float got) {
  if (to_bits(want) != to_bits(got)) {
    print_error("%s(0x%04x): expected %.9g, got %.9g\n", fn, h, (double)want, (double)got);
    fail();
  }
}

static void test_half_known_values(void **state) {
  (void)state;
  static const struct {
    uint16_t h;
    float f;
  } f16[] = {
      {0x3c00, 1.0f},         {0xc100, -2.5f},         {0x7bff, 65504.0f},
      {0x0001, 0x1p-24f},     {0x03ff, 0x3ffp-24f},     {0x0400, 0x1p-14f},
      {0x0000, 0.0f},         {0x8000, -0.0f},          {0x7c00, INFINITY},
      {0xfc00, -INFINITY},    {0x3555, 0x1.554p-2f},    {0xfbff, -65504.0f},
  };
  for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++) {
    check_from_half("cloq_f16_to_f32", f16[i].h, f16[i].f, cloq_f16_to_f32(f16[i].h));
    check_to_half("cloq_f32_to_f16", f16[i].f, f16[i].h, cloq_f32_to_f16(f16[i].f));
  }
  /* round to nearest, ties to even */
  static const struct {
    float f;
    uint16_t h;
  } f16r[] = {
      {1.0f + 0x1p-11f, 0x3c00},          /* tie, 1.0 is even */
      {1.0f + 3 * 0x1p-11f, 0x3c02},      /* tie, rounds up to even */
      {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01}, /* just above the tie */
      {65519.0f, 0x7bff},                 /* below the 65520 tie */
      {65520.0f, 0x7c00},                 /* tie between 65504 (odd) and 2^16: inf */
      {1e10f, 0x7c00},
      {0x1p-25f, 0x0000},                 /* tie between 0 and the smallest subnormal */
      {0x1.8p-25f, 0x0001},
      {0x3p-25f, 0x0002},                 /* tie between 1 and 2 units: 2 is even */
      {0x5p-25f, 0x0002},                 /* tie between 2 and 3 units: 2 */
      {0x1p-30f, 0x0000},
      {-0x1p-30f, 0x8000},
      {0x7ffp-25f, 0x0400},               /* rounds up from the largest subnormal to normal */
  };
  for (size_t i = 0; i < sizeof f16r / sizeof f16r[0]; i++)
    check_to_half("cloq_f32_to_f16", f16r[i].f, f16r[i].h, cloq_f32_to_f16(f16r[i].f));
  uint16_t hn = cloq_f32_to_f16(nanf(""));
  assert_true((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
  assert_true(isnan(cloq_f16_to_f32(0x7e00)));
  assert_true(isnan(cloq_f16_to_f32(0xfc01)));

  static const struct {
    uint16_t h;
    float f;
  } bf[] = {
      {0x3f80, 1.0f},       {0xc020, -2.5f},          {0x4780, 65536.0f},
      {0x0001, 0x1p-133f},  {0x0080, 0x1p-126f},      {0x7f80, INFINITY},
      {0xff80, -INFINITY},  {0x8000, -0.0f},          {0x477f, 65280.0f},
  };
  for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++) {
    check_from_half("cloq_bf16_to_f32", bf[i].h, bf[i].f, cloq_bf16_to_f32(bf[i].h));
    check_to_half("cloq_f32_to_bf16", bf[i].f, bf[i].h, cloq_f32_to_bf16(bf[i].f));
  }
  static const struct {
    uint32_t f;
    uint16_t h;
  } bfr[] = {
      {0x477fe000u, 0x4780}, /* 65504 rounds up to 65536 */
      {0x3f808000u, 0x3f80}, /* tie, even stays */
      {0x3f818000u, 0x3f82}, /* tie, odd goes up */
      {0x3f808001u, 0x3f81}, /* above the tie */
      {0x7f7fffffu, 0x7f80}, /* FLT_MAX overflows to inf */
      {0x00008000u, 0x0000}, /* subnormal tie to even zero */
      {0x00018000u, 0x0002},
  };
  for (size_t i = 0; i < sizeof bfr / sizeof bfr[0]; i++)
    check_to_half("cloq_f32_to_bf16", from_bits(bfr[i].f), bfr[i].h,
                  cloq_f32_to_bf16(from_bits(bfr[i].f)));
  uint16_t bn = cloq_f32_to_bf16(nanf(""));
  assert_true((bn & 0x7f80) == 0x7f80 && (bn & 0x7f) != 0);
  /* a NaN whose payload sits only in the low 16 bits must not become infinity */
  uint16_t bn2 = cloq_f32_to_bf16(from_bits(0x7f800001u));
  assert_true((bn2 & 0x7f80) == 0x7f80 && (bn2 & 0x7f) != 0);
  assert_true(isnan(cloq_bf16_to_f32(0x7fc0)));
}

/* Every F16 value survives f16 -> f32 -> f16; every BF16 value too. */
static void test_half_all_roundtrip(void **state) {
  (void)state;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = cloq_f16_to_f32((uint16_t)h);
    uint16_t back = cloq_f32_to_f16(f);
    if (isnan(f)) {
      assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0);
    } else if (back != h) {
      print_error("f16 0x%04x -> %.9g -> expected 0x%04x, got 0x%04x\n", h, (double)f, h, back);
      fail();
    }
    float g = cloq_bf16_to_f32((uint16_t)h);
    uint16_t bback = cloq_f32_to_bf16(g);
    if (!isnan(g) && bback != h) {
      print_error("bf16 0x%04x -> %.9g -> expected 0x%04x, got 0x%04x\n", h, (double)g, h, bback);
      fail();
    }
  }
}

/* Against the compiler's _Float16 conversion (IEEE round to nearest even) on random floats
 * concentrated around the half range, where it exists. */
static void test_half_vs_compiler(void **state) {
  (void)state;
#if defined(__FLT16_MAX__)
  __extension__ typedef _Float16 half_t; /* a GCC/Clang extension in C17 */
  int64_t n = 0;
  for (int i = 0; i < 2000000; i++) {
    uint32_t r = rng();
    /* exponents 2^-30 .. 2^17: subnormal, normal and overflowing halves */
    uint32_t e = 97 + (r % 48);
    float x = from_bits(((rng() & 1u) << 31) | (e << 23) | (rng() & 0x7fffffu));
    half_t c = (half_t)x;
    uint16_t want;
    memcpy(&want, &c, 2);
    check_to_half("cloq_f32_to_f16", x, want, cloq_f32_to_f16(x));
    n++;
  }
  printf("    %lld random floats agree with the compiler's _Float16\n", (long long)n);
#else
  skip();
#endif
}

int run_half_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_half_known_values),
      cmocka_unit_test(test_half_all_roundtrip),
      cmocka_unit_test(test_half_vs_compiler),
  };
  return cmocka_run_group_tests_name("io/half", tests, NULL, NULL);
}
