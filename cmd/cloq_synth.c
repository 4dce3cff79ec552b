/* cloq_synth: `cloq synth`, synthetic Llama checkpoints in the Hugging Face layout, written at
 * close to disk speed without ever holding the model in memory.
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
 * Streaming: every offset follows from the shapes, so the safetensors header (space-padded to
 * 4096 bytes) is written first and then the data in 64 MB batches, with O_DIRECT where the
 * filesystem has it; worker threads fill the next batch while this thread writes the current one.
 * The file is DIR/model.safetensors.partial until fdatasync + rename, and config.json is written
 * last, so an interrupted run never leaves a complete-looking model.
 */
#include "cloq_synth.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cloq_clock.h"
#include "cloq_cli.h"
#include "cloq_err.h"
#include "cloq_half_fast.h"
#include "cloq_ckpt.h"
#include "cloq_linalg.h"
#include "hf_folder.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is written from memory: a little-endian host is required"
#endif

/* Elements per independently seeded piece. Part of the output's definition: changing it changes
 * every weight of every model generated with a given seed. */
#define CHUNK ((int64_t)1 << 18)
#define BATCH_BYTES ((int64_t)64 << 20) /* per write; two such buffers are held */
#define ALIGN 4096                      /* O_DIRECT: buffer address, file offset and length */
#define BATCH_PIECES 4096
#define NORM_NOISE 0.05f
#define EMBED_SD 0.02f

/* ---- options ----------------------------------------------------------------------------------- */

typedef struct {
  const char *name;
  int64_t dim, layers, heads, kv_heads, mlp, vocab, max_pos;
} synth_preset;

static const synth_preset presets[] = {
    {"llama2-13b", 5120, 40, 40, 40, 13824, 32000, 4096},
    {"llama2-7b", 4096, 32, 32, 32, 11008, 32000, 4096},
    {"stories260k", 64, 5, 8, 4, 172, 512, 512},
};

typedef struct {
  const char *out;
  const char *like;
  /* -1: not given */
  int64_t dim, layers, heads, kv_heads, mlp, vocab, max_pos, head_dim;
  cloq_dtype dtype;
  uint64_t seed;
  double outlier_frac, outlier_scale;
  int64_t calib_n, calib_t; /* calib_t -1: min(256, max_pos) */
  int threads;
  int force, help;
} synth_opts;

static void usage(void) {
  printf(
      "usage: cloq synth --out DIR [options]\n"
      "Writes a synthetic Llama checkpoint: DIR/config.json, DIR/model.safetensors (streamed; a 13B\n"
      "model never sits in memory) and DIR/calib.tok (a token file for --calib-format tokens).\n"
      "  --out DIR              output folder (created; refused if not empty, unless --force)\n"
      "  --force                write into a non-empty DIR, replacing the three files\n"
      "  --like NAME            preset: llama2-13b | llama2-7b | stories260k; flags below override it\n"
      "  --dim D --layers L --heads H --kv-heads K --mlp M --vocab V --max-pos P --head-dim HD\n"
      "                         shapes (without --like: dim, layers, heads, mlp, vocab required;\n"
      "                         kv-heads default H, max-pos 2048, head-dim D/H)\n"
      "  --dtype T              bf16 | f16 | f32 (default bf16)\n"
      "  --seed S               weights and calibration tokens depend only on S and the shapes\n"
      "                         (default 0)\n"
      "  --outlier-cols FRAC    fraction of input columns per block input with large weights\n"
      "                         (default 0.005; 0 for none)\n"
      "  --outlier-scale X      their standard deviation relative to the others (default 20)\n"
      "  --calib-samples N      lines of DIR/calib.tok (default 16)\n"
      "  --calib-seqlen T       tokens per line, BOS first, Zipf-like ids (default min(256, max-pos))\n"
      "  --threads N            generator threads (default: all cores; the output does not depend on it)\n");
}

static int parse_args(int argc, char **argv, synth_opts *o) {
  memset(o, 0, sizeof *o);
  o->dim = o->layers = o->heads = o->kv_heads = o->mlp = o->vocab = o->max_pos = o->head_dim = -1;
  o->dtype = CLOQ_DT_BF16;
  o->outlier_frac = 0.005;
  o->outlier_scale = 20;
  o->calib_n = 16;
  o->calib_t = -1;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  o->threads = cores < 1 ? 1 : cores > 64 ? 64 : (int)cores;
  /* a shape is at most 2^31 - 1 wide: ids and head counts are int32 downstream */
  const int64_t big = INT32_MAX;
  cloq_args sc = cloq_args_begin(argc, argv, 1, "synth");
  for (const char *f; (f = cloq_args_next(&sc));) {
    if (cloq_args_help_force(&sc, &o->help, &o->force)) continue;
    const char *a = cloq_args_peek(&sc);
    if (cloq_args_is(&sc, "--out")) o->out = a;
    else if (cloq_args_is(&sc, "--like")) {
      int found = 0;
      for (size_t k = 0; k < sizeof presets / sizeof presets[0]; k++) found |= !strcmp(a, presets[k].name);
      CLOQ_CHECK(found, "--like: '%s' is not one of llama2-13b, llama2-7b, stories260k", a);
      o->like = a;
    } else if (cloq_args_is(&sc, "--dim")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, big, &o->dim));
    else if (cloq_args_is(&sc, "--layers")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 20, &o->layers));
    else if (cloq_args_is(&sc, "--heads")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, big, &o->heads));
    else if (cloq_args_is(&sc, "--kv-heads")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, big, &o->kv_heads));
    else if (cloq_args_is(&sc, "--mlp")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, big, &o->mlp));
    else if (cloq_args_is(&sc, "--vocab")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 4, big, &o->vocab));
    else if (cloq_args_is(&sc, "--max-pos")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 2, big, &o->max_pos));
    else if (cloq_args_is(&sc, "--head-dim")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 2, big, &o->head_dim));
    else if (cloq_args_is(&sc, "--dtype")) {
      if (!strcmp(a, "bf16")) o->dtype = CLOQ_DT_BF16;
      else if (!strcmp(a, "f16")) o->dtype = CLOQ_DT_F16;
      else if (!strcmp(a, "f32")) o->dtype = CLOQ_DT_F32;
      else return CLOQ_FAIL("--dtype: '%s' is not one of bf16, f16, f32", a);
    } else if (cloq_args_is(&sc, "--seed")) {
      int64_t v;
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 0, INT64_MAX, &v));
      o->seed = (uint64_t)v;
    } else if (cloq_args_is(&sc, "--outlier-cols")) CLOQ_CALL(cloq_cli_parse_f64(f, a, 0, 0.5, &o->outlier_frac));
    else if (cloq_args_is(&sc, "--outlier-scale")) CLOQ_CALL(cloq_cli_parse_f64(f, a, 1, 1000, &o->outlier_scale));
    else if (cloq_args_is(&sc, "--calib-samples")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 24, &o->calib_n));
    else if (cloq_args_is(&sc, "--calib-seqlen")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 2, 1 << 24, &o->calib_t));
    else if (cloq_args_is(&sc, "--threads")) {
      int64_t v;
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 256, &v));
      o->threads = (int)v;
    } else
      return cloq_args_unknown(&sc);
  }
  CLOQ_CALL(sc.rc);
  if (o->help) return CLOQ_OK;
  CLOQ_CHECK(o->out, "--out is required");
  return CLOQ_OK;
}

