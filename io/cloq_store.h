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

/* Collective over comm. Creates PATH.partial (replacing a stale one) with the full layout for
 * cfg's blocks and the meta attributes. Fails if PATH exists unless force. */
int cloq_store_create(MPI_Comm comm, const char *path, int force, const cloq_config *cfg,
                      const cloq_store_meta *meta, cloq_store **out);

/* Independent. Writes module m of block b: codes (n_out, n_in) uint8, scales and zeros
 * (n_out, n_groups) float32, A (r, n_in) and B (n_out, r) float32. */
int cloq_store_write_module(cloq_store *s, int64_t b, int m, const uint8_t *codes,
                            const float *scales, const float *zeros, const float *A,
                            const float *B);
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
/* Independent. Reads module m of block b into caller buffers sized as for write. */
int cloq_store_read_module(cloq_store *s, int64_t b, int m, uint8_t *codes, float *scales,
                           float *zeros, float *A, float *B);
/* Collective. Accepts NULL. */
void cloq_store_close(cloq_store **s);

#endif
