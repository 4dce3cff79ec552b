/* cloq_store_read: reading a store and checking what it holds (see cloq_store.h and
 * docs/store.md): the settings, block files (for a resume too), and each module's arrays, validated
 * the same way for eval, export and resume. Readers open every file read-only, each on its own.
 */
#include "cloq_store.h"
#include "store_internal.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloq_err.h"
#include "cloq_linalg.h"
#include "cloq_modules.h"

int store_attr_read(hid_t obj, const char *name, hid_t memtype, void *v) {
  CLOQ_CHECK(H5Aexists(obj, name) > 0, "store attribute %s is missing", name);
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  CLOQ_CHECK(a >= 0, "HDF5: opening attribute %s failed", name);
  herr_t e = H5Aread(a, memtype, v);
  H5Aclose(a);
  CLOQ_CHECK(e >= 0, "HDF5: reading attribute %s failed", name);
  return CLOQ_OK;
}

static int attr_read_str(hid_t obj, const char *name, char *buf, size_t cap) {
  CLOQ_CHECK(H5Aexists(obj, name) > 0, "store attribute %s is missing", name);
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  CLOQ_CHECK(a >= 0, "HDF5: opening attribute %s failed", name);
  hid_t ft = H5Aget_type(a);
  int ok = H5Tget_class(ft) == H5T_STRING && !H5Tis_variable_str(ft) && H5Tget_size(ft) <= cap;
  herr_t e = -1;
  if (ok) {
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5Tget_size(ft));
    e = H5Aread(a, mt, buf);
    H5Tclose(mt);
    buf[cap - 1] = 0;
  }
  H5Tclose(ft);
  H5Aclose(a);
  CLOQ_CHECK(ok && e >= 0, "store attribute %s is not a fixed-length string", name);
  return CLOQ_OK;
}

void cloq_qmodule_shape(const cloq_config *cfg, int m, int64_t group_size, int64_t rank,
                        cloq_qmodule *q) {
  memset(q, 0, sizeof *q);
  cloq_module_shape(cfg, m, &q->n_out, &q->n_in);
  q->n_groups = cloq_quant_ngroups(q->n_in, group_size);
  q->rank = rank;
  q->objective = q->objective_zero = NAN;
}

int cloq_qmodule_alloc(const cloq_config *cfg, int64_t b, int m, int64_t group_size,
                       int64_t rank, cloq_qmodule *q) {
  cloq_qmodule_shape(cfg, m, group_size, rank, q);
  int64_t n, ng, na, nb;
  CLOQ_CALL(cloq_mul64(q->n_out, q->n_in, &n));
  CLOQ_CALL(cloq_mul64(q->n_out, q->n_groups, &ng));
  CLOQ_CALL(cloq_mul64(q->rank, q->n_in, &na));
  CLOQ_CALL(cloq_mul64(q->n_out, q->rank, &nb));
  q->codes = cloq_calloc_checked(n, sizeof *q->codes);
  q->scales = cloq_calloc_checked(ng, sizeof *q->scales);
  q->zeros = cloq_calloc_checked(ng, sizeof *q->zeros);
  q->A = cloq_calloc_checked(na, sizeof *q->A);
  q->B = cloq_calloc_checked(nb, sizeof *q->B);
  if (!q->codes || !q->scales || !q->zeros || !q->A || !q->B) {
    cloq_qmodule_free(q);
    return CLOQ_FAIL("out of memory for block %lld %s", (long long)b, cloq_module_name[m]);
  }
  return CLOQ_OK;
}

int cloq_qmodule_alloc_budget(cloq_qmodule *q) {
  int64_t nb;
  CLOQ_CALL(cloq_mul64(q->n_out, q->rank, &nb));
  q->basis = cloq_calloc_checked(nb, sizeof *q->basis);
  q->captured = cloq_calloc_checked(q->rank, sizeof *q->captured);
  CLOQ_CHECK(q->basis && q->captured, "out of memory for the basis of a %lld x %lld module",
             (long long)q->n_out, (long long)q->n_in);
  return CLOQ_OK;
}

void cloq_qmodule_free(cloq_qmodule *q) {
  free(q->basis);
  free(q->captured);
  q->basis = NULL, q->captured = NULL;
  free(q->codes);
  free(q->scales);
  free(q->zeros);
  free(q->A);
  free(q->B);
  q->codes = NULL;
  q->scales = q->zeros = q->A = q->B = NULL;
}

