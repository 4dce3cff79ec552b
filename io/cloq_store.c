/* cloq_store: see cloq_store.h and docs/store.md. Every HDF5 file here is opened by one process
 * with the default (sec2) driver: a block's owner writes its block file alone, rank 0 writes the
 * settings and top files, and readers open the files read-only each on their own. The only
 * collective steps are the begin/finish handshakes, which are plain MPI.
 */
#include "cloq_store.h"
#include "store_internal.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cloq_err.h"
#include "cloq_mpi.h"
#include "cloq_linalg.h"
#include "cloq_modules.h"

/* Attribute `name` of obj (one of that name replaced) with dataspace sp (closed here), stored as
 * ftype from memory of mtype. */
static int attr_write_space(hid_t obj, const char *name, hid_t ftype, hid_t mtype, const void *v,
                            hid_t sp) {
  if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
  hid_t a = H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e = a < 0 ? -1 : H5Awrite(a, mtype, v);
  if (a >= 0) H5Aclose(a);
  H5Sclose(sp);
  CLOQ_CHECK(e >= 0, "HDF5: writing attribute %s failed", name);
  return CLOQ_OK;
}

int store_attr_write(hid_t obj, const char *name, hid_t type, const void *v) {
  return attr_write_space(obj, name, type, type, v, H5Screate(H5S_SCALAR));
}

static int attr_str(hid_t obj, const char *name, const char *v) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, strlen(v) + 1);
  H5Tset_strpad(t, H5T_STR_NULLTERM);
  int rc = store_attr_write(obj, name, t, v);
  H5Tclose(t);
  return rc;
}

static int attr_i64(hid_t obj, const char *name, int64_t v) {
  return store_attr_write(obj, name, H5T_NATIVE_INT64, &v);
}

static int attr_f64(hid_t obj, const char *name, double v) {
  return store_attr_write(obj, name, H5T_NATIVE_DOUBLE, &v);
}

/* An iterative init's record: iter_objectives (float64, one per iterate) and iter_chosen (the
 * 1-based iterate whose factors the module holds). */
static int attr_f64_array(hid_t g, const char *name, const double *v, int64_t n) {
  hsize_t dn = (hsize_t)n;
  return attr_write_space(g, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v,
                          H5Screate_simple(1, &dn, NULL));
}

static int attr_iterates(hid_t g, const cloq_qmodule *q) {
  CLOQ_CALL(attr_f64_array(g, "iter_objectives", q->iter_obj, q->n_iter));
  return attr_i64(g, "iter_chosen", q->iter_chosen);
}

/* A --rank-budget run's module: its CLoQ basis (dataset lora_basis, float32 (n_out, rank)) and
 * what each column captures (attribute captured, float64 (rank)), for the allocation at the end. */
static int write_basis(hid_t g, const cloq_qmodule *q) {
  hsize_t dims[2] = {(hsize_t)q->n_out, (hsize_t)q->rank};
  hid_t sp = H5Screate_simple(2, dims, NULL);
  hid_t ds = H5Dcreate2(g, "lora_basis", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e = ds < 0 ? -1 : H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, q->basis);
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(sp);
  CLOQ_CHECK(e >= 0, "HDF5: writing lora_basis failed");
  return attr_f64_array(g, "captured", q->captured, q->rank);
}

/* ---- settings ------------------------------------------------------------------------------ */

