/* cloq_progress: see cloq_progress.h. */
#include "cloq_progress.h"

#include <stdio.h>

#include "cloq_clock.h"

static const char *const stage_names[CLOQ_NST] = {"factor", "quant", "init", "write"};

void cloq_progress_print(const double *v, int64_t n_layers, int64_t done, int64_t total,
                         double t0, double t_init) {
  double now = cloq_now();
  printf("block %lld/%lld (rank %d): forward+gram %.3f s", (long long)v[0] + 1,
         (long long)n_layers, (int)v[2], v[3]);
  for (int i = 0; i < CLOQ_NST; i++) printf(", %s %.3f s", stage_names[i], v[4 + i]);
  printf("  [%lld/%lld done, %.1f s, ETA %.1f s]\n", (long long)done, (long long)total,
         now - t0, (now - t_init) / (double)done * (double)(total - done));
  fflush(stdout);
}

