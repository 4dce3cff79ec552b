/* fuzz_tokens.c: libFuzzer target for token files (io/data.c: cloq_seqs_read_tokens, the
 * calibration and evaluation token ids, one sequence per line). The reader takes only a path, so
 * each input is written into a scratch folder (tests/fuzz/fuzz_util.h) and read twice: with
 * stories260K's vocab_size 512 and with the largest one allowed (2^31, where ids near INT32_MAX
 * are accepted and larger ones must not wrap). A result that breaks the contract of cloq_data.h (an
 * empty sequence, an id out of range) aborts, as do crashes, sanitizer reports and leaks. Error
 * returns are the expected outcome for most inputs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_data.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_check(const char *path, int64_t vocab_size) {
  cloq_seqs s;
  int rc = cloq_seqs_read_tokens(path, vocab_size, &s);
  fuzz_report(vocab_size == 512 ? "read (vocab 512)" : "read (vocab 2^31)", rc);
  if (rc == CLOQ_OK) {
    if (s.n <= 0 || !s.len || !s.ids) abort();
    for (int64_t i = 0; i < s.n; i++) {
      if (s.len[i] <= 0 || !s.ids[i]) abort();
      for (int64_t k = 0; k < s.len[i]; k++)
        if (s.ids[i][k] < 0 || s.ids[i][k] >= vocab_size) abort();
    }
  } else if (s.n != 0 || s.len || s.ids) {
    abort(); /* a failed read leaves *out empty */
  }
  cloq_seqs_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_write("tokens.txt", data, size);
  char path[8192];
  fuzz_path(path, sizeof path, "tokens.txt");
  read_check(path, 512);
  read_check(path, (int64_t)INT32_MAX + 1);
  cloq_err_clear();
  return 0;
}
