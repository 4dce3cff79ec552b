/* gguf_internal.h: what io/ shares about a parsed GGUF file (not part of the public API).
 * safetensors.c presents a GGUF model's tensors under Hugging Face names through these. */
#ifndef CLOQ_GGUF_INTERNAL_H
#define CLOQ_GGUF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_tok.h"
#include "cloq_gguf.h"

/* GGUF metadata value types (the file's numbering). */
enum {
  GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
  GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STR = 8, GGUF_ARR = 9, GGUF_U64 = 10, GGUF_I64 = 11,
  GGUF_F64 = 12
};

/* ggml tensor types cloq knows the size of (the file's numbering). */
enum {
  GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7,
  GGML_Q8_0 = 8, GGML_Q8_1 = 9, GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13,
  GGML_Q6_K = 14, GGML_Q8_K = 15, GGML_I8 = 24, GGML_I16 = 25, GGML_I32 = 26, GGML_I64 = 27,
  GGML_F64 = 28, GGML_BF16 = 30
};

/* The block layouts of the quantized types cloq dequantizes, as ggml defines them (ggml-common.h):
 * 32 values a block, an IEEE half scale d (and minimum m), the low 4 bits of each value in nibbles
 * (value j in the low nibble of qs[j], value j + 16 in the high one) and, for Q5, the fifth bits in
 * qh. Little-endian on disk, as on every host cloq builds for. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif
enum { GGML_QK = 32 };
typedef uint16_t ggml_half;
typedef struct { ggml_half d; int8_t qs[GGML_QK]; } block_q8_0;
typedef struct { ggml_half d; uint8_t qs[GGML_QK / 2]; } block_q4_0;
typedef struct { ggml_half d, m; uint8_t qs[GGML_QK / 2]; } block_q4_1;
typedef struct { ggml_half d; uint8_t qh[4]; uint8_t qs[GGML_QK / 2]; } block_q5_0;
typedef struct { ggml_half d, m; uint8_t qh[4]; uint8_t qs[GGML_QK / 2]; } block_q5_1;
_Static_assert(sizeof(block_q8_0) == 34, "wrong q8_0 block size/padding");
_Static_assert(sizeof(block_q4_0) == 18, "wrong q4_0 block size/padding");
_Static_assert(sizeof(block_q4_1) == 20, "wrong q4_1 block size/padding");
_Static_assert(sizeof(block_q5_0) == 22, "wrong q5_0 block size/padding");
_Static_assert(sizeof(block_q5_1) == 24, "wrong q5_1 block size/padding");

/* One metadata value. Scalars are widened into i/u/f; strings point into the file (not
 * NUL-terminated: use len); arrays hold n elements of elem_type, either scalars at `raw` (packed,
 * little-endian) or, for strings and nested arrays, the parsed items in `items`. */
typedef struct cloq_gguf_value {
  int type;
  int64_t i;   /* signed integer types and bool */
  uint64_t u;  /* unsigned integer types */
  double f;    /* float types */
  const char *s;
  uint64_t len;
  int elem_type;
  uint64_t n;
  const unsigned char *raw;
  struct cloq_gguf_value *items;
} cloq_gguf_value;

typedef struct {
  char *name;           /* NUL-terminated copy */
  int type;             /* ggml type */
  int n_dims;
  int64_t ne[4];        /* ne[0] is the contiguous dimension */
  uint64_t offset;      /* from the start of the data area */
  uint64_t nbytes;
  const unsigned char *data;
} cloq_gguf_tensor;

/* The value of KEY, or NULL when absent. */
const cloq_gguf_value *cloq_gguf_get(const cloq_gguf *g, const char *key);
/* Integer metadata KEY (any integer type, non-negative, at most INT32_MAX) into *out; def when
 * absent (an error when required). io/gguf_config.c. */
int cloq_gguf__get_int(const cloq_gguf *g, const char *key, int64_t def, int required,
                       int64_t *out);
int64_t cloq_gguf_n_tensors(const cloq_gguf *g);
const cloq_gguf_tensor *cloq_gguf_tensor_at(const cloq_gguf *g, int64_t i);
const cloq_gguf_tensor *cloq_gguf_find_tensor(const cloq_gguf *g, const char *name);
const char *cloq_gguf_name(const cloq_gguf *g);
const char *cloq_ggml_type_name(int type);
/* The tokenizer of a parsed file (cloq_gguf_tok_load without the open). */
int cloq_gguf_tok(const cloq_gguf *g, int64_t vocab_size, cloq_tok **out);
/* 1 when cloq_gguf_dequant can convert this type. */
int cloq_ggml_can_dequant(int type);
/* Converts n values (n a multiple of the type's block size) at src into out. */
void cloq_gguf_dequant(int type, const unsigned char *src, int64_t n, float *out);

#endif
