/* hf_folder: the pieces of a Hugging Face model folder as transformers, PEFT and the GPTQ loaders
 * read it: safetensors shards with model.safetensors.index.json, config.json (the model's own or
 * one generated from its shape), generation_config.json, and the tokenizer files. `cloq export`
 * writes its base/, adapter/ and gptq/ folders with these (docs/export.md).
 *
 * Nothing here is collective and nothing uses MPI: one process writes a folder. Errors are
 * reported through cloq_err with a reason naming the file (and the tensor, where there is one).
 * Paths are at most CLOQ_HF_PATH_CAP bytes; a longer one is an error naming it.
 */
#ifndef CLOQ_HF_FOLDER_H
#define CLOQ_HF_FOLDER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cloq_config.h"
#include "cloq_ckpt.h"
#include "cloq_tok.h"

#define CLOQ_HF_PATH_CAP 4096

/* One tensor of a folder: its name, dtype and shape (ndim 1 or 2; shape[ndim..3] are 0). */
typedef struct {
  char name[224];
  cloq_dtype dtype;
  int ndim;
  int64_t shape[4];
} cloq_hf_tensor;

/* Fills buf, zeroed and cloq_hf_numel(t) * cloq_hf_dtype_size(t->dtype) bytes, with the values
 * of tensor i of the list handed to cloq_hf_write_shards (raw little-endian bytes of its dtype).
 * Returns CLOQ_OK, or CLOQ_ERR with the reason recorded. */
typedef int (*cloq_hf_produce_fn)(void *ctx, int64_t i, void *buf);

/* The name config.json gives a dtype (torch_dtype): "float16", "bfloat16", else "float32". */
const char *cloq_hf_dtype_name(cloq_dtype d);
/* Bytes per element: 4 for F32 and I32, 2 for F16 and BF16. */
size_t cloq_hf_dtype_size(cloq_dtype d);
/* Elements of t (the product of its shape). */
int64_t cloq_hf_numel(const cloq_hf_tensor *t);
/* Sets *t to dtype dt, shape (d0, d1), or (d0) when d1 <= 0, and the name printf(fmt, ...)
 * (cut to fit). */
void cloq_hf_tensor_set(cloq_hf_tensor *t, cloq_dtype dt, int64_t d0, int64_t d1, const char *fmt,
                        ...) __attribute__((format(printf, 5, 6)));

/* buf = "a/b"; error when it does not fit cap. */
int cloq_hf_join(char *buf, size_t cap, const char *a, const char *b);
/* A number as JSON: an integer when it is one (lora_alpha 16, not 16.0); new reference. */
json_t *cloq_hf_json_num(double v);
/* dir/file from root, indented by 2, keys in insertion order (root is not stolen); written to
 * dir/file.tmp and renamed into place. */
int cloq_hf_write_json(json_t *root, const char *dir, const char *file);

/* n float32 values x to dtype dt into dst (n elements of dt; dst may equal x for F32). A value
 * that does not fit dt (float16 overflow) is an error naming tensor `name` and the flat index. */
int cloq_hf_from_f32(const float *x, int64_t n, cloq_dtype dt, void *dst, const char *name);

/* Writes tensors t[0..n) into folder dir (which must exist), in that order: cut greedily into
 * shards of at most shard_mib MiB (a shard closes when the next tensor would push it past the
 * limit; a larger tensor gets a shard of its own), each shard's tensors produced by produce(ctx,
 * i, buf) and written with cloq_st_write, so memory holds one shard at a time. One shard is the
 * file `single`; several are model-0000k-of-0000n.safetensors plus model.safetensors.index.json
 * (metadata.total_size and the weight_map). shard_mib <= 0: always one file. When `what` is not
 * NULL, a line per shard of several (with an ETA) and a summary line labelled `what` go to
 * stdout. */
int cloq_hf_write_shards(const char *dir, const cloq_hf_tensor *t, int64_t n, const char *single,
                         double shard_mib, cloq_hf_produce_fn produce, void *ctx,
                         const char *what);

/* The config.json of a model of family and shape cfg (architectures .. bos_token_id, with the
 * family's keys: rope_scaling, attention_bias / mlp_bias, use_sliding_window, sliding_window; no
 * eos_token_id, torch_dtype or quantization_config); a new reference, or NULL with the error
 * recorded (a GGUF model's rope_freqs cannot be stated). `cloq synth` writes its models'
 * config.json from it too. */
json_t *cloq_hf_config_json(const cloq_config *cfg);
/* dir/config.json: model_dir's own config.json when model_dir is not NULL and has one (read as
 * JSON, rewritten), else one generated from cfg (LlamaForCausalLM; eos_token_id is that of the
 * eos_token named by dir/tokenizer_config.json, looked up among tok's pieces, and absent when tok
 * is NULL or it is not found: write the tokenizer first). torch_dtype and dtype are set to
 * dtype's name and quantization_config is replaced by quant (stolen; NULL: none). model_dir's
 * generation_config.json, if any, is copied beside it. */
int cloq_hf_write_config(const char *dir, const char *model_dir, const cloq_config *cfg,
                         const cloq_tok *tok, cloq_dtype dtype, json_t *quant);

/* When model_dir holds tokenizer.json, copies it and those of tokenizer_config.json,
 * special_tokens_map.json and tokenizer.model it has into dir and sets *copied to 1; else copies
 * nothing and sets *copied to 0. */
int cloq_hf_copy_tokenizer(const char *model_dir, const char *dir, int *copied);
/* cloq_tok_write_hf(t, dir); on failure the tokenizer files it may have left in dir are removed
 * and the error stays recorded. */
int cloq_hf_write_tokenizer(const cloq_tok *t, const char *dir);

#endif
