/* cloq_store: parallel HDF5 (MPI-IO driver). See cloq_store.h and docs/store.md.
 *
 * Which calls are collective matters here more than anywhere: H5Fcreate/H5Fopen/H5Fclose,
 * H5Gcreate, H5Dcreate, H5Acreate and H5Awrite are collective (same arguments on every rank);
 * H5Dwrite/H5Dread with the default transfer list are independent, which is what lets a block's
 * owner write alone.
 */
#include "cloq_store.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_err.h"
#include "cloq_linalg.h"
#include "cloq_modules.h"

#define CLOQ_H5(expr, what)                                                                        \
  do {                                                                                             \
    if ((expr) < 0) return CLOQ_FAIL("HDF5: %s failed", what);                                     \
  } while (0)

static const char *const ds_name[5] = {"codes", "scales", "zeros", "lora_A", "lora_B"};

struct cloq_store {
  MPI_Comm comm;
  hid_t file;
  int writable;
  cloq_config cfg;
  cloq_store_meta meta;
  char path[1100], partial[1120];
  hid_t status; /* /status dataset (int8, n_layers) */
};

static int attr_write(hid_t obj, const char *name, hid_t type, const void *v) {
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e = a < 0 ? -1 : H5Awrite(a, type, v);
  if (a >= 0) H5Aclose(a);
  H5Sclose(sp);
  CLOQ_CHECK(e >= 0, "HDF5: writing attribute %s failed", name);
  return CLOQ_OK;
}

static int attr_str(hid_t obj, const char *name, const char *v) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, strlen(v) + 1);
  H5Tset_strpad(t, H5T_STR_NULLTERM);
  int rc = attr_write(obj, name, t, v);
  H5Tclose(t);
  return rc;
}

static int attr_i64(hid_t obj, const char *name, int64_t v) {
  return attr_write(obj, name, H5T_NATIVE_INT64, &v);
}

static int attr_f64(hid_t obj, const char *name, double v) {
  return attr_write(obj, name, H5T_NATIVE_DOUBLE, &v);
}

static int attr_read(hid_t obj, const char *name, hid_t memtype, void *v) {
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

void cloq_qmodule_free(cloq_qmodule *q) {
  free(q->codes);
  free(q->scales);
  free(q->zeros);
  free(q->A);
  free(q->B);
  q->codes = NULL;
  q->scales = q->zeros = q->A = q->B = NULL;
}

/* Shape of dataset d (ds_name order) of a module. */
static void dataset_dims(const cloq_qmodule *q, int d, hsize_t dims[2]) {
  const int64_t rows[5] = {q->n_out, q->n_out, q->n_out, q->rank, q->n_out};
  const int64_t cols[5] = {q->n_in, q->n_groups, q->n_groups, q->n_in, q->rank};
  dims[0] = (hsize_t)rows[d];
  dims[1] = (hsize_t)cols[d];
}

static hid_t open_fapl(MPI_Comm comm) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  return fapl;
}

