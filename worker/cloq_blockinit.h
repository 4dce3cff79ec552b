/* cloq_blockinit: quantize and initialize the LoRA of every module of one block, after its Gram
 * matrices are complete, and write the block to its store(s).
 *
 * A block is worked on in four units, one per distinct input (attention: q/k/v; o; MLP: gate/up;
 * down). A unit does the input's eigendecomposition (CLoQ), then for each of its modules: MagR
 * (optional, once), and for each bits setting one quantization (RTN or GPTQ, with the input's Gram
 * matrix) and one SVD at the largest LoRA rank, from which every smaller rank is derived
 * (cloq_lora_*_factors): a sweep over bits x ranks costs one eig per input and one SVD per module
 * and bits setting. LoftQ is the exception: its Q depends on the rank, so each rank runs its own
 * T alternations of quantization and SVD (always on this rank's LAPACK).
 *
 * Every module's calibrated objective tr((W - Q - BA) Hd (W - Q - BA)^T), Hd the damped Gram
 * matrix, and that of Q alone (the zero init of the same quantizer) go into the store with it.
 *
 * Two ways to run a block:
 * - local (group = 0, not collective): the block's owner does everything. Owners initialize
 *   their blocks concurrently.
 * - group (group = 1, collective over comm, every rank calls with the same b and owner): a unit
 *   whose matrices reach dist_threshold runs on all ranks together, its decompositions on
 *   ScaLAPACK with the owner as root; the other units are spread over the ranks (unit k of the
 *   remaining ones on rank (owner + k) % size), which receive H from the owner, read their
 *   modules' weights from the checkpoint and send the results back. The owner writes. Used by
 *   sequential propagation (everyone waits for block b) and when a model has matrices above the
 *   threshold.
 * Results do not depend on which rank computes a unit (the same LAPACK calls on the same data),
 * so stores are bitwise identical across rank counts, except for the ScaLAPACK path, which
 * matches LAPACK to about 1e-12.
 */
#ifndef CLOQ_BLOCKINIT_H
#define CLOQ_BLOCKINIT_H

#include <mpi.h>
#include <stdint.h>

#include "cloq_store.h"
#include "cloq_worker.h"

enum { CLOQ_INIT_ZERO, CLOQ_INIT_SVD, CLOQ_INIT_CLOQ, CLOQ_INIT_LOFTQ };
enum { CLOQ_QUANT_RTN, CLOQ_QUANT_GPTQ };
enum { CLOQ_MAX_BITS = 4, CLOQ_MAX_RANKS = 16 };
/* Returned by a rank that stopped because another rank failed (it has no error of its own). */
#define CLOQ_STOPPED 2

typedef struct {
  int nbits;
  int bits[CLOQ_MAX_BITS];        /* quantization settings of the sweep */
  int nranks;
  int64_t ranks[CLOQ_MAX_RANKS];  /* LoRA ranks of the sweep; config c = ib * nranks + ir */
  int64_t group_size;
  int init;                       /* CLOQ_INIT_* */
  int quantizer;                  /* CLOQ_QUANT_* */
  int act_order;                  /* gptq */
  int64_t gptq_block;             /* gptq lazy batch width */
  int magr;                       /* MagR before the quantizer */
  double magr_alpha;
  int magr_iters;
  int loftq_iters;                /* loftq: alternations */
  double damp;
  uint64_t seed;
  int64_t dist_threshold;         /* a matrix whose smaller side is >= this goes to ScaLAPACK */
  int64_t dist_nb;                /* ScaLAPACK block size */
  struct cloq_dev *dev;           /* eigendecompositions, SVDs and quantizers run here (NULL: the
                                   * CPU); MagR, LoftQ's products and the objectives stay on the
                                   * CPU. Not owned. */
} cloq_init_params;

typedef struct {
  MPI_Comm comm;
  int rank, size;
  const cloq_config *cfg;
  const cloq_st *st;       /* the checkpoint (units computed away from the owner read W here) */
  cloq_worker *w;          /* this rank's worker, NULL when it owns no block */
  const cloq_init_params *ip;
  cloq_store **stores;     /* nbits * nranks stores being written (used on owners) */
  int apply;               /* replace the owner's weights of b by Q + B A of config 0 */
} cloq_initctx;

/* The largest LoRA rank of the sweep (the SVDs are computed at it). */
int64_t cloq_init_max_rank(const cloq_init_params *ip);

/* Seconds per stage of one block. */
enum { CLOQ_ST_EIG, CLOQ_ST_QUANT, CLOQ_ST_INIT, CLOQ_ST_WRITE, CLOQ_NST };

/* Whether some matrix of this model reaches the ScaLAPACK threshold (with more than one rank),
 * which makes every block a group block. */
int cloq_block_needs_group(const cloq_config *cfg, const cloq_init_params *ip, int size);

/* Initializes block b (owned by `owner`) for the configs c with todo[c] != 0 (same on every
 * rank), committing one block file per such config. group: see above. On the owner the Gram
 * matrices of b are freed afterwards. Returns CLOQ_OK, CLOQ_ERR (this rank's error is recorded)
 * or CLOQ_STOPPED. sec: this rank's seconds per stage. */
int cloq_block_init(const cloq_initctx *x, int64_t b, int owner, int group, const uint8_t *todo,
                    double sec[CLOQ_NST]);

/* Work done by this rank so far: eigendecompositions, RTN quantizations, SVDs (each counted
 * once, on the root, when it ran on ScaLAPACK). */
void cloq_block_counts(int64_t counts[3]);

/* Replaces the owner's weights of block b by Q + B A read from the complete block file of
 * store 0 (a resumed sequential run). Not collective. */
int cloq_block_apply_done(const cloq_initctx *x, int64_t b);

#endif
