/* fuzz_config.c: libFuzzer target for the config.json reader (io/config.c). cloq_config_read
 * takes only a model folder, so each input is written as config.json into a scratch folder
 * (tests/fuzz/fuzz_util.h). A config that is accepted must satisfy what the rest of cloq relies
 * on (cloq_config.h, cloq_config_check); a violation aborts, as do crashes, sanitizer reports and
 * leaks. Error returns are the expected outcome for most inputs. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_config.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_write("config.json", data, size);
  cloq_config c;
  int rc = cloq_config_read(fuzz_dir(), &c);
  fuzz_report("cloq_config_read", rc);
  if (rc == CLOQ_OK) {
    int bad = c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 ||
              c.n_kv_heads <= 0 || c.vocab_size <= 0 || c.vocab_size > INT32_MAX ||
              c.max_pos <= 0 || c.head_dim <= 0 || c.head_dim % 2 != 0 ||
              c.n_heads % c.n_kv_heads != 0 || c.head_dim > INT32_MAX / c.n_heads ||
              c.bos_id < 0 || c.bos_id >= c.vocab_size || !isfinite(c.norm_eps) ||
              !(c.norm_eps > 0) || !isfinite(c.rope_theta) || !(c.rope_theta > 0) ||
              (c.tied != 0 && c.tied != 1);
    if (bad) abort();
  } else {
    /* a failed read leaves the config zeroed */
    static const cloq_config zero;
    if (memcmp(&c, &zero, sizeof c)) abort();
  }
  cloq_err_clear();
  return 0;
}