void store_dataset_dims(const cloq_qmodule *q, int d, hsize_t dims[2]) {
  const int64_t rows[5] = {q->n_out, q->n_out, q->n_out, q->rank, q->n_out};
  const int64_t cols[5] = {q->n_in, q->n_groups, q->n_groups, q->n_in, q->rank};
  dims[0] = (hsize_t)rows[d];
  dims[1] = (hsize_t)cols[d];
}


void store_dims_of(const cloq_config *cfg, int64_t v[6]) {
  v[0] = cfg->n_layers, v[1] = cfg->dim, v[2] = cfg->hidden_dim, v[3] = cfg->n_heads;
  v[4] = cfg->n_kv_heads, v[5] = cfg->head_dim;
}

int store_read_meta(hid_t f, const char *what, cloq_store_meta *m, int64_t dims[6]) {
  char fmt[64];
  int64_t ver, v;
  CLOQ_CALL(attr_read_str(f, "format", fmt, sizeof fmt));
  CLOQ_CHECK(strcmp(fmt, CLOQ_STORE_FORMAT) == 0, "%s is not a cloq store (format %s)", what, fmt);
  CLOQ_CALL(store_attr_read(f, "format_version", H5T_NATIVE_INT64, &ver));
  CLOQ_CHECK(ver == CLOQ_STORE_FORMAT_VERSION, "%s has store format version %lld, expected %d%s",
             what, (long long)ver, CLOQ_STORE_FORMAT_VERSION,
             ver == 3 ? " (format 3 split the CLoQ factors unevenly: run cloq init again, with "
                        "--force over an old store or its .partial.d)" : "");
  memset(m, 0, sizeof *m);
  CLOQ_CALL(attr_read_str(f, "model", m->model, sizeof m->model));
  CLOQ_CALL(attr_read_str(f, "calib_source", m->calib, sizeof m->calib));
  CLOQ_CALL(attr_read_str(f, "calib_format", m->calib_format, sizeof m->calib_format));
  if (H5Aexists(f, "calib_field") > 0)
    CLOQ_CALL(attr_read_str(f, "calib_field", m->calib_field, sizeof m->calib_field));
  CLOQ_CALL(attr_read_str(f, "init", m->init, sizeof m->init));
  CLOQ_CALL(attr_read_str(f, "quantizer", m->quantizer, sizeof m->quantizer));
  CLOQ_CALL(attr_read_str(f, "propagate", m->propagate, sizeof m->propagate));
  CLOQ_CALL(store_attr_read(f, "bits", H5T_NATIVE_INT64, &v));
  m->bits = (int)v;
  CLOQ_CALL(store_attr_read(f, "group_size", H5T_NATIVE_INT64, &m->group_size));
  CLOQ_CALL(store_attr_read(f, "rank", H5T_NATIVE_INT64, &m->rank));
  CLOQ_CALL(store_attr_read(f, "damp", H5T_NATIVE_DOUBLE, &m->damp));
  CLOQ_CALL(store_attr_read(f, "seed", H5T_NATIVE_INT64, &m->seed));
  CLOQ_CALL(store_attr_read(f, "nsamples", H5T_NATIVE_INT64, &m->nsamples));
  CLOQ_CALL(store_attr_read(f, "seqlen", H5T_NATIVE_INT64, &m->seqlen));
  CLOQ_CALL(store_attr_read(f, "calib_tokens", H5T_NATIVE_INT64, &m->calib_tokens));
  CLOQ_CALL(store_attr_read(f, "nranks", H5T_NATIVE_INT64, &v));
  m->nranks = (int)v;
  CLOQ_CALL(store_attr_read(f, "dist_threshold", H5T_NATIVE_INT64, &m->dist_threshold));
  CLOQ_CALL(store_attr_read(f, "act_order", H5T_NATIVE_INT64, &m->act_order));
  CLOQ_CALL(store_attr_read(f, "gptq_block", H5T_NATIVE_INT64, &m->gptq_block));
  CLOQ_CALL(store_attr_read(f, "magr", H5T_NATIVE_INT64, &m->magr));
  CLOQ_CALL(store_attr_read(f, "magr_alpha", H5T_NATIVE_DOUBLE, &m->magr_alpha));
  CLOQ_CALL(store_attr_read(f, "magr_iters", H5T_NATIVE_INT64, &m->magr_iters));
  CLOQ_CALL(store_attr_read(f, "loftq_iters", H5T_NATIVE_INT64, &m->loftq_iters));
  const char *const opt_names[] = {"cloq_iters", "comq_iters", "comq_init", "quailora_iters",
                                   "rank_budget", "rank_weight_raw"};
  int64_t *const opt[] = {&m->cloq_iters, &m->comq_iters, &m->comq_init, &m->quailora_iters,
                          &m->rank_budget, &m->rank_weight_raw};
  for (int i = 0; i < 6; i++)
    if (H5Aexists(f, opt_names[i]) > 0)
      CLOQ_CALL(store_attr_read(f, opt_names[i], H5T_NATIVE_INT64, opt[i]));
  if (H5Aexists(f, "model_digest") > 0)
    CLOQ_CALL(attr_read_str(f, "model_digest", m->model_digest, sizeof m->model_digest));
  if (H5Aexists(f, "calib_digest") > 0)
    CLOQ_CALL(attr_read_str(f, "calib_digest", m->calib_digest, sizeof m->calib_digest));
  for (int i = 0; i < 6; i++) CLOQ_CALL(store_attr_read(f, dim_names[i], H5T_NATIVE_INT64, &dims[i]));
  return CLOQ_OK;
}

