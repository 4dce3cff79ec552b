/* cloq_expf: the worker's float32 exp for softmax arguments, in a header of its own so that
 * tests/worker/test_expf.c can check it at every float of its range; cloq_worker.c is its only
 * other user. Header-only (static inline): the call sites must stay vectorizable.
 */
#ifndef CLOQ_EXPF_H
#define CLOQ_EXPF_H

#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 (softmax arguments after subtracting the row maximum), written so that the
 * compiler vectorizes it: exp(x) = 2^n exp(r), n = round(x / ln 2) by the 1.5*2^23 trick,
 * r = x - n ln 2 (two-part ln 2), exp(r) by its degree-6 Taylor polynomial on |r| <= ln2/2.
 * Relative error <= 2.6e-7 (about 2 ulp) against float64 exp, measured at every float in
 * (-87, 0] (tests/worker/test_expf.c); at -87 and below the result flushes to 0, which a softmax
 * term of relative weight < 1e-37 cannot notice. */
static inline float exp_nonpos(float x) {
  x = x < -87.0f ? -87.0f : x;
  float t = x * 1.44269504088896341f + 12582912.0f;
  float n = t - 12582912.0f;
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-06f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666667f + r * (0.041666668f +
                                                    r * (0.0083333338f + r * 0.0013888889f)))));
  int32_t e = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &e, sizeof scale);
  return x <= -87.0f ? 0.0f : p * scale;
}

#endif
