/* cloq_store_ranks: the end of a --rank-budget run (cloq_store.h). Every module was written at
 * the maximum rank R with its CLoQ basis V (lora_basis) and what each basis column captures of
 * the calibrated objective (captured). The ranks are allocated over all modules at once
 * (cloq_rank_allocate), then each block file is rewritten: a module of rank r gets the balanced
 * split of V_r V_r^T (B A) (= V_r V_r^T E, since V_r lies in span V and B A = V V^T E) in its
 * leading r rows/columns of lora_A/lora_B, zeros after them, and the attribute rank = r. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "cloq_err.h"
#include "cloq_linalg.h"
#include "cloq_mpi.h"
#include "cloq_signal.h"
#include "store_internal.h"

static int dset_io(hid_t g, const char *name, hid_t type, void *buf, int write) {
  hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
  herr_t e = ds < 0 ? -1
             : write ? H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf)
                     : H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  if (ds >= 0) H5Dclose(ds);
  CLOQ_CHECK(e >= 0, "HDF5: %s dataset %s failed", write ? "writing" : "reading", name);
  return CLOQ_OK;
}

/* Every module's captured values (gain, (nl * NMOD, R)) and zero-init objective, from the work
 * folder's block files (rank 0). */
static int read_gains(const cloq_store *s, double *gain, double *obj0) {
  int64_t nl = s->cfg.n_layers, R = s->meta.rank;
  for (int64_t b = 0; b < nl; b++) {
    char p[1300];
    store_block_file(s->work, b, p, sizeof p);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    CLOQ_CHECK(f >= 0, "cannot open %s", p);
    int rc = CLOQ_OK;
    for (int m = 0; m < CLOQ_NMOD && rc == CLOQ_OK; m++) {
      hid_t g = H5Gopen2(f, cloq_module_name[m], H5P_DEFAULT);
      int64_t k = b * CLOQ_NMOD + m;
      rc = g < 0 ? CLOQ_FAIL("%s: group %s is missing", p, cloq_module_name[m])
                 : store_attr_read(g, "captured", H5T_NATIVE_DOUBLE, gain + k * R);
      if (rc == CLOQ_OK) rc = store_attr_read(g, "objective_zero", H5T_NATIVE_DOUBLE, obj0 + k);
      if (g >= 0) H5Gclose(g);
    }
    H5Fclose(f);
    CLOQ_CALL(rc);
  }
  return CLOQ_OK;
}

/* The allocation (rank 0): ranks (nl * NMOD), at least 1 each. */
static int allocate(const cloq_store *s, int relative, int64_t *ranks, int64_t *used) {
  int64_t nl = s->cfg.n_layers, R = s->meta.rank, n = nl * CLOQ_NMOD;
  double *gain = calloc((size_t)(n * R), sizeof *gain), *obj0 = calloc((size_t)n, sizeof *obj0);
  double *w = calloc((size_t)n, sizeof *w);
  int64_t *rmax = calloc((size_t)n, sizeof *rmax), *cost = calloc((size_t)n, sizeof *cost);
  int rc = gain && obj0 && w && rmax && cost ? read_gains(s, gain, obj0)
                                             : CLOQ_FAIL("out of memory (rank allocation)");
  for (int64_t k = 0; k < n && rc == CLOQ_OK; k++) {
    int64_t no, ni;
    cloq_module_shape(&s->cfg, (int)(k % CLOQ_NMOD), &no, &ni);
    rmax[k] = R, cost[k] = no + ni;
    w[k] = !relative ? 1.0 : obj0[k] > 0 ? 1.0 / obj0[k] : 0.0;
    /* eigenvalues come non-increasing from the solver; float64 ties can reorder the last bit */
    for (int64_t j = 1; j < R; j++)
      if (gain[k * R + j] > gain[k * R + j - 1]) gain[k * R + j] = gain[k * R + j - 1];
  }
  if (rc == CLOQ_OK)
    rc = cloq_rank_allocate(n, rmax, cost, gain, R, w, s->meta.rank_budget, 1, ranks, NULL);
  *used = 0;
  for (int64_t k = 0; k < n && rc == CLOQ_OK; k++) *used += ranks[k] * cost[k];
  free(gain), free(obj0), free(w), free(rmax), free(cost);
  return rc;
}

