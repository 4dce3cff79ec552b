/* cloq_progress: rank 0's progress lines, one per finished block (its owner sends it the
 * record). Not collective. */
#ifndef CLOQ_PROGRESS_H
#define CLOQ_PROGRESS_H

#include <stdint.h>

#include "cloq_modinit.h"

/* The record a block's owner sends rank 0: {block, ok, owner, forward s, stage s...}. */
enum { PROG_N = 4 + CLOQ_NST };

/* One line per finished block; `done` counts the blocks reported so far (this one included),
 * `total` the blocks this run initializes. The ETA assumes the remaining blocks take as long as
 * the average one so far since t_init (owners work concurrently, so this is the time until the
 * last report, not a sum). */
void cloq_progress_print(const double *v, int64_t n_layers, int64_t done, int64_t total,
                         double t0, double t_init);

#endif
