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
  int64_t window;       /* sliding_window (0: none; null or absent) */
} cloq_config;

/* Reads and validates DIR/config.json (a folder; cloq_model_open recognizes a GGUF file and reads
 * its metadata with cloq_gguf_config): positive sizes, n_heads % n_kv_heads == 0, head_dim even,
 * model_type "llama" (or "mistral"), hidden_act "silu", no attention/mlp bias, rope_scaling null.
 * Anything unsupported is an error naming the key. */
int cloq_config_read(const char *model_dir, cloq_config *cfg);
/* The same checks on a filled config (head_dim 0: dim / n_heads); errors name path. Used for
 * GGUF metadata too. */
int cloq_config_check(cloq_config *cfg, const char *path);

/* ---- safetensors ------------------------------------------------------------------------------ */
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
/* Loads any kind (see below), dispatching on the file's first bytes: "GGUF", '{' (tokenizer.json),
 * else llama2.c. llama2.c files hold exactly vocab_size tokens (vocab_size <= 0: as many as the
 * file holds); the other kinds must have at most vocab_size ids (vocab_size <= 0: no check). */
int cloq_tok_load(const char *path, int64_t vocab_size, cloq_tok **out);
void cloq_tok_free(cloq_tok **t);
/* ids: malloc'd, caller frees. bos: start with the BOS id (llama2.c: 1; other kinds: the
 * tokenizer's, none when it has none); pass cloq_tok_add_bos(t) to encode as Hugging Face does. */
int cloq_tok_encode(const cloq_tok *t, const char *text, size_t len, int bos, int32_t **ids,
                    int64_t *n);
/* The piece of id as stored (byte pieces read "<0x0A>"), owned by t; NULL when id is out of
 * range. */
const char *cloq_tok_piece(const cloq_tok *t, int32_t id);
/* The bytes token id stands for when it follows token prev, as run.c `decode`: after BOS (prev 1)
 * a leading ' ' is dropped, and the byte pieces (ids 3..258, "<0xNN>") give the single byte NN
 * (which may be NUL, hence *len). SPM: U+2581 reads ' ', <0xNN> the byte, and the leading ' ' is
 * dropped after the BOS id; BPE: the byte alphabet maps back to bytes. Owned by t; NULL (and
 * *len 0) when id is out of range. */
const char *cloq_tok_decode(const cloq_tok *t, int32_t prev, int32_t id, size_t *len);
/* 1 when encode may merge the chunks that start at each ' '-initial symbol independently (no
 * piece is empty or has ' ' after its first byte), 0 when it merges globally. Exact either way;
 * exposed so that tests can tell which path they exercise. */
int cloq_tok_splits_at_spaces(const cloq_tok *t);

/* ---- tokenizers beyond llama2.c (io/bpe_*.c) -----------------------------------------------------
 * cloq_tok_load also accepts a Hugging Face tokenizer.json (the file starts with '{') and a GGUF
 * file (magic "GGUF": its tokenizer.ggml.* metadata, through cloq_gguf_tok_load). Kinds:
 *   CLOQ_TOK_LLAMA2C  the llama2.c tokenizer above (merge by score, pieces hold ' ').
 *   CLOQ_TOK_SPM      SentencePiece BPE as in Llama 2 (tokenizer.json "BPE" with byte_fallback and
 *                     the Prepend/Replace U+2581 normalizer or a Metaspace pre-tokenizer, or GGUF
 *                     tokenizer.ggml.model "llama"): pieces hold U+2581 for ' ', <0xNN>
 *                     byte-fallback pieces. tokenizer.json merges by merge rank; a vocabulary with
 *                     scores and no merges (GGUF) by the score of the merged piece, as llama.cpp.
 *   CLOQ_TOK_BPE      byte-level BPE as in GPT-2 (tokenizer.json ByteLevel, GGUF model "gpt2"):
 *                     a pre-tokenizer regex (PCRE2) splits the text, each piece's bytes are mapped
 *                     to the GPT-2 byte alphabet and merged by merge rank.
 * Added tokens (tokenizer.json added_tokens; GGUF types 2, 3, 4) found in the text are split out
 * first, as `tokenizers` does. Ids are those of the Hugging Face `tokenizers` library on the same
 * files (tests/e2e/test_tokenizers.py). Anything these kinds cannot reproduce exactly (another
 * model type, normalizer, pre-tokenizer or post-processor) is a load error naming it.
 */
enum { CLOQ_TOK_LLAMA2C = 0, CLOQ_TOK_SPM = 1, CLOQ_TOK_BPE = 2 };

