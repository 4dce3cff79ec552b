/* bpe_internal.h: what the stages of the Hugging Face / GGUF tokenizers share (not public API):
 * bpe_vocab.c (patterns, the byte-level alphabet, building a tokenizer from a vocabulary),
 * bpe_json.c (reading tokenizer.json), bpe_encode.c (encoding as `tokenizers` does) and
 * bpe_write.c (writing tokenizer.json back). The overview of the pipeline is in bpe_vocab.c. */
#ifndef CLOQ_BPE_INTERNAL_H
#define CLOQ_BPE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tok_internal.h"

/* The pre-tokenizer patterns of GPT-2, Llama 3, Qwen2 and Qwen 3.5 as tokenizer.json spells
 * them, and SentencePiece's space mark U+2581. */
extern const char cloq_bpe__hf_gpt2[];
extern const char cloq_bpe__hf_llama3[];
extern const char cloq_bpe__hf_qwen2[];
extern const char cloq_bpe__hf_qwen35[];
extern const char cloq_bpe__space_mark[];

int cloq_bpe__bl_cp(int b);
size_t cloq_bpe__put_utf8(uint32_t c, char *o);
size_t cloq_bpe__char_len(const char *s, size_t n);
uint32_t cloq_bpe__decode_cp(const char *s, size_t k);
int cloq_bpe__is_ws(uint32_t c);
int cloq_bpe__build_merge_index(cloq_tok *t);
int cloq_bpe__add_merge(cloq_tok *t, int64_t r, const char *l, size_t ll, const char *rr, size_t rl,
                          const char *what);
int cloq_bpe__set_pieces(cloq_tok *t, int64_t n, const char *const *pieces, const size_t *lens);
/* The normalizer of t on s[0..n) into *out (malloc'd, NUL-terminated): NFC, then Prepend U+2581
 * and Replace ' ' with U+2581, as t has them; base is the offset of s in the text (messages). */
int cloq_bpe__has_normalizer(const cloq_tok *t);
int cloq_bpe__normalize(const cloq_tok *t, const char *s, size_t n, size_t base, char **out,
                        size_t *outlen);
int cloq_bpe__setup_pre(cloq_tok *t, int pre, const char *what);
int cloq_bpe__finish(cloq_tok *t);
cloq_tok *cloq_bpe__new_tok(int kind);

#endif