int store_meta_diff(const cloq_store_meta *a, const int64_t ad[6], const cloq_store_meta *b,
                    const int64_t bd[6], char *buf, size_t cap) {
#define DIFF_S(f, name)                                                                            \
  if (strcmp(a->f, b->f)) return snprintf(buf, cap, "%s %s, this run %s", name, a->f, b->f), 1
#define DIFF_I(f, name)                                                                            \
  if (a->f != b->f)                                                                                \
    return snprintf(buf, cap, "%s %lld, this run %lld", name, (long long)a->f, (long long)b->f), 1
  DIFF_S(model, "--model");
  DIFF_S(calib, "--calib");
  DIFF_S(calib_format, "--calib-format");
  DIFF_S(calib_field, "--calib-field");
  DIFF_S(quantizer, "--quantizer");
  DIFF_S(init, "--init");
  DIFF_S(propagate, "--propagate");
  DIFF_I(bits, "--bits");
  DIFF_I(group_size, "--group-size");
  DIFF_I(rank, "--rank");
  DIFF_I(seed, "--seed");
  DIFF_I(nsamples, "--nsamples");
  DIFF_I(seqlen, "--seqlen");
  DIFF_I(calib_tokens, "calibration tokens");
  if (a->damp != b->damp) return snprintf(buf, cap, "--damp %g, this run %g", a->damp, b->damp), 1;
  DIFF_I(act_order, "--act-order");
  DIFF_I(gptq_block, "--gptq-block");
  DIFF_I(magr, "--magr");
  if (a->magr_alpha != b->magr_alpha)
    return snprintf(buf, cap, "--magr-alpha %g, this run %g", a->magr_alpha, b->magr_alpha), 1;
  DIFF_I(magr_iters, "--magr-iters");
  DIFF_I(loftq_iters, "--loftq-iters");
  DIFF_I(cloq_iters, "--cloq-iters");
  DIFF_I(comq_iters, "--comq-iters");
  DIFF_I(comq_init, "--comq-init (1: gptq)");
  DIFF_I(quailora_iters, "--quailora-iters");
  DIFF_I(rank_budget, "--rank-budget");
  DIFF_I(rank_weight_raw, "--rank-weight (1: raw)");
  if (strcmp(a->model_digest, b->model_digest))
    return snprintf(buf, cap, "other model content (digest %s, this run %s): the files of --model "
                    "changed", a->model_digest[0] ? a->model_digest : "none",
                    b->model_digest), 1;
  if (strcmp(a->calib_digest, b->calib_digest))
    return snprintf(buf, cap, "other calibration data (digest %s, this run %s): the file changed",
                    a->calib_digest[0] ? a->calib_digest : "none", b->calib_digest), 1;
  for (int i = 0; i < 6; i++)
    if (ad[i] != bd[i])
      return snprintf(buf, cap, "model %s %lld, this model %lld", dim_names[i], (long long)ad[i],
                      (long long)bd[i]),
             1;
  return 0;
#undef DIFF_S
#undef DIFF_I
}

void store_block_file(const char *dir, int64_t b, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/block_%05lld.h5", dir, (long long)b);
}

/* Checks an opened block file f: the settings it records are the store's, its block attribute is
 * b, it says complete, and every module's datasets and objectives are there, shaped for the
 * store, and (full) hold valid numbers (store_validate_module: every byte is read). `what`
 * names the file. */