/* Format, provenance and every setting, as attributes of obj. */
static int write_meta(hid_t f, const cloq_config *cfg, const cloq_store_meta *m) {
  CLOQ_CALL(attr_str(f, "format", CLOQ_STORE_FORMAT));
  CLOQ_CALL(attr_i64(f, "format_version", CLOQ_STORE_FORMAT_VERSION));
  CLOQ_CALL(attr_str(f, "tool_version", "cloq " CLOQ_VERSION));
  CLOQ_CALL(attr_str(f, "model", m->model));
  CLOQ_CALL(attr_str(f, "calib_source", m->calib));
  CLOQ_CALL(attr_str(f, "calib_format", m->calib_format));
  /* only where there is one: stores of the other formats stay as they were */
  if (m->calib_field[0]) CLOQ_CALL(attr_str(f, "calib_field", m->calib_field));
  CLOQ_CALL(attr_i64(f, "calib_tokens", m->calib_tokens));
  CLOQ_CALL(attr_i64(f, "nsamples", m->nsamples));
  CLOQ_CALL(attr_i64(f, "seqlen", m->seqlen));
  CLOQ_CALL(attr_i64(f, "bits", m->bits));
  CLOQ_CALL(attr_i64(f, "group_size", m->group_size));
  CLOQ_CALL(attr_i64(f, "rank", m->rank));
  CLOQ_CALL(attr_str(f, "init", m->init));
  CLOQ_CALL(attr_str(f, "quantizer", m->quantizer));
  CLOQ_CALL(attr_str(f, "propagate", m->propagate));
  CLOQ_CALL(attr_f64(f, "damp", m->damp));
  CLOQ_CALL(attr_i64(f, "seed", m->seed));
  CLOQ_CALL(attr_i64(f, "nranks", m->nranks));
  CLOQ_CALL(attr_i64(f, "dist_threshold", m->dist_threshold));
  CLOQ_CALL(attr_i64(f, "act_order", m->act_order));
  CLOQ_CALL(attr_i64(f, "gptq_block", m->gptq_block));
  CLOQ_CALL(attr_i64(f, "magr", m->magr));
  CLOQ_CALL(attr_f64(f, "magr_alpha", m->magr_alpha));
  CLOQ_CALL(attr_i64(f, "magr_iters", m->magr_iters));
  CLOQ_CALL(attr_i64(f, "loftq_iters", m->loftq_iters));
  const char *const opt_names[] = {"cloq_iters", "comq_iters", "comq_init", "rank_budget",
                                   "rank_weight_raw"};
  const int64_t opt[] = {m->cloq_iters, m->comq_iters, m->comq_init, m->rank_budget,
                         m->rank_weight_raw};
  for (int i = 0; i < 5; i++)
    if (opt[i]) CLOQ_CALL(attr_i64(f, opt_names[i], opt[i]));
  if (!strcmp(m->init, "quailora")) CLOQ_CALL(attr_i64(f, "quailora_iters", m->quailora_iters));
  CLOQ_CALL(attr_str(f, "model_digest", m->model_digest));
  CLOQ_CALL(attr_str(f, "calib_digest", m->calib_digest));
  int64_t v[6];
  store_dims_of(cfg, v);
  for (int i = 0; i < 6; i++) CLOQ_CALL(attr_i64(f, dim_names[i], v[i]));
  return CLOQ_OK;
}

/* ---- file system helpers ------------------------------------------------------------------- */

static int fsync_path(const char *p) {
  int fd = open(p, O_RDONLY);
  if (fd < 0) return -1;
  int e = fsync(fd);
  close(fd);
  return e;
}

/* Removes every plain file in dir (the folder holds only files cloq wrote), then dir itself when
 * rmdir_too. */
static int remove_files(const char *dir, int rmdir_too) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? CLOQ_OK : CLOQ_FAIL("cannot open folder %s", dir);
  struct dirent *e;
  char p[1600];
  int rc = CLOQ_OK;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (unlink(p) != 0) rc = CLOQ_FAIL("cannot remove %s: %s", p, strerror(errno));
  }
  closedir(d);
  if (rc == CLOQ_OK && rmdir_too && rmdir(dir) != 0)
    rc = CLOQ_FAIL("cannot remove folder %s: %s", dir, strerror(errno));
  return rc;
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

