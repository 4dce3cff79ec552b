/* tok_internal.h: what io/tokenizer.c and io/bpe_*.c share about a tokenizer (not public API).
 *
 * One struct serves the three kinds. tokenizer.c owns the llama2.c reader, the piece index and the
 * merge core (a lazy-deletion heap over a linked list of symbols); bpe_*.c own everything that the
 * Hugging Face and GGUF vocabularies add: tokenizer.json, added tokens, normalization (NFC through
 * io/unicode_nfc.c), the PCRE2 pre-tokenizers, byte-level mapping, merge ranks, and writing
 * tokenizer.json back.
 */
#ifndef CLOQ_TOK_INTERNAL_H
#define CLOQ_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_tok.h"

/* How a pair of adjacent symbols is priced (the merge core's three modes). */
enum {
  TOK_MERGE_PIECES = 0, /* llama2.c: concatenate the two pieces, look the result up, its score */
  TOK_MERGE_SPANS = 1,  /* SentencePiece/llama.cpp by score: the text the two symbols cover */
  TOK_MERGE_RANKS = 2   /* Hugging Face BPE: the pair's rank in the merges list (lower first) */
};

/* TOK_MERGE_SPANS: a symbol that is a character with no piece (may still merge by its text). */
#define TOK_UNKNOWN (-2)

/* Pre-tokenizers (the splits before the model; byte-level BPE only). */
enum {
  TOK_PRE_NONE = 0,
  TOK_PRE_GPT2 = 1,   /* ByteLevel's own regex */
  TOK_PRE_SMOLLM = 2, /* Digits(individual), then ByteLevel's regex */
  TOK_PRE_LLAMA3 = 3, /* a Split regex, then ByteLevel without one: Llama 3 */
  TOK_PRE_QWEN2 = 4,  /* likewise: Qwen2 (single digits) */
  TOK_PRE_QWEN35 = 5  /* likewise: Qwen 3.5 (single digits, marks with letters) */
};

typedef struct {
  char *content;     /* as written in tokenizer.json / the vocabulary */
  char *pattern;     /* what is searched for: content, or its normalized form when normalized */
  int32_t plen;
  int32_t id;
  unsigned char lstrip, rstrip, single_word, normalized, special;
} tok_added;

struct cloq_tok {
  int kind;           /* CLOQ_TOK_* */
  int64_t vocab_size; /* number of ids */
  char **piece;       /* vocab_size NUL-terminated strings, pointing into blob */
  int32_t *plen;      /* strlen(piece[i]) */
  float *score;       /* llama2.c and SPM by score; NULL for rank-merged vocabularies */
  char *blob;
  int32_t maxplen;
  int32_t space_id;    /* llama2.c: the dummy prefix " ", or -1 */
  int split_at_spaces; /* llama2.c: the chunked merge is exact for this vocabulary */
  int32_t *slots;      /* open-addressing hash: piece -> lowest id with it, -1 empty */
  uint64_t mask;
  char bytes[256];     /* llama2.c: decode of the byte pieces <0xNN> */

