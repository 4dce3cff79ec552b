/* cloq_io: readers of what cloq consumes (model config, safetensors checkpoints, llama2.c
 * tokenizer, text and token files) and a small safetensors writer for tests and synthetic models.
 * No MPI here; none of these functions is collective. Errors are reported through cloq_err with
 * a reason that names the file (and the tensor, where there is one).
 */
#ifndef CLOQ_IO_H
#define CLOQ_IO_H

#include <stddef.h>
#include <stdint.h>

/* ---- config.json (Hugging Face LlamaForCausalLM) -------------------------------------------- */
typedef struct {
  int64_t dim;          /* hidden_size */
  int64_t hidden_dim;   /* intermediate_size */
  int64_t n_layers;     /* num_hidden_layers */
  int64_t n_heads;      /* num_attention_heads */
  int64_t n_kv_heads;   /* num_key_value_heads (default n_heads) */
  int64_t head_dim;     /* head_dim (default dim / n_heads) */
  int64_t vocab_size;
  int64_t max_pos;      /* max_position_embeddings (default 2048) */
  double norm_eps;      /* rms_norm_eps (default 1e-6) */
  double rope_theta;    /* rope_theta (default 10000) */
  int tied;             /* tie_word_embeddings (default 0) */
  int64_t bos_id;       /* bos_token_id (default 1) */
} cloq_config;

/* Reads and validates DIR/config.json: positive sizes, n_heads % n_kv_heads == 0, head_dim even,
 * model_type "llama" (or "mistral"), hidden_act "silu", no attention/mlp bias, rope_scaling null.
 * Anything unsupported is an error naming the key. */
int cloq_config_read(const char *model_dir, cloq_config *cfg);

/* ---- safetensors ------------------------------------------------------------------------------ */
typedef enum { CLOQ_DT_F32 = 0, CLOQ_DT_F16 = 1, CLOQ_DT_BF16 = 2 } cloq_dtype;

typedef struct {
  const char *name;
  cloq_dtype dtype;
  int ndim;             /* 0..4 */
  int64_t shape[4];
  int64_t numel;
  const void *data;     /* into the read-only mapping; not necessarily aligned */
  const char *file;     /* the shard it lives in */
} cloq_tensor;

typedef struct cloq_st cloq_st; /* opaque: every tensor of a model, over one or more shards */

/* Opens DIR/model.safetensors, or the shards listed by DIR/model.safetensors.index.json.
 * Each file is memory-mapped read-only (pages are touched only when a tensor is read) and its
 * header validated in full: header length within the file, JSON well-formed, every entry with a
 * known dtype ("F32", "F16", "BF16"; others are an error naming the dtype and tensor), shape,
 * data_offsets inside the data area and consistent with shape*dtype size. */
int cloq_st_open(const char *model_dir, cloq_st **out);
void cloq_st_close(cloq_st **st); /* accepts NULL and *st == NULL */

/* Looks a tensor up; error "tensor NAME not found in DIR" when absent. */
int cloq_st_find(const cloq_st *st, const char *name, cloq_tensor *t);
int cloq_st_has(const cloq_st *st, const char *name);

/* Reads tensor NAME converted to float32 into out (numel floats). Checks that its shape equals
 * (shape[0..ndim-1]) (error names tensor, expected and found shapes) and that every value is
 * finite (error names the tensor and the first bad index). */
int cloq_st_read_f32(const cloq_st *st, const char *name, int ndim, const int64_t *shape,
                     float *out);

/* Writes a single-file safetensors checkpoint. data[i] holds numel(shape_i) values of dtypes[i]
 * (raw bytes). Writes to PATH.tmp and renames into place. Used by tests and synthetic models. */
int cloq_st_write(const char *path, int n, const char *const *names, const cloq_dtype *dtypes,
                  const int *ndims, const int64_t (*shapes)[4], const void *const *data);

/* float <-> half / bfloat16 conversion (round to nearest even). */
float cloq_f16_to_f32(uint16_t h);
float cloq_bf16_to_f32(uint16_t h);
uint16_t cloq_f32_to_f16(float f);
uint16_t cloq_f32_to_bf16(float f);

/* ---- llama2.c tokenizer (tok512.bin format) ----------------------------------------------------
 * File: int32 max_token_length, then vocab_size records of (float32 score, int32 len, len bytes).
 * Encoding follows llama2.c run.c: optional BOS (id 1), a dummy-prefix " " when text is non-empty,
 * UTF-8 code points looked up in the vocabulary, bytes not found fall back to id byte+3, then
 * repeated merges of the adjacent pair with the highest score (leftmost on ties). Exact for any
 * text length (long texts are not quadratic). */
typedef struct cloq_tok cloq_tok;
int cloq_tok_load(const char *path, int64_t vocab_size, cloq_tok **out);
void cloq_tok_free(cloq_tok **t);
/* ids: malloc'd, caller frees. */
int cloq_tok_encode(const cloq_tok *t, const char *text, size_t len, int bos, int32_t **ids,
                    int64_t *n);
/* The piece of id as stored (byte pieces read "<0x0A>"), owned by t; NULL when id is out of
 * range. */
const char *cloq_tok_piece(const cloq_tok *t, int32_t id);
/* The bytes token id stands for when it follows token prev, as run.c `decode`: after BOS (prev 1)
 * a leading ' ' is dropped, and the byte pieces (ids 3..258, "<0xNN>") give the single byte NN
 * (which may be NUL, hence *len). Owned by t; NULL (and *len 0) when id is out of range. */
const char *cloq_tok_decode(const cloq_tok *t, int32_t prev, int32_t id, size_t *len);
/* 1 when encode may merge the chunks that start at each ' '-initial symbol independently (no
 * piece is empty or has ' ' after its first byte), 0 when it merges globally. Exact either way;
 * exposed so that tests can tell which path they exercise. */
int cloq_tok_splits_at_spaces(const cloq_tok *t);

/* ---- data files -------------------------------------------------------------------------------- */
/* Whole file into memory, NUL-terminated; *len excludes the NUL. */
int cloq_read_file(const char *path, char **buf, size_t *len);

/* A token file: one sequence per line, whitespace-separated non-negative integer ids; blank lines
 * are skipped. Every id must be < vocab_size (error names file, line and id). */
typedef struct {
  int64_t n;        /* number of sequences */
  int64_t *len;     /* len[i] tokens in sequence i */
  int32_t **ids;    /* ids[i][0..len[i]) */
} cloq_seqs;
int cloq_seqs_read_tokens(const char *path, int64_t vocab_size, cloq_seqs *out);
/* Frees len, ids and every ids[i] (each its own malloc), then zeroes *s; accepts NULL. */
void cloq_seqs_free(cloq_seqs *s);

#endif