static int verify_block(hid_t f, const char *what, const cloq_store *s, int64_t b, int full) {
  cloq_store_meta m;
  int64_t dims[6], want[6], blk = -1, complete = 0;
  CLOQ_CALL(store_read_meta(f, what, &m, dims));
  store_dims_of(&s->cfg, want);
  char why[2400];
  CLOQ_CHECK(!store_meta_diff(&m, dims, &s->meta, want, why, sizeof why),
             "%s belongs to another run (%s)", what, why);
  CLOQ_CALL(store_attr_read(f, "block", H5T_NATIVE_INT64, &blk));
  CLOQ_CHECK(blk == b, "%s holds block %lld, not block %lld", what, (long long)blk, (long long)b);
  CLOQ_CALL(store_attr_read(f, "complete", H5T_NATIVE_INT64, &complete));
  CLOQ_CHECK(complete == 1, "%s is not complete", what);
  for (int mod = 0; mod < CLOQ_NMOD; mod++) {
    cloq_qmodule q;
    if (full) CLOQ_CALL(cloq_qmodule_alloc(&s->cfg, b, mod, s->meta.group_size, s->meta.rank, &q));
    else cloq_qmodule_shape(&s->cfg, mod, s->meta.group_size, s->meta.rank, &q);
    int rc = store_read_module_at(f, "/", what, s, b, mod, &q, full);
    if (full) cloq_qmodule_free(&q);
    CLOQ_CALL(rc);
  }
  return CLOQ_OK;
}

int store_check_block_file(const cloq_store *s, const char *dir, int64_t b, int *exists,
                           int full) {
  char p[1300];
  store_block_file(dir, b, p, sizeof p);
  *exists = access(p, F_OK) == 0;
  CLOQ_CHECK(*exists, "block %lld was never written (%s is missing)", (long long)b, p);
  CLOQ_CHECK(H5Fis_hdf5(p) > 0, "%s is damaged (not a readable HDF5 file)", p);
  hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
  CLOQ_CHECK(f >= 0, "%s is damaged (HDF5 cannot open it)", p);
  int rc = verify_block(f, p, s, b, full);
  H5Fclose(f);
  return rc;
}

int cloq_store_block_done(const cloq_store *s, int64_t b) {
  int exists = 0;
  const int had_error = cloq_err_msg()[0] != '\0';
  const int ok = store_check_block_file(s, s->work, b, &exists, 0) == CLOQ_OK;
  if (!ok && !had_error) cloq_err_clear(); /* a question, not a failure */
  return ok;
}

int store_check_shapes(const cloq_store *s, int64_t b, int m, const cloq_qmodule *q,
                       cloq_qmodule *want) {
  CLOQ_CHECK(b >= 0 && b < s->cfg.n_layers && m >= 0 && m < CLOQ_NMOD, "bad block/module");
  cloq_qmodule_shape(&s->cfg, m, s->meta.group_size, s->meta.rank, want);
  CLOQ_CHECK(q->n_out == want->n_out && q->n_in == want->n_in &&
                 q->n_groups == want->n_groups && q->rank == want->rank,
             "block %lld %s: buffers shaped for another group size or rank than the store's",
             (long long)b, cloq_module_name[m]);
  return CLOQ_OK;
}

int store_validate_module(const char *what, int bits, int64_t b, int m, const cloq_qmodule *q) {
  const char *mn = cloq_module_name[m];
  const int64_t n = q->n_out * q->n_in, ng = q->n_out * q->n_groups;
  const int maxq = (1 << bits) - 1;
  for (int64_t i = 0; i < n; i++)
    CLOQ_CHECK(q->codes[i] <= maxq, "%s: block %lld %s: code %d at (%lld, %lld) exceeds %d bits",
               what, (long long)b, mn, q->codes[i], (long long)(i / q->n_in),
               (long long)(i % q->n_in), bits);
  for (int64_t i = 0; i < ng; i++) {
    CLOQ_CHECK(isfinite(q->scales[i]) && q->scales[i] > 0.0f,
               "%s: block %lld %s: scale %g at (%lld, %lld) is not finite and positive", what,
               (long long)b, mn, (double)q->scales[i], (long long)(i / q->n_groups),
               (long long)(i % q->n_groups));
    CLOQ_CHECK(q->zeros[i] >= 0.0f && q->zeros[i] <= (float)maxq && q->zeros[i] == rintf(q->zeros[i]),
               "%s: block %lld %s: zero point %g at (%lld, %lld) is not an integer in [0, %d]",
               what, (long long)b, mn, (double)q->zeros[i], (long long)(i / q->n_groups),
               (long long)(i % q->n_groups), maxq);
  }
  const float *fac[2] = {q->A, q->B};
  const int64_t nf[2] = {q->rank * q->n_in, q->n_out * q->rank};
  for (int k = 0; k < 2; k++)
    for (int64_t i = 0; i < nf[k]; i++)
      CLOQ_CHECK(isfinite(fac[k][i]), "%s: block %lld %s: lora_%c entry %lld is %g", what,
                 (long long)b, mn, k ? 'B' : 'A', (long long)i, (double)fac[k][i]);
  CLOQ_CHECK(isfinite(q->objective) && isfinite(q->objective_zero),
             "%s: block %lld %s: objective %g, objective_zero %g (not finite)", what, (long long)b,
             mn, q->objective, q->objective_zero);
  return CLOQ_OK;
}

