/* peft_adapter: the tensors and adapter_config.json of a PEFT LoRA adapter (peft_adapter.h).
 * Nothing here is collective and nothing uses MPI.
 */
#include "peft_adapter.h"

#include <math.h>

#include "cloq_err.h"

void cloq_peft_tensors(const char *linear, int64_t n_out, int64_t n_in, int64_t rank,
                       cloq_hf_tensor t[2]) {
  cloq_hf_tensor_set(&t[0], CLOQ_DT_F32, rank, n_in, "base_model.model.%s.lora_A.weight", linear);
  cloq_hf_tensor_set(&t[1], CLOQ_DT_F32, n_out, rank, "base_model.model.%s.lora_B.weight", linear);
}

int cloq_peft_lora_b(const float *B, int64_t n, int64_t rank, double lora_alpha, float *out,
                     const char *name) {
  /* scaling = alpha / r in PEFT: B' = B * (r / alpha) keeps scaling * B' A = B A */
  double k = (double)rank / lora_alpha;
  for (int64_t i = 0; i < n; i++) {
    out[i] = k == 1.0 ? B[i] : (float)((double)B[i] * k);
    CLOQ_CHECK(isfinite(out[i]),
               "%s: entry %lld, %g x rank / lora_alpha = %g, does not fit in float32 (use a "
               "larger --lora-alpha)", name, (long long)i, (double)B[i], (double)B[i] * k);
  }
  return CLOQ_OK;
}

/* rank_pattern and alpha_pattern entries for the modules of ranks (see the header). */
static int add_patterns(json_t *cfg, int64_t rank, double lora_alpha, const int64_t *ranks,
                        int64_t n_layers) {
  json_t *rp = json_object_get(cfg, "rank_pattern"), *ap = json_object_get(cfg, "alpha_pattern");
  static const char *const names[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};
  for (int64_t k = 0; k < n_layers * 7; k++) {
    char nm[160];
    snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)(k / 7), names[k % 7]);
    double a = lora_alpha * (double)ranks[k] / (double)rank;
    CLOQ_CHECK(json_object_set_new(rp, nm, json_integer((json_int_t)ranks[k])) == 0 &&
                   json_object_set_new(ap, nm, cloq_hf_json_num(a)) == 0,
               "out of memory (adapter_config.json)");
  }
  return CLOQ_OK;
}

int cloq_peft_write_config(const char *dir, const char *base, int64_t rank, double lora_alpha,
                           const int64_t *ranks, int64_t n_layers) {
  json_t *cfg = json_pack(
      "{s:s, s:s, s:s, s:n, s:b, s:I, s:o, s:[sssssss], s:f, s:b, s:s, s:b, s:n, s:b, s:n, s:n,"
      " s:{}, s:{}, s:b}",
      "peft_type", "LORA", "task_type", "CAUSAL_LM", "base_model_name_or_path", base, "revision",
      "inference_mode", 0, "r", (json_int_t)rank, "lora_alpha", cloq_hf_json_num(lora_alpha),
      "target_modules", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
      "down_proj", "lora_dropout", 0.0, "fan_in_fan_out", 0, "bias", "none", "use_rslora", 0,
      "modules_to_save", "init_lora_weights", 1, "layers_to_transform", "layers_pattern",
      "rank_pattern", "alpha_pattern", "use_dora", 0);
  CLOQ_CHECK(cfg, "out of memory (adapter_config.json)");
  int rc = ranks ? add_patterns(cfg, rank, lora_alpha, ranks, n_layers) : CLOQ_OK;
  if (rc == CLOQ_OK) rc = cloq_hf_write_json(cfg, dir, "adapter_config.json");
  json_decref(cfg);
  return rc;
}
