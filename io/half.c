/* half.c: IEEE binary16 (F16) and bfloat16 (BF16) <-> float32 conversions.
 *
 * Checkpoints store weights as F16 or BF16; everything downstream works in float32, so these
 * conversions sit at the module boundary (cloq_ckpt_read_f32) and in the writer used by tests. They
 * work on bit patterns rather than on compiler half types so that the results do not depend on
 * the target (no _Float16 / F16C), round to nearest even like numpy and torch, keep NaN a NaN
 * (quiet, sign and leading payload kept) and overflow to infinity.
 */
#include <string.h>

#include "cloq_half.h"

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

float cloq_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) /* inf or NaN: the 10-bit payload becomes the top of the 23-bit one */
    return bits_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    /* subnormal: man * 2^-24, exact in float32; normalise by shifting the leading 1 up */
    int e = -1;
    do {
      man <<= 1;
      e++;
    } while (!(man & 0x400u));
    man &= 0x3ffu;
    return bits_f32(sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13));
  }
  return bits_f32(sign | ((exp + 127 - 15) << 23) | (man << 13));
}

float cloq_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t cloq_f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) /* NaN: keep it quiet and keep the leading payload bits */
    return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
  /* 65520 = 0x477ff000 is halfway between 65504 (odd mantissa) and 2^16: ties-to-even goes up */
  if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
  if (x >= 0x38800000u) { /* normal half: rebias the exponent (127 -> 15), round 13 bits away */
    uint32_t r = x - (112u << 23);
    uint32_t h = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
  }
  /* subnormal half (units of 2^-24) or zero; below 2^-25 everything rounds to zero */
  uint32_t e = x >> 23;
  if (e < 102) return sign;
  uint32_t m = (x & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126 - e; /* 14..24 */
  uint32_t h = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) h++; /* may become the smallest normal: right */
  return (uint16_t)(sign | h);
}

uint16_t cloq_f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1u); /* round to nearest even; overflow lands on infinity */
  return (uint16_t)(x >> 16);
}