/* A vocabulary in memory (what the GGUF reader and tests hand over); copied by cloq_tok_from_vocab. */
typedef struct {
  int kind;                   /* CLOQ_TOK_SPM or CLOQ_TOK_BPE */
  int64_t n_tokens;
  const char *const *tokens;  /* n_tokens NUL-terminated pieces, as stored */
  const float *scores;        /* SPM: priority of each piece as a merge result (higher first);
                                 SPM with merges merges by rank instead (as tokenizer.json) */
  const int32_t *types;       /* GGUF token types, or NULL (all normal): 1 normal, 2 unknown,
                                 3 control, 4 user-defined, 5 unused, 6 byte. Types 2, 3, 4 are
                                 matched in the text first, as added tokens */
  int64_t n_merges;
  const char *const *merges;  /* BPE: "left right", in rank order */
  const char *pre;            /* BPE pre-tokenizer (GGUF tokenizer.ggml.pre): "gpt2", "smollm"
                                 (= "starcoder"), "llama-bpe" (which also sets ignore_merges, as
                                 llama.cpp does); NULL is "gpt2"; others are an error */
  int32_t bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
  int add_bos;                /* encoding a text starts with bos_id */
  int add_space_prefix;       /* SPM: a U+2581 is prepended (Llama 2: 1) */
  const char *name;           /* names the vocabulary in errors (the GGUF file), or NULL */
} cloq_tok_vocab;

/* Builds a tokenizer from v (everything is copied; v may be freed after). Errors name what is
 * wrong (a merge with an unknown piece, an unknown pre-tokenizer, ids out of range). */
int cloq_tok_from_vocab(const cloq_tok_vocab *v, cloq_tok **out);
int cloq_tok_kind(const cloq_tok *t);
int64_t cloq_tok_size(const cloq_tok *t);  /* number of ids */
int cloq_tok_add_bos(const cloq_tok *t);   /* llama2.c: 1 */
int32_t cloq_tok_bos_id(const cloq_tok *t);
/* Writes DIR/tokenizer.json, DIR/tokenizer_config.json and DIR/special_tokens_map.json that
 * transformers' AutoTokenizer loads and that encode as t does (llama2.c vocabularies are written
 * as Llama 2 SentencePiece BPE, with merges made from the scores as transformers' LlamaConverter
 * makes them; SPM vocabularies with scores likewise). Each file is written to NAME.tmp and renamed
 * into place. DIR must exist. */
int cloq_tok_write_hf(const cloq_tok *t, const char *dir);
/* The pieces encode hands to the model separately, as byte lengths in order (*lens malloc'd):
 * added tokens and, for BPE, each pre-tokenizer piece (they tile the text unless ByteLevel adds
 * prefix spaces); SPM: each normalized segment between added tokens; llama2.c: the whole text.
 * For tests of the pre-tokenizers. */
int cloq_tok_split(const cloq_tok *t, const char *text, size_t len, int64_t **lens, int64_t *n);

/* ---- GGUF (io/gguf.c) ------------------------------------------------------------------------
 * Version 3 files as llama.cpp writes them (little-endian). The whole header (metadata and tensor
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

/* One quantized module as the store holds it: its shapes and its five arrays, row-major (made by
 * the worker's module init, written and read by cloq_store.c, which also defines the three
 * functions below). */
typedef struct {
  int64_t n_out, n_in, n_groups, rank;
  uint8_t *codes;  /* (n_out, n_in) */
  float *scales;   /* (n_out, n_groups) */
  float *zeros;    /* (n_out, n_groups) */
  float *A;        /* (rank, n_in) */
  float *B;        /* (n_out, rank) */
  /* Calibrated objective tr((W - Q - BA) Hd (W - Q - BA)^T) with the damped Gram matrix Hd, and
   * that of the same quantizer's Q with B A = 0 (the zero init); NaN where not computed. */
  double objective, objective_zero;
} cloq_qmodule;

/* Sets the shapes of module m for a group size and LoRA rank; arrays stay NULL. */
void cloq_qmodule_shape(const cloq_config *cfg, int m, int64_t group_size, int64_t rank,
                        cloq_qmodule *q);
/* Sets the shapes and allocates zeroed arrays (the error names block b and the module). */
int cloq_qmodule_alloc(const cloq_config *cfg, int64_t b, int m, int64_t group_size,
                       int64_t rank, cloq_qmodule *q);
/* Frees the arrays; accepts a zeroed or partly allocated q. */
void cloq_qmodule_free(cloq_qmodule *q);

#endif
