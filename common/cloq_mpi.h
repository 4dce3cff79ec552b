/* cloq_mpi: the one MPI discipline of the program (driver/, worker/, io/cloq_store.c,
 * linalg/pdist.c).
 *
 * - main sets MPI_ERRORS_RETURN on MPI_COMM_WORLD (communicators made from it inherit it), so a
 *   failed MPI call returns its error code instead of aborting the job, and every MPI call in the
 *   tree goes through CLOQ_MPI (in functions returning a cloq status) or CLOQ_MPI_RC (an
 *   expression, for void functions and cleanup paths): a failure records one error line naming
 *   the call and MPI's reason. tests/mpi_calls.py keeps it so. Modelled on PETSc's PetscCallMPI.
 * - One agreement: cloq_mpi_agree (every rank learns whether any failed, and the lowest failing
 *   rank's reason); cloq_mpi_report adds the one printed line; cloq_mpi_any for flags.
 * - One abort, for the one case where agreement is impossible: a rank that cannot allocate the
 *   buffer a peer is about to send into (the peer would block forever).
 * - Counts above INT_MAX go through cloq_mpi_send/recv/bcast, in pieces.
 */
#ifndef CLOQ_MPI_H
#define CLOQ_MPI_H

#include <mpi.h>
#include <stdint.h>

#include "cloq_err.h"

/* Records "MPI_Xxx(...) failed: <MPI's reason>" and returns CLOQ_ERR (used by the macros). */
int cloq_mpi_fail(int code, const char *call, const char *file, int line, const char *func);

#define CLOQ_MPI_RC(call)                                                                          \
  (((call) == MPI_SUCCESS) ? CLOQ_OK : cloq_mpi_fail(-1, #call, __FILE__, __LINE__, __func__))

#define CLOQ_MPI(call)                                                                             \
  do {                                                                                             \
    int cloq_mpi_e_ = (call);                                                                      \
    if (cloq_mpi_e_ != MPI_SUCCESS)                                                                \
      return cloq_mpi_fail(cloq_mpi_e_, #call, __FILE__, __LINE__, __func__);                      \
  } while (0)

/* Not collective. Sets MPI_ERRORS_RETURN on comm (main, right after MPI_Init). */
int cloq_mpi_errors_return(MPI_Comm comm);

/* Collective over comm. CLOQ_OK when rc is CLOQ_OK on every rank; otherwise CLOQ_ERR on every
 * rank, and each rank that did not fail records "failed on rank R: <R's line>" for the lowest
 * failing rank R (its line broadcast), as raised at the caller's line. */
int cloq_mpi_agree_at(MPI_Comm comm, int rc, const char *file, int line, const char *func);
#define cloq_mpi_agree(comm, rc) cloq_mpi_agree_at((comm), (rc), __FILE__, __LINE__, __func__)
/* Collective. cloq_mpi_agree, and the lowest failing rank prints its own line to stderr once
 * per process ("cloq: error: ..."); cloq_mpi_error_reported() then says so. */
int cloq_mpi_report(MPI_Comm comm, int rc);
int cloq_mpi_error_reported(void);
/* Collective. The largest flag over the ranks (>= 0 each): non-zero when any rank's is (a status
 * to stop on without printing, a pending signal's number). 1 when the reduction itself fails. */
int cloq_mpi_any(MPI_Comm comm, int flag);

/* Not collective: prints the recorded error line (recording `what` first, if given) and aborts
 * the job. Only where a peer would otherwise block forever (a receive buffer that cannot be
 * allocated). */
_Noreturn void cloq_mpi_abort(MPI_Comm comm, const char *what);

/* Point to point / collective (cloq_mpi_bcast) transfers of n elements of size esz, in pieces of
 * fewer than INT_MAX elements. */
int cloq_mpi_send(const void *buf, int64_t n, MPI_Datatype t, size_t esz, int dest, int tag,
                  MPI_Comm comm);
int cloq_mpi_recv(void *buf, int64_t n, MPI_Datatype t, size_t esz, int src, int tag,
                  MPI_Comm comm);
int cloq_mpi_bcast(void *buf, int64_t n, MPI_Datatype t, size_t esz, int root, MPI_Comm comm);

#endif
