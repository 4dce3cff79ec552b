/* cloq_store: the parallel-HDF5 file that holds a run's result (layout: docs/store.md).
 *
 * The whole layout (every group, dataset and attribute) is created once, collectively, by
 * cloq_store_create, since in parallel HDF5 every metadata change is collective; afterwards each
 * block's owner writes its raw data independently. The file is written under PATH.partial and
 * renamed to PATH by cloq_store_finish, after every block's `complete` attribute is set, so a run
 * that dies never leaves a file that looks complete under the requested name.
 */
#ifndef CLOQ_STORE_H
#define CLOQ_STORE_H

#include <mpi.h>
#include <stdint.h>

#include "cloq_io.h"

#define CLOQ_STORE_FORMAT "cloq-store"
#define CLOQ_STORE_FORMAT_VERSION 1

/* Every setting that affects the store's content (written as root attributes). */
typedef struct {
  char model[1024];        /* model directory as given */
  char calib[1024];        /* calibration file as given */
  char calib_format[16];   /* "text" | "tokens" */
  char init[16];           /* "zero" | "svd" | "cloq" */
  char quantizer[16];      /* "rtn" */
  int bits;
  int64_t group_size;      /* -1: one group per row */
  int64_t rank;            /* LoRA rank r */
  double damp;
  int64_t seed;
  int64_t nsamples;        /* calibration samples used */
  int64_t seqlen;          /* window length (text calibration) */
  int64_t calib_tokens;    /* tokens streamed through the model */
  int nranks;              /* MPI ranks of the run */
} cloq_store_meta;

typedef struct cloq_store cloq_store;

/* One quantized module as the store holds it: its shapes and its five arrays, row-major. */
typedef struct {
  int64_t n_out, n_in, n_groups, rank;
  uint8_t *codes;  /* (n_out, n_in) */
  float *scales;   /* (n_out, n_groups) */
  float *zeros;    /* (n_out, n_groups) */
  float *A;        /* (rank, n_in) */
  float *B;        /* (n_out, rank) */
} cloq_qmodule;

/* Sets the shapes of module m for a group size and LoRA rank; arrays stay NULL. */
void cloq_qmodule_shape(const cloq_config *cfg, int m, int64_t group_size, int64_t rank,
                        cloq_qmodule *q);
/* Sets the shapes and allocates zeroed arrays (the error names block b and the module). */
int cloq_qmodule_alloc(const cloq_config *cfg, int64_t b, int m, int64_t group_size,
                       int64_t rank, cloq_qmodule *q);
/* Frees the arrays; accepts a zeroed or partly allocated q. */
void cloq_qmodule_free(cloq_qmodule *q);

/* Collective over comm. Creates PATH.partial (replacing a stale one) with the full layout for
 * cfg's blocks and the meta attributes. Fails if PATH exists unless force. */
int cloq_store_create(MPI_Comm comm, const char *path, int force, const cloq_config *cfg,
                      const cloq_store_meta *meta, cloq_store **out);

/* Independent. Writes module m of block b; q's shapes must be the store's. */
int cloq_store_write_module(cloq_store *s, int64_t b, int m, const cloq_qmodule *q);
/* Independent. Records in /status that block b's data are all written. */
int cloq_store_mark_block(cloq_store *s, int64_t b);

/* Collective. Sets `complete` = 1 on every block whose status is 1 (all must be), closes, and
 * renames PATH.partial to PATH (rank 0). Frees s. */
int cloq_store_finish(cloq_store **s);
/* Not collective in effect: closes without marking anything (error paths); the .partial file
 * stays for inspection. Accepts NULL. */
void cloq_store_abandon(cloq_store **s);

/* Collective. Opens a finished store read-only; checks format, version, that every block is
 * complete and that its shapes match cfg. */
int cloq_store_open(MPI_Comm comm, const char *path, const cloq_config *cfg,
                    cloq_store_meta *meta, cloq_store **out);
/* Independent. Reads module m of block b into q (allocated with the store's group size and
 * rank, e.g. by cloq_qmodule_alloc). */
int cloq_store_read_module(cloq_store *s, int64_t b, int m, cloq_qmodule *q);
/* Collective. Accepts NULL. */
void cloq_store_close(cloq_store **s);

#endif
