/* cloq-gemm-rate: the measured (n, n, n) GEMM rate of a device, float32 and float64, for the
 * benchmarks that compare each stage of cloq with it (bench/gpu7b.py).
 * usage: cloq-gemm-rate [--device cpu|cuda] [--n N] [--reps R]
 * prints `device <name>`, `sgemm_tflops <x>` and `dgemm_tflops <y>`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_backend.h"
#include "cloq_err.h"

int main(int argc, char **argv) {
  const char *spec = "cuda";
  long long n = 8192, reps = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--device")) spec = argv[i + 1];
    else if (!strcmp(argv[i], "--n")) n = atoll(argv[i + 1]);
    else if (!strcmp(argv[i], "--reps")) reps = atoll(argv[i + 1]);
    else {
      fprintf(stderr, "cloq-gemm-rate: unknown option %s\n", argv[i]);
      return 1;
    }
  }
  cloq_dev *d = NULL;
  double s = 0, dd = 0;
  if (cloq_dev_open(spec, 0, &d, NULL, 0) != CLOQ_OK ||
      cloq_dev_gemm_rate(d, 0, n, (int)reps, &s) != CLOQ_OK ||
      cloq_dev_gemm_rate(d, 1, n, (int)reps, &dd) != CLOQ_OK) {
    fprintf(stderr, "cloq-gemm-rate: error: %s\n", cloq_err_msg());
    cloq_dev_close(&d);
    return 1;
  }
  printf("device %s\nn %lld\nsgemm_tflops %.3f\ndgemm_tflops %.3f\n", cloq_dev_name(d), n, s, dd);
  cloq_dev_close(&d);
  return 0;
}
