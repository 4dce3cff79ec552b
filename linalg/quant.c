/* quant: round-to-nearest (RTN) asymmetric min-max quantization per group, and dequantization.
 *
 * This is the quantizer whose error E = W - Q the LoRA initializations correct, so it must match
 * the GPTQ/PEFT reference bit for bit: float32 arithmetic throughout, the range [xmin, xmax]
 * extended to include 0, GPTQ's all-zero-group rule, division by the scale (not multiplication
 * by its reciprocal, which rounds differently), and rintf (ties to even, as torch.round). The
 * fast version performs the same float operations in the same order as the reference, so the two
 * agree bitwise; it only reorganises the loops (finiteness folded into the min/max pass, no
 * per-element branches).
 *
 * Extra validation beyond the header: a group whose range overflows float32 or whose scale
 * underflows to zero is rejected (the codes would be NaN otherwise), naming row and group.
 */
#include <math.h>
#include <stdint.h>

#include "cloq_linalg.h"
#include "linalg_internal.h"

int64_t cloq_quant_ngroups(int64_t n_in, int64_t group_size) {
  if (n_in < 0 || (group_size != -1 && group_size < 1)) return -1;
  if (n_in == 0) return 0;
  if (group_size == -1 || group_size >= n_in) return 1;
  return n_in / group_size + (n_in % group_size != 0);
}

/* Shared argument checks; sets *gs to the effective group width and *ngroups. */
int cloq_quant_check_args(const float *W, int64_t n_out, int64_t n_in, int bits,
                           int64_t group_size, const uint8_t *codes, const float *scales,
                           const float *zeros, int64_t *gs, int64_t *ngroups) {
  CLOQ_CHECK(bits == 2 || bits == 3 || bits == 4 || bits == 8,
             "unsupported bit width %d (expected 2, 3, 4 or 8)", bits);
  CLOQ_CHECK(group_size == -1 || group_size >= 1,
             "invalid group size %lld (expected -1 for whole rows, or >= 1)",
             (long long)group_size);
  CLOQ_CHECK(n_out >= 0 && n_in >= 0, "invalid weight shape (%lld, %lld)", (long long)n_out,
             (long long)n_in);
  int64_t nel;
  CLOQ_CALL(cloq_mul64(n_out, n_in, &nel)); /* row * n_in indexing must not overflow */
  CLOQ_CHECK(nel == 0 || (W && codes && scales && zeros), "NULL array for a non-empty weight");
  *ngroups = cloq_quant_ngroups(n_in, group_size);
  *gs = (group_size == -1 || group_size > n_in) ? n_in : group_size;
  return CLOQ_OK;
}

/* Scale and zero point of one group from its (already 0-extended) range (linalg_internal.h).
 * Shared by RTN's two versions and by GPTQ, so the grid and the failure messages are identical;
 * the arithmetic is three float operations. */
int cloq_quant_scale_zero(float xmin, float xmax, int bits, int64_t row, int64_t group,
                          float *scale, float *zero) {
  if (xmin == 0.0f && xmax == 0.0f) { /* all-zero group: GPTQ's rule, avoids scale 0 */
    xmin = -1.0f;
    xmax = 1.0f;
  }
  const float maxq = (float)((1 << bits) - 1);
  const float sc = (xmax - xmin) / maxq;
  CLOQ_CHECK(isfinite(sc) && sc > 0.0f,
             "row %lld, group %lld: weight range [%g, %g] gives unusable scale %g",
             (long long)row, (long long)group, (double)xmin, (double)xmax, (double)sc);
  *scale = sc;
  /* + 0.0f turns the -0.0 that rintf(-(+0)/scale) yields for non-negative groups into +0.0, so
   * that stored zero points never carry a sign bit (values are unchanged). */
  *zero = rintf(-xmin / sc) + 0.0f;
  return CLOQ_OK;
}

