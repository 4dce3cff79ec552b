/* cloq_stream: see cloq_stream.h. */
#include "cloq_stream.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_mpi.h"
#include "cloq_signal.h"

enum { TAG_DATA = 11, TAG_END = 12 };


/* Message: int64 t | int32 ids[t] | pad to 8 bytes | float x[t*dim]. */
static size_t ids_bytes(int64_t t) { return ((size_t)t * 4 + 7) & ~(size_t)7; }
static size_t msg_bytes(int64_t t, int64_t dim) {
  return 8 + ids_bytes(t) + (size_t)t * (size_t)dim * sizeof(float);
}

typedef struct {
  char *buf[2];
  size_t cap[2];
  MPI_Request req[2];
  int k;
} sendbufs;

static int sb_acquire(sendbufs *sb, size_t bytes, char **out) {
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

static int sb_send(sendbufs *sb, size_t bytes, int dest, MPI_Comm comm) {
  CLOQ_CHECK(bytes <= INT_MAX, "sample message of %zu bytes exceeds MPI's int count", bytes);
  int k = sb->k;
  CLOQ_MPI(MPI_Isend(sb->buf[k], (int)bytes, MPI_BYTE, dest, TAG_DATA, comm, &sb->req[k]));
  sb->k ^= 1;
  return CLOQ_OK;
}

/* Cleanup: a failure is recorded (the stream's status is decided elsewhere). */
static void sb_finish(sendbufs *sb) {
  (void)CLOQ_MPI_RC(MPI_Waitall(2, sb->req, MPI_STATUSES_IGNORE));
  free(sb->buf[0]);
  free(sb->buf[1]);
}

static int send_end(int dest, int failed, MPI_Comm comm) {
  return dest >= 0 ? CLOQ_MPI_RC(MPI_Send(&failed, 1, MPI_INT, dest, TAG_END, comm)) : CLOQ_OK;
}

/* Work on one sample held in msg: own blocks, then forward or consume. */
static int process(const cloq_plan *p, cloq_worker *const ws[2], sendbufs *sb, char *msg,
                   int64_t s, int64_t dim, cloq_sink_fn sink, void *ctx) {
  cloq_worker *w = ws[1] ? ws[s & 1] : ws[0];
  int64_t t;
  memcpy(&t, msg, 8);
  const int32_t *ids = (const int32_t *)(msg + 8);
  float *x = (float *)(msg + 8 + ids_bytes(t));
  cloq_debug_kill_point("sample", (long long)s, p->rank);
  if (w && p->b1 > p->b0) CLOQ_CALL(cloq_worker_forward(w, x, t));
  if (p->next >= 0) return sb_send(sb, msg_bytes(t, dim), p->next, p->comm);
  if (sink) CLOQ_CALL(sink(ctx, s, x, ids, t));
  return CLOQ_OK;
}

int cloq_stream_run(const cloq_plan *p, cloq_worker *w, int64_t dim, int64_t vocab,
                    const float *embed, int64_t nsamples, cloq_source_fn src, cloq_sink_fn sink,
                    void *ctx, int progress) {
  return cloq_stream_run_pair(p, w, NULL, dim, vocab, embed, nsamples, src, sink, ctx, progress);
}

int cloq_stream_run_pair(const cloq_plan *p, cloq_worker *w, cloq_worker *w_odd, int64_t dim,
                         int64_t vocab, const float *embed, int64_t nsamples, cloq_source_fn src,
                         cloq_sink_fn sink, void *ctx, int progress) {
  if (!p->in_chain) return CLOQ_OK;
  cloq_worker *const ws[2] = {w, w_odd};
  sendbufs sb = {.req = {MPI_REQUEST_NULL, MPI_REQUEST_NULL}};
  /* When this rank is the last, it consumes in place: one private buffer is enough. */
  int rc = CLOQ_OK;
  if (p->rank == 0) {
    double t0 = cloq_now();
    int64_t tokens = 0, every = nsamples >= 10 ? nsamples / 10 : 1;
    for (int64_t s = 0; s < nsamples && rc == CLOQ_OK; s++) {
      if (cloq_signal_pending()) {
        rc = CLOQ_FAIL("stopped by signal %d during the calibration stream; re-run the same "
                       "command to resume", cloq_signal_pending());
        break;
      }
      const int32_t *ids;
      int64_t t;
      rc = src(ctx, s, &ids, &t);
      if (rc) break;
      char *msg = NULL;
      rc = sb_acquire(&sb, msg_bytes(t, dim), &msg);
      if (rc) break;
      memcpy(msg, &t, 8);
      memcpy(msg + 8, ids, (size_t)t * 4);
      float *x = (float *)(msg + 8 + ids_bytes(t));
      for (int64_t i = 0; i < t; i++) {
        if (ids[i] < 0 || ids[i] >= vocab) {
          rc = CLOQ_FAIL("token id %d at position %lld of sample %lld is outside the vocabulary",
                         (int)ids[i], (long long)i, (long long)s);
          break;
        }
        memcpy(x + i * dim, embed + (int64_t)ids[i] * dim, (size_t)dim * sizeof(float));
      }
      if (rc) break;
      rc = process(p, ws, &sb, msg, s, dim, sink, ctx);
      tokens += t;
      if (progress && rc == CLOQ_OK && ((s + 1) % every == 0 || s + 1 == nsamples)) {
        double el = cloq_now() - t0;
        printf("stream: %lld/%lld samples, %lld tokens, %.1f s, ETA %.1f s\n", (long long)(s + 1),
               (long long)nsamples, (long long)tokens, el,
               el / (double)(s + 1) * (double)(nsamples - s - 1));
        fflush(stdout);
      }
    }
    sb_finish(&sb);
    int e = send_end(p->next, rc != CLOQ_OK, p->comm);
    return rc != CLOQ_OK ? rc : e;
  }
  /* relay: receive from prev, run own blocks, pass on */
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
    if (rc == CLOQ_OK && p->next >= 0 && sb_acquire(&sb, (size_t)count, &msg) != CLOQ_OK) {
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
      if (t < 1 || msg_bytes(t, dim) != (size_t)count)
        rc = CLOQ_FAIL("malformed stream message from rank %d", p->prev);
      else
        rc = process(p, ws, &sb, msg, s, dim, sink, ctx);
    }
    /* First failure: stop the ranks downstream now, then keep draining upstream. */
    if (rc != CLOQ_OK && !sent_end) {
      sb_finish(&sb);
      sb = (sendbufs){.req = {MPI_REQUEST_NULL, MPI_REQUEST_NULL}};
      (void)send_end(p->next, 1, p->comm); /* rc already says failed */
      sent_end = 1;
    }
  }
  sb_finish(&sb);
  free(own);
  if (!sent_end) {
    int e = send_end(p->next, upstream_failed || rc != CLOQ_OK, p->comm);
    if (rc == CLOQ_OK) rc = e;
  }
  return rc;
}
