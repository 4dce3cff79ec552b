/* cloq_tok: tokenizers (llama2.c in io/tokenizer.c; SentencePiece and byte-level BPE from
 * tokenizer.json or GGUF in io/bpe_*.c). Not collective; errors name the file. */
#ifndef CLOQ_TOK_H
#define CLOQ_TOK_H

#include <stddef.h>
#include <stdint.h>

/* ---- llama2.c tokenizer (tok512.bin format)
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
 *                     to the GPT-2 byte alphabet and merged by merge rank. Pre-tokenizers: GPT-2,
 *                     SmolLM (digits alone), Llama 3, Qwen2 and Qwen 3.5 (a Split regex before
 *                     ByteLevel); see cloq_tok_vocab.pre for their GGUF names.
 * Normalizers (tokenizer.json): Llama 2's Prepend/Replace (SPM) and NFC (Qwen2/2.5/3, any kind;
 * io/unicode_nfc.h: Unicode 14.0.0 tables, and a text whose NFC differs under the Unicode 9.0.0
 * tables of `tokenizers` is an encoding error naming the character).
 * Added tokens (tokenizer.json added_tokens; GGUF types 2, 3, 4) found in the text are split out
 * first, as `tokenizers` does (those with normalized true are looked for after the normalizer).
 * Ids are those of the Hugging Face `tokenizers` library on the same files
 * (tests/e2e/test_tokenizers.py). Anything these kinds cannot reproduce exactly (another
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
                                 llama.cpp does), "qwen2" (= "deepseek-r1-qwen"), "qwen35"; NULL
                                 is "gpt2"; others are an error */
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
 * A piece after a normalizer is measured in the normalized text (NFC may change lengths: the
 * pieces then tile the text with each segment between added tokens normalized), an added token
 * in the raw text. For tests of the pre-tokenizers. */
int cloq_tok_split(const cloq_tok *t, const char *text, size_t len, int64_t **lens, int64_t *n);

#endif
