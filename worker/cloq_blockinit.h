/* cloq_blockinit: quantize and initialize the LoRA of every module of one owned block, after the
 * calibration stream has filled its Gram matrices, and write the result to the store.
 * Not collective: writes are independent. One eigendecomposition per distinct input, shared by
 * the modules that read it (q/k/v; gate/up). */
#ifndef CLOQ_BLOCKINIT_H
#define CLOQ_BLOCKINIT_H

#include <stdint.h>

#include "cloq_store.h"
#include "cloq_worker.h"

enum { CLOQ_INIT_ZERO, CLOQ_INIT_SVD, CLOQ_INIT_CLOQ };

typedef struct {
  int bits;
  int64_t group_size;
  int64_t rank;
  int init;      /* CLOQ_INIT_* */
  double damp;
  uint64_t seed;
} cloq_init_params;

/* Seconds per stage of one block. */
enum { CLOQ_ST_EIG, CLOQ_ST_QUANT, CLOQ_ST_INIT, CLOQ_ST_WRITE, CLOQ_NST };

int cloq_block_init(cloq_worker *w, const cloq_config *cfg, int64_t b, const cloq_init_params *ip,
                    cloq_store *store, double seconds[CLOQ_NST]);

#endif
