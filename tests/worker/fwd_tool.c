/* fwd_tool: runs the worker's CPU forward pass (cloq_worker_forward_block) on hidden states read
 * from a file, so that tests/worker/test_forward_numpy.py can compare every block's output with an
 * independent NumPy forward. A test helper, not a test.
 *
 *   fwd_tool MODEL_DIR IN OUT
 *       IN: records, each int64 b0, int64 nb, int64 t, then x (t, dim) float32: blocks
 *           b0 .. b0 + nb - 1 run one after the other on x
 *       -> OUT: per record, the output (t, dim) float32 of each of its nb blocks, in order
 *
 * Weights come from MODEL_DIR through the io library (cloq_config_read, cloq_ckpt_open), as the
 * driver loads them. Arrays are raw row-major in the host byte order (little-endian on every
 * machine we run on). Exit status: 0 on success, 1 when the worker fails (its message on stderr),
 * 2 on bad usage or files.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_config.h"
#include "cloq_ckpt.h"
#include "cloq_data.h"
#include "cloq_worker.h"

typedef struct {
  int64_t b0, nb, t;
  float *x; /* into the input buffer */
} record;

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: fwd_tool MODEL_DIR IN OUT\n");
    return 2;
  }
  cloq_config cfg;
  cloq_ckpt *st = NULL;
  if (cloq_config_read(argv[1], &cfg) != CLOQ_OK || cloq_ckpt_open(argv[1], &st) != CLOQ_OK) {
    fprintf(stderr, "fwd_tool: %s\n", cloq_err_msg());
    return 2;
  }
  char *in = NULL;
  size_t len = 0;
  if (cloq_read_file(argv[2], &in, &len) != CLOQ_OK) {
    fprintf(stderr, "fwd_tool: %s\n", cloq_err_msg());
    return 2;
  }
  /* parse every record first: the worker is sized for the longest sequence */
  record *recs = NULL;
  int64_t nrec = 0, max_t = 1;
  for (size_t off = 0; off < len;) {
    int64_t h[3] = {-1, 0, 0};
    if (len - off >= sizeof h) memcpy(h, in + off, sizeof h);
    off += sizeof h;
    const size_t bytes = (size_t)(h[2] * cfg.dim) * sizeof(float);
    if (h[0] < 0 || h[1] < 1 || h[0] + h[1] > cfg.n_layers || h[2] < 1 || h[2] > cfg.max_pos ||
        len - off < bytes) {
      fprintf(stderr, "fwd_tool: %s: bad record %lld (blocks %lld + %lld, t %lld)\n", argv[2],
              (long long)nrec, (long long)h[0], (long long)h[1], (long long)h[2]);
      return 2;
    }
    record *r2 = realloc(recs, (size_t)(nrec + 1) * sizeof *recs);
    if (!r2) return 2;
    recs = r2;
    recs[nrec++] = (record){h[0], h[1], h[2], (float *)(void *)(in + off)};
    if (h[2] > max_t) max_t = h[2];
    off += bytes;
  }
  cloq_worker_params p;
  memset(&p, 0, sizeof p);
  p.b0 = 0, p.b1 = cfg.n_layers, p.max_t = max_t;
  cloq_worker *w = NULL;
  if (cloq_worker_create(&cfg, st, &p, &w) != CLOQ_OK) {
    fprintf(stderr, "fwd_tool: %s\n", cloq_err_msg());
    return 1;
  }
  FILE *out = fopen(argv[3], "wb");
  if (!out) {
    fprintf(stderr, "fwd_tool: cannot create %s\n", argv[3]);
    return 2;
  }
  int rc = 0;
  for (int64_t i = 0; i < nrec && !rc; i++) {
    const record *r = &recs[i];
    const size_t n = (size_t)(r->t * cfg.dim);
    float *x = malloc(n * sizeof *x);
    if (!x) return 2;
    memcpy(x, r->x, n * sizeof *x);
    for (int64_t b = r->b0; b < r->b0 + r->nb && !rc; b++) {
      if (cloq_worker_forward_block(w, b, x, r->t) != CLOQ_OK) {
        fprintf(stderr, "fwd_tool: record %lld, block %lld: %s\n", (long long)i, (long long)b,
                cloq_err_msg());
        rc = 1;
      } else if (fwrite(x, sizeof *x, n, out) != n) {
        fprintf(stderr, "fwd_tool: writing %s failed\n", argv[3]);
        rc = 2;
      }
    }
    free(x);
  }
  if (fclose(out) != 0 && !rc) rc = 2;
  cloq_worker_destroy(&w);
  cloq_ckpt_close(&st);
  free(recs);
  free(in);
  return rc;
}
