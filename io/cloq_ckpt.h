/* cloq_ckpt: a model's tensors, from safetensors (one file or shards; io/safetensors.c) or a GGUF
 * file, and the small safetensors writer used by tests and synthetic models. Not collective;
 * errors name the file and the tensor. */
#ifndef CLOQ_CKPT_H
#define CLOQ_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_config.h"

/* I32 only for writing (GPTQ exports). The GGUF block types appear only in tensors of a GGUF model
 * and are dequantized by cloq_ckpt_read_f32. */
typedef enum {
  CLOQ_DT_F32 = 0, CLOQ_DT_F16 = 1, CLOQ_DT_BF16 = 2, CLOQ_DT_I32 = 3,
  CLOQ_DT_Q4_0 = 16, CLOQ_DT_Q4_1 = 17, CLOQ_DT_Q5_0 = 18, CLOQ_DT_Q5_1 = 19, CLOQ_DT_Q8_0 = 20
} cloq_dtype;

typedef struct {
  const char *name;
  cloq_dtype dtype;
  int ndim;             /* 0..4 */
  int64_t shape[4];
  int64_t numel;
  const void *data;     /* into the read-only mapping; not necessarily aligned */
  const char *file;     /* the shard it lives in */
} cloq_tensor;

/* A checkpoint: every tensor of a model, from safetensors (one file or shards) or a GGUF file,
 * under Hugging Face names (cloq_ckpt_*; cloq_st_write below writes safetensors). Opaque. */
typedef struct cloq_ckpt cloq_ckpt;
typedef struct cloq_gguf cloq_gguf; /* a parsed GGUF file (see below) */

/* Opens DIR/model.safetensors, or the shards listed by DIR/model.safetensors.index.json (a
 * folder only: cloq_model_open recognizes a model's format).
 * Each file is memory-mapped read-only (pages are touched only when a tensor is read) and its
 * header validated in full: header length within the file, JSON well-formed, every entry with a
 * known dtype ("F32", "F16", "BF16"; others are an error naming the dtype and tensor), shape,
 * data_offsets inside the data area and consistent with shape*dtype size. */
int cloq_ckpt_open(const char *model_dir, cloq_ckpt **out);
/* The checkpoint of a GGUF model already parsed (*g, taken over: closed with the checkpoint, or
 * on failure; *g is set to NULL), its tensors under Hugging Face names; cfg is the model's config
 * (cloq_gguf_config). cloq_ckpt_gguf gives the parsed file back (NULL for safetensors). */
int cloq_ckpt_from_gguf(cloq_gguf **g, const char *path, const cloq_config *cfg, cloq_ckpt **out);
const cloq_gguf *cloq_ckpt_gguf(const cloq_ckpt *st);
void cloq_ckpt_close(cloq_ckpt **st); /* accepts NULL and *st == NULL */
/* Error when a tensor model.layers.K.* has K >= n_layers (a config with fewer layers than the
 * checkpoint). */
int cloq_ckpt_check_layers(const cloq_ckpt *st, int64_t n_layers);
/* A digest of the checkpoint's content (names, dtypes, shapes, bytes; large tensors sampled, see
 * safetensors.c), recorded by init so that a resume notices another model. */
uint64_t cloq_ckpt_digest(const cloq_ckpt *st);

/* Looks a tensor up; error "tensor NAME not found in DIR" when absent. */
int cloq_ckpt_find(const cloq_ckpt *st, const char *name, cloq_tensor *t);
int cloq_ckpt_has(const cloq_ckpt *st, const char *name);

/* Reads tensor NAME converted to float32 into out (numel floats). Checks that its shape equals
 * (shape[0..ndim-1]) (error names tensor, expected and found shapes) and that every value is
 * finite (error names the tensor and the first bad index). */
int cloq_ckpt_read_f32(const cloq_ckpt *st, const char *name, int ndim, const int64_t *shape,
                     float *out);

/* Writes a single-file safetensors checkpoint. data[i] holds numel(shape_i) values of dtypes[i]
 * (raw bytes). Writes to PATH.tmp and renames into place. Used by tests and synthetic models. */
int cloq_st_write(const char *path, int n, const char *const *names, const cloq_dtype *dtypes,
                  const int *ndims, const int64_t (*shapes)[4], const void *const *data);

#endif
