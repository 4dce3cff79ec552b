/* test_store: io/cloq_store.c's validation of module contents (validate_module), through the store
 * API on a small two-block model, at 2, 3, 4 and 8 bits:
 *   - a store written with valid values at every boundary (codes and zero points 0 and 2^bits - 1,
 *     the smallest and largest positive float scales, objective 0) reads back bitwise;
 *   - cloq_store_block_write refuses each planted invalid value (a code beyond the bits; a scale
 *     that is 0, negative, NaN or infinite; a zero point that is negative, beyond 2^bits - 1, not
 *     an integer or NaN; a non-finite lora_A or lora_B entry; a non-finite objective or
 *     objective_zero) with an error naming block, module, value and position, and writes nothing
 *     (the same module is then written validly);
 *   - cloq_store_read_module refuses the same kinds of values planted into a finished store's
 *     block file with HDF5 (scales, zero points, lora_B, objectives; codes and lora_A on read are
 *     covered end to end by tests/e2e/test_store.py through eval and export);
 *   - in a run's work folder, a resume drops a block file holding an invalid scale (warning,
 *     computed again), and cloq_store_read_done (a resumed sequential run's replay) refuses one.
 * A single-process MPI program (a singleton MPI_Init: the store's collective steps are plain MPI).
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <mpi.h>

#include "cloq_err.h"
#include "cloq_linalg.h"
#include "cloq_modules.h"
#include "cloq_store.h"

enum { NBLOCKS = 2, GROUP = 8, RANK = 2 };

/* ---- helpers --------------------------------------------------------------------------------- */

