/* cloq_export: `cloq export`, the hand-off of a store to the tools that fine-tune or serve it.
 *
 * One command writes, into DIR (see docs/export.md for every file and convention):
 *   DIR/base/     safetensors: the dequantized base Q of every linear (no LoRA) and the model's
 *                 embeddings, norms and lm_head, config.json, tokenizer files: a plain
 *                 LlamaForCausalLM folder that transformers loads;
 *   DIR/adapter/  peft: adapter_config.json + adapter_model.safetensors (the store's lora_A,
 *                 lora_B under PEFT's names), so that AutoPeftModelForCausalLM.from_pretrained(
 *                 "DIR/adapter") gives Q + B A;
 *   DIR/gptq/     gptq: the codes packed as a GPTQ checkpoint: GPTQModel's "gptq_v2" (zero
 *                 points as they are; the default), or AutoGPTQ's "gptq" (v1, zero - 1).
 * Everything is written into DIR.partial/ and renamed to DIR at the end, so a DIR that exists is
 * complete. Not MPI-parallel: one process (rank 0) does all of it.
 */
#ifndef CLOQ_EXPORT_H
#define CLOQ_EXPORT_H

#include "cloq_ckpt.h"
#include "gptq_pack.h"

/* Formats, combined with |. */
enum { CLOQ_EXPORT_SAFETENSORS = 1, CLOQ_EXPORT_PEFT = 2, CLOQ_EXPORT_GPTQ = 4 };

typedef struct {
  const char *store;     /* cloq store (top file); NULL only when formats is SAFETENSORS alone:
                            the full-precision model (e.g. a GGUF file) converted to HF layout */
  const char *out;       /* DIR */
  const char *model;     /* model folder or GGUF file; NULL: the one recorded in the store */
  const char *tokenizer; /* tokenizer file when the model folder has no tokenizer.json; NULL:
                            found as `cloq init` finds it (a GGUF model: the file itself) */
  unsigned formats;      /* CLOQ_EXPORT_* bits, at least one */
  cloq_dtype dtype;      /* base/ tensors: CLOQ_DT_F32 (exact), CLOQ_DT_F16 or CLOQ_DT_BF16 */
  double lora_alpha;     /* adapter's lora_alpha; <= 0: the store's rank (PEFT scaling 1) */
  double shard_mib;      /* base/ and gptq/ are split into shards of at most this many MiB (a
                            larger single tensor gets a shard of its own) */
  int force;             /* replace an existing DIR (only an earlier export, or an empty folder) */
  cloq_gptq_format gptq_format; /* DIR/gptq's format: CLOQ_GPTQ_V2 (default) or CLOQ_GPTQ_V1 */
} cloq_export_opts;

/* Defaults: formats safetensors|peft, dtype F32, lora_alpha 0 (= rank), shard 4096 MiB,
 * gptq_format CLOQ_GPTQ_V2. */
void cloq_export_default_opts(cloq_export_opts *o);

/* Not collective; call it on one process (rank 0) only. Writes the export o describes; progress
 * and a summary go to stdout, warnings (a tokenizer that cannot be written, GPTQ zero points the
 * v1 format cannot hold, a model shape the GPTQ kernels do not take) to stderr. On failure
 * nothing is left at DIR (an existing DIR is untouched) and DIR.partial/ is removed; returns
 * CLOQ_ERR with the reason recorded (cloq_err_msg). */
int cloq_export_run(const cloq_export_opts *o);

/* A --format list ("safetensors,peft,gptq") into CLOQ_EXPORT_* bits; error names the bad item. */
int cloq_export_parse_formats(const char *list, unsigned *out);

/* Not collective: main calls it on rank 0 only. argv[0] is "export"; the options follow (see
 * `cloq export --help`). Returns 0, or 1 after printing one "cloq: error: ..." line on stderr. */
int cloq_export_main(int argc, char **argv);

#endif
