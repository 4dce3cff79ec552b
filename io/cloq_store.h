/* cloq_store: the HDF5 store that holds a run's result (layout: docs/store.md).
 *
 * A store PATH is a small top file plus one HDF5 file per block in the folder PATH.d/. The top file
 * holds the run's settings, /status and, for every block b, an external link /layers/<b> to the
 * root of PATH.d/block_<b>.h5 (h5py and h5dump follow it, so PATH reads as one file).
 *
 * Why one file per block (and not one parallel file written by all ranks): a process killed
 * during an HDF5 write can leave the whole file unreadable (HDF5 1.10 has no journal), and in
 * parallel HDF5 every metadata change is collective, which would tie the owners of different
 * blocks together. Here each block's owner writes its own file independently (no collective
 * call), as block_<b>.h5.tmp, fsyncs it and renames it into place: a block file that exists is
 * complete, and a crash can only lose the block being written. That is what makes resume safe.
 *
 * While a run is in progress the blocks live in PATH.partial.d/ (with settings.h5, the run's
 * settings). Re-running the same command resumes from the blocks found there; different settings
 * are refused. cloq_store_finish writes the top file and moves the folder to PATH.d; nothing named
 * PATH exists before that, so a run that dies never leaves a complete-looking store.
 */
#ifndef CLOQ_STORE_H
#define CLOQ_STORE_H

#include <mpi.h>
#include <stdint.h>

#include "cloq_config.h"
#include "cloq_modules.h"

#define CLOQ_STORE_FORMAT "cloq-store"
#define CLOQ_STORE_FORMAT_VERSION 4

/* Every setting that affects the store's content (written as attributes of every file), and the
 * run's provenance (nranks, dist_threshold: recorded, not compared on resume). */
typedef struct {
  char model[1024];        /* model directory as given */
  char calib[1024];        /* calibration file as given */
  char calib_format[16];   /* "text" | "tokens" | "jsonl" */
  char calib_field[256];   /* jsonl: the records' field read ("" otherwise) */
  char init[16];           /* "zero" | "svd" | "cloq" | "loftq" | "quailora" */
  char quantizer[16];      /* "rtn" | "gptq" | "comq" */
  char propagate[16];      /* "full" | "sequential" */
  int bits;
  int64_t group_size;      /* -1: one group per row */
  int64_t rank;            /* LoRA rank r */
  double damp;
  int64_t seed;
  int64_t nsamples;        /* calibration samples used */
  int64_t seqlen;          /* window length (text calibration) */
  int64_t calib_tokens;    /* tokens streamed through the model */
  int nranks;              /* MPI ranks of the run (of the first run, after a resume) */
  int64_t dist_threshold;  /* matrices of this size or more went to ScaLAPACK */
  int64_t act_order;       /* gptq: columns by decreasing H_jj (static groups) */
  int64_t gptq_block;      /* gptq: lazy batch width */
  int64_t magr;            /* MagR preprocessing before the quantizer */
  double magr_alpha;
  int64_t magr_iters;
  int64_t loftq_iters;     /* loftq: alternations T */
  /* Written only when not 0 (stores of the other settings keep their attributes; reading an
   * absent one gives 0): */
  int64_t cloq_iters;      /* cloq: joint alternations T when > 1 */
  int64_t comq_iters;      /* comq: coordinate-descent sweeps */
  int64_t comq_init;       /* comq: 1 = started from GPTQ (0: from RTN) */
  int64_t quailora_iters;  /* quailora: alternations (0 is also a valid count: see init) */
  int64_t rank_budget;     /* --rank-budget: total LoRA parameters (rank is then the maximum) */
  int64_t rank_weight_raw; /* --rank-weight raw (1) or relative (0) */
  /* content digests (16 hex digits; empty in stores written before they existed): the model's
   * (cloq_ckpt_digest) and the calibration samples' token ids */
  char model_digest[24];
  char calib_digest[24];
} cloq_store_meta;

typedef struct cloq_store cloq_store;             /* a store being written, or read */
typedef struct cloq_store_block cloq_store_block; /* one block file being written */