/* Preset, then explicit flags; then the architecture's constraints, each naming its flags. */
static int resolve_shapes(synth_opts *o) {
  if (o->like) {
    const synth_preset *p = NULL;
    for (size_t k = 0; k < sizeof presets / sizeof presets[0]; k++)
      if (!strcmp(o->like, presets[k].name)) p = &presets[k];
    int explicit_heads = o->heads > 0;
    if (o->dim < 0) o->dim = p->dim;
    if (o->layers < 0) o->layers = p->layers;
    if (o->heads < 0) o->heads = p->heads;
    /* the preset's kv-heads only make sense with its head count; MHA otherwise */
    if (o->kv_heads < 0) o->kv_heads = explicit_heads ? o->heads : p->kv_heads;
    if (o->mlp < 0) o->mlp = p->mlp;
    if (o->vocab < 0) o->vocab = p->vocab;
    if (o->max_pos < 0) o->max_pos = p->max_pos;
  }
  static const char *const req[] = {"--dim", "--layers", "--heads", "--mlp", "--vocab"};
  const int64_t reqv[] = {o->dim, o->layers, o->heads, o->mlp, o->vocab};
  for (size_t k = 0; k < sizeof req / sizeof req[0]; k++)
    CLOQ_CHECK(reqv[k] > 0, "%s is required without --like", req[k]);
  if (o->kv_heads < 0) o->kv_heads = o->heads;
  if (o->max_pos < 0) o->max_pos = 2048;
  if (o->head_dim < 0) {
    CLOQ_CHECK(o->dim % o->heads == 0,
               "--heads %lld does not divide --dim %lld (give --head-dim to decouple them)",
               (long long)o->heads, (long long)o->dim);
    o->head_dim = o->dim / o->heads;
  }
  CLOQ_CHECK(o->heads % o->kv_heads == 0, "--kv-heads %lld does not divide --heads %lld",
             (long long)o->kv_heads, (long long)o->heads);
  CLOQ_CHECK(o->head_dim % 2 == 0, "head_dim %lld is odd: RoPE needs an even head_dim",
             (long long)o->head_dim);
  CLOQ_CHECK(o->head_dim <= INT32_MAX / o->heads,
             "--heads %lld x head_dim %lld is too large", (long long)o->heads,
             (long long)o->head_dim);
  if (o->calib_t < 0) o->calib_t = o->max_pos < 256 ? o->max_pos : 256;
  CLOQ_CHECK(o->calib_t <= o->max_pos, "--calib-seqlen %lld exceeds --max-pos %lld",
             (long long)o->calib_t, (long long)o->max_pos);
  return CLOQ_OK;
}

/* ---- the plan: every tensor, its bytes and offset, and how its values are drawn ---------------- */

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
} synth_tensor;

typedef struct {
  const synth_opts *o;
  int64_t nt;
  synth_tensor *t;     /* nt, in file order */
  float *aux;          /* owned: every per-column array the tensors point into */
  size_t esize;        /* bytes per element */
  int64_t data_bytes;  /* the data area */
  char *header;        /* the JSON header, space-padded so that 8 + header_len is whole ALIGN blocks */
  size_t header_len;
} synth_plan;

static void plan_free(synth_plan *p) {
  free(p->t);
  free(p->aux);
  free(p->header);
  memset(p, 0, sizeof *p);
}

static const char *dtype_st(cloq_dtype d) {
  return d == CLOQ_DT_F32 ? "F32" : d == CLOQ_DT_F16 ? "F16" : "BF16";
}

/* Fisher-Yates over idx[0..n): the first k entries become a uniform random k-subset. */
static void pick(uint64_t seed, int64_t *idx, int64_t n, int64_t k) {
  cloq_rng g;
  cloq_rng_seed(&g, seed);
  for (int64_t i = 0; i < n; i++) idx[i] = i;
  for (int64_t i = 0; i < k; i++) {
    int64_t j = i + (int64_t)(cloq_rng_u64(&g) % (uint64_t)(n - i));
    int64_t tmp = idx[i];
    idx[i] = idx[j];
    idx[j] = tmp;
  }
}

