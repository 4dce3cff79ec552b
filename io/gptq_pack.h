/* gptq_pack: one quantized linear (a cloq_qmodule) in the layout of the GPTQ checkpoint formats
 * that GPTQModel and transformers' GPTQ integration load (docs/export.md):
 *   PREFIX.qweight  int32 (in_pad * bits / 32, out)  the codes packed along the input
 *   PREFIX.qzeros   int32 (n_groups, out_pad * bits / 32)  the zero points packed along the output:
 *                   as they are in "gptq_v2" (GPTQModel's format for asymmetric checkpoints),
 *                   minus 1 in AutoGPTQ's historical "gptq" (v1)
 *   PREFIX.scales   float16 (n_groups, out)
 *   PREFIX.g_idx    int32 (in)  column // group_size
 * where in_pad and out_pad are in and out rounded up to multiples of 32 (the padding holds zero
 * codes), and the quantize_config.json that goes with them. bits is 2, 3, 4 or 8. The two formats
 * differ only in qzeros and in quantize_config.json's format fields.
 *
 * Nothing here is collective and nothing uses MPI; the functions fill caller-owned buffers.
 */
#ifndef CLOQ_GPTQ_PACK_H
#define CLOQ_GPTQ_PACK_H

#include <jansson.h>
#include <stdint.h>

#include "cloq_modules.h"
#include "hf_folder.h"

#define CLOQ_GPTQ_WORD_BITS 32 /* qweight/qzeros words; widths are padded to multiples of 32 */

/* The checkpoint formats (quantize_config.json's "format"/"checkpoint_format"). */
typedef enum {
  CLOQ_GPTQ_V1 = 1, /* "gptq": zero - 1 stored; zero 0 cannot be held (see cloq_gptq_qzeros) */
  CLOQ_GPTQ_V2 = 2  /* "gptq_v2": zero stored as it is; every zero point 0 .. 2^bits - 1 fits */
} cloq_gptq_format;

/* "gptq" or "gptq_v2" (the name in quantize_config.json); NULL for another value. */
const char *cloq_gptq_format_name(cloq_gptq_format f);

/* The four tensors of one linear, in the order above: t[k].shape from (n_out, n_in), bits and
 * group_size (<= 0: one group per row), t[k].name = prefix + ".qweight" and so on. */
void cloq_gptq_tensors(const char *prefix, int64_t n_out, int64_t n_in, int bits,
                       int64_t group_size, cloq_hf_tensor t[4]);
/* n rounded up to a multiple of 32. */
int64_t cloq_gptq_pad32(int64_t n);

/* v[0..n), values < 2^bits, as one little-endian bit stream (value i at bits [bits*i, bits*i +
 * bits) of the concatenated words) into nwords words w[0], w[wstride], ...; zero past n. */
void cloq_gptq_pack(const uint8_t *v, int64_t n, int bits, uint32_t *w, int64_t nwords,
                    int64_t wstride);

/* q's codes into qweight (rows = its first dimension). */
void cloq_gptq_qweight(const cloq_qmodule *q, int bits, uint32_t *qweight, int64_t rows);
/* q's zero points into qzeros (words = its second dimension): as they are for CLOQ_GPTQ_V2, minus
 * 1 for CLOQ_GPTQ_V1, where a zero point 0 is stored as 2^bits - 1 (v1 cannot hold it). zcol
 * holds words * 32 / bits values of scratch. Returns how many groups have zero point 0 (whatever
 * the format: only v1 gets them wrong). */
int64_t cloq_gptq_qzeros(const cloq_qmodule *q, int bits, cloq_gptq_format fmt, uint8_t *zcol,
                         uint32_t *qzeros, int64_t words);
/* q's scales transposed to (n_groups, n_out) float16. A scale that is infinite or 0 in float16
 * is an error naming tensor `name`; *rel_max is raised to the largest relative rounding. */
int cloq_gptq_scales(const cloq_qmodule *q, uint16_t *scales, const char *name, double *rel_max);
/* g_idx[j] = j / group_size for j < n_in (0 when group_size <= 0). */
void cloq_gptq_gidx(int64_t n_in, int64_t group_size, int32_t *g_idx);

/* quantize_config.json's content (also config.json's quantization_config); new reference, NULL
 * when out of memory. damp is the store's damping (damp_percent). Both formats carry the fields
 * AutoGPTQ and transformers' GPTQConfig read (bits, group_size, desc_act false, sym false,
 * quant_method, checkpoint_format). v1 adds AutoGPTQ's damp_percent, static_groups,
 * true_sequential and model_file_base_name, as cloq always wrote them; v2 adds what GPTQModel
 * 7.7's QuantizeConfig.to_dict writes and its from_quant_config reads: method, format,
 * pack_dtype "int32", lm_head false, and meta {quantizer ["cloq:VERSION"], static_groups,
 * true_sequential, damp_percent (only when in (0, 1): GPTQModel refuses other values)}. */
json_t *cloq_gptq_quant_config(cloq_gptq_format fmt, int bits, int64_t group_size, double damp);

#endif
