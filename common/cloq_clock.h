/* cloq_clock: wall-clock seconds from a monotonic clock, for stage timings and ETAs. */
#ifndef CLOQ_CLOCK_H
#define CLOQ_CLOCK_H

#include <time.h>

static inline double cloq_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
