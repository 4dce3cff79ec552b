/* cloq_stream: see cloq_stream.h. */
#include "cloq_stream.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_mpi.h"
#include "cloq_signal.h"

enum { TAG_DATA = 11, TAG_END = 12 };


int cloq_sendbufs_acquire(cloq_sendbufs *sb, size_t bytes, char **out) {
  int k = sb->k;
  CLOQ_MPI(MPI_Wait(&sb->req[k], MPI_STATUS_IGNORE));
  if (sb->cap[k] < bytes) {
    free(sb->buf[k]);
    sb->buf[k] = malloc(bytes);
    CLOQ_CHECK(sb->buf[k], "out of memory for a %zu-byte stream buffer", bytes);
    sb->cap[k] = bytes;
  }
  *out = sb->buf[k];
  return CLOQ_OK;
}

static int sb_send(cloq_sendbufs *sb, size_t bytes, int dest, MPI_Comm comm) {
  CLOQ_CHECK(bytes <= INT_MAX, "sample message of %zu bytes exceeds MPI's int count", bytes);
  int k = sb->k;
  CLOQ_MPI(MPI_Isend(sb->buf[k], (int)bytes, MPI_BYTE, dest, TAG_DATA, comm, &sb->req[k]));
  sb->k ^= 1;
  return CLOQ_OK;
}

void cloq_sendbufs_finish(cloq_sendbufs *sb) {
  (void)CLOQ_MPI_RC(MPI_Waitall(2, sb->req, MPI_STATUSES_IGNORE));
  free(sb->buf[0]);
  free(sb->buf[1]);
}

int cloq_stream_send_end(int dest, int failed, MPI_Comm comm) {
  return dest >= 0 ? CLOQ_MPI_RC(MPI_Send(&failed, 1, MPI_INT, dest, TAG_END, comm)) : CLOQ_OK;
}

int cloq_stream_process(const cloq_plan *p, cloq_worker *const ws[2], cloq_sendbufs *sb,
                        char *msg, int64_t s, int64_t dim, cloq_sink_fn sink, void *ctx) {
  cloq_worker *w = ws[1] ? ws[s & 1] : ws[0];
  int64_t t;
  memcpy(&t, msg, 8);
  const int32_t *ids = (const int32_t *)(msg + 8);
  float *x = (float *)(msg + 8 + cloq_stream_ids_bytes(t));
  cloq_debug_kill_point("sample", (long long)s, p->rank);
  if (w && p->b1 > p->b0) CLOQ_CALL(cloq_worker_forward(w, x, t));
  if (p->next >= 0) return sb_send(sb, cloq_stream_msg_bytes(t, dim), p->next, p->comm);
  if (sink) CLOQ_CALL(sink(ctx, s, x, ids, t));
  return CLOQ_OK;
}

int cloq_stream_relay(const cloq_plan *p, cloq_worker *const ws[2], int64_t dim,
                      cloq_sink_fn sink, void *ctx) {
  cloq_sendbufs sb = CLOQ_SENDBUFS_INIT;
  int rc = CLOQ_OK;
  int upstream_failed = 0, sent_end = 0;
  char *own = NULL;
  size_t owncap = 0;
  for (int64_t s = 0;; s++) {
    MPI_Status st;
    int count = 0;
    /* a failed receive leaves the link unusable: stop, and let the agreement end the others */
    int e = CLOQ_MPI_RC(MPI_Probe(p->prev, MPI_ANY_TAG, p->comm, &st));
    if (e == CLOQ_OK && st.MPI_TAG == TAG_END)
      e = CLOQ_MPI_RC(
          MPI_Recv(&upstream_failed, 1, MPI_INT, p->prev, TAG_END, p->comm, MPI_STATUS_IGNORE));
    if (e != CLOQ_OK || st.MPI_TAG == TAG_END) {
      if (e != CLOQ_OK) rc = e;
      break;
    }
    if ((e = CLOQ_MPI_RC(MPI_Get_count(&st, MPI_BYTE, &count))) != CLOQ_OK) {
      rc = e;
      break;
    }
    /* A sample to pass on is received straight into a send buffer; one that is consumed here,
     * or drained after a failure, into a private buffer. */
    char *msg = NULL;
    if (rc == CLOQ_OK && p->next >= 0 && cloq_sendbufs_acquire(&sb, (size_t)count, &msg) != CLOQ_OK) {
      rc = CLOQ_ERR;
      msg = NULL;
    }
    if (!msg) {
      if (owncap < (size_t)count) {
        free(own);
        own = malloc((size_t)count);
        owncap = own ? (size_t)count : 0;
      }
      msg = own;
    }
    if (!msg) /* not even a buffer to drain into: the upstream rank would block forever */
      cloq_mpi_abort(p->comm, "out of memory for a stream buffer");
    if ((e = CLOQ_MPI_RC(MPI_Recv(msg, count, MPI_BYTE, p->prev, TAG_DATA, p->comm,
                                  MPI_STATUS_IGNORE))) != CLOQ_OK) {
      rc = e;
      break;
    }
    if (rc == CLOQ_OK) {
      int64_t t;
      memcpy(&t, msg, 8);
      if (t < 1 || cloq_stream_msg_bytes(t, dim) != (size_t)count)
        rc = CLOQ_FAIL("malformed stream message from rank %d", p->prev);
      else
        rc = cloq_stream_process(p, ws, &sb, msg, s, dim, sink, ctx);
    }
    /* First failure: stop the ranks downstream now, then keep draining upstream. */
    if (rc != CLOQ_OK && !sent_end) {
      cloq_sendbufs_finish(&sb);
      sb = (cloq_sendbufs)CLOQ_SENDBUFS_INIT;
      (void)cloq_stream_send_end(p->next, 1, p->comm); /* rc already says failed */
      sent_end = 1;
    }
  }
  cloq_sendbufs_finish(&sb);
  free(own);
  if (!sent_end) {
    int e = cloq_stream_send_end(p->next, upstream_failed || rc != CLOQ_OK, p->comm);
    if (rc == CLOQ_OK) rc = e;
  }
  return rc;
}
