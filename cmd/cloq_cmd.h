/* cloq_cmd: the collective commands, `cloq init` (and `cloq sweep`) and `cloq eval`. Every rank
 * calls them with the same options (mpirun gives each the same arguments). */
#ifndef CLOQ_CMD_H
#define CLOQ_CMD_H

#include <mpi.h>

#include "cloq_cli.h"

/* Collective. Quantize and initialize into one store per configuration (docs/store.md). */
int cloq_cmd_init(const cloq_opts *o, MPI_Comm comm);
/* Collective. Perplexity of the model, or of a store applied to it. */
int cloq_cmd_eval(const cloq_opts *o, MPI_Comm comm);

#endif
