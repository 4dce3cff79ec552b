/* cloq_blockinit: quantize and initialize the LoRA of every module of one block, after its Gram
 * matrices are complete, and write the block to its store(s).
 *
 * A block is worked on in four units, one per distinct input (attention: q/k/v; o; MLP: gate/up;
 * down). A unit factors its damped Gram matrix once (Hd = C C^T, Cholesky), then runs each of its
 * modules through cloq_module_init (cloq_modinit.h: per bits setting one quantization and one
 * top-r solve at the largest LoRA rank, every smaller rank a truncation), so a sweep over
 * bits x ranks costs one factorization per input and one solve per module and bits setting.
 *
 * Every module's calibrated objective tr((W - Q - BA) Hd (W - Q - BA)^T), Hd the damped Gram
 * matrix, and that of Q alone (the zero init of the same quantizer) go into the store with it.
 *
 * Two ways to run a block:
 * - local (group = 0, not collective): the block's owner does everything. Owners initialize
 *   their blocks concurrently.
 * - group (group = 1, collective over comm, every rank calls with the same b and owner): a unit
 *   with a module whose smaller side reaches dist_threshold runs on the owner while the other
 *   ranks join its large top-r solves on ScaLAPACK (pdsyrk + pdsyevr, the owner as root); the
 *   other units are spread over the ranks (unit k of the
 *   remaining ones on rank (owner + k) % size), which receive H from the owner, read their
 *   modules' weights from the checkpoint and send the results back. The owner writes. Used by
 *   sequential propagation (everyone waits for block b) and when a model has matrices above the
 *   threshold.
 * Results do not depend on which rank computes a unit (the same LAPACK calls on the same data),
 * so stores are bitwise identical across rank counts, except for the ScaLAPACK path, which
 * matches LAPACK to about 1e-12 in the products.
 */
#ifndef CLOQ_BLOCKINIT_H
#define CLOQ_BLOCKINIT_H

#include <mpi.h>
#include <stdint.h>

#include "cloq_modinit.h"
#include "cloq_store.h"
#include "cloq_worker.h"

typedef struct {
  MPI_Comm comm;
  int rank, size;
  const cloq_config *cfg;
  const cloq_ckpt *st;       /* the checkpoint (units computed away from the owner read W here) */
  cloq_worker *w;          /* this rank's worker, NULL when it owns no block */
  const cloq_init_params *ip;
  cloq_store **stores;     /* nbits * nranks stores being written (used on owners) */
  int apply;               /* replace the owner's weights of b by Q + B A of config 0 */
} cloq_initctx;

/* Not collective (the same answer on every rank). Whether some matrix of this model reaches the
 * ScaLAPACK threshold (with more than one rank), which makes every block a group block. */
int cloq_block_needs_group(const cloq_config *cfg, const cloq_init_params *ip, int size);

/* Collective over the ranks taking part: every rank with group, else the owner and the ranks it
 * sends units to. Initializes block b (owned by `owner`) for the configs c with todo[c] != 0 (same
 * on every rank), committing one block file per such config. group: see above. On the owner the Gram
 * matrices of b are freed afterwards. Returns CLOQ_OK, CLOQ_ERR (this rank's error is recorded)
 * or CLOQ_STOPPED. sec: this rank's seconds per stage. */
int cloq_block_init(const cloq_initctx *x, int64_t b, int owner, int group, const uint8_t *todo,
                    double sec[CLOQ_NST]);

/* Not collective. Work done by this rank so far: factorizations of damped Gram matrices, partial eigensolves
 * (top-r problems: counted once, on the owner, when they ran on ScaLAPACK) and quantizations. */
void cloq_block_counts(int64_t counts[3]);

/* Replaces the owner's weights of block b by Q + B A read from the complete block file of
 * store 0 (a resumed sequential run). Not collective. */
int cloq_block_apply_done(const cloq_initctx *x, int64_t b);

#endif
