/* cloq_model: a model as cloq reads it, recognized once from its path: a Hugging Face folder
 * (config.json, safetensors, tokenizer files) or a GGUF file (parsed once; its metadata, tensors
 * and tokenizer all come from that one parse). The readers below it (config.c, safetensors.c,
 * gguf.c, the tokenizers) no longer guess the format themselves. No MPI; nothing here is
 * collective. */
#ifndef CLOQ_MODEL_H
#define CLOQ_MODEL_H

#include <stddef.h>

#include "cloq_config.h"
#include "cloq_ckpt.h"
#include "cloq_tok.h"

typedef struct {
  char *path;
  int is_gguf;            /* path is a GGUF file; else a folder */
  cloq_config cfg;        /* validated */
  cloq_ckpt *st;            /* the checkpoint, checked against cfg's layer count */
} cloq_model;

/* Opens the model at path: a GGUF file (by its magic) or a Hugging Face folder. An error names
 * what is wrong: a file that is not GGUF, a folder without config.json or weights, a config with
 * fewer layers than the checkpoint. */
int cloq_model_open(const char *path, cloq_model **out);
void cloq_model_close(cloq_model **m); /* accepts NULL and *m == NULL */

/* The tokenizer of the model: `override` when given (tokenizer.json, a GGUF file or a llama2.c
 * tokenizer, recognized by its first bytes), else the GGUF file's own (no second parse), else
 * the folder's tokenizer.json, tokenizer.bin or first tok*.bin. Checked against the vocabulary. */
int cloq_model_tokenizer(const cloq_model *m, const char *override, cloq_tok **out);
/* The path cloq_model_tokenizer would read for a folder model or an override (for messages and
 * copies). */
int cloq_model_tokenizer_path(const char *model, const char *override, char *path, size_t cap);

#endif