/* ---- writing ------------------------------------------------------------------------------- */
/* Collective over comm (same arguments on every rank). Prepares a run writing PATH:
 * - PATH exists and !force: error "exists".
 * - PATH.partial.d/ absent, or force: a fresh PATH.partial.d/ with settings.h5 (rank 0).
 * - PATH.partial.d/ present: resume. Its settings.h5 must record the same settings as meta
 *   (model, calibration, quantizer, bits, group size, rank, init, damp, seed, samples,
 *   propagation, the model's shape and the content digests of model and calibration data); the
 *   error names the first that differs.
 * *ndone (may be NULL) receives the number of blocks already complete. */
int cloq_store_begin(MPI_Comm comm, const char *path, int force, const cloq_config *cfg,
                     const cloq_store_meta *meta, cloq_store **out, int64_t *ndone);
/* Not collective. Whether block b is already complete (a block file in the work folder). */
int cloq_store_block_done(const cloq_store *s, int64_t b);
/* Independent (the block's owner alone). Creates block_<b>.h5.tmp with the settings and the
 * layout of block b; cloq_store_block_write fills module m (q shaped for the store's group size
 * and rank); cloq_store_block_commit closes it, fsyncs and renames it into place (frees *bw);
 * cloq_store_block_abandon closes and deletes the .tmp (accepts NULL). */
int cloq_store_block_begin(cloq_store *s, int64_t b, cloq_store_block **bw);
int cloq_store_block_write(cloq_store_block *bw, int m, const cloq_qmodule *q);
int cloq_store_block_commit(cloq_store_block **bw);
void cloq_store_block_abandon(cloq_store_block **bw);
/* Independent. Reads module m of block b, complete in the work folder (a resumed sequential run
 * replays the blocks done before). */
int cloq_store_read_done(cloq_store *s, int64_t b, int m, cloq_qmodule *q);
/* Collective. Checks that every block is complete, then (rank 0) writes PATH's top file (as
 * PATH.tmp, renamed), replaces an old PATH.d and renames PATH.partial.d to PATH.d. Frees *s. */
int cloq_store_finish(cloq_store **s);
/* Collective, before cloq_store_finish, in a --rank-budget run (meta.rank_budget > 0; every
 * module written with its basis and captured values at meta.rank, the maximum): allocates the
 * modules' ranks under the budget (cloq_rank_allocate, at least 1 each; weights 1 / objective_zero
 * when relative, else 1) and rewrites every block file with each module's factors re-split at its
 * rank (zero-padded to meta.rank), its objective at that rank and the attribute rank. Blocks are
 * shared round-robin among the ranks; each rewrite replaces its file atomically and marks it
 * (ranks_allocated), so a resumed end redoes only what is missing and gets the same allocation.
 * *used (may be NULL): the parameters allocated. */
int cloq_store_allocate_ranks(cloq_store *s, int relative, int64_t *used);
/* Not collective: frees the handle; the work folder stays, for a resume. Accepts NULL. */
void cloq_store_abandon(cloq_store **s);

/* ---- reading -------------------------------------------------------------------------------- */
/* Not collective (each rank opens the files read-only itself). Opens a finished store; checks
 * format, version, that every block file is present and complete, and that its shapes match
 * cfg. */
int cloq_store_open(const char *path, const cloq_config *cfg, cloq_store_meta *meta,
                    cloq_store **out);
/* Not collective. Reads module m of block b into q (allocated with the store's group size and
 * rank, e.g. by cloq_qmodule_alloc). */
int cloq_store_read_module(cloq_store *s, int64_t b, int m, cloq_qmodule *q);
/* Not collective. Module m's objective and zero-init objective (attributes only). */
int cloq_store_read_objective(cloq_store *s, int64_t b, int m, double *obj, double *obj_zero);
/* Not collective. Module m's own LoRA rank: its attribute rank (a --rank-budget store), else the
 * store's rank. */
int cloq_store_read_rank(cloq_store *s, int64_t b, int m, int64_t *rank);
/* Not collective. Accepts NULL. */
void cloq_store_close(cloq_store **s);

#endif