/* The factors of rank r < R from the stored ones at R (A (R, ni), B (no, R), overwritten: the
 * leading r rows/columns, zeros after) and the float32 basis Vf (no, R). */
static int split_at(float *A, float *B, const float *Vf, int64_t no, int64_t ni, int64_t R,
                    int64_t r) {
  double *M = calloc((size_t)(no * ni), sizeof *M), *V = calloc((size_t)(no * R), sizeof *V);
  double *Ad = calloc((size_t)(R * ni), sizeof *Ad), *Bd = calloc((size_t)(no * R), sizeof *Bd);
  float *Ar = calloc((size_t)(r * ni), sizeof *Ar), *Br = calloc((size_t)(no * r), sizeof *Br);
  int rc = M && V && Ad && Bd && Ar && Br ? CLOQ_OK : CLOQ_FAIL("out of memory (rank split)");
  if (rc == CLOQ_OK) {
    for (int64_t i = 0; i < R * ni; i++) Ad[i] = A[i];
    for (int64_t i = 0; i < no * R; i++) Bd[i] = B[i], V[i] = Vf[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)no, (int)ni, (int)R, 1.0, Bd,
                (int)R, Ad, (int)ni, 0.0, M, (int)ni);
    rc = cloq_lora_split(V, M, no, ni, R, r, Ar, Br);
  }
  if (rc == CLOQ_OK) {
    memset(A, 0, (size_t)(R * ni) * sizeof *A);
    memcpy(A, Ar, (size_t)(r * ni) * sizeof *A);
    for (int64_t i = 0; i < no; i++)
      for (int64_t k = 0; k < R; k++) B[i * R + k] = k < r ? Br[i * r + k] : 0.0f;
  }
  free(M), free(V), free(Ad), free(Bd), free(Ar), free(Br);
  return rc;
}

/* Module m (group g) at rank r: its factors re-split, its objective raised by what basis columns
 * r..R-1 captured, and the attribute rank. */
static int resplit(hid_t g, const cloq_store *s, int m, int64_t r) {
  int64_t no, ni, R = s->meta.rank;
  cloq_module_shape(&s->cfg, m, &no, &ni);
  float *A = calloc((size_t)(R * ni), sizeof *A), *B = calloc((size_t)(no * R), sizeof *B);
  float *Vf = calloc((size_t)(no * R), sizeof *Vf);
  double *cap = calloc((size_t)R, sizeof *cap), obj = 0, obj0 = 0;
  int rc = A && B && Vf && cap ? CLOQ_OK : CLOQ_FAIL("out of memory (rank split)");
  if (rc == CLOQ_OK) rc = store_attr_read(g, "captured", H5T_NATIVE_DOUBLE, cap);
  if (rc == CLOQ_OK) rc = store_attr_read(g, "objective", H5T_NATIVE_DOUBLE, &obj);
  if (rc == CLOQ_OK) rc = store_attr_read(g, "objective_zero", H5T_NATIVE_DOUBLE, &obj0);
  if (rc == CLOQ_OK && r < R) {
    rc = dset_io(g, "lora_A", H5T_NATIVE_FLOAT, A, 0);
    if (rc == CLOQ_OK) rc = dset_io(g, "lora_B", H5T_NATIVE_FLOAT, B, 0);
    if (rc == CLOQ_OK) rc = dset_io(g, "lora_basis", H5T_NATIVE_FLOAT, Vf, 0);
    if (rc == CLOQ_OK) rc = split_at(A, B, Vf, no, ni, R, r);
    if (rc == CLOQ_OK) rc = dset_io(g, "lora_A", H5T_NATIVE_FLOAT, A, 1);
    if (rc == CLOQ_OK) rc = dset_io(g, "lora_B", H5T_NATIVE_FLOAT, B, 1);
    for (int64_t k = R - 1; k >= r; k--) obj += cap[k]; /* smallest first */
  }
  double ratio = store_objective_ratio(obj, obj0);
  if (rc == CLOQ_OK) rc = store_attr_write(g, "objective", H5T_NATIVE_DOUBLE, &obj);
  if (rc == CLOQ_OK) rc = store_attr_write(g, "objective_ratio", H5T_NATIVE_DOUBLE, &ratio);
  if (rc == CLOQ_OK) rc = store_attr_write(g, "rank", H5T_NATIVE_INT64, &r);
  free(A), free(B), free(Vf), free(cap);
  return rc;
}