double store_objective_ratio(double obj, double obj0) { return obj0 > 0.0 ? obj / obj0 : 1.0; }

int store_read_module_at(hid_t f, const char *prefix, const char *what, const cloq_store *s,
                         int64_t b, int m, cloq_qmodule *q, int read) {
  cloq_qmodule want;
  CLOQ_CALL(store_check_shapes(s, b, m, q, &want));
  void *const bufs[5] = {q->codes, q->scales, q->zeros, q->A, q->B};
  for (int d = 0; d < 5; d++) {
    char p[256];
    snprintf(p, sizeof p, "%s%s/%s", prefix, cloq_module_name[m], ds_name[d]);
    hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
    CLOQ_CHECK(ds >= 0, "store %s: dataset %s is missing", what, p);
    hsize_t dims[2], have[2] = {0, 0};
    store_dataset_dims(&want, d, dims);
    hid_t sp = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd == 2) H5Sget_simple_extent_dims(sp, have, NULL);
    H5Sclose(sp);
    if (nd != 2 || have[0] != dims[0] || have[1] != dims[1]) {
      H5Dclose(ds);
      return CLOQ_FAIL("store %s: dataset %s has shape (%llu, %llu), expected (%llu, %llu)",
                       what, p, (unsigned long long)have[0], (unsigned long long)have[1],
                       (unsigned long long)dims[0], (unsigned long long)dims[1]);
    }
    herr_t e = !read ? 0
                     : H5Dread(ds, d == 0 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                               H5P_DEFAULT, bufs[d]);
    H5Dclose(ds);
    CLOQ_CHECK(e >= 0, "store %s: reading %s failed", what, p);
  }
  char p[256];
  snprintf(p, sizeof p, "%s%s", prefix, cloq_module_name[m]);
  hid_t g = H5Gopen2(f, p, H5P_DEFAULT);
  CLOQ_CHECK(g >= 0, "store %s: group %s is missing", what, p);
  int rc = store_attr_read(g, "objective", H5T_NATIVE_DOUBLE, &q->objective);
  if (rc == CLOQ_OK) rc = store_attr_read(g, "objective_zero", H5T_NATIVE_DOUBLE, &q->objective_zero);
  q->rank_alloc = 0;
  if (rc == CLOQ_OK && H5Aexists(g, "rank") > 0) {
    rc = store_attr_read(g, "rank", H5T_NATIVE_INT64, &q->rank_alloc);
    if (rc == CLOQ_OK && (q->rank_alloc < 1 || q->rank_alloc > q->rank))
      rc = CLOQ_FAIL("store %s: %s: rank %lld outside [1, %lld]", what, p,
                     (long long)q->rank_alloc, (long long)q->rank);
  }
  H5Gclose(g);
  CLOQ_CALL(rc);
  return read ? store_validate_module(what, s->meta.bits, b, m, q) : CLOQ_OK;
}

int cloq_store_read_done(cloq_store *s, int64_t b, int m, cloq_qmodule *q) {
  char p[1300];
  store_block_file(s->work, b, p, sizeof p);
  hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
  CLOQ_CHECK(f >= 0, "cannot open %s", p);
  int rc = store_read_module_at(f, "/", p, s, b, m, q, 1);
  H5Fclose(f);
  return rc;
}

/* ---- reading ------------------------------------------------------------------------------- */