/* Root attributes: format, provenance, every setting. Collective. */
static int write_meta(hid_t f, const cloq_config *cfg, const cloq_store_meta *m) {
  CLOQ_CALL(attr_str(f, "format", CLOQ_STORE_FORMAT));
  CLOQ_CALL(attr_i64(f, "format_version", CLOQ_STORE_FORMAT_VERSION));
  CLOQ_CALL(attr_str(f, "tool_version", "cloq " CLOQ_VERSION));
  CLOQ_CALL(attr_str(f, "model", m->model));
  CLOQ_CALL(attr_str(f, "calib_source", m->calib));
  CLOQ_CALL(attr_str(f, "calib_format", m->calib_format));
  CLOQ_CALL(attr_i64(f, "calib_tokens", m->calib_tokens));
  CLOQ_CALL(attr_i64(f, "nsamples", m->nsamples));
  CLOQ_CALL(attr_i64(f, "seqlen", m->seqlen));
  CLOQ_CALL(attr_i64(f, "bits", m->bits));
  CLOQ_CALL(attr_i64(f, "group_size", m->group_size));
  CLOQ_CALL(attr_i64(f, "rank", m->rank));
  CLOQ_CALL(attr_str(f, "init", m->init));
  CLOQ_CALL(attr_str(f, "quantizer", m->quantizer));
  CLOQ_CALL(attr_f64(f, "damp", m->damp));
  CLOQ_CALL(attr_i64(f, "seed", m->seed));
  CLOQ_CALL(attr_i64(f, "nranks", m->nranks));
  CLOQ_CALL(attr_i64(f, "n_layers", cfg->n_layers));
  CLOQ_CALL(attr_i64(f, "hidden_size", cfg->dim));
  CLOQ_CALL(attr_i64(f, "intermediate_size", cfg->hidden_dim));
  CLOQ_CALL(attr_i64(f, "num_attention_heads", cfg->n_heads));
  CLOQ_CALL(attr_i64(f, "num_key_value_heads", cfg->n_kv_heads));
  CLOQ_CALL(attr_i64(f, "head_dim", cfg->head_dim));
  return CLOQ_OK;
}