static int copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int rc = in >= 0 && out >= 0 ? CLOQ_OK : CLOQ_FAIL("cannot copy %s: %s", from, strerror(errno));
  static char buf[1 << 16];
  for (ssize_t n; rc == CLOQ_OK && (n = read(in, buf, sizeof buf)) != 0;)
    if (n < 0 || write(out, buf, (size_t)n) != n)
      rc = CLOQ_FAIL("cannot copy %s to %s: %s", from, to, strerror(errno));
  if (out >= 0 && (fsync(out) != 0 || close(out) != 0) && rc == CLOQ_OK)
    rc = CLOQ_FAIL("cannot write %s: %s", to, strerror(errno));
  if (in >= 0) close(in);
  return rc;
}

/* Block b's file rewritten with its modules at their ranks: a copy is changed, synced and renamed
 * over the original, so the block file is always either the old one or the new one. A file that
 * says ranks_allocated is already done (a resumed end). */
static int rewrite_block(const cloq_store *s, int64_t b, const int64_t *ranks) {
  char p[1300], tmp[1310];
  store_block_file(s->work, b, p, sizeof p);
  snprintf(tmp, sizeof tmp, "%s.tmp", p);
  hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
  CLOQ_CHECK(f >= 0, "cannot open %s", p);
  int done = H5Aexists(f, "ranks_allocated") > 0;
  H5Fclose(f);
  if (done) return CLOQ_OK;
  CLOQ_CALL(copy_file(p, tmp));
  f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
  int rc = f >= 0 ? CLOQ_OK : CLOQ_FAIL("cannot open %s for writing", tmp);
  for (int m = 0; m < CLOQ_NMOD && rc == CLOQ_OK; m++) {
    hid_t g = H5Gopen2(f, cloq_module_name[m], H5P_DEFAULT);
    rc = g < 0 ? CLOQ_FAIL("%s: group %s is missing", p, cloq_module_name[m])
               : resplit(g, s, m, ranks[b * CLOQ_NMOD + m]);
    if (g >= 0) H5Gclose(g);
    if (rc != CLOQ_OK) rc = CLOQ_FAIL("block %lld %s: %s", (long long)b, cloq_module_name[m],
                                      cloq_err_msg());
  }
  int64_t one = 1;
  if (rc == CLOQ_OK) rc = store_attr_write(f, "ranks_allocated", H5T_NATIVE_INT64, &one);
  if (f >= 0 && H5Fclose(f) < 0 && rc == CLOQ_OK) rc = CLOQ_FAIL("cannot write %s", tmp);
  int fd = rc == CLOQ_OK ? open(tmp, O_RDONLY) : -1;
  if (fd >= 0) fsync(fd), close(fd);
  if (rc == CLOQ_OK && rename(tmp, p) != 0)
    rc = CLOQ_FAIL("cannot rename %s: %s", tmp, strerror(errno));
  if (rc != CLOQ_OK) unlink(tmp);
  if (rc == CLOQ_OK) cloq_debug_kill_point("ranks", (long long)b, s->rank);
  return rc;
}

int cloq_store_allocate_ranks(cloq_store *s, int relative, int64_t *used) {
  int64_t nl = s->cfg.n_layers, n = nl * CLOQ_NMOD;
  int64_t *ranks = calloc((size_t)n + 1, sizeof *ranks); /* the last: parameters used */
  int rc = ranks ? CLOQ_OK : CLOQ_FAIL("out of memory (rank allocation)");
  if (rc == CLOQ_OK && s->rank == 0) rc = allocate(s, relative, ranks, &ranks[n]);
  rc = cloq_mpi_agree(s->comm, rc);
  if (rc == CLOQ_OK)
    rc = cloq_mpi_agree(s->comm, cloq_mpi_bcast(ranks, n + 1, MPI_INT64_T, 8, 0, s->comm));
  int size = 1;
  if (rc == CLOQ_OK) rc = CLOQ_MPI_RC(MPI_Comm_size(s->comm, &size));
  int rc2 = rc;
  for (int64_t b = s->rank; b < nl && rc2 == CLOQ_OK; b += size) rc2 = rewrite_block(s, b, ranks);
  if (used && ranks) *used = ranks[n];
  free(ranks);
  return rc == CLOQ_OK ? cloq_mpi_agree(s->comm, rc2) : rc;
}
