/* cloq_mpi: see cloq_mpi.h. */
#include "cloq_mpi.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PIECE = INT_MAX / 2, MSG_LEN = 1024 };

int cloq_mpi_fail(int code, const char *call, const char *file, int line, const char *func) {
  char s[MPI_MAX_ERROR_STRING] = "";
  int len = 0;
  if (code == -1 || MPI_Error_string(code, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "error");
  return cloq_err_set(file, line, func, "%s failed: %s", call, s);
}

int cloq_mpi_errors_return(MPI_Comm comm) {
  CLOQ_MPI(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  return CLOQ_OK;
}

/* Collective. This rank (*me) and the lowest rank whose rc is not CLOQ_OK (*first; INT_MAX when
 * none). */
static int lowest_failing(MPI_Comm comm, int rc, int *me, int *first) {
  *me = 0;
  *first = INT_MAX;
  CLOQ_MPI(MPI_Comm_rank(comm, me));
  int mine = rc != CLOQ_OK ? *me : INT_MAX;
  CLOQ_MPI(MPI_Allreduce(&mine, first, 1, MPI_INT, MPI_MIN, comm));
  return CLOQ_OK;
}

int cloq_mpi_agree_at(MPI_Comm comm, int rc, const char *file, int line, const char *func) {
  int me, first;
  CLOQ_CALL(lowest_failing(comm, rc, &me, &first));
  if (first == INT_MAX) return CLOQ_OK;
  char msg[MSG_LEN] = "";
  if (me == first) snprintf(msg, sizeof msg, "%s", cloq_err_msg());
  CLOQ_MPI(MPI_Bcast(msg, MSG_LEN, MPI_CHAR, first, comm));
  if (me != first && rc == CLOQ_OK)
    (void)cloq_err_set(file, line, func, "failed on rank %d: %s", first, msg);
  return CLOQ_ERR;
}

static int reported;
int cloq_mpi_error_reported(void) { return reported; }

int cloq_mpi_report(MPI_Comm comm, int rc) {
  int me, first;
  CLOQ_CALL(lowest_failing(comm, rc, &me, &first));
  if (first == INT_MAX) return CLOQ_OK;
  if (me == first && !reported) {
    fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
    fflush(stderr);
  }
  reported = 1;
  return CLOQ_ERR;
}

int cloq_mpi_any(MPI_Comm comm, int flag) {
  int mine = flag, any = 1;
  /* a failed reduction counts as "yes": the callers then stop */
  if (CLOQ_MPI_RC(MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm)) != CLOQ_OK) return 1;
  return any;
}

_Noreturn void cloq_mpi_abort(MPI_Comm comm, const char *what) {
  if (what) (void)CLOQ_FAIL("%s", what);
  fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
  fflush(stderr);
  MPI_Abort(comm, 1);
  abort(); /* MPI_Abort does not return */
}

int cloq_mpi_send(const void *buf, int64_t n, MPI_Datatype t, size_t esz, int dest, int tag,
                  MPI_Comm comm) {
  const char *p = buf;
  for (int64_t off = 0; off < n; off += PIECE) {
    int c = (int)(n - off < PIECE ? n - off : PIECE);
    CLOQ_MPI(MPI_Send(p + (size_t)off * esz, c, t, dest, tag, comm));
  }
  return CLOQ_OK;
}

int cloq_mpi_recv(void *buf, int64_t n, MPI_Datatype t, size_t esz, int src, int tag,
                  MPI_Comm comm) {
  char *p = buf;
  for (int64_t off = 0; off < n; off += PIECE) {
    int c = (int)(n - off < PIECE ? n - off : PIECE);
    CLOQ_MPI(MPI_Recv(p + (size_t)off * esz, c, t, src, tag, comm, MPI_STATUS_IGNORE));
  }
  return CLOQ_OK;
}

int cloq_mpi_bcast(void *buf, int64_t n, MPI_Datatype t, size_t esz, int root, MPI_Comm comm) {
  char *p = buf;
  for (int64_t off = 0; off < n; off += PIECE) {
    int c = (int)(n - off < PIECE ? n - off : PIECE);
    CLOQ_MPI(MPI_Bcast(p + (size_t)off * esz, c, t, root, comm));
  }
  return CLOQ_OK;
}