int cloq_store_create(MPI_Comm comm, const char *path, int force, const cloq_config *cfg,
                      const cloq_store_meta *meta, cloq_store **out) {
  *out = NULL;
  CLOQ_CHECK(strlen(path) < 1024, "output path too long");
  /* Every rank sees the same file system answer, so all agree on refusing. */
  CLOQ_CHECK(force || access(path, F_OK) != 0,
             "output %s exists (use --force to overwrite it)", path);
  cloq_store *s;
  CLOQ_ALLOC(s, 1, "store");
  s->comm = comm;
  s->cfg = *cfg;
  s->meta = *meta;
  s->writable = 1;
  s->status = -1;
  snprintf(s->path, sizeof s->path, "%s", path);
  snprintf(s->partial, sizeof s->partial, "%s.partial", path);
  hid_t fapl = open_fapl(comm);
  s->file = H5Fcreate(s->partial, H5F_ACC_TRUNC, H5P_DEFAULT, fapl); /* collective */
  H5Pclose(fapl);
  if (s->file < 0) {
    CLOQ_FAIL("cannot create %s (is the folder writable?)", s->partial);
    free(s);
    return CLOQ_ERR;
  }
  *out = s;
  CLOQ_CALL(write_meta(s->file, cfg, meta));

  hsize_t nl = (hsize_t)cfg->n_layers;
  hid_t sp = H5Screate_simple(1, &nl, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  int8_t zero8 = 0;
  H5Pset_fill_value(dcpl, H5T_NATIVE_INT8, &zero8);
  H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
  H5Pset_fill_time(dcpl, H5D_FILL_TIME_ALLOC);
  s->status = H5Dcreate2(s->file, "status", H5T_NATIVE_INT8, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(sp);
  CLOQ_CHECK(s->status >= 0, "HDF5: creating /status failed");

  hid_t lg = H5Gcreate2(s->file, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  CLOQ_CHECK(lg >= 0, "HDF5: creating /layers failed");
  /* Raw data is always written in full by its owner: no fill pass over the file. */
  hid_t ddcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_fill_time(ddcpl, H5D_FILL_TIME_NEVER);
  int rc = CLOQ_OK;
  for (int64_t b = 0; b < cfg->n_layers && rc == CLOQ_OK; b++) {
    char name[64];
    snprintf(name, sizeof name, "%lld", (long long)b);
    hid_t bg = H5Gcreate2(lg, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (bg < 0) { rc = CLOQ_FAIL("HDF5: creating /layers/%s failed", name); break; }
    rc = attr_i64(bg, "complete", 0);
    for (int m = 0; m < CLOQ_NMOD && rc == CLOQ_OK; m++) {
      hid_t mg = H5Gcreate2(bg, cloq_module_name[m], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      if (mg < 0) { rc = CLOQ_FAIL("HDF5: creating group %s failed", cloq_module_name[m]); break; }
      cloq_qmodule shape;
      cloq_qmodule_shape(cfg, m, meta->group_size, meta->rank, &shape);
      for (int d = 0; d < 5 && rc == CLOQ_OK; d++) {
        hsize_t dims[2];
        dataset_dims(&shape, d, dims);
        hid_t dsp = H5Screate_simple(2, dims, NULL);
        hid_t ds = H5Dcreate2(mg, ds_name[d], d == 0 ? H5T_STD_U8LE : H5T_IEEE_F32LE, dsp,
                              H5P_DEFAULT, ddcpl, H5P_DEFAULT);
        if (ds < 0) rc = CLOQ_FAIL("HDF5: creating dataset %s failed", ds_name[d]);
        else H5Dclose(ds);
        H5Sclose(dsp);
      }
      H5Gclose(mg);
    }
    H5Gclose(bg);
  }
  H5Pclose(ddcpl);
  H5Gclose(lg);
  return rc;
}

static int module_path(char *buf, size_t cap, int64_t b, int m, int d) {
  int n = snprintf(buf, cap, "/layers/%lld/%s/%s", (long long)b, cloq_module_name[m], ds_name[d]);
  CLOQ_CHECK(n > 0 && (size_t)n < cap, "path too long");
  return CLOQ_OK;
}

static int rw_module(cloq_store *s, int write, int64_t b, int m, const cloq_qmodule *q) {
  CLOQ_CHECK(b >= 0 && b < s->cfg.n_layers && m >= 0 && m < CLOQ_NMOD, "bad block/module");
  cloq_qmodule want;
  cloq_qmodule_shape(&s->cfg, m, s->meta.group_size, s->meta.rank, &want);
  CLOQ_CHECK(q->n_out == want.n_out && q->n_in == want.n_in && q->n_groups == want.n_groups &&
                 q->rank == want.rank,
             "block %lld %s: buffers shaped for another group size or rank than the store's",
             (long long)b, cloq_module_name[m]);
  void *const bufs[5] = {q->codes, q->scales, q->zeros, q->A, q->B};
  for (int d = 0; d < 5; d++) {
    char p[256];
    CLOQ_CALL(module_path(p, sizeof p, b, m, d));
    hid_t ds = H5Dopen2(s->file, p, H5P_DEFAULT);
    CLOQ_CHECK(ds >= 0, "store: dataset %s is missing", p);
    hsize_t dims[2], have[2] = {0, 0};
    dataset_dims(&want, d, dims);
    hid_t sp = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd == 2) H5Sget_simple_extent_dims(sp, have, NULL);
    H5Sclose(sp);
    if (nd != 2 || have[0] != dims[0] || have[1] != dims[1]) {
      H5Dclose(ds);
      return CLOQ_FAIL("store: dataset %s has shape (%llu, %llu), expected (%llu, %llu)", p,
                       (unsigned long long)have[0], (unsigned long long)have[1],
                       (unsigned long long)dims[0], (unsigned long long)dims[1]);
    }
    hid_t mt = d == 0 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT;
    herr_t e = write ? H5Dwrite(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, bufs[d])
                     : H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, bufs[d]);
    H5Dclose(ds);
    CLOQ_CHECK(e >= 0, "HDF5: %s %s failed", write ? "writing" : "reading", p);
  }
  return CLOQ_OK;
}

int cloq_store_write_module(cloq_store *s, int64_t b, int m, const cloq_qmodule *q) {
  CLOQ_CHECK(s->writable, "store opened read-only");
  return rw_module(s, 1, b, m, q);
}

int cloq_store_read_module(cloq_store *s, int64_t b, int m, cloq_qmodule *q) {
  return rw_module(s, 0, b, m, q);
}

int cloq_store_mark_block(cloq_store *s, int64_t b) {
  hsize_t off = (hsize_t)b, one = 1;
  int8_t v = 1;
  hid_t fsp = H5Dget_space(s->status);
  H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &off, NULL, &one, NULL);
  hid_t msp = H5Screate_simple(1, &one, NULL);
  herr_t e = H5Dwrite(s->status, H5T_NATIVE_INT8, msp, fsp, H5P_DEFAULT, &v); /* independent */
  H5Sclose(msp);
  H5Sclose(fsp);
  CLOQ_CHECK(e >= 0, "HDF5: writing /status[%lld] failed", (long long)b);
  return CLOQ_OK;
}

static void close_handles(cloq_store *s) {
  if (s->status >= 0) H5Dclose(s->status);
  if (s->file >= 0) H5Fclose(s->file); /* collective */
  s->status = s->file = -1;
}

int cloq_store_finish(cloq_store **sp) {
  cloq_store *s = *sp;
  int64_t nl = s->cfg.n_layers;
  /* Every owner's independent writes must be done before anyone reads /status. */
  MPI_Barrier(s->comm);
  H5Fflush(s->file, H5F_SCOPE_GLOBAL); /* collective */
  MPI_Barrier(s->comm);
  int8_t *st;
  CLOQ_ALLOC(st, nl, "status");
  herr_t e = H5Dread(s->status, H5T_NATIVE_INT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, st);
  int rc = e < 0 ? CLOQ_FAIL("HDF5: reading /status failed") : CLOQ_OK;
  for (int64_t b = 0; b < nl && rc == CLOQ_OK; b++) {
    if (st[b] != 1) { rc = CLOQ_FAIL("block %lld was never written", (long long)b); break; }
    char name[64];
    snprintf(name, sizeof name, "/layers/%lld", (long long)b);
    hid_t g = H5Gopen2(s->file, name, H5P_DEFAULT);
    hid_t a = g < 0 ? -1 : H5Aopen(g, "complete", H5P_DEFAULT);
    int64_t one = 1;
    if (a < 0 || H5Awrite(a, H5T_NATIVE_INT64, &one) < 0) /* collective */
      rc = CLOQ_FAIL("HDF5: setting %s complete failed", name);
    if (a >= 0) H5Aclose(a);
    if (g >= 0) H5Gclose(g);
  }
  free(st);
  close_handles(s);
  int rank;
  MPI_Comm_rank(s->comm, &rank);
  if (rc == CLOQ_OK && rank == 0 && rename(s->partial, s->path) != 0)
    rc = CLOQ_FAIL("cannot rename %s to %s", s->partial, s->path);
  MPI_Barrier(s->comm);
  free(s);
  *sp = NULL;
  return rc;
}

void cloq_store_abandon(cloq_store **sp) {
  if (!sp || !*sp) return;
  close_handles(*sp);
  free(*sp);
  *sp = NULL;
}

int cloq_store_open(MPI_Comm comm, const char *path, const cloq_config *cfg,
                    cloq_store_meta *meta, cloq_store **out) {
  *out = NULL;
  CLOQ_CHECK(access(path, R_OK) == 0, "store %s does not exist or is not readable", path);
  CLOQ_CHECK(H5Fis_hdf5(path) > 0, "%s is not an HDF5 file", path);
  cloq_store *s;
  CLOQ_ALLOC(s, 1, "store");
  s->comm = comm;
  s->cfg = *cfg;
  s->status = -1;
  snprintf(s->path, sizeof s->path, "%s", path);
  hid_t fapl = open_fapl(comm);
  s->file = H5Fopen(path, H5F_ACC_RDONLY, fapl); /* collective */
  H5Pclose(fapl);
  if (s->file < 0) {
    free(s);
    return CLOQ_FAIL("cannot open store %s", path);
  }
  *out = s;
  char fmt[64];
  int64_t ver, v;
  CLOQ_CALL(attr_read_str(s->file, "format", fmt, sizeof fmt));
  CLOQ_CHECK(strcmp(fmt, CLOQ_STORE_FORMAT) == 0, "%s is not a cloq store (format %s)", path, fmt);
  CLOQ_CALL(attr_read(s->file, "format_version", H5T_NATIVE_INT64, &ver));
  CLOQ_CHECK(ver == CLOQ_STORE_FORMAT_VERSION, "%s has store format version %lld, expected %d",
             path, (long long)ver, CLOQ_STORE_FORMAT_VERSION);
  cloq_store_meta *m = &s->meta;
  CLOQ_CALL(attr_read_str(s->file, "model", m->model, sizeof m->model));
  CLOQ_CALL(attr_read_str(s->file, "calib_source", m->calib, sizeof m->calib));
  CLOQ_CALL(attr_read_str(s->file, "calib_format", m->calib_format, sizeof m->calib_format));
  CLOQ_CALL(attr_read_str(s->file, "init", m->init, sizeof m->init));
  CLOQ_CALL(attr_read_str(s->file, "quantizer", m->quantizer, sizeof m->quantizer));
  CLOQ_CALL(attr_read(s->file, "bits", H5T_NATIVE_INT64, &v));
  m->bits = (int)v;
  CLOQ_CALL(attr_read(s->file, "group_size", H5T_NATIVE_INT64, &m->group_size));
  CLOQ_CALL(attr_read(s->file, "rank", H5T_NATIVE_INT64, &m->rank));
  CLOQ_CALL(attr_read(s->file, "damp", H5T_NATIVE_DOUBLE, &m->damp));
  CLOQ_CALL(attr_read(s->file, "seed", H5T_NATIVE_INT64, &m->seed));
  CLOQ_CALL(attr_read(s->file, "nsamples", H5T_NATIVE_INT64, &m->nsamples));
  CLOQ_CALL(attr_read(s->file, "seqlen", H5T_NATIVE_INT64, &m->seqlen));
  CLOQ_CALL(attr_read(s->file, "calib_tokens", H5T_NATIVE_INT64, &m->calib_tokens));
  CLOQ_CALL(attr_read(s->file, "nranks", H5T_NATIVE_INT64, &v));
  m->nranks = (int)v;
  const char *dims[] = {"n_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                        "num_key_value_heads", "head_dim"};
  const int64_t want[] = {cfg->n_layers, cfg->dim, cfg->hidden_dim, cfg->n_heads,
                          cfg->n_kv_heads, cfg->head_dim};
  for (int i = 0; i < 6; i++) {
    CLOQ_CALL(attr_read(s->file, dims[i], H5T_NATIVE_INT64, &v));
    CLOQ_CHECK(v == want[i], "store %s was made for a model with %s %lld, this model has %lld",
               path, dims[i], (long long)v, (long long)want[i]);
  }
  for (int64_t b = 0; b < cfg->n_layers; b++) {
    char name[64];
    snprintf(name, sizeof name, "/layers/%lld", (long long)b);
    CLOQ_CHECK(H5Lexists(s->file, "layers", H5P_DEFAULT) > 0 &&
                   H5Lexists(s->file, name, H5P_DEFAULT) > 0,
               "store %s has no group %s", path, name);
    hid_t g = H5Gopen2(s->file, name, H5P_DEFAULT);
    int64_t c = 0;
    int rc = attr_read(g, "complete", H5T_NATIVE_INT64, &c);
    H5Gclose(g);
    CLOQ_CALL(rc);
    CLOQ_CHECK(c == 1, "store %s: block %lld is not complete", path, (long long)b);
  }
  if (meta) *meta = *m;
  return CLOQ_OK;
}

void cloq_store_close(cloq_store **sp) { cloq_store_abandon(sp); }
