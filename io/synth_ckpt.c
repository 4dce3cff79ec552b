/* synth_ckpt: see synth_ckpt.h. */
#include "synth_ckpt.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_half_fast.h"
#include "cloq_linalg.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is written from memory: a little-endian host is required"
#endif

#define NORM_NOISE 0.05f
#define EMBED_SD 0.02f

/* ---- the plan ------------------------------------------------------------------------------------ */

void cloq_synth_plan_free(cloq_synth_plan *p) {
  free(p->t);
  free(p->aux);
  free(p->header);
  memset(p, 0, sizeof *p);
}

const char *cloq_synth_dtype_name(cloq_dtype d) {
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
static uint64_t aux_seed(const cloq_synth_spec *o, int which, int64_t layer) {
  return cloq_seed_mix(o->seed, ((uint64_t)1 << 63) | (uint64_t)which, (uint64_t)layer);
}

/* sd[0..n): the column standard deviations of the modules reading one input (see the top). */
static void outlier_sd(const cloq_synth_spec *o, int which, int64_t layer, int64_t n, int64_t *idx,
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
static void norm_mean(const cloq_synth_spec *o, int which, int64_t layer, int64_t n, int64_t *idx,
                      float *mean) {
  int64_t k = n / 1024 > 1 ? n / 1024 : 1;
  for (int64_t j = 0; j < n; j++) mean[j] = 1.0f;
  uint64_t s = aux_seed(o, which, layer);
  pick(s, idx, n, k);
  cloq_rng g;
  cloq_rng_seed(&g, cloq_seed_mix(s, 0, 0));
  for (int64_t i = 0; i < k; i++) mean[idx[i]] = (float)(3.0 + 3.0 * cloq_rng_uniform(&g));
}

static int add_tensor(cloq_synth_plan *p, const char *name, int ndim, int64_t rows, int64_t cols,
                      int64_t group) {
  cloq_synth_tensor *t = &p->t[p->nt++];
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
  t->nchunks = (t->numel + CLOQ_SYNTH_CHUNK - 1) / CLOQ_SYNTH_CHUNK;
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

static int build_header(cloq_synth_plan *p) {
  const cloq_synth_spec *o = p->o;
  strbuf b = {0};
  int rc = sb_printf(&b,
                     "{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"cloq synth %s\","
                     "\"like\":\"%s\",\"seed\":\"%llu\",\"outlier_cols\":\"%g\","
                     "\"outlier_scale\":\"%g\"}",
                     CLOQ_VERSION, o->like ? o->like : "", (unsigned long long)o->seed,
                     o->outlier_frac, o->outlier_scale);
  for (int64_t i = 0; i < p->nt && rc == CLOQ_OK; i++) {
    const cloq_synth_tensor *t = &p->t[i];
    if (t->ndim == 1)
      rc = sb_printf(&b, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%lld,%lld]}",
                     t->name, cloq_synth_dtype_name(o->dtype), (long long)t->cols, (long long)t->offset,
                     (long long)(t->offset + t->bytes));
    else
      rc = sb_printf(&b,
                     ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%lld,%lld]}",
                     t->name, cloq_synth_dtype_name(o->dtype), (long long)t->rows, (long long)t->cols,
                     (long long)t->offset, (long long)(t->offset + t->bytes));
  }
  if (rc == CLOQ_OK) rc = sb_printf(&b, "}");
  /* HF pads with spaces to an 8-aligned data area; padding to 4096 lets the data go out with
   * O_DIRECT (and is still 8-aligned for every reader) */
  while (rc == CLOQ_OK && (8 + b.n) % CLOQ_SYNTH_ALIGN) rc = sb_printf(&b, " ");
  if (rc != CLOQ_OK) {
    free(b.s);
    return rc;
  }
  p->header = b.s;
  p->header_len = b.n;
  return CLOQ_OK;
}

int cloq_synth_plan_make(const cloq_synth_spec *o, cloq_synth_plan *p) {
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
      cloq_synth_tensor *t = &p->t[p->nt - 1];
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

void cloq_synth_table_init(void) {
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

void cloq_synth_piece(const cloq_synth_plan *p, int64_t ti, int64_t c, unsigned char *dst) {
  const cloq_synth_tensor *t = &p->t[ti];
  const int64_t e0 = c * CLOQ_SYNTH_CHUNK;
  const int64_t n = t->numel - e0 < CLOQ_SYNTH_CHUNK ? t->numel - e0 : CLOQ_SYNTH_CHUNK;
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

