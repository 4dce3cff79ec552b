/* cloq_sample: `cloq sample`, text drawn from the full-precision model (seeded, with temperature
 * and top-p), written as a token file (what --calib-format tokens / --data-format tokens read) or
 * as decoded text. Calibration or held-out evaluation data in the model's own domain: one seed
 * for `cloq init --calib`, another for `cloq eval --data`.
 */
#ifndef CLOQ_SAMPLE_H
#define CLOQ_SAMPLE_H

/* Not collective: a plain single-process command (main calls it on rank 0 only, before and without
 * any MPI work). argv[0] is "sample"; the options follow (see `cloq sample --help`). Returns 0, or
 * 1 after printing one "cloq: error: ..." line on stderr (128 + the signal when stopped by
 * SIGTERM/SIGINT). Progress and the summary go to stdout. */
int cloq_sample_main(int argc, char **argv);

#endif