/* Why a file in folder `dir` could not be written, for messages: HDF5 does not keep errno. */
static const char *write_reason(const char *dir, char *buf, size_t cap) {
  struct statvfs v;
  if (access(dir, W_OK) != 0) snprintf(buf, cap, "the folder is not writable");
  else if (statvfs(dir, &v) == 0 && (double)v.f_bavail * (double)v.f_frsize < 16.0 * 1048576)
    snprintf(buf, cap, "the file system is full (%.0f KiB free)",
             (double)v.f_bavail * (double)v.f_frsize / 1024);
  else snprintf(buf, cap, "an I/O error");
  return buf;
}

/* Reserves `bytes` of disk for `path` (just created by HDF5) before anything is written to it.
 * HDF5 1.10 does not recover from a write that fails for want of space: the file's close fails,
 * leaves it registered half-closed, and HDF5's own shutdown at MPI_Finalize crashes on it. So
 * space is taken first (fallocate, keeping the file's size), and a full disk is an error before
 * HDF5 writes. Where the file system cannot reserve (NFS before 4.2), its free space is compared
 * instead. */
static int reserve_space(const char *path, const char *dir, int64_t bytes) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  CLOQ_CHECK(fd >= 0, "cannot open %s: %s", path, strerror(errno));
  int e = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)bytes) == 0 ? 0 : errno;
  close(fd);
  if (e == 0) return CLOQ_OK;
  struct statvfs v;
  double avail = statvfs(dir, &v) == 0 ? (double)v.f_bavail * (double)v.f_frsize : -1.0;
  CLOQ_CHECK(e != EFBIG, "cannot write %s: %.2f MiB would exceed the file size limit (ulimit -f)",
             path, (double)bytes / 1048576);
  CLOQ_CHECK(e != ENOSPC && (avail < 0 || avail >= (double)bytes),
             "cannot write %s: the file system is full (%.2f MiB needed, %.2f MiB free)", path,
             (double)bytes / 1048576, avail < 0 ? 0.0 : avail / 1048576);
  CLOQ_CHECK(e == EOPNOTSUPP || e == ENOSYS || e == EINVAL, "cannot reserve space for %s: %s",
             path, strerror(e));
  return CLOQ_OK;
}

/* Gives back what reserve_space took beyond the file's end once HDF5 has closed it (the file
 * grown by a byte and cut back: shrinking frees every block past the new end). */
static void release_space(const char *path) {
  struct stat st;
  if (stat(path, &st) == 0 && truncate(path, st.st_size + 1) == 0 &&
      truncate(path, st.st_size) != 0) { /* the file keeps one more byte: harmless to HDF5 */
  }
}

/* Bytes a block file takes, over-estimated: its five datasets per module, plus HDF5's headers. */
static int64_t block_file_bytes(const cloq_store *s) {
  int64_t n = 64 * 1024;
  for (int m = 0; m < CLOQ_NMOD; m++) {
    cloq_qmodule q;
    cloq_qmodule_shape(&s->cfg, m, s->meta.group_size, s->meta.rank, &q);
    n += q.n_out * q.n_in + 4 * (2 * q.n_out * q.n_groups + q.rank * (q.n_in + q.n_out)) +
         5 * 4096;
    if (s->meta.rank_budget) n += 4 * q.n_out * q.rank + 8 * q.rank + 4096; /* the basis */
  }
  return n + n / 64;
}

/* Closes an HDF5 file being written (a block, the settings, the top file) and deletes it. */
static void drop_tmp_file(hid_t f, const char *tmp) {
  if (f >= 0) {
    H5E_BEGIN_TRY { H5Fclose(f); }
    H5E_END_TRY;
  }
  unlink(tmp);
}

static int write_settings(cloq_store *s, const char *settings);