int cloq_store_open(const char *path, const cloq_config *cfg, cloq_store_meta *meta,
                    cloq_store **out) {
  *out = NULL;
  CLOQ_CHECK(access(path, R_OK) == 0, "store %s does not exist or is not readable", path);
  CLOQ_CHECK(H5Fis_hdf5(path) > 0, "%s is not an HDF5 file", path);
  cloq_store *s;
  CLOQ_ALLOC(s, 1, "store");
  s->cfg = *cfg;
  s->lock = -1;
  snprintf(s->path, sizeof s->path, "%s", path);
  s->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (s->file < 0) {
    free(s);
    return CLOQ_FAIL("cannot open store %s", path);
  }
  *out = s;
  int64_t dims[6], want[6];
  CLOQ_CALL(store_read_meta(s->file, path, &s->meta, dims));
  store_dims_of(cfg, want);
  for (int i = 0; i < 6; i++)
    CLOQ_CHECK(dims[i] == want[i], "store %s was made for a model with %s %lld, this model has %lld",
               path, dim_names[i], (long long)dims[i], (long long)want[i]);
  /* The block files are found by the store's present name, PATH.d/, not through the top file's
   * external links (which name the folder the store was written as): a store renamed together
   * with its folder reads as before, and messages name what is there now. */
  CLOQ_CHECK(H5Lexists(s->file, "layers", H5P_DEFAULT) > 0, "store %s has no /layers", path);
  snprintf(s->done_dir, sizeof s->done_dir, "%s.d", path);
  struct stat st;
  CLOQ_CHECK(stat(s->done_dir, &st) == 0 && S_ISDIR(st.st_mode),
             "store %s: its folder %s is missing (a store is PATH and PATH.d: move or rename both)",
             path, s->done_dir);
  CLOQ_ALLOC(s->blk, cfg->n_layers, "store block files");
  for (int64_t b = 0; b < cfg->n_layers; b++) s->blk[b] = -1;
  for (int64_t b = 0; b < cfg->n_layers; b++) {
    char p[1300];
    store_block_file(s->done_dir, b, p, sizeof p);
    CLOQ_CHECK(access(p, F_OK) == 0, "store %s: block %lld is missing (%s does not exist)", path,
               (long long)b, p);
    if (H5Fis_hdf5(p) > 0) s->blk[b] = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    CLOQ_CHECK(s->blk[b] >= 0, "store %s: block %lld is damaged (%s is not a readable HDF5 file)",
               path, (long long)b, p);
    if (verify_block(s->blk[b], p, s, b, 0) != CLOQ_OK) {
      char why[1200];
      snprintf(why, sizeof why, "%s", cloq_err_msg());
      cloq_err_clear();
      return CLOQ_FAIL("store %s: block %lld: %s", path, (long long)b, why);
    }
  }
  if (meta) *meta = s->meta;
  return CLOQ_OK;
}

int cloq_store_read_objective(cloq_store *s, int64_t b, int m, double *obj, double *obj_zero) {
  char p[256];
  snprintf(p, sizeof p, "/%s", cloq_module_name[m]);
  hid_t g = H5Gopen2(s->blk[b], p, H5P_DEFAULT);
  CLOQ_CHECK(g >= 0, "store %s: group %s is missing", s->path, p);
  int rc = store_attr_read(g, "objective", H5T_NATIVE_DOUBLE, obj);
  if (rc == CLOQ_OK) rc = store_attr_read(g, "objective_zero", H5T_NATIVE_DOUBLE, obj_zero);
  H5Gclose(g);
  return rc;
}

int cloq_store_read_rank(cloq_store *s, int64_t b, int m, int64_t *rank) {
  char p[256];
  snprintf(p, sizeof p, "/%s", cloq_module_name[m]);
  hid_t g = H5Gopen2(s->blk[b], p, H5P_DEFAULT);
  CLOQ_CHECK(g >= 0, "store %s: group %s is missing", s->path, p);
  *rank = s->meta.rank;
  int rc = H5Aexists(g, "rank") > 0 ? store_attr_read(g, "rank", H5T_NATIVE_INT64, rank) : CLOQ_OK;
  H5Gclose(g);
  CLOQ_CALL(rc);
  CLOQ_CHECK(*rank >= 1 && *rank <= s->meta.rank, "store %s: block %lld %s: rank %lld outside "
             "[1, %lld]", s->path, (long long)b, cloq_module_name[m], (long long)*rank,
             (long long)s->meta.rank);
  return CLOQ_OK;
}

int cloq_store_read_module(cloq_store *s, int64_t b, int m, cloq_qmodule *q) {
  char what[1300];
  store_block_file(s->done_dir, b, what, sizeof what);
  return store_read_module_at(s->blk[b], "/", what, s, b, m, q, 1);
}

