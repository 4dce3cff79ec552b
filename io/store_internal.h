/* store_internal: what io/cloq_store.c (writing: the settings, block files, the handshakes) and
 * io/cloq_store_read.c (reading and checking: settings, block files, modules) share. Not part of
 * the store's interface (cloq_store.h). */
#ifndef CLOQ_STORE_INTERNAL_H
#define CLOQ_STORE_INTERNAL_H

#include <hdf5.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "cloq_store.h"

/* The five datasets of a module, in cloq_qmodule order. */
static const char *const ds_name[5] __attribute__((unused)) = {"codes", "scales", "zeros",
                                                              "lora_A", "lora_B"};

/* The model shape the settings record (store_dims_of gives the values). */
static const char *const dim_names[] __attribute__((unused)) = {
    "n_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
    "head_dim"};

struct cloq_store {
  MPI_Comm comm;
  int rank;
  hid_t file;               /* reading: the top file */
  hid_t *blk;               /* reading: each block's file, PATH.d/block_<b>.h5 */
  cloq_config cfg;
  cloq_store_meta meta;
  char path[1100];          /* PATH */
  char work[1200];          /* PATH.partial.d */
  char done_dir[1200];      /* PATH.d */
  int lock;                 /* writing, rank 0: PATH.partial.d open and flock'ed; else -1 */
};

struct cloq_store_block {
  cloq_store *s;
  int64_t b;
  hid_t file;
  char tmp[1300], fin[1300];
};

/* A scalar attribute of obj written (replacing one of that name) or read; errors name it. */
int store_attr_write(hid_t obj, const char *name, hid_t type, const void *v);
int store_attr_read(hid_t obj, const char *name, hid_t memtype, void *v);
/* Shape of dataset d (ds_name order) of a module. */
void store_dataset_dims(const cloq_qmodule *q, int d, hsize_t dims[2]);
void store_dims_of(const cloq_config *cfg, int64_t v[6]);
/* Reads what write_meta wrote (checking the format and version); dims[6] receives the model
 * shape recorded. `what` names the file in errors. */
int store_read_meta(hid_t f, const char *what, cloq_store_meta *m, int64_t dims[6]);
/* The first setting in which a (recorded) and b (requested) differ, written to buf; 0 if none.
 * nranks and dist_threshold are provenance: a run may resume with another rank count. */
int store_meta_diff(const cloq_store_meta *a, const int64_t ad[6], const cloq_store_meta *b,
                    const int64_t bd[6], char *buf, size_t cap);
void store_block_file(const char *dir, int64_t b, char *buf, size_t cap);
/* Whether block b's file in dir is there (*exists) and sound (the return value: CLOQ_OK, or
 * CLOQ_ERR with the reason recorded); full: verify_block's. */
int store_check_block_file(const cloq_store *s, const char *dir, int64_t b, int *exists,
                           int full);
/* Checks that q has the store's shapes for module m. */
int store_check_shapes(const cloq_store *s, int64_t b, int m, const cloq_qmodule *q,
                       cloq_qmodule *want);
/* What a module may hold, checked on every write and every read (eval, export, a resumed
 * sequential run, resume's verification): codes within the bits, finite positive scales,
 * integer zero points within the code range, finite factors and objectives. */
int store_validate_module(const char *what, int bits, int64_t b, int m, const cloq_qmodule *q);
/* The ratio recorded beside the objectives: 1 when Q alone is exact (both are 0), so that nothing
 * non-finite is ever written. */
double store_objective_ratio(double obj, double obj0);
/* Module m under `prefix` in file f: its five datasets with the store's shapes and its objective
 * attributes, read into q and validated (read = 1), or only checked to be there (read = 0: q's
 * arrays may be NULL). */
int store_read_module_at(hid_t f, const char *prefix, const char *what, const cloq_store *s,
                         int64_t b, int m, cloq_qmodule *q, int read);

#endif