/* Domains of the aux seeds (distinct from tensor indices, which are small). */
enum { AUX_ATTN_IN = 1, AUX_MLP_IN, AUX_O_IN, AUX_DOWN_IN, AUX_NORM_ATTN, AUX_NORM_MLP, AUX_NORM_FINAL };
static uint64_t aux_seed(const synth_opts *o, int which, int64_t layer) {
  return cloq_seed_mix(o->seed, ((uint64_t)1 << 63) | (uint64_t)which, (uint64_t)layer);
}

/* sd[0..n): the column standard deviations of the modules reading one input (see the top). */
static void outlier_sd(const synth_opts *o, int which, int64_t layer, int64_t n, int64_t *idx,
                       float *sd) {
  int64_t k = 0;
  if (o->outlier_frac > 0) {
    k = (int64_t)llround(o->outlier_frac * (double)n);
    if (k < 1) k = 1;
    if (k > n) k = n;
  }
  double x = o->outlier_scale;
  double base = 1.0 / sqrt((double)(n - k) + (double)k * x * x);
  for (int64_t j = 0; j < n; j++) sd[j] = (float)base;
  if (k == 0) return;
  pick(aux_seed(o, which, layer), idx, n, k);
  for (int64_t i = 0; i < k; i++) sd[idx[i]] = (float)(base * x);
}

/* mean[0..n) of an RMSNorm weight: 1, except max(1, n/1024) channels uniform in [3, 6). */
static void norm_mean(const synth_opts *o, int which, int64_t layer, int64_t n, int64_t *idx,
                      float *mean) {
  int64_t k = n / 1024 > 1 ? n / 1024 : 1;
  for (int64_t j = 0; j < n; j++) mean[j] = 1.0f;
  uint64_t s = aux_seed(o, which, layer);
  pick(s, idx, n, k);
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(s, 0, 0));
  for (int64_t i = 0; i < k; i++) mean[idx[i]] = (float)(3.0 + 3.0 * cloq_rng_uniform(&g));
}

static int add_tensor(synth_plan *p, const char *name, int ndim, int64_t rows, int64_t cols,
                      int64_t group) {
  synth_tensor *t = &p->t[p->nt++];
  snprintf(t->name, sizeof t->name, "%s", name);
  t->ndim = ndim;
  t->rows = rows;
  t->cols = cols;
  t->group = group;
  CLOQ_CALL(cloq_mul64(rows, cols, &t->numel));
  CLOQ_CALL(cloq_mul64(t->numel, (int64_t)p->esize, &t->bytes));
  CLOQ_CHECK(p->data_bytes <= INT64_MAX - t->bytes, "model size overflows 64 bits");
  t->offset = p->data_bytes;
  p->data_bytes += t->bytes;
  t->nchunks = (t->numel + CHUNK - 1) / CHUNK;
  return CLOQ_OK;
}

/* Appends to a growing string; NULL-safe chaining via the return code. */
typedef struct {
  char *s;
  size_t n, cap;
} strbuf;

static int sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sb_printf(strbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
    va_end(ap);
    CLOQ_CHECK(k >= 0, "header formatting failed");
    if (b->s && b->n + (size_t)k < b->cap) {
      b->n += (size_t)k;
      return CLOQ_OK;
    }
    size_t nc = b->cap ? 2 * b->cap : 65536;
    while (nc < b->n + (size_t)k + 16) nc *= 2;
    char *g = realloc(b->s, nc);
    CLOQ_CHECK(g, "out of memory (header of %zu bytes)", nc);
    b->s = g;
    b->cap = nc;
  }
}

static int build_header(synth_plan *p) {
  const synth_opts *o = p->o;
  strbuf b = {0};
  int rc = sb_printf(&b,
                     "{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"cloq synth %s\","
                     "\"like\":\"%s\",\"seed\":\"%llu\",\"outlier_cols\":\"%g\","
                     "\"outlier_scale\":\"%g\"}",
                     CLOQ_VERSION, o->like ? o->like : "", (unsigned long long)o->seed,
                     o->outlier_frac, o->outlier_scale);
  for (int64_t i = 0; i < p->nt && rc == CLOQ_OK; i++) {
    const synth_tensor *t = &p->t[i];
    if (t->ndim == 1)
      rc = sb_printf(&b, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%lld,%lld]}",
                     t->name, dtype_st(o->dtype), (long long)t->cols, (long long)t->offset,
                     (long long)(t->offset + t->bytes));
    else
      rc = sb_printf(&b,
                     ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%lld,%lld]}",
                     t->name, dtype_st(o->dtype), (long long)t->rows, (long long)t->cols,
                     (long long)t->offset, (long long)(t->offset + t->bytes));
  }
  if (rc == CLOQ_OK) rc = sb_printf(&b, "}");
  /* HF pads with spaces to an 8-aligned data area; padding to 4096 lets the data go out with
   * O_DIRECT (and is still 8-aligned for every reader) */
  while (rc == CLOQ_OK && (8 + b.n) % ALIGN) rc = sb_printf(&b, " ");
  if (rc != CLOQ_OK) {
    free(b.s);
    return rc;
  }
  p->header = b.s;
  p->header_len = b.n;
  return CLOQ_OK;
}