int cloq_quant_rtn_ref(const float *W, int64_t n_out, int64_t n_in, int bits, int64_t group_size,
                       uint8_t *codes, float *scales, float *zeros) {
  int64_t gs, ng;
  CLOQ_CALL(cloq_quant_check_args(W, n_out, n_in, bits, group_size, codes, scales, zeros, &gs, &ng));
  const float maxq = (float)((1 << bits) - 1);
  for (int64_t r = 0; r < n_out; r++) {
    for (int64_t g = 0; g < ng; g++) {
      const int64_t c0 = g * gs;
      const int64_t c1 = (c0 + gs < n_in) ? c0 + gs : n_in;
      float xmin = 0.0f, xmax = 0.0f;
      for (int64_t c = c0; c < c1; c++) {
        const float w = W[r * n_in + c];
        CLOQ_CHECK(isfinite(w), "non-finite weight %g at row %lld, column %lld", (double)w,
                   (long long)r, (long long)c);
        if (w < xmin) xmin = w;
        if (w > xmax) xmax = w;
      }
      float scale = 0.0f, zero = 0.0f; /* set below; silences -Wmaybe-uninitialized */
      CLOQ_CALL(cloq_quant_scale_zero(xmin, xmax, bits, r, g, &scale, &zero));
      scales[r * ng + g] = scale;
      zeros[r * ng + g] = zero;
      for (int64_t c = c0; c < c1; c++) {
        float q = rintf(W[r * n_in + c] / scale) + zero;
        if (q < 0.0f) q = 0.0f;
        if (q > maxq) q = maxq;
        codes[r * n_in + c] = (uint8_t)q;
      }
    }
  }
  return CLOQ_OK;
}

int cloq_quant_rtn(const float *W, int64_t n_out, int64_t n_in, int bits, int64_t group_size,
                   uint8_t *codes, float *scales, float *zeros) {
  int64_t gs, ng;
  CLOQ_CALL(cloq_quant_check_args(W, n_out, n_in, bits, group_size, codes, scales, zeros, &gs, &ng));
  const float maxq = (float)((1 << bits) - 1);
  for (int64_t r = 0; r < n_out; r++) {
    const float *restrict w = W + r * n_in;
    uint8_t *restrict q8 = codes + r * n_in;
    for (int64_t g = 0, c0 = 0; g < ng; g++, c0 += gs) {
      const int64_t len = (c0 + gs < n_in) ? gs : n_in - c0;
      const float *restrict wg = w + c0;
      /* One pass: range and finiteness. v * 0 is NaN exactly when v is inf or NaN, so the sum
       * flags any non-finite entry without a branch per element. The comparisons are the same
       * strict < / > as the reference, so -0.0 and ties pick the same xmin/xmax bits. */
      float xmin = 0.0f, xmax = 0.0f, nanflag = 0.0f;
      for (int64_t c = 0; c < len; c++) {
        const float v = wg[c];
        nanflag += v * 0.0f;
        xmin = v < xmin ? v : xmin;
        xmax = v > xmax ? v : xmax;
      }
      if (nanflag != 0.0f) { /* NaN != 0: find the first bad column for the message */
        for (int64_t c = 0; c < len; c++)
          CLOQ_CHECK(isfinite(wg[c]), "non-finite weight %g at row %lld, column %lld",
                     (double)wg[c], (long long)r, (long long)(c0 + c));
      }
      float scale = 0.0f, zero = 0.0f; /* set below; silences -Wmaybe-uninitialized */
      CLOQ_CALL(cloq_quant_scale_zero(xmin, xmax, bits, r, g, &scale, &zero));
      scales[r * ng + g] = scale;
      zeros[r * ng + g] = zero;
      uint8_t *restrict qg = q8 + c0;
      for (int64_t c = 0; c < len; c++) {
        float q = rintf(wg[c] / scale) + zero;
        q = q < 0.0f ? 0.0f : q;
        q = q > maxq ? maxq : q;
        qg[c] = (uint8_t)q;
      }
    }
  }
  return CLOQ_OK;
}

void cloq_dequant(const uint8_t *codes, const float *scales, const float *zeros, int64_t n_out,
                  int64_t n_in, int64_t group_size, float *Q) {
  const int64_t ng = cloq_quant_ngroups(n_in, group_size);
  if (ng <= 0 || n_out <= 0) return; /* invalid group size or empty: nothing to write */
  const int64_t gs = (group_size == -1 || group_size > n_in) ? n_in : group_size;
  for (int64_t r = 0; r < n_out; r++) {
    for (int64_t g = 0, c0 = 0; g < ng; g++, c0 += gs) {
      const int64_t c1 = (c0 + gs < n_in) ? c0 + gs : n_in;
      const float scale = scales[r * ng + g], zero = zeros[r * ng + g];
      for (int64_t c = c0; c < c1; c++)
        Q[r * n_in + c] = ((float)codes[r * n_in + c] - zero) * scale;
    }
  }
}
