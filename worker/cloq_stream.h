/* cloq_stream: the calibration / evaluation stream through the ranks that own blocks.
 *
 * The chain is rank 0 (the producer, driver/cloq_producer.c: it embeds each sample) followed by
 * every other rank that owns blocks, in block order. One message per sample carries (t, token ids,
 * hidden state (t, dim) float32); an END message closes the stream and says whether an upstream
 * rank failed. Sends are non-blocking with two buffers, so rank k works on sample s while rank k+1
 * works on sample s-1. A rank that fails stops forwarding, sends END(failed) downstream and drains
 * its upstream, so no rank is left blocked; the caller then agrees on the outcome collectively
 * (cloq_mpi_report).
 *
 * This file is the worker's side: the message layout, the send buffers, the work on one sample,
 * and the relay loop of the ranks after rank 0.
 */
#ifndef CLOQ_STREAM_H
#define CLOQ_STREAM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "cloq_plan.h"
#include "cloq_worker.h"

/* The last rank's consumer of final hidden states (eval: head and NLL). May be NULL. */
typedef int (*cloq_sink_fn)(void *ctx, int64_t s, const float *x, const int32_t *ids, int64_t t);

/* Message: int64 t | int32 ids[t] | pad to 8 bytes | float x[t*dim]. */
static inline size_t cloq_stream_ids_bytes(int64_t t) { return ((size_t)t * 4 + 7) & ~(size_t)7; }
static inline size_t cloq_stream_msg_bytes(int64_t t, int64_t dim) {
  return 8 + cloq_stream_ids_bytes(t) + (size_t)t * (size_t)dim * sizeof(float);
}

/* Two send buffers used in turn; a buffer is reused once its previous send completed. */
typedef struct {
  char *buf[2];
  size_t cap[2];
  MPI_Request req[2];
  int k;
} cloq_sendbufs;
#define CLOQ_SENDBUFS_INIT {.req = {MPI_REQUEST_NULL, MPI_REQUEST_NULL}}

/* Not collective. The next free buffer, at least `bytes` long. */
int cloq_sendbufs_acquire(cloq_sendbufs *sb, size_t bytes, char **out);
/* Not collective. Waits for the pending sends and frees the buffers; a failure is recorded (the
 * stream's status is decided by its caller). */
void cloq_sendbufs_finish(cloq_sendbufs *sb);
/* Not collective. Closes the stream towards dest (none where dest < 0). */
int cloq_stream_send_end(int dest, int failed, MPI_Comm comm);

/* Not collective. Works on sample s held in msg (a buffer from sb where this rank forwards): runs
 * this rank's blocks (with ws[s & 1] where ws[1] is set), then sends msg on or hands it to sink. */
int cloq_stream_process(const cloq_plan *p, cloq_worker *const ws[2], cloq_sendbufs *sb,
                        char *msg, int64_t s, int64_t dim, cloq_sink_fn sink, void *ctx);

/* Not collective. The loop of a rank after rank 0: receive from the previous rank, process, pass
 * on, until END. Returns this rank's status. */
int cloq_stream_relay(const cloq_plan *p, cloq_worker *const ws[2], int64_t dim,
                      cloq_sink_fn sink, void *ctx);

#endif
