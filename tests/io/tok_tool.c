/* tok_tool: the tokenizer from the command line, for tests/e2e/test_tokenizers.py and
 * test_tokenize.py (`cloq tokenize` encodes too; this tool also splits and writes tokenizer.json).
 *   tok_tool encode TOKENIZER_FILE TEXT_FILE OUT_IDS   ids, one per line, BOS as the tokenizer adds
 *                                                       it (cloq_tok_add_bos); prints the count,
 *                                                       the kind and the encode time
 *   tok_tool write-hf TOKENIZER_FILE DIR               cloq_tok_write_hf into DIR (must exist)
 *   tok_tool split TOKENIZER_FILE TEXT_FILE OUT         the pre-tokenizer pieces, one byte length
 *                                                       per line
 *   tok_tool nfc MODE TEXT_FILE OUT                     io/unicode_nfc.c on each line of TEXT_FILE
 *                                                       alone (MODE checked, current or tokenizers:
 *                                                       CLOQ_NFC_*): OUT gets each result and '\n',
 *                                                       or for a refused line the byte 0xFF, the
 *                                                       error and '\n' (tests/e2e/test_nfc.py)
 *   tok_tool nfc-newer OUT                              the code points that the NFC tables mark
 *                                                       newer than `tokenizers`' Unicode, in hex
 * TOKENIZER_FILE is anything cloq_tok_load reads (llama2.c .bin, tokenizer.json, GGUF).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloq_err.h"
#include "cloq_tok.h"
#include "cloq_data.h"
#include "unicode_nfc.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int write_lines(const char *path, const int64_t *v64, const int32_t *v32, int64_t n) {
  FILE *f = fopen(path, "w");
  CLOQ_CHECK(f, "%s: cannot create", path);
  for (int64_t i = 0; i < n; i++) fprintf(f, "%lld\n", (long long)(v64 ? v64[i] : v32[i]));
  CLOQ_CHECK(fclose(f) == 0, "%s: write failed", path);
  return CLOQ_OK;
}

static int nfc_lines(const char *mode_name, const char *in, const char *outpath) {
  static const char *const modes[3] = {"checked", "current", "tokenizers"};
  int mode = -1;
  for (int m = 0; m < 3; m++)
    if (!strcmp(mode_name, modes[m])) mode = m;
  CLOQ_CHECK(mode >= 0, "nfc: mode \"%s\" is not checked, current or tokenizers", mode_name);
  char *text;
  size_t len;
  CLOQ_CALL(cloq_read_file(in, &text, &len));
  FILE *f = fopen(outpath, "wb");
  if (!f) free(text);
  CLOQ_CHECK(f, "%s: cannot create", outpath);
  int64_t lines = 0, refused = 0;
  double t0 = now();
  for (size_t i = 0; i < len;) {
    const char *nl = memchr(text + i, '\n', len - i);
    size_t n = nl ? (size_t)(nl - text) - i : len - i;
    char *o;
    size_t ol;
    if (cloq_nfc(text + i, n, mode, i, &o, &ol) == CLOQ_OK) {
      fwrite(o, 1, ol, f);
      free(o);
    } else {
      fprintf(f, "\xff%s", cloq_err_msg());
      cloq_err_clear();
      refused++;
    }
    fputc('\n', f);
    lines++;
    i += n + 1;
  }
  free(text);
  CLOQ_CHECK(fclose(f) == 0, "%s: write failed", outpath);
  printf("nfc (%s; Unicode %s, `tokenizers` %s): %lld lines, %lld refused, %.3f s\n", modes[mode],
         cloq_nfc_unicode_version(), cloq_nfc_tokenizers_version(), (long long)lines,
         (long long)refused, now() - t0);
  return CLOQ_OK;
}

static int run(int argc, char **argv) {
  const char *cmd = argv[1];
  if (!strcmp(cmd, "nfc-newer") && argc == 3) {
    FILE *f = fopen(argv[2], "w");
    CLOQ_CHECK(f, "%s: cannot create", argv[2]);
    for (uint32_t c = 0; c < 0x110000; c++)
      if (cloq_nfc_newer(c)) fprintf(f, "%X\n", (unsigned)c);
    CLOQ_CHECK(fclose(f) == 0, "%s: write failed", argv[2]);
    return CLOQ_OK;
  }
  if (!strcmp(cmd, "nfc"))
    return argc == 5 ? nfc_lines(argv[2], argv[3], argv[4])
                     : CLOQ_FAIL("usage: tok_tool nfc checked|current|tokenizers TEXT OUT");
  cloq_tok *t;
  CLOQ_CALL(cloq_tok_load(argv[2], 0, &t));
  static const char *const kinds[] = {"llama2c", "spm", "bpe"};
  int rc = CLOQ_OK;
  if (!strcmp(cmd, "write-hf") && argc == 4) {
    rc = cloq_tok_write_hf(t, argv[3]);
    if (rc == CLOQ_OK) printf("wrote %s/tokenizer.json (%s, %lld ids)\n", argv[3],
                              kinds[cloq_tok_kind(t)], (long long)cloq_tok_size(t));
  } else if ((!strcmp(cmd, "encode") || !strcmp(cmd, "split")) && argc == 5) {
    char *text;
    size_t len;
    rc = cloq_read_file(argv[3], &text, &len);
    if (rc == CLOQ_OK && !strcmp(cmd, "encode")) {
      int32_t *ids;
      int64_t n;
      double t0 = now();
      rc = cloq_tok_encode(t, text, len, cloq_tok_add_bos(t), &ids, &n);
      double dt = now() - t0;
      if (rc == CLOQ_OK) {
        printf("encoded %zu bytes -> %lld ids (%s, bos %s) in %.3f s\n", len, (long long)n,
               kinds[cloq_tok_kind(t)], cloq_tok_add_bos(t) ? "added" : "none", dt);
        rc = write_lines(argv[4], NULL, ids, n);
        free(ids);
      }
    } else if (rc == CLOQ_OK) {
      int64_t *lens, n;
      rc = cloq_tok_split(t, text, len, &lens, &n);
      if (rc == CLOQ_OK) {
        rc = write_lines(argv[4], lens, NULL, n);
        free(lens);
      }
    }
    free(text);
  } else {
    rc = CLOQ_FAIL("usage: tok_tool encode TOKENIZER TEXT OUT_IDS | write-hf TOKENIZER DIR | "
                   "split TOKENIZER TEXT OUT | nfc MODE TEXT OUT");
  }
  cloq_tok_free(&t);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 4 && !(argc == 3 && !strcmp(argv[1], "nfc-newer"))) {
    fprintf(stderr, "usage: tok_tool encode TOKENIZER TEXT OUT_IDS | write-hf TOKENIZER DIR | "
                    "split TOKENIZER TEXT OUT | nfc MODE TEXT OUT\n");
    return 2;
  }
  if (run(argc, argv) != CLOQ_OK) {
    fprintf(stderr, "tok_tool: %s\n", cloq_err_msg());
    return 1;
  }
  return 0;
}
