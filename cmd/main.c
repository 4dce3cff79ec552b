/* cloq: entry point. Initializes MPI (a plain run is a one-rank job), splits OpenBLAS threads
 * among the ranks of a node, parses the command line on every rank, and runs the command.
 * Exit status: 0 on success, 1 on any error (one line on stderr, from the rank that hit it). */
#include <cblas.h>
#include <hdf5.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_backend.h"
#include "cloq_cli.h"
#include "cloq_cmd.h"
#include "cloq_err.h"
#include "cloq_mpi.h"
#include "cloq_export.h"
#include "cloq_signal.h"
#include "cloq_sample.h"
#include "cloq_synth.h"
#include "cloq_tokenize.h"

/* Oversubscribed ranks that each start all cores' worth of threads run 10-25% slower
 * (STACK.md): give each rank its share unless the user set OPENBLAS_NUM_THREADS. */
static void share_threads(int local) {
  if (getenv("OPENBLAS_NUM_THREADS") || getenv("OMP_NUM_THREADS")) return;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int n = (int)(cores / local);
  openblas_set_num_threads(n < 1 ? 1 : n);
}

/* This rank's rank and the rank count within its node (collective: one communicator split). */
static int node_ranks(MPI_Comm comm, int *local_rank, int *local_size) {
  MPI_Comm node;
  CLOQ_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int rc = CLOQ_MPI_RC(MPI_Comm_rank(node, local_rank));
  if (rc == CLOQ_OK) rc = CLOQ_MPI_RC(MPI_Comm_size(node, local_size));
  int e = CLOQ_MPI_RC(MPI_Comm_free(&node));
  return rc != CLOQ_OK ? rc : e;
}

/* Ends MPI; the process's exit status. */
static int finalize(int status) {
  if (CLOQ_MPI_RC(MPI_Finalize()) != CLOQ_OK && status == 0) {
    fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
    status = 1;
  }
  return status;
}

/* Opens --device on every rank (its GPU by local rank). Collective: fails on every rank when one
 * fails (e.g. --device cuda on a node without a GPU; the failing rank prints the reason).
 * Rank 0 prints one line to stderr: the devices in use, or, for auto, why ranks fell back to the
 * CPU. With a GPU on every rank and no --dist-threshold, nothing goes to ScaLAPACK. */
static int open_device(cloq_opts *o, MPI_Comm comm, int local) {
  int rank, size;
  CLOQ_MPI(MPI_Comm_rank(comm, &rank));
  CLOQ_MPI(MPI_Comm_size(comm, &size));
  char notice[320] = "", why[64] = "";
  int rc = cloq_dev_open(o->device, local, &o->dev, notice, sizeof notice);
  if (cloq_mpi_report(comm, rc) != CLOQ_OK) { /* the lowest failing rank printed its reason */
    cloq_dev_close(&o->dev);
    return CLOQ_ERR;
  }
  int gpu = cloq_dev_is_gpu(o->dev), ngpu = 0;
  CLOQ_MPI(MPI_Allreduce(&gpu, &ngpu, 1, MPI_INT, MPI_SUM, comm));
  if (rank == 0 && ngpu > 0)
    fprintf(stderr, "cloq: device: %s%s (%d of %d ranks on a GPU)\n", cloq_dev_name(o->dev),
            size > 1 ? " on rank 0" : "", ngpu, size);
  if (rank == 0 && ngpu < size && strcmp(o->device, "cpu") != 0)
  {
    if (size > 1) snprintf(why, sizeof why, " (%d of %d ranks)", size - ngpu, size);
    fprintf(stderr, "cloq: notice: %s: running on the CPU%s\n",
            notice[0] ? notice : "no usable GPU on some ranks", size > 1 ? why : "");
  }
  if (rank == 0 && ngpu > 0 && o->quantizer && !strcmp(o->quantizer, "comq"))
    fprintf(stderr, "cloq: notice: --quantizer comq runs on the CPU of each rank (it has no GPU "
                    "path yet); the rest of the run is on the GPU\n");
  if (ngpu == size && !o->dist_threshold_set) o->dist_threshold = 0;
  return CLOQ_OK;
}

int main(int argc, char **argv) {
  /* a file size limit (ulimit -f) makes a write fail with EFBIG, named in the error line,
   * instead of killing the process with SIGXFSZ */
  signal(SIGXFSZ, SIG_IGN);
  if (CLOQ_MPI_RC(MPI_Init(&argc, &argv)) != CLOQ_OK) {
    fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
    return 1;
  }
  /* MPI failures come back as error codes (checked at every call, common/cloq_mpi.h) instead of
   * aborting the job with MPI's own message */
  int rank = 0, size = 1;
  if (cloq_mpi_errors_return(MPI_COMM_WORLD) != CLOQ_OK ||
      CLOQ_MPI_RC(MPI_Comm_rank(MPI_COMM_WORLD, &rank)) != CLOQ_OK ||
      CLOQ_MPI_RC(MPI_Comm_size(MPI_COMM_WORLD, &size)) != CLOQ_OK) {
    fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
    return finalize(1);
  }
  cloq_err_set_rank(rank);
  /* `synth` is a plain single-process command: rank 0 runs it, other ranks only finalize. */
  if (argc >= 2 && !strcmp(argv[1], "synth")) {
    return finalize(rank == 0 ? cloq_synth_main(argc - 1, argv + 1) : 0);
  }
  /* `sample` likewise: one process generates, other ranks only finalize. */
  if (argc >= 2 && !strcmp(argv[1], "sample")) {
    return finalize(rank == 0 ? cloq_sample_main(argc - 1, argv + 1) : 0);
  }
  /* `tokenize` likewise: one process encodes the text. */
  if (argc >= 2 && !strcmp(argv[1], "tokenize")) {
    return finalize(rank == 0 ? cloq_tokenize_main(argc - 1, argv + 1) : 0);
  }
  /* `export` likewise: one process writes the hand-off folders. */
  if (argc >= 2 && !strcmp(argv[1], "export")) {
    return finalize(rank == 0 ? cloq_export_main(argc - 1, argv + 1) : 0);
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported through cloq_err, one line */
  int local_rank = 0, local_size = 1;
  if (cloq_mpi_report(MPI_COMM_WORLD, node_ranks(MPI_COMM_WORLD, &local_rank, &local_size)) !=
      CLOQ_OK)
    return finalize(1);
  share_threads(local_size);

  cloq_opts o;
  int rc = cloq_cli_parse(argc, argv, &o);
  if (rc != CLOQ_OK) {
    if (rank == 0) fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
    return finalize(1);
  }
  if (o.help) {
    if (rank == 0) cloq_cli_usage(o.cmd);
    return finalize(0);
  }
  rc = open_device(&o, MPI_COMM_WORLD, local_rank);
  if (rc == CLOQ_OK)
    rc = o.cmd == CLOQ_CMD_EVAL ? cloq_cmd_eval(&o, MPI_COMM_WORLD) : cloq_cmd_init(&o, MPI_COMM_WORLD);
  cloq_dev_close(&o.dev);
  if (rc != CLOQ_OK && !cloq_mpi_error_reported()) fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
  /* stopped by SIGTERM/SIGINT: the shell's 128 + signal, so job scripts can tell a preemption */
  return finalize(rc == CLOQ_OK ? 0 : cloq_signal_pending() ? 128 + cloq_signal_pending() : 1);
}
