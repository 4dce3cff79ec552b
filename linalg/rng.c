/* rng: splitmix64, the deterministic generator behind the zero init's random A and the tests.
 *
 * The stream depends only on the seed (no platform-dependent state, no per-rank state), so a
 * layer initialized on any rank with the same mixed seed gets the same A. splitmix64 is
 * Steele, Lea and Flood's generator (as in Java's SplittableRandom): a Weyl sequence passed
 * through a bijective 64-bit finalizer.
 */
#include <math.h>
#include <stdint.h>

#include "cloq_linalg.h"

static const uint64_t GOLDEN_GAMMA = 0x9e3779b97f4a7c15ULL;

/* splitmix64's (Stafford variant 13) finalizer: bijective, every input bit affects every output
 * bit. */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void cloq_rng_seed(cloq_rng *g, uint64_t seed) { g->s = seed; }

uint64_t cloq_rng_u64(cloq_rng *g) {
  g->s += GOLDEN_GAMMA;
  return mix64(g->s);
}

double cloq_rng_uniform(cloq_rng *g) {
  return (double)(cloq_rng_u64(g) >> 11) * 0x1.0p-53; /* top 53 bits: exact, in [0, 1) */
}

double cloq_rng_normal(cloq_rng *g) {
  /* Box-Muller with u1 in (0, 1] so the log is finite; the second variate is dropped because the
   * state is one word (a cached spare would make the stream depend on call history). */
  const double u1 = 1.0 - cloq_rng_uniform(g);
  const double u2 = cloq_rng_uniform(g);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t cloq_seed_mix(uint64_t a, uint64_t b, uint64_t c) {
  /* Chained finalizer rounds, each input offset by a different multiple of the golden gamma: the
   * map is order-sensitive (mix(a, b, c) != mix(b, a, c) in general) and a change in any bit of
   * any input changes the result unpredictably. */
  uint64_t h = mix64(a + GOLDEN_GAMMA);
  h = mix64(h ^ (b + 2 * GOLDEN_GAMMA));
  h = mix64(h ^ (c + 3 * GOLDEN_GAMMA));
  return h;
}