  /* ---- SPM and BPE (bpe.c) ---- */
  int merge_mode;            /* TOK_MERGE_* */
  int32_t *type;             /* per id, GGUF numbering (1 normal ... 6 byte); NULL for llama2.c */
  unsigned char *in_model;   /* per id: part of the model vocabulary (only these are looked up) */
  int32_t bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
  int add_bos;
  char *unk_name;            /* tokenizer.json model.unk_token (may be missing from the vocab) */
  int nfc;                   /* the NFC normalizer (io/unicode_nfc.c), before prepend/replace */
  int prepend;               /* SPM: U+2581 is prepended to each text segment (normalizer) */
  int replace_space;         /* SPM: ' ' becomes U+2581 (normalizer) */
  int meta;                  /* SPM: a Metaspace pre-tokenizer instead of that normalizer */
  int meta_scheme;           /* Metaspace prepend_scheme: 0 never, 1 first, 2 always */
  int meta_split;            /* Metaspace split: each U+2581 starts a new piece */
  int byte_fallback, fuse_unk, ignore_merges;
  int32_t byte_id[256];      /* SPM: the id of <0xNN>; BPE: of the byte's alphabet character */
  /* merges in rank order (TOK_MERGE_RANKS), and the pair -> rank hash */
  int64_t n_merges;
  int32_t *merge_a, *merge_b, *merge_new;
  uint64_t *mkey;            /* (a << 32 | b) + 1; 0 empty */
  int32_t *mrank;
  uint64_t mmask;
  /* pre-tokenizer: a list of PCRE2 regexes applied in turn (each splits the pieces of the last,
   * keeping both the matches and the text between them) */
  int pre;                   /* TOK_PRE_* */
  int pre_prefix_space;      /* ByteLevel add_prefix_space */
  void *re[2];               /* pcre2_code * */
  int n_re;
  void *re_word;             /* pcre2_code * for single_word added tokens, or NULL */
  /* added tokens: matched in the raw text (normalized == 0) or in each normalized segment */
  int64_t n_added;
  tok_added *added;
  int32_t *added_order[2];   /* per set (raw, normalized): indices sorted by first byte, length */
  int64_t added_first[2][257];
  /* per-id decoded bytes (SPM, BPE) */
  char *dec;
  int64_t *dec_off;
  int32_t *dec_len;
};

/* ---- tokenizer.c ---- */
/* The lowest id (of the model vocabulary) whose piece is s[0..n), or -1. */
int32_t cloq_tok__lookup(const cloq_tok *t, const char *s, size_t n);
/* Builds the piece index over the ids with in_model set (all ids when in_model is NULL), and the
 * llama2.c fields maxplen, split_at_spaces, space_id. */
int cloq_tok__build_index(cloq_tok *t);

typedef struct {
  double key;          /* pops first when higher: a score, or minus a rank */
  int32_t id;          /* the merged token */
  int32_t a, b;        /* the ids of the pair when pushed: stale if either changed */
  int64_t left, right; /* symbol positions */
} tok_cand;

/* The merge core's working set: per-position symbols, grown on demand, reused across words. */
typedef struct {
  const cloq_tok *t;
  int32_t *tok;        /* per position; -1 once merged away */
  int64_t *next, *prev;
  int64_t *off;        /* TOK_MERGE_SPANS: byte offset of each symbol in text */
  int32_t *slen;       /* TOK_MERGE_SPANS: byte length */
  const char *text;    /* TOK_MERGE_SPANS */
  int64_t cap;
  tok_cand *heap;
  int64_t nheap, capheap;
  char *buf;           /* TOK_MERGE_PIECES: 2 * maxplen + 1 */
} tok_merger;

int cloq_tok__merger_reserve(tok_merger *m, int64_t n);
void cloq_tok__merger_free(tok_merger *m);
/* Greedy merging of the symbols at positions lo..hi-1 (a linked list after this; the survivors
 * are the positions with tok >= 0 or TOK_UNKNOWN). */
int cloq_tok__merge_range(tok_merger *m, int64_t lo, int64_t hi);

/* ---- bpe.c ---- */
/* tokenizer.json in memory (buf NUL-terminated). */
int cloq_tok__load_json(const char *path, const char *buf, size_t len, cloq_tok **out);
/* Encoding of the SPM and BPE kinds. */
int cloq_tok__encode_hf(const cloq_tok *t, const char *text, size_t len, int bos, int32_t **ids,
                        int64_t *n);
/* Frees what bpe.c added to t (not t itself). */
void cloq_tok__free_hf(cloq_tok *t);
/* llama2.c vocabularies as a Llama 2 tokenizer.json. */
int cloq_tok__write_hf(const cloq_tok *t, const char *dir);

#endif
