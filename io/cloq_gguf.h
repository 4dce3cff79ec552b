/* cloq_gguf: the GGUF reader (io/gguf.c). Not collective; errors name the file. */
#ifndef CLOQ_GGUF_H
#define CLOQ_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_config.h"
#include "cloq_tok.h"

/* Version 3 files as llama.cpp writes them (little-endian). The whole header (metadata and tensor
 * infos) is validated at open; tensors are read from a read-only mapping. */
typedef struct cloq_gguf cloq_gguf;
/* Parses a GGUF image in memory (what the fuzz target calls); name is used in errors. buf must
 * outlive *out. */
int cloq_gguf_parse(const void *buf, size_t len, const char *name, cloq_gguf **out);
int cloq_gguf_open(const char *path, cloq_gguf **out); /* maps the file, then cloq_gguf_parse */
void cloq_gguf_close(cloq_gguf **g);
/* 1 when path is a GGUF file (starts with the magic "GGUF"). */
int cloq_is_gguf(const char *path);
/* The model's hyperparameters from {arch}.* metadata (architecture "llama"). */
int cloq_gguf_config(const cloq_gguf *g, cloq_config *cfg);
/* The tokenizer from tokenizer.ggml.* metadata (model "gpt2" or "llama"). */
int cloq_gguf_tok_load(const char *path, int64_t vocab_size, cloq_tok **out);

#endif
