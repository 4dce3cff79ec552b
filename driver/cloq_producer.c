/* cloq_producer: see cloq_producer.h. */
#include "cloq_producer.h"

#include <stdio.h>
#include <string.h>

#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_signal.h"

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
  if (p->rank != 0) return cloq_stream_relay(p, ws, dim, sink, ctx);
  cloq_sendbufs sb = CLOQ_SENDBUFS_INIT;
  int rc = CLOQ_OK;
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
    rc = cloq_sendbufs_acquire(&sb, cloq_stream_msg_bytes(t, dim), &msg);
    if (rc) break;
    memcpy(msg, &t, 8);
    memcpy(msg + 8, ids, (size_t)t * 4);
    float *x = (float *)(msg + 8 + cloq_stream_ids_bytes(t));
    for (int64_t i = 0; i < t; i++) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        rc = CLOQ_FAIL("token id %d at position %lld of sample %lld is outside the vocabulary",
                       (int)ids[i], (long long)i, (long long)s);
        break;
      }
      memcpy(x + i * dim, embed + (int64_t)ids[i] * dim, (size_t)dim * sizeof(float));
    }
    if (rc) break;
    rc = cloq_stream_process(p, ws, &sb, msg, s, dim, sink, ctx);
    tokens += t;
    if (progress && rc == CLOQ_OK && ((s + 1) % every == 0 || s + 1 == nsamples)) {
      double el = cloq_now() - t0;
      printf("stream: %lld/%lld samples, %lld tokens, %.1f s, ETA %.1f s\n", (long long)(s + 1),
             (long long)nsamples, (long long)tokens, el,
             el / (double)(s + 1) * (double)(nsamples - s - 1));
      fflush(stdout);
    }
  }
  cloq_sendbufs_finish(&sb);
  int e = cloq_stream_send_end(p->next, rc != CLOQ_OK, p->comm);
  return rc != CLOQ_OK ? rc : e;
}