static int plan_make(const synth_opts *o, synth_plan *p) {
  memset(p, 0, sizeof *p);
  p->o = o;
  p->esize = o->dtype == CLOQ_DT_F32 ? 4 : 2;
  const int64_t D = o->dim, L = o->layers, M = o->mlp, V = o->vocab;
  const int64_t QO = o->heads * o->head_dim, KV = o->kv_heads * o->head_dim;
  CLOQ_ALLOC(p->t, 9 * L + 3, "tensor table");
  /* aux per layer: attention-input sd, MLP-input sd, two norm means (D each), o_proj-input sd
   * (QO), down_proj-input sd (M); then the final norm's mean, the embedding's and lm_head's sd */
  int64_t per_layer = 4 * D + QO + M, naux;
  CLOQ_CALL(cloq_mul64(per_layer, L, &naux));
  CLOQ_CHECK(naux <= INT64_MAX - 3 * D, "model size overflows 64 bits");
  naux += 3 * D;
  CLOQ_ALLOC(p->aux, naux, "per-column weight statistics");
  int64_t widest = D > QO ? D : QO;
  if (M > widest) widest = M;
  int64_t *idx;
  CLOQ_ALLOC(idx, widest, "column indices");

  float *a = p->aux;
  float *fin = a + per_layer * L, *emb_sd = fin + D, *head_sd = emb_sd + D;
  int rc = add_tensor(p, "model.embed_tokens.weight", 2, V, D, 0);
  p->t[p->nt - 1].sd = emb_sd;
  for (int64_t j = 0; j < D; j++) emb_sd[j] = EMBED_SD;
  char nm[96];
  for (int64_t l = 0; l < L && rc == CLOQ_OK; l++) {
    float *attn_sd = a + l * per_layer, *mlp_sd = attn_sd + D, *n1 = mlp_sd + D, *n2 = n1 + D;
    float *o_sd = n2 + D, *down_sd = o_sd + QO;
    outlier_sd(o, AUX_ATTN_IN, l, D, idx, attn_sd);
    outlier_sd(o, AUX_MLP_IN, l, D, idx, mlp_sd);
    outlier_sd(o, AUX_O_IN, l, QO, idx, o_sd);
    outlier_sd(o, AUX_DOWN_IN, l, M, idx, down_sd);
    norm_mean(o, AUX_NORM_ATTN, l, D, idx, n1);
    norm_mean(o, AUX_NORM_MLP, l, D, idx, n2);
    static const char *const mods[] = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                                       "self_attn.v_proj", "self_attn.o_proj",
                                       "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                                       "mlp.down_proj"};
    const int ndims[] = {1, 2, 2, 2, 2, 1, 2, 2, 2};
    const int64_t rows[] = {1, QO, KV, KV, D, 1, M, M, D};
    const int64_t cols[] = {D, D, D, D, QO, D, D, D, M};
    const float *means[] = {n1, NULL, NULL, NULL, NULL, n2, NULL, NULL, NULL};
    const float *sds[] = {NULL, attn_sd, attn_sd, attn_sd, o_sd, NULL, mlp_sd, mlp_sd, down_sd};
    for (int m = 0; m < 9 && rc == CLOQ_OK; m++) {
      snprintf(nm, sizeof nm, "model.layers.%lld.%s.weight", (long long)l, mods[m]);
      rc = add_tensor(p, nm, ndims[m], rows[m], cols[m], l + 1);
      synth_tensor *t = &p->t[p->nt - 1];
      t->mean = means[m];
      t->sd = sds[m];
      t->sd0 = NORM_NOISE;
    }
  }
  if (rc == CLOQ_OK) {
    norm_mean(o, AUX_NORM_FINAL, 0, D, idx, fin);
    rc = add_tensor(p, "model.norm.weight", 1, 1, D, L + 1);
    p->t[p->nt - 1].mean = fin;
    p->t[p->nt - 1].sd0 = NORM_NOISE;
  }
  if (rc == CLOQ_OK) {
    for (int64_t j = 0; j < D; j++) head_sd[j] = (float)(1.0 / sqrt((double)D));
    rc = add_tensor(p, "lm_head.weight", 2, V, D, L + 1);
    p->t[p->nt - 1].sd = head_sd;
  }
  free(idx);
  if (rc == CLOQ_OK) rc = build_header(p);
  return rc;
}

/* ---- generation ------------------------------------------------------------------------------- */

/* Knots of the inverse normal CDF at (i + 0.5) / 65537, i = 0..65536; entry i holds knot i and
 * the slope to knot i + 1 per 1/65536 step. Built once, read-only while threads run. */
typedef struct {
  float z, dz;
} knot;
static knot ntab[65536];

