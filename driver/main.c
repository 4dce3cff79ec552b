/* cloq: entry point. Initializes MPI (a plain run is a one-rank job), splits OpenBLAS threads
 * among the ranks of a node, parses the command line on every rank, and runs the command.
 * Exit status: 0 on success, 1 on any error (one line on stderr, from the rank that hit it). */
#include <cblas.h>
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_cli.h"
#include "cloq_driver.h"
#include "cloq_err.h"
#include "cloq_export.h"
#include "cloq_signal.h"
#include "cloq_sample.h"
#include "cloq_stream.h"
#include "cloq_synth.h"

/* Oversubscribed ranks that each start all cores' worth of threads run 10-25% slower
 * (STACK.md): give each rank its share unless the user set OPENBLAS_NUM_THREADS. */
static void share_threads(MPI_Comm comm) {
  if (getenv("OPENBLAS_NUM_THREADS") || getenv("OMP_NUM_THREADS")) return;
  MPI_Comm node;
  int local;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &local);
  MPI_Comm_free(&node);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int n = (int)(cores / local);
  openblas_set_num_threads(n < 1 ? 1 : n);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  cloq_err_set_rank(rank);
  /* `synth` is a plain single-process command: rank 0 runs it, other ranks only finalize. */
  if (argc >= 2 && !strcmp(argv[1], "synth")) {
    int synth_rc = rank == 0 ? cloq_synth_main(argc - 1, argv + 1) : 0;
    MPI_Finalize();
    return synth_rc;
  }
  /* `sample` likewise: one process generates, other ranks only finalize. */
  if (argc >= 2 && !strcmp(argv[1], "sample")) {
    int sample_rc = rank == 0 ? cloq_sample_main(argc - 1, argv + 1) : 0;
    MPI_Finalize();
    return sample_rc;
  }
  /* `export` likewise: one process writes the hand-off folders. */
  if (argc >= 2 && !strcmp(argv[1], "export")) {
    int export_rc = rank == 0 ? cloq_export_main(argc - 1, argv + 1) : 0;
    MPI_Finalize();
    return export_rc;
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported through cloq_err, one line */
  share_threads(MPI_COMM_WORLD);

  cloq_opts o;
  int rc = cloq_cli_parse(argc, argv, &o);
  if (rc != CLOQ_OK) {
    if (rank == 0) fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
    MPI_Finalize();
    return 1;
  }
  if (o.help) {
    if (rank == 0) cloq_cli_usage(o.cmd);
    MPI_Finalize();
    return 0;
  }
  rc = o.cmd == CLOQ_CMD_EVAL ? cloq_cmd_eval(&o, MPI_COMM_WORLD) : cloq_cmd_init(&o, MPI_COMM_WORLD);
  if (rc != CLOQ_OK && !cloq_error_reported()) fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
  MPI_Finalize();
  /* stopped by SIGTERM/SIGINT: the shell's 128 + signal, so job scripts can tell a preemption */
  if (rc != CLOQ_OK && cloq_signal_pending()) return 128 + cloq_signal_pending();
  return rc == CLOQ_OK ? 0 : 1;
}
