/* gptq_pack: a cloq_qmodule as the four tensors of a GPTQ checkpoint ("gptq_v2", GPTQModel's
 * format for asymmetric quantization, or AutoGPTQ's v1 "gptq") and its quantize_config.json
 * (gptq_pack.h). Nothing here is collective and nothing uses MPI.
 */
#include "gptq_pack.h"

#include <math.h>

#include "cloq_err.h"
#include "cloq_half.h"

const char *cloq_gptq_format_name(cloq_gptq_format f) {
  return f == CLOQ_GPTQ_V1 ? "gptq" : f == CLOQ_GPTQ_V2 ? "gptq_v2" : NULL;
}

int64_t cloq_gptq_pad32(int64_t n) {
  return (n + CLOQ_GPTQ_WORD_BITS - 1) / CLOQ_GPTQ_WORD_BITS * CLOQ_GPTQ_WORD_BITS;
}

void cloq_gptq_tensors(const char *prefix, int64_t n_out, int64_t n_in, int bits,
                       int64_t group_size, cloq_hf_tensor t[4]) {
  int64_t ng = group_size > 0 ? (n_in + group_size - 1) / group_size : 1;
  cloq_hf_tensor_set(&t[0], CLOQ_DT_I32, cloq_gptq_pad32(n_in) / CLOQ_GPTQ_WORD_BITS * bits, n_out,
                     "%s.qweight", prefix);
  cloq_hf_tensor_set(&t[1], CLOQ_DT_I32, ng, cloq_gptq_pad32(n_out) / CLOQ_GPTQ_WORD_BITS * bits,
                     "%s.qzeros", prefix);
  cloq_hf_tensor_set(&t[2], CLOQ_DT_F16, ng, n_out, "%s.scales", prefix);
  cloq_hf_tensor_set(&t[3], CLOQ_DT_I32, n_in, 0, "%s.g_idx", prefix);
}

/* AutoGPTQ's pack() (qlinear_cuda_old.py) puts 32 / bits values per int32 word for bits 2, 4, 8,
 * value j of a word at bit bits * j; for 3 bits it packs 32 values into 3 words, 10 values per
 * word with value 10 split over words 0/1 (its low 2 bits at bits 30-31 of word 0, its top bit at
 * bit 0 of word 1) and value 21 over words 1/2 (low bit at bit 31, top 2 bits at bits 0-1). Both
 * are one little-endian bit stream: value i occupies bits [bits*i, bits*i + bits) of the
 * concatenated words, which is what this writes (tests/e2e/test_export.py unpacks with AutoGPTQ's
 * own 3-bit shifts, independently). */
void cloq_gptq_pack(const uint8_t *v, int64_t n, int bits, uint32_t *w, int64_t nwords,
                    int64_t wstride) {
  for (int64_t k = 0; k < nwords; k++) w[k * wstride] = 0;
  for (int64_t i = 0; i < n; i++) {
    uint64_t p = (uint64_t)i * (uint64_t)bits;
    int64_t k = (int64_t)(p / CLOQ_GPTQ_WORD_BITS);
    unsigned off = (unsigned)(p % CLOQ_GPTQ_WORD_BITS);
    uint32_t x = v[i];
    w[k * wstride] |= x << off;
    if (off + (unsigned)bits > CLOQ_GPTQ_WORD_BITS)
      w[(k + 1) * wstride] |= x >> (CLOQ_GPTQ_WORD_BITS - off);
  }
}

void cloq_gptq_qweight(const cloq_qmodule *q, int bits, uint32_t *qweight, int64_t rows) {
  int64_t no = q->n_out, ni = q->n_in;
  for (int64_t o = 0; o < no; o++)
    cloq_gptq_pack(q->codes + o * ni, ni, bits, qweight + o, rows, no);
}

