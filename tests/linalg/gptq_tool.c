/* gptq_tool: runs one GPTQ, COMQ, MagR or RTN problem read from files, so that tests/e2e can
 * check the C kernels against an independent NumPy derivation. A test helper, not a test.
 *
 *   gptq_tool gptq|gptq_ref|rtn IN_DIR OUT_DIR
 *       IN_DIR/params.txt: n_out n_in bits group_size damp act_order block
 *       IN_DIR/W.f32 (n_out, n_in) float32, IN_DIR/H.f64 (n_in, n_in) float64 (not read by rtn)
 *       -> OUT_DIR/codes.u8 (n_out, n_in), scales.f32 and zeros.f32 (n_out, n_groups)
 *   gptq_tool comq|comq_ref IN_DIR OUT_DIR
 *       IN_DIR/params.txt: n_out n_in bits group_size damp iters init act_order block
 *       (init 0: RTN start, 1: GPTQ start); W.f32, H.f64 as above
 *       -> OUT_DIR/codes.u8, scales.f32, zeros.f32 as above, obj.f64 (2): f at the start and of
 *          the result
 *   gptq_tool magr|magr_ref IN_DIR OUT_DIR
 *       IN_DIR/params.txt: n_out n_in alpha iters group_size; W.f32, H.f64 as above
 *       -> OUT_DIR/Wout.f32 (n_out, n_in)
 *
 * Arrays are raw row-major in the host byte order (little-endian on every machine we run on).
 * Exit status: 0 on success, 1 when the kernel fails (its message on stderr), 2 on bad usage or
 * files.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_linalg.h"

static void *read_file(const char *dir, const char *name, size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "gptq_tool: cannot open %s\n", path);
    return NULL;
  }
  void *buf = malloc(bytes ? bytes : 1);
  const size_t got = buf ? fread(buf, 1, bytes, f) : 0;
  const int extra = fgetc(f) != EOF;
  fclose(f);
  if (!buf || got != bytes || extra) {
    fprintf(stderr, "gptq_tool: %s: expected exactly %zu bytes\n", path, bytes);
    free(buf);
    return NULL;
  }
  return buf;
}

static int write_file(const char *dir, const char *name, const void *buf, size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "gptq_tool: cannot create %s\n", path);
    return 2;
  }
  const size_t put = fwrite(buf, 1, bytes, f);
  if (fclose(f) != 0 || put != bytes) {
    fprintf(stderr, "gptq_tool: short write to %s\n", path);
    return 2;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: gptq_tool gptq|gptq_ref|comq|comq_ref|rtn|magr|magr_ref IN_DIR "
            "OUT_DIR\n");
    return 2;
  }
  const char *mode = argv[1], *in = argv[2], *out = argv[3];
  const int is_magr = !strcmp(mode, "magr") || !strcmp(mode, "magr_ref");
  const int is_gptq = !strcmp(mode, "gptq") || !strcmp(mode, "gptq_ref");
  const int is_comq = !strcmp(mode, "comq") || !strcmp(mode, "comq_ref");
  if (!is_magr && !is_gptq && !is_comq && strcmp(mode, "rtn") != 0) {
    fprintf(stderr, "gptq_tool: unknown mode %s\n", mode);
    return 2;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/params.txt", in);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "gptq_tool: cannot open %s\n", path);
    return 2;
  }
  long long n_out = 0, n_in = 0, group = 0, block = 0, iters = 0;
  int bits = 0, act_order = 0, init = 0, nread;
  double damp = 0.0, alpha = 0.0;
  if (is_magr)
    nread = fscanf(f, "%lld %lld %lf %lld %lld", &n_out, &n_in, &alpha, &iters, &group) == 5;
  else if (is_comq)
    nread = fscanf(f, "%lld %lld %d %lld %lf %lld %d %d %lld", &n_out, &n_in, &bits, &group,
                   &damp, &iters, &init, &act_order, &block) == 9;
  else
    nread = fscanf(f, "%lld %lld %d %lld %lf %d %lld", &n_out, &n_in, &bits, &group, &damp,
                   &act_order, &block) == 7;
  fclose(f);
  if (!nread || n_out < 1 || n_in < 1 || n_out > (1 << 20) || n_in > (1 << 20) ||
      iters < 0 || iters > (1 << 24)) {
    fprintf(stderr, "gptq_tool: %s: bad parameters\n", path);
    return 2;
  }
  const size_t nel = (size_t)n_out * (size_t)n_in;
  const int64_t ng = cloq_quant_ngroups(n_in, group);
  float *W = read_file(in, "W.f32", nel * sizeof(float));
  double *H = strcmp(mode, "rtn") ? read_file(in, "H.f64", (size_t)n_in * (size_t)n_in * 8) : NULL;
  float *Wout = malloc(nel * sizeof(float)), *scales = malloc((size_t)(ng > 0 ? ng : 1) *
                                                               (size_t)n_out * sizeof(float));
  float *zeros = malloc((size_t)(ng > 0 ? ng : 1) * (size_t)n_out * sizeof(float));
  uint8_t *codes = malloc(nel);
  int rc = 2;
  if (!W || (strcmp(mode, "rtn") && !H) || !Wout || !scales || !zeros || !codes) goto done;
  const cloq_gptq_params p = {.bits = bits, .group_size = group, .damp = damp,
                              .act_order = act_order, .block = block};
  const cloq_comq_params cp = {.bits = bits, .group_size = group, .damp = damp,
                               .iters = (int)iters, .init = init, .act_order = act_order,
                               .block = block};
  double obj[2] = {0.0, 0.0};
  int krc;
  if (!strcmp(mode, "gptq"))
    krc = cloq_quant_gptq(W, n_out, n_in, H, &p, codes, scales, zeros);
  else if (!strcmp(mode, "gptq_ref"))
    krc = cloq_quant_gptq_ref(W, n_out, n_in, H, &p, codes, scales, zeros);
  else if (!strcmp(mode, "comq"))
    krc = cloq_quant_comq(W, n_out, n_in, H, &cp, codes, scales, zeros, obj);
  else if (!strcmp(mode, "comq_ref"))
    krc = cloq_quant_comq_ref(W, n_out, n_in, H, &cp, codes, scales, zeros, obj);
  else if (!strcmp(mode, "rtn"))
    krc = cloq_quant_rtn(W, n_out, n_in, bits, group, codes, scales, zeros);
  else if (!strcmp(mode, "magr"))
    krc = cloq_magr(W, n_out, n_in, H, alpha, (int)iters, group, Wout);
  else
    krc = cloq_magr_ref(W, n_out, n_in, H, alpha, (int)iters, group, Wout);
  if (krc != 0) {
    fprintf(stderr, "gptq_tool %s: %s\n", mode, cloq_err_msg());
    rc = 1;
    goto done;
  }
  if (is_magr)
    rc = write_file(out, "Wout.f32", Wout, nel * sizeof(float));
  else
    rc = write_file(out, "codes.u8", codes, nel) ||
         write_file(out, "scales.f32", scales, (size_t)ng * (size_t)n_out * sizeof(float)) ||
         write_file(out, "zeros.f32", zeros, (size_t)ng * (size_t)n_out * sizeof(float)) ||
         (is_comq && write_file(out, "obj.f64", obj, sizeof obj));
  rc = rc ? 2 : 0;
done:
  free(W);
  free(H);
  free(Wout);
  free(scales);
  free(zeros);
  free(codes);
  return rc;
}