/* Acklam's rational approximation (relative error 1.2e-9) and one Halley step on erfc. */
static double inv_norm_cdf(double p) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  double x;
  if (p < 0.02425 || p > 1 - 0.02425) {
    double q = sqrt(-2 * log(p < 0.5 ? p : 1 - p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    if (p > 0.5) x = -x;
  } else {
    double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  double e = 0.5 * erfc(-x / sqrt(2.0)) - p;
  double u = e * sqrt(2 * M_PI) * exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

static void build_table(void) {
  static double x[65537];
  for (int i = 0; i <= 32768; i++) {
    x[i] = inv_norm_cdf((i + 0.5) / 65537.0);
    x[65536 - i] = -x[i]; /* exactly symmetric; the middle knot is 0 */
  }
  for (int i = 0; i < 65536; i++) {
    ntab[i].z = (float)x[i];
    ntab[i].dz = (float)((x[i + 1] - x[i]) / 65536.0);
  }
}

static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline float normal32(uint32_t r) {
  const knot k = ntab[r >> 16];
  return k.z + k.dz * (float)(r & 0xffffu);
}

/* Round to nearest even, as cloq_f32_to_bf16 for finite values (all values here are finite);
 * inlined because a call per element would cost as much as drawing it. */
static inline uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

enum { BLK = 2048 };

/* Piece c of tensor ti into dst (min(CHUNK, numel - c*CHUNK) elements in the output dtype). */
static void gen_piece(const synth_plan *p, int64_t ti, int64_t c, unsigned char *dst) {
  const synth_tensor *t = &p->t[ti];
  const int64_t e0 = c * CHUNK;
  const int64_t n = t->numel - e0 < CHUNK ? t->numel - e0 : CHUNK;
  uint64_t s = cloq_seed_mix(p->o->seed, (uint64_t)ti, (uint64_t)c);
  int64_t j = e0 % t->cols;
  float v[BLK];
  uint16_t h[BLK];
  for (int64_t done = 0; done < n; done += BLK) {
    const int64_t m = n - done < BLK ? n - done : BLK;
    for (int64_t i = 0; i < m; i += 2) { /* BLK is even, so v[i + 1] is in bounds */
      uint64_t r = splitmix64(&s);
      v[i] = normal32((uint32_t)(r >> 32));
      v[i + 1] = normal32((uint32_t)r);
    }
    /* scale (and shift) by column, one row segment at a time so that the loops vectorize */
    for (int64_t i = 0; i < m;) {
      const int64_t seg = m - i < t->cols - j ? m - i : t->cols - j;
      float *restrict w = v + i;
      if (t->sd) {
        const float *restrict sd = t->sd + j;
        for (int64_t q = 0; q < seg; q++) w[q] *= sd[q];
      } else {
        for (int64_t q = 0; q < seg; q++) w[q] *= t->sd0;
      }
      if (t->mean) {
        const float *restrict mu = t->mean + j;
        for (int64_t q = 0; q < seg; q++) w[q] += mu[q];
      }
      i += seg;
      j = j + seg == t->cols ? 0 : j + seg;
    }
    unsigned char *out = dst + (size_t)done * p->esize;
    if (p->o->dtype == CLOQ_DT_F32) {
      memcpy(out, v, (size_t)m * 4);
    } else if (p->o->dtype == CLOQ_DT_BF16) {
      for (int64_t i = 0; i < m; i++) h[i] = to_bf16(v[i]);
      memcpy(out, h, (size_t)m * 2);
    } else {
      for (int64_t i = 0; i < m; i++) h[i] = cloq_f32_to_f16_fast(v[i]); /* cloq_half_fast.h */
      memcpy(out, h, (size_t)m * 2);
    }
  }
}

typedef struct {
  int64_t t, c, off; /* tensor, chunk, byte offset in the batch buffer */
} synth_piece;

/* One write's worth of pieces. O_DIRECT writes whole ALIGN blocks, so the previous batch's last
 * bytes past a block boundary (`lead` of them) are carried over to the front of this one's
 * buffer and the pieces are generated after them. */
typedef struct {
  synth_piece v[BATCH_PIECES];
  int64_t n, bytes;
  int64_t lead;        /* carried bytes in buf[0, lead) */
  unsigned char *buf;  /* ALIGN + BATCH_BYTES, ALIGN-aligned */
} synth_batch;

/* Fills b with the pieces from the cursor (ti, c) on, up to BATCH_BYTES, and advances it; *pos
 * is the data-area offset where b starts, advanced past it. */
static void next_batch(const synth_plan *p, int64_t *ti, int64_t *c, int64_t *pos,
                       synth_batch *b) {
  b->n = b->bytes = 0;
  b->lead = *pos % ALIGN; /* the data area starts ALIGN-aligned (see build_header) */
  while (*ti < p->nt && b->n < BATCH_PIECES) {
    const synth_tensor *t = &p->t[*ti];
    int64_t e0 = *c * CHUNK, ne = t->numel - e0 < CHUNK ? t->numel - e0 : CHUNK;
    int64_t nb = ne * (int64_t)p->esize;
    if (b->bytes + nb > BATCH_BYTES) break; /* a piece (<= 1 MB) always fits an empty batch */
    b->v[b->n++] = (synth_piece){*ti, *c, b->bytes};
    b->bytes += nb;
    if (++*c == t->nchunks) {
      ++*ti;
      *c = 0;
    }
  }
  *pos += b->bytes;
}

typedef struct {
  const synth_plan *p;
  synth_batch *b;
  int k, nthreads;
} gen_arg;

static void *gen_thread(void *arg) {
  const gen_arg *g = arg;
  for (int64_t i = g->k; i < g->b->n; i += g->nthreads)
    gen_piece(g->p, g->b->v[i].t, g->b->v[i].c, g->b->buf + g->b->lead + g->b->v[i].off);
  return NULL;
}

typedef struct {
  pthread_t tid[256];
  int started[256];
  gen_arg arg[256];
  int n;
} gen_pool;

/* Starts filling b on n threads; a thread that cannot be started does its share here, so the
 * result is the same either way. */
static void gen_start(gen_pool *g, const synth_plan *p, synth_batch *b, int n) {
  g->n = n;
  for (int k = 0; k < n; k++) {
    g->arg[k] = (gen_arg){p, b, k, n};
    g->started[k] = pthread_create(&g->tid[k], NULL, gen_thread, &g->arg[k]) == 0;
    if (!g->started[k]) gen_thread(&g->arg[k]);
  }
}

static void gen_join(gen_pool *g) {
  for (int k = 0; k < g->n; k++)
    if (g->started[k]) pthread_join(g->tid[k], NULL);
  g->n = 0;
}

/* ---- output ------------------------------------------------------------------------------------ */

static char *path_join(const char *dir, const char *file) {
  size_t n = strlen(dir) + strlen(file) + 2;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s/%s", dir, file);
  return s;
}

static const char *fmt_bytes(char *buf, size_t cap, int64_t b) {
  if (b >= 1000000000) snprintf(buf, cap, "%.2f GB", (double)b / 1e9);
  else if (b >= 1000000) snprintf(buf, cap, "%.1f MB", (double)b / 1e6);
  else snprintf(buf, cap, "%.1f kB", (double)b / 1e3);
  return buf;
}

/* *direct: the file is open with O_DIRECT. A filesystem that refuses an O_DIRECT write (EINVAL:
 * larger blocks, or an unaligned remainder after a short write) gets it buffered instead. */
static int write_all(int fd, int *direct, const char *path, const unsigned char *p, int64_t n) {
  while (n > 0) {
    size_t want = n > ((int64_t)1 << 30) ? (size_t)1 << 30 : (size_t)n;
    ssize_t k = write(fd, p, want);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EINVAL && *direct) {
      int fl = fcntl(fd, F_GETFL);
      CLOQ_CHECK(fl != -1 && fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0,
                 "%s: cannot leave O_DIRECT: %s", path, strerror(errno));
      *direct = 0;
      continue;
    }
    CLOQ_CHECK(k > 0, "%s: write failed: %s", path, k < 0 ? strerror(errno) : "no progress");
    p += k;
    n -= k;
  }
  return CLOQ_OK;
}

/* The DIR checks: created if absent; an existing non-empty one only with --force, and then the
 * previous model.safetensors and config.json go first so that an interruption cannot leave an
 * old model beside new files. */
static int prepare_dir(const synth_opts *o) {
  struct stat st;
  if (stat(o->out, &st) != 0) {
    CLOQ_CHECK(errno == ENOENT, "%s: %s", o->out, strerror(errno));
    CLOQ_CHECK(mkdir(o->out, 0777) == 0, "%s: cannot create: %s", o->out, strerror(errno));
    return CLOQ_OK;
  }
  CLOQ_CHECK(S_ISDIR(st.st_mode), "%s exists and is not a folder", o->out);
  DIR *d = opendir(o->out);
  CLOQ_CHECK(d, "%s: cannot open: %s", o->out, strerror(errno));
  int empty = 1;
  struct dirent *e;
  while (empty && (e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
  closedir(d);
  CLOQ_CHECK(empty || o->force, "%s exists and is not empty (use --force to write into it)",
             o->out);
  static const char *const stale[] = {"model.safetensors", "config.json"};
  for (int i = 0; i < 2; i++) {
    char *f = path_join(o->out, stale[i]);
    CLOQ_CHECK(f, "out of memory");
    int bad = unlink(f) != 0 && errno != ENOENT;
    int err = errno;
    if (bad) {
      CLOQ_FAIL("%s: cannot remove: %s", f, strerror(err));
      free(f);
      return CLOQ_ERR;
    }
    free(f);
  }
  return CLOQ_OK;
}

/* FILE-based small outputs: written to PATH.tmp, checked, renamed into place. */
static int close_rename(FILE *f, const char *tmp, const char *path) {
  int bad = ferror(f);
  int err = errno;
  if (fclose(f) != 0 && !bad) {
    bad = 1;
    err = errno;
  }
  if (bad) {
    remove(tmp);
    return CLOQ_FAIL("%s: write failed: %s", tmp, strerror(err));
  }
  if (rename(tmp, path) != 0) {
    err = errno;
    remove(tmp);
    return CLOQ_FAIL("%s: cannot rename to %s: %s", tmp, path, strerror(err));
  }
  return CLOQ_OK;
}

static int write_small(const synth_opts *o, const char *file, int is_config) {
  char *path = path_join(o->out, file), *tmp = path_join(o->out, is_config ? "config.json.tmp"
                                                                              : "calib.tok.tmp");
  if (!path || !tmp) {
    free(path);
    free(tmp);
    return CLOQ_FAIL("out of memory");
  }
  FILE *f = fopen(tmp, "w");
  int rc = CLOQ_OK;
  if (!f) {
    rc = CLOQ_FAIL("%s: cannot create: %s", tmp, strerror(errno));
  } else if (is_config) {
    /* Not cloq_hf_write_config (io/hf_folder.c): that one goes through jansson, which writes
     * arrays over several lines and rms_norm_eps as 1.0000000000000001e-5, and the bytes of this
     * file are part of synth's output (the same settings give the same files). */
    fprintf(f,
            "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
            "  \"hidden_size\": %lld,\n  \"intermediate_size\": %lld,\n"
            "  \"num_hidden_layers\": %lld,\n  \"num_attention_heads\": %lld,\n"
            "  \"num_key_value_heads\": %lld,\n  \"head_dim\": %lld,\n  \"vocab_size\": %lld,\n"
            "  \"max_position_embeddings\": %lld,\n  \"rms_norm_eps\": 1e-05,\n"
            "  \"rope_theta\": 10000.0,\n  \"rope_scaling\": null,\n  \"hidden_act\": \"silu\",\n"
            "  \"tie_word_embeddings\": false,\n  \"attention_bias\": false,\n"
            "  \"mlp_bias\": false,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
            "  \"torch_dtype\": \"%s\",\n"
            "  \"cloq_synth\": {\"version\": \"%s\", \"like\": \"%s\", \"seed\": %llu, "
            "\"outlier_cols\": %.10g, \"outlier_scale\": %.10g}\n}\n",
            (long long)o->dim, (long long)o->mlp, (long long)o->layers, (long long)o->heads,
            (long long)o->kv_heads, (long long)o->head_dim, (long long)o->vocab,
            (long long)o->max_pos, cloq_hf_dtype_name(o->dtype), CLOQ_VERSION,
            o->like ? o->like : "", (unsigned long long)o->seed, o->outlier_frac,
            o->outlier_scale);
  } else {
    /* Zipf-like ids: rank r = floor(V' ^ u) - 1 with u uniform gives P(r) ~ 1 / ((r + 1.5) ln V')
     * (Zipf with s = 1, as word frequencies), over the ordinary ids 3.. (0-2 are unk/bos/eos). */
    cloq_rng g;
    cloq_rng_seed(&g, cloq_seed_mix(o->seed, ((uint64_t)1 << 63) | 0x63616c6962ULL, 0));
    const int64_t ord = o->vocab - 3;
    const double lv = log((double)ord + 1);
    for (int64_t s = 0; s < o->calib_n && !ferror(f); s++) {
      fputs("1", f);
      for (int64_t i = 1; i < o->calib_t; i++) {
        int64_t r = (int64_t)floor(exp(cloq_rng_uniform(&g) * lv)) - 1;
        if (r < 0) r = 0;
        if (r >= ord) r = ord - 1;
        fprintf(f, " %lld", (long long)(3 + r));
      }
      fputc('\n', f);
    }
  }
  if (f) rc = close_rename(f, tmp, path);
  free(path);
  free(tmp);
  return rc;
}

/* Leaves O_DIRECT for a write whose length is not whole blocks (the file's last bytes). */
static int leave_direct(int fd, int *direct, const char *path) {
  if (!*direct) return CLOQ_OK;
  int fl = fcntl(fd, F_GETFL);
  CLOQ_CHECK(fl != -1 && fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0, "%s: cannot leave O_DIRECT: %s",
             path, strerror(errno));
  *direct = 0;
  return CLOQ_OK;
}

typedef struct {
  int64_t reported;    /* tensors already counted in a printed line */
  int64_t group_bytes; /* of the group being written */
  double t_group, t_data;
} synth_progress;

/* One line for every group (embedding, layer, final norm + lm_head) whose last tensor is now
 * written: tensors [0, done_upto) are on disk, `written` data bytes so far. */
static void report(const synth_plan *p, synth_progress *pr, int64_t done_upto, int64_t written) {
  const synth_opts *o = p->o;
  char b1[32], b2[32];
  for (; pr->reported < done_upto; pr->reported++) {
    const synth_tensor *t = &p->t[pr->reported];
    pr->group_bytes += t->bytes;
    if (pr->reported + 1 < p->nt && p->t[pr->reported + 1].group == t->group) continue;
    double now = cloq_now(), dt = now - pr->t_group;
    double rate = (double)written / (now - pr->t_data + 1e-9);
    fmt_bytes(b1, sizeof b1, pr->group_bytes);
    if (t->group == 0)
      printf("embed: %s (%lld, %lld) %s  %s  %.2f s\n", t->name, (long long)t->rows,
             (long long)t->cols, dtype_st(o->dtype), b1, dt);
    else if (t->group <= o->layers)
      printf("layer %lld/%lld: 9 tensors  %s  %.2f s  %s/s  ETA %.0f s\n", (long long)t->group,
             (long long)o->layers, b1, dt, fmt_bytes(b2, sizeof b2, (int64_t)rate),
             (double)(p->data_bytes - written) / rate);
    else
      printf("head: model.norm.weight (%lld), lm_head.weight (%lld, %lld) %s  %s  %.2f s\n",
             (long long)o->dim, (long long)t->rows, (long long)t->cols, dtype_st(o->dtype), b1, dt);
    fflush(stdout);
    pr->group_bytes = 0;
    pr->t_group = now;
  }
}

/* Streams the header and every tensor into DIR/model.safetensors.partial, syncs, renames.
 * The file is opened with O_DIRECT where the filesystem allows it: on a VM the copy into the page
 * cache alone ran at 0.2-0.6 GB/s against 2.3-2.7 GB/s for direct writes, and a 25 GB stream would
 * otherwise push everything else out of the cache. Without O_DIRECT, writeback is started after
 * every batch and waited for two batches later, which keeps the dirty page cache bounded. */
static int write_model(const synth_plan *p, double t_start) {
  const synth_opts *o = p->o;
  char *path = path_join(o->out, "model.safetensors");
  char *part = path_join(o->out, "model.safetensors.partial");
  synth_batch *bt[2] = {calloc(1, sizeof(synth_batch)), calloc(1, sizeof(synth_batch))};
  gen_pool *pool = calloc(1, sizeof *pool);
  const int64_t hbytes = 8 + (int64_t)p->header_len; /* a multiple of ALIGN */
  unsigned char *hdr = aligned_alloc(ALIGN, (size_t)hbytes);
  int rc = CLOQ_OK, fd = -1, direct = 1;
  if (!path || !part || !bt[0] || !bt[1] || !pool || !hdr ||
      !(bt[0]->buf = aligned_alloc(ALIGN, (size_t)(ALIGN + BATCH_BYTES))) ||
      !(bt[1]->buf = aligned_alloc(ALIGN, (size_t)(ALIGN + BATCH_BYTES))))
    rc = CLOQ_FAIL("out of memory (two %lld MB write buffers)", (long long)(BATCH_BYTES >> 20));
  if (rc == CLOQ_OK) {
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
    if (fd < 0 && errno == EINVAL) { /* tmpfs and some network filesystems */
      direct = 0;
      fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    }
    if (fd < 0) rc = CLOQ_FAIL("%s: cannot create: %s", part, strerror(errno));
  }
  if (rc == CLOQ_OK) {
    for (int i = 0; i < 8; i++) hdr[i] = (unsigned char)((uint64_t)p->header_len >> (8 * i));
    memcpy(hdr + 8, p->header, p->header_len);
    rc = write_all(fd, &direct, part, hdr, hbytes);
  }

  int64_t ti = 0, c = 0, pos = 0, written = 0, fpos = hbytes, kicked = hbytes, waited = hbytes;
  synth_progress pr = {0, 0, cloq_now(), cloq_now()};
  int cur = 0, stayed_direct = direct;
  if (rc == CLOQ_OK) {
    next_batch(p, &ti, &c, &pos, bt[cur]);
    gen_start(pool, p, bt[cur], o->threads);
    gen_join(pool);
  }
  while (rc == CLOQ_OK && bt[cur]->n > 0) {
    synth_batch *now = bt[cur], *nxt = bt[1 - cur];
    next_batch(p, &ti, &c, &pos, nxt);
    if (nxt->n > 0) gen_start(pool, p, nxt, o->threads);
    /* whole blocks go out now; the rest (nxt->lead bytes) moves to the front of the next batch,
     * whose pieces start after it (disjoint from what the threads are filling) */
    const int64_t have = now->lead + now->bytes, whole = have / ALIGN * ALIGN;
    if (nxt->n > 0) memcpy(nxt->buf, now->buf + whole, (size_t)(have - whole));
    rc = write_all(fd, &direct, part, now->buf, whole);
    stayed_direct = direct;
    if (rc == CLOQ_OK && nxt->n == 0 && have > whole) {
      rc = leave_direct(fd, &direct, part);
      if (rc == CLOQ_OK) rc = write_all(fd, &direct, part, now->buf + whole, have - whole);
    }
    if (rc == CLOQ_OK) {
      written += now->bytes;
      fpos += nxt->n == 0 ? have : whole;
    }
    if (rc == CLOQ_OK && !direct) {
      /* Advisory (errors surface at fdatasync): start writeback of what was just written, wait
       * for what is two batches old, so the stream runs at disk speed instead of stalling the
       * machine when the kernel's dirty limit is hit. */
      sync_file_range(fd, kicked, fpos - kicked, SYNC_FILE_RANGE_WRITE);
      kicked = fpos;
      if (fpos - waited > 2 * BATCH_BYTES) {
        int64_t upto = fpos - 2 * BATCH_BYTES;
        sync_file_range(fd, waited, upto - waited,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER);
        waited = upto;
      }
    }
    gen_join(pool);
    if (rc != CLOQ_OK) break;
    /* the tensor of the last piece is out only with its last chunk (and its carried tail) */
    const synth_piece *last = &now->v[now->n - 1];
    int complete = last->c == p->t[last->t].nchunks - 1 && (nxt->n == 0 || have == whole);
    report(p, &pr, complete ? last->t + 1 : last->t, written);
    cur = 1 - cur;
  }
  if (rc == CLOQ_OK && fpos != hbytes + p->data_bytes)
    rc = CLOQ_FAIL("%s: wrote %lld bytes, expected %lld", part, (long long)fpos,
                   (long long)(hbytes + p->data_bytes));
  if (rc == CLOQ_OK && fdatasync(fd) != 0)
    rc = CLOQ_FAIL("%s: fdatasync failed: %s", part, strerror(errno));
  if (fd >= 0 && close(fd) != 0 && rc == CLOQ_OK)
    rc = CLOQ_FAIL("%s: close failed: %s", part, strerror(errno));
  if (rc == CLOQ_OK && rename(part, path) != 0)
    rc = CLOQ_FAIL("%s: cannot rename to %s: %s", part, path, strerror(errno));
  if (rc != CLOQ_OK && fd >= 0) unlink(part); /* a failed multi-GB partial is only in the way */
  if (rc == CLOQ_OK) {
    double sec = cloq_now() - t_start;
    char b1[32], b2[32];
    printf("wrote %s: %s (%lld tensors, %s) in %.1f s, %s/s%s\n", path,
           fmt_bytes(b1, sizeof b1, fpos), (long long)p->nt, dtype_st(o->dtype), sec,
           fmt_bytes(b2, sizeof b2, (int64_t)((double)fpos / sec)),
           stayed_direct ? "" : " (buffered: this filesystem refused O_DIRECT)");
  }
  if (bt[0]) free(bt[0]->buf);
  if (bt[1]) free(bt[1]->buf);
  free(bt[0]);
  free(bt[1]);
  free(hdr);
  free(pool);
  free(path);
  free(part);
  return rc;
}

/* A 25 GB model that finds the disk full after ten minutes is worse than one line now. */
static int check_space(const synth_opts *o, int64_t need) {
  struct statvfs v;
  if (statvfs(o->out, &v) != 0) return CLOQ_OK; /* unknown: the writes will tell */
  double avail = (double)v.f_bavail * (double)v.f_frsize;
  char b1[32], b2[32];
  CLOQ_CHECK(avail >= (double)need, "%s: the model needs %s but only %s are free there", o->out,
             fmt_bytes(b1, sizeof b1, need), fmt_bytes(b2, sizeof b2, (int64_t)avail));
  return CLOQ_OK;
}

static int synth_run(synth_opts *o) {
  CLOQ_CALL(resolve_shapes(o));
  double t0 = cloq_now();
  synth_plan p;
  int rc = plan_make(o, &p);
  if (rc == CLOQ_OK) rc = prepare_dir(o);
  if (rc == CLOQ_OK) rc = check_space(o, p.data_bytes + 8 + (int64_t)p.header_len);
  if (rc == CLOQ_OK) {
    char b[32];
    printf("synth: %s%sdim %lld, %lld layers, %lld heads (%lld kv, head_dim %lld), mlp %lld, "
           "vocab %lld, max-pos %lld, %s, seed %llu, outlier columns %g x %g -> %s/model.safetensors "
           "(%s, %lld tensors), %d threads\n",
           o->like ? o->like : "", o->like ? "-like: " : "", (long long)o->dim,
           (long long)o->layers, (long long)o->heads, (long long)o->kv_heads,
           (long long)o->head_dim, (long long)o->mlp, (long long)o->vocab, (long long)o->max_pos,
           dtype_st(o->dtype), (unsigned long long)o->seed, o->outlier_frac, o->outlier_scale,
           o->out, fmt_bytes(b, sizeof b, p.data_bytes + 8 + (int64_t)p.header_len),
           (long long)p.nt, o->threads);
    fflush(stdout);
    build_table();
    rc = write_small(o, "calib.tok", 0);
  }
  if (rc == CLOQ_OK) rc = write_model(&p, t0);
  if (rc == CLOQ_OK) rc = write_small(o, "config.json", 1);
  if (rc == CLOQ_OK)
    printf("wrote %s/config.json and %s/calib.tok (%lld x %lld tokens)\n", o->out, o->out,
           (long long)o->calib_n, (long long)o->calib_t);
  plan_free(&p);
  return rc;
}

static int run(const void *o) {
  synth_opts copy = *(const synth_opts *)o; /* synth_run fills in the defaults */
  return synth_run(&copy);
}

int cloq_synth_main(int argc, char **argv) {
  synth_opts o;
  int rc = parse_args(argc, argv, &o);
  return cloq_cli_finish(rc, o.help, usage, run, &o);
}
