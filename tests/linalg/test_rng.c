/* test_rng: splitmix64 known answers, determinism, the ranges and moments of the uniform and
 * normal draws, and the seed mixer (distinct, order-sensitive, avalanching).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

enum { NDRAWS = 100000 };
/* moments over NDRAWS draws: standard errors are ~0.001 (uniform mean), ~0.003 (normal mean),
 * ~0.0045 (normal variance); these bounds are > 5 standard errors, with a fixed seed anyway */
static const double UNIFORM_MEAN_TOL = 0.01;
static const double NORMAL_MOMENT_TOL = 0.02;
/* one flipped input bit should flip 32 of 64 output bits on average (sd of the mean over 64
 * flips is 0.5 bit for an ideal mixer) */
static const double AVALANCHE_TOL_BITS = 4.0;

static void test_rng_known_answers(void **state) {
  (void)state;
  /* splitmix64 reference outputs (Vigna's splitmix64.c) for seeds 0 and 1234567 */
  const uint64_t seeds[2] = {0, 1234567};
  const uint64_t want[2][3] = {
      {0xe220a8397b1dcdafULL, 0x6e789e6aa1b965f4ULL, 0x06c45d188009454fULL},
      {0x599ed017fb08fc85ULL, 0x2c73f08458540fa5ULL, 0x883ebce5a3f27c77ULL}};
  for (int k = 0; k < 2; k++) {
    cloq_rng g;
    cloq_rng_seed(&g, seeds[k]);
    for (int i = 0; i < 3; i++) {
      const uint64_t got = cloq_rng_u64(&g);
      EXPECT_TRUE(got == want[k][i], "seed %llu, draw %d: expected 0x%016llx, got 0x%016llx",
                  (unsigned long long)seeds[k], i, (unsigned long long)want[k][i],
                  (unsigned long long)got);
    }
  }
}

static void test_rng_deterministic(void **state) {
  (void)state;
  cloq_rng a, b, c;
  cloq_rng_seed(&a, 42);
  cloq_rng_seed(&b, 42);
  cloq_rng_seed(&c, 43);
  int same_as_other_seed = 0;
  for (int i = 0; i < 1000; i++) {
    const uint64_t x = cloq_rng_u64(&a), y = cloq_rng_u64(&b), z = cloq_rng_u64(&c);
    EXPECT_TRUE(x == y, "draw %d: same seed gave 0x%016llx and 0x%016llx", i,
                (unsigned long long)x, (unsigned long long)y);
    same_as_other_seed += x == z;
  }
  EXPECT_TRUE(same_as_other_seed == 0, "seeds 42 and 43 agreed on %d of 1000 draws",
              same_as_other_seed);
  /* the derived draws follow the same stream */
  cloq_rng_seed(&a, 7);
  cloq_rng_seed(&b, 7);
  for (int i = 0; i < 100; i++) {
    const double u = cloq_rng_uniform(&a), v = cloq_rng_uniform(&b);
    const double n1 = cloq_rng_normal(&a), n2 = cloq_rng_normal(&b);
    EXPECT_TRUE(memcmp(&u, &v, sizeof u) == 0 && memcmp(&n1, &n2, sizeof n1) == 0,
                "draw %d: uniform %a vs %a, normal %a vs %a", i, u, v, n1, n2);
  }
}

static void test_rng_distributions(void **state) {
  (void)state;
  cloq_rng g;
  cloq_rng_seed(&g, 2718);
  double su = 0.0, sn = 0.0, sn2 = 0.0;
  for (int i = 0; i < NDRAWS; i++) {
    const double u = cloq_rng_uniform(&g);
    EXPECT_TRUE(u >= 0.0 && u < 1.0, "uniform draw %d = %.17g outside [0, 1)", i, u);
    EXPECT_TRUE(u == ldexp(floor(ldexp(u, 53)), -53), "uniform draw %d = %a is not k / 2^53", i,
                u);
    su += u;
  }
  for (int i = 0; i < NDRAWS; i++) {
    const double z = cloq_rng_normal(&g);
    EXPECT_TRUE(isfinite(z), "normal draw %d = %g", i, z);
    sn += z;
    sn2 += z * z;
  }
  const double mu = su / NDRAWS, mn = sn / NDRAWS, vn = sn2 / NDRAWS - mn * mn;
  EXPECT_CLOSE(mu, 0.5, UNIFORM_MEAN_TOL, 1.0, "uniform mean");
  EXPECT_CLOSE(mn, 0.0, NORMAL_MOMENT_TOL, 1.0, "normal mean");
  EXPECT_CLOSE(vn, 1.0, NORMAL_MOMENT_TOL, 1.0, "normal variance");
}

static int popcount64(uint64_t x) {
  int n = 0;
  for (; x; x &= x - 1) n++;
  return n;
}

static void test_seed_mix(void **state) {
  (void)state;
  /* all 8^3 small triples give distinct seeds (what block/module indices look like) */
  uint64_t seen[512];
  int k = 0;
  for (uint64_t a = 0; a < 8; a++)
    for (uint64_t b = 0; b < 8; b++)
      for (uint64_t c = 0; c < 8; c++) {
        const uint64_t h = cloq_seed_mix(a, b, c);
        EXPECT_TRUE(h == cloq_seed_mix(a, b, c), "seed_mix is not deterministic");
        for (int j = 0; j < k; j++)
          EXPECT_TRUE(seen[j] != h, "seed_mix(%llu, %llu, %llu) = 0x%016llx repeats entry %d",
                      (unsigned long long)a, (unsigned long long)b, (unsigned long long)c,
                      (unsigned long long)h, j);
        seen[k++] = h;
      }
  /* order matters: a permuted (seed, block, module) is a different layer */
  EXPECT_TRUE(cloq_seed_mix(1, 2, 3) != cloq_seed_mix(2, 1, 3) &&
                  cloq_seed_mix(1, 2, 3) != cloq_seed_mix(1, 3, 2) &&
                  cloq_seed_mix(1, 2, 3) != cloq_seed_mix(3, 2, 1),
              "seed_mix is symmetric under a permutation of its inputs");
  /* avalanche: flipping one input bit flips about half of the output bits on average */
  for (int which = 0; which < 3; which++) {
    double total = 0.0;
    for (int bit = 0; bit < 64; bit++) {
      uint64_t in[3] = {12345, 678, 9}, in2[3] = {12345, 678, 9};
      in2[which] ^= 1ULL << bit;
      total += popcount64(cloq_seed_mix(in[0], in[1], in[2]) ^
                          cloq_seed_mix(in2[0], in2[1], in2[2]));
    }
    EXPECT_CLOSE(total / 64.0, 32.0, AVALANCHE_TOL_BITS, 1.0,
                 "mean output bits flipped by one bit of input %d", which);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rng_known_answers),
      cmocka_unit_test(test_rng_deterministic),
      cmocka_unit_test(test_rng_distributions),
      cmocka_unit_test(test_seed_mix),
  };
  return cmocka_run_group_tests_name("linalg_rng", tests, NULL, NULL);
}
