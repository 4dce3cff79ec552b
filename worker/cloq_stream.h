/* cloq_stream: the calibration / evaluation stream through the ranks that own blocks.
 *
 * The chain is rank 0 (the producer: it embeds each sample) followed by every other rank that
 * owns blocks, in block order. One message per sample carries (t, token ids, hidden state (t, dim)
 * float32); an END message closes the stream and says whether an upstream rank failed. Sends are
 * non-blocking with two buffers, so rank k works on sample s while rank k+1 works on sample s-1.
 * A rank that fails stops forwarding, sends END(failed) downstream and drains its upstream, so no
 * rank is left blocked; the caller then agrees on the outcome collectively (cloq_mpi_report).
 */
#ifndef CLOQ_STREAM_H
#define CLOQ_STREAM_H

#include <mpi.h>
#include <stdint.h>

#include "cloq_io.h"
#include "cloq_plan.h"
#include "cloq_worker.h"


/* Rank 0's source of samples: sample s's ids and length (valid until the next call). */
typedef int (*cloq_source_fn)(void *ctx, int64_t s, const int32_t **ids, int64_t *t);
/* The last rank's consumer of final hidden states (eval: head and NLL). May be NULL. */
typedef int (*cloq_sink_fn)(void *ctx, int64_t s, const float *x, const int32_t *ids, int64_t t);

/* Runs the stream on every rank of the chain (others return at once). Rank 0 embeds with
 * `embed` (vocab, dim) float32 and pulls nsamples samples from src. w may be NULL on rank 0 when
 * it owns no blocks. Returns this rank's status; not collective (see cloq_mpi_report). */
int cloq_stream_run(const cloq_plan *p, cloq_worker *w, int64_t dim, int64_t vocab,
                    const float *embed, int64_t nsamples, cloq_source_fn src, cloq_sink_fn sink,
                    void *ctx, int progress);

/* Likewise not collective. The same with two workers: even samples run through w, odd ones through w_odd (each rank's two
 * workers own the same blocks), e.g. the full-precision and the quantized model on the same
 * tokens, one after the other. */
int cloq_stream_run_pair(const cloq_plan *p, cloq_worker *w, cloq_worker *w_odd, int64_t dim,
                         int64_t vocab, const float *embed, int64_t nsamples, cloq_source_fn src,
                         cloq_sink_fn sink, void *ctx, int progress);


#endif
