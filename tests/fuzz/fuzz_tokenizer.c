/* fuzz_tokenizer.c: libFuzzer target for the Hugging Face tokenizer.json reader (io/bpe_*.c) and
 * the tokenizer it builds. The input is up to three parts separated by NUL bytes (which JSON text
 * cannot hold): the tokenizer.json, a text to encode (absent: a fixed text with spaces, digits,
 * accents, U+2581 and an invalid byte), and a tokenizer_config.json written beside it (read for
 * the bos/eos/unk/pad roles). The JSON is parsed in memory (cloq_tok__load_json, as cloq_tok_load
 * calls it); the text is encoded with and without BOS, every id decoded, and split as the
 * pre-tokenizer does. Ids outside the vocabulary abort; so do crashes, sanitizer reports and
 * leaks. Error returns are the expected outcome for most inputs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_tok.h"
#include "fuzz_util.h"
#include "tok_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void encode(const cloq_tok *t, const char *text, size_t len, int bos) {
  int32_t *ids = NULL;
  int64_t n = 0;
  int rc = cloq_tok_encode(t, text, len, bos, &ids, &n);
  fuzz_report(bos ? "encode with BOS" : "encode", rc);
  if (rc == CLOQ_OK) {
    int32_t prev = -1;
    for (int64_t k = 0; k < n; k++) {
      if (ids[k] < 0 || ids[k] >= cloq_tok_size(t) || !cloq_tok_piece(t, ids[k])) abort();
      size_t dl;
      if (!cloq_tok_decode(t, prev, ids[k], &dl)) abort();
      prev = ids[k];
    }
  }
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char fixed[] = "Hello world, 2024: caf\xc3\xa9 \xe2\x96\x81 \xff\n\n  x <s> don't";
  const uint8_t *text = (const uint8_t *)fixed, *nul = memchr(data, 0, size);
  size_t jl = nul ? (size_t)(nul - data) : size, tl = sizeof fixed - 1;
  fuzz_unlink("tokenizer_config.json");
  if (nul) {
    text = nul + 1;
    tl = size - jl - 1;
    const uint8_t *nul2 = memchr(text, 0, tl);
    if (nul2) {
      fuzz_write("tokenizer_config.json", nul2 + 1, (size_t)(text + tl - nul2 - 1));
      tl = (size_t)(nul2 - text);
    }
  }

  char *buf = malloc(jl + 1); /* cloq_tok__load_json wants it NUL-terminated */
  if (!buf) return 0;
  memcpy(buf, data, jl);
  buf[jl] = '\0';
  char path[8192];
  fuzz_path(path, sizeof path, "tokenizer.json");
  cloq_tok *t = NULL;
  char *tx = malloc(tl ? tl : 1); /* exactly tl bytes, so that a read past the end is reported */
  int rc = cloq_tok__load_json(path, buf, jl, &t);
  fuzz_report("cloq_tok__load_json", rc);
  if (rc == CLOQ_OK && tx) {
    memcpy(tx, text, tl);
    if (cloq_tok_size(t) <= 0) abort();
    encode(t, tx, tl, cloq_tok_add_bos(t));
    encode(t, tx, tl, 1);
    int64_t *lens = NULL, n = 0;
    rc = cloq_tok_split(t, tx, tl, &lens, &n);
    fuzz_report("split", rc);
    if (rc == CLOQ_OK)
      for (int64_t k = 0; k < n; k++)
        if (lens[k] < 0) abort();
    free(lens);
    (void)cloq_tok_splits_at_spaces(t);
    (void)cloq_tok_piece(t, -1);
    (void)cloq_tok_piece(t, (int32_t)cloq_tok_size(t));
  }
  cloq_tok_free(&t);
  free(tx);
  free(buf);
  cloq_err_clear();
  return 0;
}
