/* cloq_half: float <-> half / bfloat16 conversion (io/half.c; io/cloq_half_fast.h has the fast
 * rounding used in bulk). */
#ifndef CLOQ_HALF_H
#define CLOQ_HALF_H

#include <stdint.h>

/* Round to nearest even. */
float cloq_f16_to_f32(uint16_t h);
float cloq_bf16_to_f32(uint16_t h);
uint16_t cloq_f32_to_f16(float f);
uint16_t cloq_f32_to_bf16(float f);

#endif