#define CHECK_OK(call)                                                                             \
  do {                                                                                             \
    cloq_err_clear();                                                                              \
    if ((call) != 0) fail_msg("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, cloq_err_msg()); \
  } while (0)

/* What the current check plants (printed with a failure). */
static char plant_ctx[640];

/* A call that must fail with a message containing every one of the NULL-terminated needles. */
static void expect_fail(int rc, const char *call, int line, ...) {
  if (rc == 0)
    fail_msg("line %d: %s succeeded (planted: %s); expected a failure", line, call, plant_ctx);
  const char *msg = cloq_err_msg();
  va_list ap;
  va_start(ap, line);
  for (const char *w = va_arg(ap, const char *); w; w = va_arg(ap, const char *))
    if (!strstr(msg, w)) {
      va_end(ap);
      fail_msg("line %d: %s (planted: %s) failed with \"%s\"; expected a message containing "
               "\"%s\"", line, call, plant_ctx, msg, w);
    }
  va_end(ap);
  cloq_err_clear();
}
#define EXPECT_FAIL(call, ...)                                                                     \
  do {                                                                                             \
    cloq_err_clear();                                                                              \
    expect_fail((call), #call, __LINE__, __VA_ARGS__, (const char *)NULL);                         \
  } while (0)

static cloq_config small_config(void) {
  cloq_config c;
  memset(&c, 0, sizeof c);
  c.dim = 16, c.hidden_dim = 24, c.n_layers = NBLOCKS, c.n_heads = 2, c.n_kv_heads = 1;
  c.head_dim = 8, c.vocab_size = 32, c.max_pos = 64, c.norm_eps = 1e-5, c.rope_theta = 1e4;
  c.bos_id = 1;
  return c;
}

static cloq_store_meta small_meta(int bits) {
  cloq_store_meta m;
  memset(&m, 0, sizeof m);
  snprintf(m.model, sizeof m.model, "test-model");
  snprintf(m.calib, sizeof m.calib, "test-calib");
  snprintf(m.calib_format, sizeof m.calib_format, "tokens");
  snprintf(m.init, sizeof m.init, "cloq");
  snprintf(m.quantizer, sizeof m.quantizer, "rtn");
  snprintf(m.propagate, sizeof m.propagate, "full");
  m.bits = bits, m.group_size = GROUP, m.rank = RANK, m.damp = 0.01, m.seed = 3;
  m.nsamples = 4, m.seqlen = 16, m.calib_tokens = 64, m.nranks = 1, m.gptq_block = 128;
  m.magr_alpha = 0.001, m.magr_iters = 200, m.loftq_iters = 1;
  return m;
}

/* Valid contents for module m of block b that reach every boundary: codes 0..2^bits - 1 (both
 * ends), zero points 0 and 2^bits - 1, scales from FLT_TRUE_MIN to FLT_MAX, objective 0. */
static void fill_valid(cloq_qmodule *q, int bits, int64_t b, int m) {
  const int maxq = (1 << bits) - 1;
  const int64_t n = q->n_out * q->n_in, ng = q->n_out * q->n_groups;
  for (int64_t i = 0; i < n; i++) q->codes[i] = (uint8_t)((i * 7 + b * 3 + m) % (maxq + 1));
  q->codes[0] = 0;
  q->codes[n - 1] = (uint8_t)maxq;
  for (int64_t i = 0; i < ng; i++) {
    q->scales[i] = 0.01f * (float)(1 + (i + m) % 13);
    q->zeros[i] = (float)((i * 5 + b) % (maxq + 1));
  }
  q->scales[0] = FLT_TRUE_MIN;
  q->scales[ng - 1] = FLT_MAX;
  q->zeros[0] = 0.0f;
  q->zeros[ng - 1] = (float)maxq;
  for (int64_t i = 0; i < q->rank * q->n_in; i++) q->A[i] = 0.125f * (float)((i % 9) - 4);
  for (int64_t i = 0; i < q->n_out * q->rank; i++) q->B[i] = -0.5f + 0.03125f * (float)(i % 17);
  q->objective = m == 0 ? 0.0 : 1.5 + b + m;
  q->objective_zero = 3.0 + b + m;
}

static int same_module(const cloq_qmodule *a, const cloq_qmodule *b) {
  const size_t n = (size_t)(a->n_out * a->n_in), ng = (size_t)(a->n_out * a->n_groups);
  return !memcmp(a->codes, b->codes, n) && !memcmp(a->scales, b->scales, ng * sizeof(float)) &&
         !memcmp(a->zeros, b->zeros, ng * sizeof(float)) &&
         !memcmp(a->A, b->A, (size_t)(a->rank * a->n_in) * sizeof(float)) &&
         !memcmp(a->B, b->B, (size_t)(a->n_out * a->rank) * sizeof(float)) &&
         a->objective == b->objective && a->objective_zero == b->objective_zero;
}

typedef struct {
  char dir[256];
  char path[300]; /* dir/s.h5 */
} fixture;

static int setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  if (!fx) return -1;
  const char *base = getenv("TMPDIR");
  snprintf(fx->dir, sizeof fx->dir, "%s/cloq-store-test-XXXXXX", base && base[0] ? base : "/tmp");
  if (!mkdtemp(fx->dir)) return -1;
  snprintf(fx->path, sizeof fx->path, "%s/s.h5", fx->dir);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture *fx = *state;
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
  int rc = system(cmd);
  free(fx);
  return rc == 0 ? 0 : -1;
}

/* A complete store at `bits` in path, every module filled by fill_valid. */
static void write_store(const char *path, int bits) {
  const cloq_config cfg = small_config();
  const cloq_store_meta meta = small_meta(bits);
  cloq_store *s = NULL;
  int64_t ndone = -1;
  CHECK_OK(cloq_store_begin(MPI_COMM_WORLD, path, 1, &cfg, &meta, &s, &ndone));
  assert_int_equal(ndone, 0);
  for (int64_t b = 0; b < NBLOCKS; b++) {
    cloq_store_block *bw = NULL;
    CHECK_OK(cloq_store_block_begin(s, b, &bw));
    for (int m = 0; m < CLOQ_NMOD; m++) {
      cloq_qmodule q;
      CHECK_OK(cloq_qmodule_alloc(&cfg, b, m, GROUP, RANK, &q));
      fill_valid(&q, bits, b, m);
      CHECK_OK(cloq_store_block_write(bw, m, &q));
      cloq_qmodule_free(&q);
    }
    CHECK_OK(cloq_store_block_commit(&bw));
  }
  CHECK_OK(cloq_store_finish(&s));
}

/* Sets element `index` of float dataset `dset` in HDF5 file `file` to v; returns the old value. */
static float poke_f32(const char *file, const char *dset, int64_t index, float v) {
  hid_t f = H5Fopen(file, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) fail_msg("cannot open %s read-write", file);
  hid_t ds = H5Dopen2(f, dset, H5P_DEFAULT);
  if (ds < 0) fail_msg("%s: no dataset %s", file, dset);
  hid_t sp = H5Dget_space(ds);
  const hssize_t n = H5Sget_simple_extent_npoints(sp);
  H5Sclose(sp);
  assert_true(index < n);
  float *buf = calloc((size_t)n, sizeof *buf);
  assert_non_null(buf);
  assert_true(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
  const float old = buf[index];
  buf[index] = v;
  assert_true(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
  free(buf);
  H5Dclose(ds);
  assert_true(H5Fclose(f) >= 0);
  return old;
}

/* Sets the double attribute `name` of group `group` in `file` to v; returns the old value. */
static double poke_attr(const char *file, const char *group, const char *name, double v) {
  hid_t f = H5Fopen(file, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) fail_msg("cannot open %s read-write", file);
  hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
  if (g < 0) fail_msg("%s: no group %s", file, group);
  hid_t a = H5Aopen(g, name, H5P_DEFAULT);
  if (a < 0) fail_msg("%s: %s has no attribute %s", file, group, name);
  double old;
  assert_true(H5Aread(a, H5T_NATIVE_DOUBLE, &old) >= 0);
  assert_true(H5Awrite(a, H5T_NATIVE_DOUBLE, &v) >= 0);
  H5Aclose(a);
  H5Gclose(g);
  assert_true(H5Fclose(f) >= 0);
  return old;
}

/* ---- a valid store round trip ---------------------------------------------------------------- */

static void test_valid_round_trip(void **state) {
  fixture *fx = *state;
  const cloq_config cfg = small_config();
  const int bits_list[] = {2, 3, 4, 8};
  for (size_t k = 0; k < sizeof bits_list / sizeof bits_list[0]; k++) {
    const int bits = bits_list[k];
    write_store(fx->path, bits);
    cloq_store *s = NULL;
    cloq_store_meta meta;
    CHECK_OK(cloq_store_open(fx->path, &cfg, &meta, &s));
    assert_int_equal(meta.bits, bits);
    for (int64_t b = 0; b < NBLOCKS; b++)
      for (int m = 0; m < CLOQ_NMOD; m++) {
        cloq_qmodule want, got;
        CHECK_OK(cloq_qmodule_alloc(&cfg, b, m, GROUP, RANK, &want));
        CHECK_OK(cloq_qmodule_alloc(&cfg, b, m, GROUP, RANK, &got));
        fill_valid(&want, bits, b, m);
        CHECK_OK(cloq_store_read_module(s, b, m, &got));
        if (!same_module(&want, &got))
          fail_msg("%d bits, block %lld %s: read back differs from what was written", bits,
                   (long long)b, cloq_module_name[m]);
        double obj, obj0;
        CHECK_OK(cloq_store_read_objective(s, b, m, &obj, &obj0));
        if (obj != want.objective || obj0 != want.objective_zero)
          fail_msg("%d bits, block %lld %s: objectives %g, %g; expected %g, %g", bits,
                   (long long)b, cloq_module_name[m], obj, obj0, want.objective,
                   want.objective_zero);
        cloq_qmodule_free(&want);
        cloq_qmodule_free(&got);
      }
    cloq_store_close(&s);
  }
}

/* ---- writing refuses invalid values ---------------------------------------------------------- */

typedef enum { P_CODE, P_SCALE, P_ZERO, P_A, P_B, P_OBJ, P_OBJ0 } plant_kind;

typedef struct {
  plant_kind kind;
  int64_t index; /* element of the array (row-major) */
  double value;  /* codes: the integer value */
  const char *words[3];
} plant;

static void apply(cloq_qmodule *q, const plant *p) {
  switch (p->kind) {
  case P_CODE: q->codes[p->index] = (uint8_t)p->value; break;
  case P_SCALE: q->scales[p->index] = (float)p->value; break;
  case P_ZERO: q->zeros[p->index] = (float)p->value; break;
  case P_A: q->A[p->index] = (float)p->value; break;
  case P_B: q->B[p->index] = (float)p->value; break;
  case P_OBJ: q->objective = p->value; break;
  case P_OBJ0: q->objective_zero = p->value; break;
  }
}

/* Every plant refused by cloq_store_block_write at `bits` (module m of block 1), and after each
 * the valid module is still accepted: a refusal writes nothing. */
static void write_refusals(const char *path, int bits, const plant *plants, size_t np, int m) {
  const cloq_config cfg = small_config();
  const cloq_store_meta meta = small_meta(bits);
  cloq_store *s = NULL;
  CHECK_OK(cloq_store_begin(MPI_COMM_WORLD, path, 1, &cfg, &meta, &s, NULL));
  cloq_store_block *bw = NULL;
  CHECK_OK(cloq_store_block_begin(s, 1, &bw));
  cloq_qmodule q;
  CHECK_OK(cloq_qmodule_alloc(&cfg, 1, m, GROUP, RANK, &q));
  char where[64];
  snprintf(where, sizeof where, "block 1 %s", cloq_module_name[m]);
  for (size_t i = 0; i < np; i++) {
    fill_valid(&q, bits, 1, m);
    apply(&q, &plants[i]);
    snprintf(plant_ctx, sizeof plant_ctx, "%d bits, %s, expecting \"%s\"", bits, where,
             plants[i].words[0]);
    EXPECT_FAIL(cloq_store_block_write(bw, m, &q), "refusing to write", where, plants[i].words[0],
                plants[i].words[1] ? plants[i].words[1] : "", plants[i].words[2] ? plants[i].words[2] : "");
  }
  fill_valid(&q, bits, 1, m);
  CHECK_OK(cloq_store_block_write(bw, m, &q)); /* nothing half-written by the refusals */
  cloq_qmodule_free(&q);
  cloq_store_block_abandon(&bw);
  cloq_store_abandon(&s);
}

static void test_write_refuses_invalid(void **state) {
  fixture *fx = *state;
  /* mlp.up_proj: (24, 16), 2 groups per row, lora_A (2, 16), lora_B (24, 2); 3 bits */
  const plant p3[] = {
      {P_CODE, 1 * 16 + 2, 8, {"code 8 at (1, 2)", "exceeds 3 bits", NULL}},
      {P_CODE, 5, 255, {"code 255 at (0, 5)", "exceeds 3 bits", NULL}},
      {P_SCALE, 2 * 2 + 1, 0.0, {"scale 0 at (2, 1)", "not finite and positive", NULL}},
      {P_SCALE, 3, -0.5, {"scale -0.5 at (1, 1)", "not finite and positive", NULL}},
      {P_SCALE, 4, -FLT_TRUE_MIN, {"scale -1.4013e-45", "not finite and positive", NULL}},
      {P_SCALE, 6, NAN, {"scale nan at (3, 0)", "not finite and positive", NULL}},
      {P_SCALE, 7, INFINITY, {"scale inf at (3, 1)", "not finite and positive", NULL}},
      {P_ZERO, 8, -1.0, {"zero point -1 at (4, 0)", "not an integer in [0, 7]", NULL}},
      {P_ZERO, 9, 8.0, {"zero point 8 at (4, 1)", "not an integer in [0, 7]", NULL}},
      {P_ZERO, 10, 2.5, {"zero point 2.5 at (5, 0)", "not an integer in [0, 7]", NULL}},
      {P_ZERO, 11, 6.9999995, {"zero point 7 at (5, 1)", "not an integer", NULL}}, /* %g rounds */
      {P_ZERO, 12, NAN, {"zero point nan at (6, 0)", "not an integer", NULL}},
      {P_A, 17, NAN, {"lora_A entry 17 is nan", NULL, NULL}},
      {P_A, 31, -INFINITY, {"lora_A entry 31 is -inf", NULL, NULL}},
      {P_B, 0, INFINITY, {"lora_B entry 0 is inf", NULL, NULL}},
      {P_B, 47, NAN, {"lora_B entry 47 is nan", NULL, NULL}},
      {P_OBJ, 0, NAN, {"objective nan", "not finite", NULL}},
      {P_OBJ, 0, INFINITY, {"objective inf", "not finite", NULL}},
      {P_OBJ0, 0, -INFINITY, {"objective_zero -inf", "not finite", NULL}},
      {P_OBJ0, 0, NAN, {"objective_zero nan", "not finite", NULL}},
  };
  write_refusals(fx->path, 3, p3, sizeof p3 / sizeof p3[0], CLOQ_M_UP);
  /* the code and zero-point range follows the bits */
  const plant p2[] = {{P_CODE, 3, 4, {"code 4 at (0, 3)", "exceeds 2 bits", NULL}},
                      {P_ZERO, 0, 4.0, {"zero point 4 at (0, 0)", "[0, 3]", NULL}}};
  write_refusals(fx->path, 2, p2, 2, CLOQ_M_DOWN);
  const plant p4[] = {{P_CODE, 3, 16, {"code 16 at (0, 3)", "exceeds 4 bits", NULL}},
                      {P_ZERO, 0, 16.0, {"zero point 16 at (0, 0)", "[0, 15]", NULL}}};
  write_refusals(fx->path, 4, p4, 2, CLOQ_M_Q);
  const plant p8[] = {{P_ZERO, 0, 256.0, {"zero point 256 at (0, 0)", "[0, 255]", NULL}},
                      {P_ZERO, 1, -0.5, {"zero point -0.5 at (0, 1)", "[0, 255]", NULL}}};
  write_refusals(fx->path, 8, p8, 2, CLOQ_M_K);
}

/* ---- reading refuses invalid values ---------------------------------------------------------- */

typedef struct {
  const char *dset; /* dataset under the module group, or NULL for an attribute */
  const char *attr;
  int64_t index;
  double value;
  const char *words[2];
} file_plant;

static void test_read_refuses_invalid(void **state) {
  fixture *fx = *state;
  const cloq_config cfg = small_config();
  write_store(fx->path, 3);
  char block1[400];
  snprintf(block1, sizeof block1, "%s.d/block_00001.h5", fx->path);
  /* self_attn.o_proj: (16, 16), 2 groups per row, lora_B (16, 2) */
  const file_plant plants[] = {
      {"scales", NULL, 5, NAN, {"scale nan at (2, 1)", "not finite and positive"}},
      {"scales", NULL, 0, 0.0, {"scale 0 at (0, 0)", "not finite and positive"}},
      {"scales", NULL, 31, -2.0, {"scale -2 at (15, 1)", "not finite and positive"}},
      {"scales", NULL, 8, INFINITY, {"scale inf at (4, 0)", "not finite and positive"}},
      {"zeros", NULL, 3, 1.25, {"zero point 1.25 at (1, 1)", "not an integer in [0, 7]"}},
      {"zeros", NULL, 4, -3.0, {"zero point -3 at (2, 0)", "not an integer in [0, 7]"}},
      {"zeros", NULL, 6, 8.0, {"zero point 8 at (3, 0)", "not an integer in [0, 7]"}},
      {"lora_B", NULL, 9, INFINITY, {"lora_B entry 9 is inf", ""}},
      {NULL, "objective", 0, NAN, {"objective nan", "not finite"}},
      {NULL, "objective_zero", 0, -INFINITY, {"objective_zero -inf", "not finite"}},
  };
  const int m = CLOQ_M_O;
  for (size_t i = 0; i < sizeof plants / sizeof plants[0]; i++) {
    const file_plant *p = &plants[i];
    char dset[128];
    snprintf(dset, sizeof dset, "%s/%s", cloq_module_name[m], p->dset ? p->dset : "");
    snprintf(plant_ctx, sizeof plant_ctx, "%s in %s, expecting \"%s\"", p->dset ? p->dset : p->attr,
             block1, p->words[0]);
    double old;
    if (p->dset) old = poke_f32(block1, dset, p->index, (float)p->value);
    else old = poke_attr(block1, cloq_module_name[m], p->attr, p->value);
    cloq_store *s = NULL;
    CHECK_OK(cloq_store_open(fx->path, &cfg, NULL, &s)); /* opening reads no module values */
    cloq_qmodule q;
    CHECK_OK(cloq_qmodule_alloc(&cfg, 1, m, GROUP, RANK, &q));
    EXPECT_FAIL(cloq_store_read_module(s, 1, m, &q), fx->path, "block 1 self_attn.o_proj",
                p->words[0], p->words[1]);
    cloq_qmodule_free(&q);
    /* another module of the block, and the same module of the other block, still read */
    CHECK_OK(cloq_qmodule_alloc(&cfg, 1, CLOQ_M_V, GROUP, RANK, &q));
    CHECK_OK(cloq_store_read_module(s, 1, CLOQ_M_V, &q));
    cloq_qmodule_free(&q);
    CHECK_OK(cloq_qmodule_alloc(&cfg, 0, m, GROUP, RANK, &q));
    CHECK_OK(cloq_store_read_module(s, 0, m, &q));
    cloq_qmodule_free(&q);
    cloq_store_close(&s);
    if (p->dset) poke_f32(block1, dset, p->index, (float)old);
    else poke_attr(block1, cloq_module_name[m], p->attr, old);
  }
  /* restored: the store reads again */
  cloq_store *s = NULL;
  CHECK_OK(cloq_store_open(fx->path, &cfg, NULL, &s));
  cloq_qmodule q;
  CHECK_OK(cloq_qmodule_alloc(&cfg, 1, m, GROUP, RANK, &q));
  CHECK_OK(cloq_store_read_module(s, 1, m, &q));
  cloq_qmodule_free(&q);
  cloq_store_close(&s);
}

/* ---- the work folder: resume's verification and read_done ------------------------------------ */

static void test_work_folder_refuses_invalid(void **state) {
  fixture *fx = *state;
  const cloq_config cfg = small_config();
  const cloq_store_meta meta = small_meta(3);
  cloq_store *s = NULL;
  CHECK_OK(cloq_store_begin(MPI_COMM_WORLD, fx->path, 1, &cfg, &meta, &s, NULL));
  for (int64_t b = 0; b < NBLOCKS; b++) { /* both blocks committed, the store not finished */
    cloq_store_block *bw = NULL;
    CHECK_OK(cloq_store_block_begin(s, b, &bw));
    for (int m = 0; m < CLOQ_NMOD; m++) {
      cloq_qmodule q;
      CHECK_OK(cloq_qmodule_alloc(&cfg, b, m, GROUP, RANK, &q));
      fill_valid(&q, 3, b, m);
      CHECK_OK(cloq_store_block_write(bw, m, &q));
      cloq_qmodule_free(&q);
    }
    CHECK_OK(cloq_store_block_commit(&bw));
  }
  cloq_store_abandon(&s); /* the run stops; its work folder stays */

  char b0[400], b1[400];
  snprintf(b0, sizeof b0, "%s.partial.d/block_00000.h5", fx->path);
  snprintf(b1, sizeof b1, "%s.partial.d/block_00001.h5", fx->path);
  poke_f32(b1, "mlp.gate_proj/scales", 7, NAN);
  /* resume: block 1 does not count as done and its file is removed (computed again) */
  int64_t ndone = -1;
  CHECK_OK(cloq_store_begin(MPI_COMM_WORLD, fx->path, 0, &cfg, &meta, &s, &ndone));
  if (ndone != 1) fail_msg("resume over a block with a NaN scale: %lld blocks done, expected 1",
                           (long long)ndone);
  assert_true(cloq_store_block_done(s, 0));
  assert_false(cloq_store_block_done(s, 1));
  if (access(b1, F_OK) == 0) fail_msg("%s (a NaN scale) was kept by the resume", b1);

  /* read_done: block 0 reads back as written, then refuses a planted zero point */
  cloq_qmodule want, got;
  CHECK_OK(cloq_qmodule_alloc(&cfg, 0, CLOQ_M_DOWN, GROUP, RANK, &want));
  CHECK_OK(cloq_qmodule_alloc(&cfg, 0, CLOQ_M_DOWN, GROUP, RANK, &got));
  fill_valid(&want, 3, 0, CLOQ_M_DOWN);
  CHECK_OK(cloq_store_read_done(s, 0, CLOQ_M_DOWN, &got));
  assert_true(same_module(&want, &got));
  poke_f32(b0, "mlp.down_proj/zeros", 4, 0.5f); /* down_proj: (16, 24), 3 groups per row */
  snprintf(plant_ctx, sizeof plant_ctx, "zero point 0.5 in %s", b0);
  EXPECT_FAIL(cloq_store_read_done(s, 0, CLOQ_M_DOWN, &got), b0, "block 0 mlp.down_proj",
              "zero point 0.5 at (1, 1)", "not an integer in [0, 7]");
  cloq_qmodule_free(&want);
  cloq_qmodule_free(&got);
  cloq_store_abandon(&s);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_valid_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_refuses_invalid, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_refuses_invalid, setup, teardown),
      cmocka_unit_test_setup_teardown(test_work_folder_refuses_invalid, setup, teardown),
  };
  const int rc = cmocka_run_group_tests_name("io_store", tests, NULL, NULL);
  MPI_Finalize();
  return rc;
}
