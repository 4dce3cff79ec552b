/* cloq_producer: rank 0's end of the calibration / evaluation stream (worker/cloq_stream.h has
 * the chain and its messages). Rank 0 pulls each sample's token ids from a source, embeds them,
 * runs its own blocks if it owns any, and sends the hidden state down the chain; every other rank
 * in the chain relays. */
#ifndef CLOQ_PRODUCER_H
#define CLOQ_PRODUCER_H

#include <stdint.h>

#include "cloq_plan.h"
#include "cloq_stream.h"
#include "cloq_worker.h"

/* Rank 0's source of samples: sample s's ids and length (valid until the next call). */
typedef int (*cloq_source_fn)(void *ctx, int64_t s, const int32_t **ids, int64_t *t);

/* Runs the stream on every rank of the chain (others return at once): rank 0 produces, the
 * others relay (cloq_stream_relay). Rank 0 embeds with `embed` (vocab, dim) float32 and pulls
 * nsamples samples from src. w may be NULL on rank 0 when it owns no blocks. Returns this rank's
 * status; not collective (see cloq_mpi_report). */
int cloq_stream_run(const cloq_plan *p, cloq_worker *w, int64_t dim, int64_t vocab,
                    const float *embed, int64_t nsamples, cloq_source_fn src, cloq_sink_fn sink,
                    void *ctx, int progress);

/* Likewise not collective. The same with two workers: even samples run through w, odd ones
 * through w_odd (each rank's two workers own the same blocks), e.g. the full-precision and the
 * quantized model on the same tokens, one after the other. */
int cloq_stream_run_pair(const cloq_plan *p, cloq_worker *w, cloq_worker *w_odd, int64_t dim,
                         int64_t vocab, const float *embed, int64_t nsamples, cloq_source_fn src,
                         cloq_sink_fn sink, void *ctx, int progress);

#endif