int64_t cloq_gptq_qzeros(const cloq_qmodule *q, int bits, cloq_gptq_format fmt, uint8_t *zcol,
                         uint32_t *qzeros, int64_t words) {
  int64_t no = q->n_out, ng = q->n_groups, zero0 = 0;
  uint8_t mask = (uint8_t)((1 << bits) - 1);
  int shift = fmt == CLOQ_GPTQ_V1 ? 1 : 0;
  for (int64_t g = 0; g < ng; g++) {
    for (int64_t o = 0; o < no; o++) {
      int z = (int)q->zeros[o * ng + g]; /* an integer in [0, 2^bits - 1] (checked on reading) */
      /* v1 stores zero - 1; zero 0 gives -1, kept to its low `bits` bits (2^bits - 1) so that
       * the word's other fields stay intact (AutoGPTQ's pack ORs all 32 bits of -1 in) */
      zcol[o] = (uint8_t)((z - shift) & mask);
      zero0 += z == 0;
    }
    cloq_gptq_pack(zcol, no, bits, qzeros + g * words, words, 1);
  }
  return zero0;
}

int cloq_gptq_scales(const cloq_qmodule *q, uint16_t *scales, const char *name, double *rel_max) {
  int64_t no = q->n_out, ng = q->n_groups;
  for (int64_t g = 0; g < ng; g++)
    for (int64_t o = 0; o < no; o++) {
      float s = q->scales[o * ng + g];
      uint16_t v = cloq_f32_to_f16(s);
      float back = cloq_f16_to_f32(v);
      CLOQ_CHECK(isfinite(back) && back > 0,
                 "tensor %s: scale %g (row %lld, group %lld) is %s in float16", name, (double)s,
                 (long long)o, (long long)g, back > 0 ? "infinite" : "0");
      double rel = fabs((double)back - (double)s) / (double)s;
      if (rel > *rel_max) *rel_max = rel;
      scales[g * no + o] = v;
    }
  return CLOQ_OK;
}

void cloq_gptq_gidx(int64_t n_in, int64_t group_size, int32_t *g_idx) {
  for (int64_t j = 0; j < n_in; j++) g_idx[j] = (int32_t)(group_size > 0 ? j / group_size : 0);
}

json_t *cloq_gptq_quant_config(cloq_gptq_format fmt, int bits, int64_t group_size, double damp) {
  if (fmt == CLOQ_GPTQ_V1) /* AutoGPTQ's BaseQuantizeConfig.to_dict, as cloq has always written */
    return json_pack("{s:i, s:I, s:f, s:b, s:b, s:b, s:b, s:n, s:s, s:s, s:s}", "bits", bits,
                     "group_size", (json_int_t)group_size, "damp_percent", damp, "desc_act", 0,
                     "static_groups", 0, "sym", 0, "true_sequential", 1, "model_name_or_path",
                     "model_file_base_name", "model", "quant_method", "gptq",
                     "checkpoint_format", "gptq");
  /* GPTQModel 7.7 (quantization/config.py): from_quant_config takes "format" (its alias
   * "checkpoint_format" is what transformers' GPTQConfig and older GPTQModels read) and "method"
   * (alias "quant_method"); GPTQConfig refuses a damp_percent outside (0, 1); the loader
   * (models/loader.py) refuses sym false only for format "gptq", unless meta.quantizer names
   * gptqmodel >= 0.9.0, which cloq is not. Fields that do not take part in inference go in meta,
   * as its writer puts them. */
  json_t *meta = json_pack("{s:[s], s:b, s:b}", "quantizer", "cloq:" CLOQ_VERSION,
                           "static_groups", 0, "true_sequential", 1);
  if (meta && damp > 0 && damp < 1) json_object_set_new(meta, "damp_percent", json_real(damp));
  return json_pack("{s:i, s:I, s:b, s:b, s:b, s:s, s:s, s:s, s:s, s:s, s:o}", "bits", bits,
                   "group_size", (json_int_t)group_size, "desc_act", 0, "sym", 0, "lm_head", 0,
                   "method", "gptq", "quant_method", "gptq", "format", "gptq_v2",
                   "checkpoint_format", "gptq_v2", "pack_dtype", "int32", "meta", meta);
}
