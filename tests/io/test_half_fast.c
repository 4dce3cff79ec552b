/* test_half_fast: cloq_f32_to_f16_fast (io/cloq_half_fast.h, inlined into synth's F16 writer)
 * against cloq_f32_to_f16 (io/half.c), bitwise, on all 2^32 float bit patterns: zeros,
 * subnormals, every rounding tie, overflow to infinity, infinities and every NaN payload.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cloq_half_fast.h"
#include "cloq_half.h"

enum { CHUNK = 1 << 16 };

static void test_f32_to_f16_fast_all_inputs(void **state) {
  (void)state;
  static float x[CHUNK];
  static uint16_t fast[CHUNK], ref[CHUNK];
  uint64_t bad = 0;
  uint32_t first = 0;
  uint16_t first_fast = 0, first_ref = 0;
  for (uint64_t base = 0; base < (1ull << 32); base += CHUNK) {
    for (uint32_t i = 0; i < CHUNK; i++) {
      const uint32_t u = (uint32_t)base + i;
      memcpy(&x[i], &u, sizeof u);
    }
    for (uint32_t i = 0; i < CHUNK; i++) fast[i] = cloq_f32_to_f16_fast(x[i]);
    for (uint32_t i = 0; i < CHUNK; i++) ref[i] = cloq_f32_to_f16(x[i]);
    if (memcmp(fast, ref, sizeof fast) != 0)
      for (uint32_t i = 0; i < CHUNK; i++)
        if (fast[i] != ref[i]) {
          if (!bad) first = (uint32_t)base + i, first_fast = fast[i], first_ref = ref[i];
          bad++;
        }
  }
  printf("cloq_f32_to_f16_fast vs cloq_f32_to_f16: %llu of 2^32 inputs differ\n",
         (unsigned long long)bad);
  if (bad) {
    float f;
    memcpy(&f, &first, sizeof f);
    fail_msg("cloq_f32_to_f16_fast differs from cloq_f32_to_f16 on %llu of 2^32 inputs; first "
             "at bits 0x%08x (%.9g): expected 0x%04x, got 0x%04x",
             (unsigned long long)bad, first, (double)f, first_ref, first_fast);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_f32_to_f16_fast_all_inputs),
  };
  return cmocka_run_group_tests_name("io_half_fast", tests, NULL, NULL);
}