/* Rank 0's part of cloq_store_begin. */
static int begin_root(cloq_store *s, int force, int64_t *ndone) {
  const cloq_store_meta *meta = &s->meta;
  CLOQ_CHECK(force || access(s->path, F_OK) != 0,
             "output %s exists (use --force to overwrite it)", s->path);
  char settings[1300];
  snprintf(settings, sizeof settings, "%s/settings.h5", s->work);
  struct stat st;
  int have = stat(s->work, &st) == 0;
  CLOQ_CHECK(!have || S_ISDIR(st.st_mode), "%s exists and is not a folder", s->work);
  CLOQ_CHECK(have || mkdir(s->work, 0777) == 0 || errno == EEXIST, "cannot create folder %s: %s",
             s->work, strerror(errno));
  /* one run per output: a second one (a resume, or a --force that would empty the folder under
   * the first) is refused before any work */
  s->lock = open(s->work, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CLOQ_CHECK(s->lock >= 0, "cannot open folder %s: %s", s->work, strerror(errno));
  if (flock(s->lock, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(s->lock);
    s->lock = -1;
    return e == EWOULDBLOCK ? CLOQ_FAIL("another cloq run is writing %s (its work folder %s is "
                                        "locked): wait for it to end, or choose another --out",
                                        s->path, s->work)
                            : CLOQ_FAIL("cannot lock %s: %s", s->work, strerror(e));
  }
  if (have && !force && access(settings, F_OK) == 0) {
    /* resume: the recorded settings must be this run's */
    hid_t f = H5Fopen(settings, H5F_ACC_RDONLY, H5P_DEFAULT);
    CLOQ_CHECK(f >= 0, "cannot read %s (remove %s or use --force)", settings, s->work);
    cloq_store_meta old;
    int64_t od[6], nd[6];
    int rc = store_read_meta(f, settings, &old, od);
    H5Fclose(f);
    CLOQ_CALL(rc);
    store_dims_of(&s->cfg, nd);
    char why[2400];
    CLOQ_CHECK(!store_meta_diff(&old, od, meta, nd, why, sizeof why),
               "cannot resume %s: it was started with %s (re-run with the same settings, or use "
               "--force to start over)",
               s->path, why);
    s->meta.nranks = old.nranks;
    int64_t n = 0;
    for (int64_t b = 0; b < s->cfg.n_layers; b++) {
      int exists = 0;
      if (store_check_block_file(s, s->work, b, &exists, 1) == CLOQ_OK) {
        n++;
      } else if (exists) { /* damaged (disk trouble, a hand edit): compute it again */
        cloq_warn("%s; block %lld will be computed again", cloq_err_msg(), (long long)b);
        char p[1300];
        store_block_file(s->work, b, p, sizeof p);
        CLOQ_CHECK(unlink(p) == 0, "cannot remove %s: %s", p, strerror(errno));
      }
    }
    cloq_err_clear();
    *ndone = n;
    return CLOQ_OK;
  }
  if (have) CLOQ_CALL(remove_files(s->work, 0));
  int rc = write_settings(s, settings);
  if (rc != CLOQ_OK && !have) rmdir(s->work); /* nothing of this run is left behind */
  CLOQ_CALL(rc);
  *ndone = 0;
  return CLOQ_OK;
}

/* settings.h5 in the work folder, through a .tmp renamed once complete. */
static int write_settings(cloq_store *s, const char *settings) {
  const cloq_store_meta *meta = &s->meta;
  char tmp[1320];
  snprintf(tmp, sizeof tmp, "%s.tmp", settings);
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  char why[128];
  if (f < 0) {
    unlink(tmp);
    return CLOQ_FAIL("cannot create %s: %s", tmp, write_reason(s->work, why, sizeof why));
  }
  int rc = reserve_space(tmp, s->work, 64 << 10);
  if (rc != CLOQ_OK) {
    drop_tmp_file(f, tmp);
    return rc;
  }
  rc = write_meta(f, &s->cfg, meta);
  if (H5Fclose(f) < 0 && rc == CLOQ_OK) rc = CLOQ_FAIL("writing %s failed", tmp);
  if (rc == CLOQ_OK) release_space(tmp);
  if (rc == CLOQ_OK && (fsync_path(tmp) != 0 || rename(tmp, settings) != 0))
    rc = CLOQ_FAIL("cannot write %s: %s", settings, strerror(errno));
  if (rc != CLOQ_OK) unlink(tmp);
  return rc;
}

int cloq_store_begin(MPI_Comm comm, const char *path, int force, const cloq_config *cfg,
                     const cloq_store_meta *meta, cloq_store **out, int64_t *ndone) {
  *out = NULL;
  CLOQ_CHECK(strlen(path) < 1024, "output path too long");
  cloq_store *s;
  CLOQ_ALLOC(s, 1, "store");
  s->comm = comm;
  if (CLOQ_MPI_RC(MPI_Comm_rank(comm, &s->rank)) != CLOQ_OK) {
    free(s);
    return CLOQ_ERR;
  }
  s->cfg = *cfg;
  s->meta = *meta;
  s->file = -1;
  s->lock = -1;
  snprintf(s->path, sizeof s->path, "%s", path);
  snprintf(s->work, sizeof s->work, "%s.partial.d", path);
  snprintf(s->done_dir, sizeof s->done_dir, "%s.d", path);
  int64_t n = 0;
  int rc = s->rank == 0 ? begin_root(s, force, &n) : CLOQ_OK;
  rc = cloq_mpi_agree(comm, rc); /* rank 0's outcome, and its reason, on every rank */
  if (rc != CLOQ_OK) {
    if (s->lock >= 0) close(s->lock);
    free(s);
    return rc;
  }
  rc = CLOQ_MPI_RC(MPI_Bcast(&n, 1, MPI_INT64_T, 0, comm));
  if (rc == CLOQ_OK) rc = CLOQ_MPI_RC(MPI_Bcast(&s->meta.nranks, 1, MPI_INT, 0, comm));
  if (rc != CLOQ_OK) {
    cloq_store_abandon(&s);
    return rc;
  }
  if (ndone) *ndone = n;
  *out = s;
  return CLOQ_OK;
}

/* ---- block files ----------------------------------------------------------------------------- */


int cloq_store_block_begin(cloq_store *s, int64_t b, cloq_store_block **out) {
  *out = NULL;
  CLOQ_CHECK(b >= 0 && b < s->cfg.n_layers, "block %lld out of range", (long long)b);
  cloq_store_block *bw;
  CLOQ_ALLOC(bw, 1, "block writer");
  bw->s = s;
  bw->b = b;
  store_block_file(s->work, b, bw->fin, sizeof bw->fin);
  snprintf(bw->tmp, sizeof bw->tmp, "%.1290s.tmp", bw->fin);
  bw->file = H5Fcreate(bw->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (bw->file < 0) {
    char why[128];
    int rc = CLOQ_FAIL("cannot create %s: %s", bw->tmp, write_reason(s->work, why, sizeof why));
    unlink(bw->tmp);
    free(bw);
    return rc;
  }
  *out = bw;
  CLOQ_CALL(reserve_space(bw->tmp, s->work, block_file_bytes(s)));
  CLOQ_CALL(write_meta(bw->file, &s->cfg, &s->meta));
  CLOQ_CALL(attr_i64(bw->file, "block", b));
  /* The file appears under its final name only once complete. */
  CLOQ_CALL(attr_i64(bw->file, "complete", 1));
  return CLOQ_OK;
}

int cloq_store_block_write(cloq_store_block *bw, int m, const cloq_qmodule *q) {
  cloq_qmodule want;
  CLOQ_CALL(store_check_shapes(bw->s, bw->b, m, q, &want));
  CLOQ_CALL(store_validate_module("refusing to write", bw->s->meta.bits, bw->b, m, q));
  hid_t g = H5Gcreate2(bw->file, cloq_module_name[m], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  CLOQ_CHECK(g >= 0, "HDF5: creating group %s in %s failed", cloq_module_name[m], bw->tmp);
  const void *const bufs[5] = {q->codes, q->scales, q->zeros, q->A, q->B};
  int rc = CLOQ_OK;
  for (int d = 0; d < 5 && rc == CLOQ_OK; d++) {
    hsize_t dims[2];
    store_dataset_dims(&want, d, dims);
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t ds = H5Dcreate2(g, ds_name[d], d == 0 ? H5T_STD_U8LE : H5T_IEEE_F32LE, sp, H5P_DEFAULT,
                          H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = ds < 0 ? -1
                      : H5Dwrite(ds, d == 0 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, H5S_ALL,
                                 H5S_ALL, H5P_DEFAULT, bufs[d]);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    char why[128];
    if (e < 0)
      rc = CLOQ_FAIL("cannot write %s/%s to %s: %s", cloq_module_name[m], ds_name[d], bw->tmp,
                     write_reason(bw->s->work, why, sizeof why));
  }
  if (rc == CLOQ_OK) rc = attr_f64(g, "objective", q->objective);
  if (rc == CLOQ_OK) rc = attr_f64(g, "objective_zero", q->objective_zero);
  if (rc == CLOQ_OK)
    rc = attr_f64(g, "objective_ratio", store_objective_ratio(q->objective, q->objective_zero));
  if (rc == CLOQ_OK && q->n_iter > 0) rc = attr_iterates(g, q);
  if (rc == CLOQ_OK && q->basis) rc = write_basis(g, q);
  H5Gclose(g);
  return rc;
}

int cloq_store_block_commit(cloq_store_block **bwp) {
  cloq_store_block *bw = *bwp;
  char why[128];
  herr_t e = H5Fclose(bw->file);
  bw->file = -1;
  int rc = e < 0 ? CLOQ_FAIL("cannot write %s: %s", bw->tmp,
                             write_reason(bw->s->work, why, sizeof why))
                 : CLOQ_OK;
  if (rc == CLOQ_OK) release_space(bw->tmp);
  if (rc == CLOQ_OK && fsync_path(bw->tmp) != 0)
    rc = CLOQ_FAIL("cannot sync %s: %s", bw->tmp, strerror(errno));
  if (rc == CLOQ_OK && rename(bw->tmp, bw->fin) != 0)
    rc = CLOQ_FAIL("cannot rename %s: %s", bw->tmp, strerror(errno));
  if (rc == CLOQ_OK) fsync_path(bw->s->work); /* the rename itself, where the FS allows it */
  if (rc != CLOQ_OK) unlink(bw->tmp);
  free(bw);
  *bwp = NULL;
  return rc;
}

void cloq_store_block_abandon(cloq_store_block **bwp) {
  if (!bwp || !*bwp) return;
  cloq_store_block *bw = *bwp;
  drop_tmp_file(bw->file, bw->tmp);
  free(bw);
  *bwp = NULL;
}

/* Rank 0's part of cloq_store_finish: the top file, then the folder moves. */
static int finish_root(cloq_store *s) {
  int64_t nl = s->cfg.n_layers;
  for (int64_t b = 0; b < nl; b++) { /* never publish a store with a missing or damaged block */
    int exists = 0;  /* (structure only: this run wrote or fully verified every block) */
    CLOQ_CALL(store_check_block_file(s, s->work, b, &exists, 0));
  }
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%.1100s.tmp", s->path);
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  char why[128], dir[1200];
  snprintf(dir, sizeof dir, "%s", s->path);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  if (f < 0) {
    unlink(tmp);
    return CLOQ_FAIL("cannot create %s: %s", tmp, write_reason(dir, why, sizeof why));
  }
  int rc = reserve_space(tmp, dir, (64 << 10) + 512 * nl);
  if (rc != CLOQ_OK) {
    drop_tmp_file(f, tmp);
    return rc;
  }
  rc = write_meta(f, &s->cfg, &s->meta);
  /* /status: one int8 per block, all 1 (kept from format 1 for readers that check it) */
  hsize_t n = (hsize_t)nl;
  int8_t *ones = calloc(nl, 1);
  if (ones) memset(ones, 1, (size_t)nl);
  hid_t sp = H5Screate_simple(1, &n, NULL);
  hid_t ds = H5Dcreate2(f, "status", H5T_NATIVE_INT8, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (rc == CLOQ_OK &&
      (!ones || ds < 0 || H5Dwrite(ds, H5T_NATIVE_INT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, ones) < 0))
    rc = CLOQ_FAIL("HDF5: writing /status to %s failed", tmp);
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(sp);
  free(ones);
  hid_t lg = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (rc == CLOQ_OK && lg < 0) rc = CLOQ_FAIL("HDF5: creating /layers in %s failed", tmp);
  /* Link targets are relative to the top file's folder, where HDF5 looks first. */
  char dirname[1200], target[1300], name[32];
  snprintf(dirname, sizeof dirname, "%s.d", base_name(s->path));
  for (int64_t b = 0; b < nl && rc == CLOQ_OK; b++) {
    store_block_file(dirname, b, target, sizeof target);
    snprintf(name, sizeof name, "%lld", (long long)b);
    if (H5Lcreate_external(target, "/", lg, name, H5P_DEFAULT, H5P_DEFAULT) < 0)
      rc = CLOQ_FAIL("HDF5: linking /layers/%s in %s failed", name, tmp);
  }
  if (lg >= 0) H5Gclose(lg);
  if (H5Fclose(f) < 0 && rc == CLOQ_OK) rc = CLOQ_FAIL("HDF5: closing %s failed", tmp);
  if (rc == CLOQ_OK) release_space(tmp);
  if (rc == CLOQ_OK && fsync_path(tmp) != 0) rc = CLOQ_FAIL("cannot sync %s", tmp);
  if (rc != CLOQ_OK) {
    unlink(tmp);
    return rc;
  }
  /* An old PATH.d (a --force run) is replaced only now that the new result is complete. */
  char old[1300];
  snprintf(old, sizeof old, "%s.old", s->done_dir);
  struct stat st;
  if (stat(s->done_dir, &st) == 0) {
    CLOQ_CALL(remove_files(old, 1));
    CLOQ_CHECK(rename(s->done_dir, old) == 0, "cannot move %s aside: %s", s->done_dir,
               strerror(errno));
  }
  CLOQ_CHECK(rename(s->work, s->done_dir) == 0, "cannot rename %s to %s: %s", s->work,
             s->done_dir, strerror(errno));
  CLOQ_CHECK(rename(tmp, s->path) == 0, "cannot rename %s to %s: %s", tmp, s->path,
             strerror(errno));
  char settings[1300];
  snprintf(settings, sizeof settings, "%s/settings.h5", s->done_dir);
  unlink(settings); /* the top file records the settings now */
  return remove_files(old, 1);
}

int cloq_store_finish(cloq_store **sp) {
  cloq_store *s = *sp;
  /* every owner's block commits happen before rank 0 looks */
  int rc = CLOQ_MPI_RC(MPI_Barrier(s->comm));
  if (rc == CLOQ_OK && s->rank == 0) rc = finish_root(s);
  rc = cloq_mpi_agree(s->comm, rc);
  if (s->lock >= 0) close(s->lock);
  free(s);
  *sp = NULL;
  return rc;
}

void cloq_store_abandon(cloq_store **sp) {
  if (!sp || !*sp) return;
  if ((*sp)->file >= 0) H5Fclose((*sp)->file);
  if ((*sp)->blk)
    for (int64_t b = 0; b < (*sp)->cfg.n_layers; b++)
      if ((*sp)->blk[b] >= 0) H5Fclose((*sp)->blk[b]);
  free((*sp)->blk);
  if ((*sp)->lock >= 0) close((*sp)->lock);
  free(*sp);
  *sp = NULL;
}

void cloq_store_close(cloq_store **sp) { cloq_store_abandon(sp); }

