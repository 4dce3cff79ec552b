/* cloq_half_fast: a float32 -> IEEE half conversion meant to be inlined into hot loops (synth
 * writes F16 checkpoints element by element; a call per element would cost as much as drawing
 * the element). Header-only (static inline). cloq_f32_to_f16 (half.c) is the reference:
 * tests/io/test_half_fast.c checks that the two agree bitwise on all 2^32 inputs.
 */
#ifndef CLOQ_HALF_FAST_H
#define CLOQ_HALF_FAST_H

#include <stdint.h>
#include <string.h>

/* float -> IEEE half, round to nearest even: bitwise equal to cloq_f32_to_f16 for all 2^32
 * inputs, NaNs included (tests/io/test_half_fast.c). This is Giesen's float_to_half_fast3_rtne:
 * subnormal halves come from one float addition that rounds in hardware (default rounding mode,
 * no flush-to-zero), normal ones from adding the rounding bias to the bit pattern. */
static inline uint16_t cloq_f32_to_f16_fast(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint16_t h;
  if (u >= (127u + 16u) << 23) { /* >= 65536: inf, or NaN (kept quiet) */
    h = u > 0x7f800000u ? (uint16_t)(0x7e00u | ((u >> 13) & 0x3ffu)) : 0x7c00u;
  } else if (u < 113u << 23) { /* below 2^-14: a subnormal half or zero */
    const uint32_t magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23; /* 0.5f */
    float magic, x;
    memcpy(&magic, &magic_bits, sizeof magic);
    memcpy(&x, &u, sizeof x);
    x += magic; /* the half's mantissa lands in the low bits, rounded to nearest even */
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    h = (uint16_t)(xb - magic_bits);
  } else {
    const uint32_t odd = (u >> 13) & 1u;
    u += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd; /* rebias; a carry into the exponent is right */
    h = (uint16_t)(u >> 13);
  }
  return (uint16_t)(h | (sign >> 16));
}

#endif
