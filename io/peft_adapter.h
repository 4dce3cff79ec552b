/* peft_adapter: a PEFT LoRA adapter folder as AutoPeftModelForCausalLM.from_pretrained reads it
 * (docs/export.md): the tensors PREFIX.lora_A.weight (rank, in) and PREFIX.lora_B.weight
 * (out, rank), float32, under PEFT's names (base_model.model. + the linear's Hugging Face name),
 * and adapter_config.json. PEFT computes W + (lora_alpha / rank) B A, so lora_B is written as
 * B * rank / lora_alpha to keep the product that of the factors given.
 *
 * Nothing here is collective and nothing uses MPI.
 */
#ifndef CLOQ_PEFT_ADAPTER_H
#define CLOQ_PEFT_ADAPTER_H

#include <stdint.h>

#include "hf_folder.h"

/* The two tensors of linear `linear` (its Hugging Face name without ".weight", e.g.
 * "model.layers.0.self_attn.q_proj") of shape (n_out, n_in): t[0] lora_A, t[1] lora_B. */
void cloq_peft_tensors(const char *linear, int64_t n_out, int64_t n_in, int64_t rank,
                       cloq_hf_tensor t[2]);

/* out[0..n) = B[0..n) * rank / lora_alpha (B itself when the factor is 1); a product that
 * overflows float32 is an error naming tensor `name`. */
int cloq_peft_lora_b(const float *B, int64_t n, int64_t rank, double lora_alpha, float *out,
                     const char *name);

/* dir/adapter_config.json: LoRA of rank `rank` with lora_alpha on the seven Llama linears, the
 * base model at `base` (a path written as given). ranks (n_layers x 7, may be NULL): each
 * linear's own rank, written as rank_pattern (PEFT's per-module r, keyed by the linear's name)
 * with alpha_pattern lora_alpha * r_m / rank, so that every module keeps PEFT's scaling
 * lora_alpha / rank. */
int cloq_peft_write_config(const char *dir, const char *base, int64_t rank, double lora_alpha,
                           const int64_t *ranks, int64_t n_layers);

#endif
