/* fuzz_gguf.c: libFuzzer target for the GGUF reader (io/gguf.c) and what cloq builds from a parsed
 * file: the model config, every tensor's first rows dequantized, the tokenizer (and one encode).
 * Built only with -Dfuzz=true by clang (scripts/fuzz.sh, which CI runs for a bounded time). Any
 * crash, sanitizer report or leak is a failure; error returns are the expected outcome for most
 * inputs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_config.h"
#include "cloq_tok.h"
#include "cloq_gguf.h"
#include "gguf_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cloq_gguf *g = NULL;
  if (cloq_gguf_parse(data, size, "fuzz.gguf", &g) == CLOQ_OK) {
    cloq_config cfg;
    (void)cloq_gguf_config(g, &cfg);
    float *row = NULL;
    for (int64_t i = 0; i < cloq_gguf_n_tensors(g); i++) {
      const cloq_gguf_tensor *t = cloq_gguf_tensor_at(g, i);
      if (!cloq_ggml_can_dequant(t->type) || t->ne[0] > (1 << 16)) continue;
      int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
      float *r = realloc(row, (size_t)t->ne[0] * sizeof *row);
      if (!r) break;
      row = r;
      size_t row_bytes = (size_t)(t->nbytes / (uint64_t)rows);
      for (int64_t k = 0; k < rows && k < 4; k++)
        cloq_gguf_dequant(t->type, t->data + (size_t)k * row_bytes, t->ne[0], row);
    }
    free(row);
    cloq_tok *tok = NULL;
    if (cloq_gguf_tok(g, 0, &tok) == CLOQ_OK) {
      static const char text[] = "Hello world, 2024: caf\xc3\xa9 \xe2\x96\x81 \xff\n\n  x";
      int32_t *ids = NULL;
      int64_t n = 0;
      if (cloq_tok_encode(tok, text, sizeof text - 1, cloq_tok_add_bos(tok), &ids, &n) == CLOQ_OK) {
        int32_t prev = -1;
        for (int64_t k = 0; k < n; k++) {
          size_t len;
          (void)cloq_tok_decode(tok, prev, ids[k], &len);
          prev = ids[k];
        }
      }
      free(ids);
      cloq_tok_free(&tok);
    }
    cloq_gguf_close(&g);
  }
  cloq_err_clear();
  return 0;
}
