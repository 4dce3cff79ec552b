/* synth_ckpt: the synthetic Llama checkpoints of `cloq synth` (cmd/cloq_synth.c writes them):
 * every tensor of the Hugging Face LlamaForCausalLM layout (untied lm_head), its place in the
 * safetensors file, the file's header, and the bytes of each piece, a pure function of the spec.
 *
 * What the weights look like (all row-major, nn.Linear's (n_out, n_in)):
 *  - linear layers: w[o][j] = sd_j * z with z ~ N(0, 1). Per block, each input (the attention
 *    input read by q/k/v, the MLP input read by gate/up, o_proj's input, down_proj's input) has a
 *    set of round(frac * n_in) outlier columns (at least one when frac > 0), shared by every
 *    module reading that input, where sd_j is --outlier-scale times the others'. The base sd is
 *    1/sqrt(fan_in) with each outlier column counted outlier-scale^2 times in fan_in, so a
 *    unit-RMS input gives a unit-RMS output whatever the outlier settings: the residual stream
 *    grows by O(1) per block and stays moderate through 40+ blocks.
 *  - RMSNorm weights: 1 + 0.05 z, except max(1, dim/1024) channels per norm at 3..6 (the large
 *    channels real models have).
 *  - embeddings: 0.02 z; lm_head: z / sqrt(dim), no outliers.
 * Determinism: each tensor is cut into CHUNK-element pieces and piece c of tensor t draws from
 * its own splitmix64 stream seeded with cloq_seed_mix(seed, t, c), so the bytes depend on the
 * settings and --seed only (not on --threads or batch boundaries). Normals come from a 65537-knot
 * table of the inverse normal CDF, interpolated linearly: 32 random bits per value (16 pick the
 * knot, 16 interpolate), two values per splitmix64 output. The knots are exact to double
 * precision (Acklam's approximation and a Halley step), the distribution is truncated at
 * |z| = 4.33 (mass 1.5e-5), and a value costs a multiply-add and two loads. A BF16 weight takes
 * about 2 ns per core, half of it the table lookup (an L1-sized table is no faster: the scalar
 * loads are the cost, not the cache), so 2 cores write ~1-2 GB/s and more cores reach disk speed.
 * The table comes from libm (log, exp, erfc), so bitwise reproducibility across platforms rests
 * on those being correctly rounded at the knots.
 * Nothing here is collective or uses MPI.
 */
#ifndef CLOQ_SYNTH_CKPT_H
#define CLOQ_SYNTH_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_ckpt.h"

/* Elements per independently seeded piece. Part of the output's definition: changing it changes
 * every weight of every model generated with a given seed. */
#define CLOQ_SYNTH_CHUNK ((int64_t)1 << 18)
/* The header is space-padded so that the data area starts at a multiple of this (O_DIRECT). */
#define CLOQ_SYNTH_ALIGN 4096

/* What a model is made from: its shapes (resolved, all positive), dtype and generator settings. */
typedef struct {
  int64_t dim, layers, heads, kv_heads, mlp, vocab, max_pos, head_dim;
  cloq_dtype dtype;           /* CLOQ_DT_BF16, CLOQ_DT_F16 or CLOQ_DT_F32 */
  uint64_t seed;
  double outlier_frac, outlier_scale;
  const char *like;           /* the preset's name (recorded in the metadata), or NULL */
} cloq_synth_spec;

typedef struct {
  char name[96];
  int ndim;
  int64_t rows, cols;  /* 2-D (rows, cols) = HF (n_out, n_in); 1-D: rows 1, cols n */
  int64_t numel, bytes, offset; /* offset: into the data area */
  int64_t nchunks;
  const float *mean;   /* (cols) per-column mean; NULL: 0 */
  const float *sd;     /* (cols) per-column standard deviation; NULL: sd0 */
  float sd0;
  int64_t group;       /* 0 embedding, 1..L layer, L+1 final norm + lm_head */
} cloq_synth_tensor;

/* Every tensor, its bytes and offset, and how its values are drawn. */
typedef struct {
  const cloq_synth_spec *o;
  int64_t nt;
  cloq_synth_tensor *t; /* nt, in file order */
  float *aux;          /* owned: every per-column array the tensors point into */
  size_t esize;        /* bytes per element */
  int64_t data_bytes;  /* the data area */
  char *header;        /* the JSON header, space-padded so that 8 + header_len is whole
                          CLOQ_SYNTH_ALIGN blocks */
  size_t header_len;
} cloq_synth_plan;

/* The plan of spec o (which must outlive it); errors name what overflows or runs out. */
int cloq_synth_plan_make(const cloq_synth_spec *o, cloq_synth_plan *p);
void cloq_synth_plan_free(cloq_synth_plan *p);
/* "BF16", "F16" or "F32". */
const char *cloq_synth_dtype_name(cloq_dtype d);
/* Builds the normal table; once, before any cloq_synth_piece (then read-only: threads may call
 * cloq_synth_piece at once). */
void cloq_synth_table_init(void);
/* Piece c of tensor ti into dst: min(CLOQ_SYNTH_CHUNK, numel - c * CLOQ_SYNTH_CHUNK) elements in
 * the output dtype. */
void cloq_synth_piece(const cloq_synth_plan *p, int64_t ti, int64_t c, unsigned char *dst);

#endif
