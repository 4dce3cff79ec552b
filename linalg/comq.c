/* comq: COMQ (Zhang et al., "COMQ: A Backpropagation-Free Algorithm for Post-Training
 * Quantization", 2024), greedy coordinate descent on tr((W - Q) Hd (W - Q)^T) over the codes and
 * the per-group scales and zero points, on RTN's grid (see cloq_linalg.h for the contract).
 *
 * Every step is an exact 1-D minimization of a quadratic, done through g = Hd r (r = w - q):
 * moving q by dq along the columns of a set S changes f by dq^T Hd_SS dq - 2 dq^T g_S, and g by
 * -Hd[:, S] dq. The code step is a single column; the scale and zero steps move a whole group.
 * A proposal is kept only when that change is negative, so f is monotone whatever float32 does
 * to the grid (a rounded scale or a clamped zero point can make a proposal worse than the
 * current point).
 *
 * Both versions share the per-row formulas (greedy order, the code sweep, the scale and zero
 * proposals, the change of f, the commit); they differ in how the products with Hd are formed:
 *   - fast: blocks of COMQ_ROW_BLOCK rows (rows are independent), each carried through all its
 *     sweeps: G = R Hd by one dgemm; the code sweep's updates by cblas_daxpy; the group steps
 *     for all rows of the block at once, per group: one dgemm for V Hd_GG (the scale's
 *     denominators) and one for the update rows DQ Hd[G, :] of the rows that propose a move;
 *   - ref: the same one row at a time, with loops.
 * The summation orders differ (and BLAS may fuse multiply-adds), so g agrees to rounding and a
 * code can differ only where a step lands on a rounding tie; the tests measure it.
 */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_linalg.h"
#include "linalg_internal.h"

/* What both versions derive from the arguments before any sweep. */
typedef struct {
  int64_t n_in, gs, ng; /* gs: effective group width (n_in for group_size -1) */
  float maxq;           /* 2^bits - 1 */
  double *Hd;           /* (n_in, n_in) H + damp * mean(diag H) * I */
  double *hsum;         /* (ng) 1^T Hd_GG 1: the zero-point step's curvature / s^2 */
} comq_plan;

static void plan_free(comq_plan *pl) {
  free(pl->Hd);
  free(pl->hsum);
  pl->Hd = pl->hsum = NULL;
}

static int comq_check(const float *W, int64_t n_out, int64_t n_in, const double *H,
                      const cloq_comq_params *p, const uint8_t *codes, const float *scales,
                      const float *zeros) {
  CLOQ_CHECK(p != NULL, "COMQ: NULL parameters");
  int64_t gs, ng, nn;
  CLOQ_CALL(cloq_quant_check_args(W, n_out, n_in, p->bits, p->group_size, codes, scales, zeros,
                                  &gs, &ng));
  CLOQ_CHECK(p->iters >= 1, "COMQ: invalid sweep count %d (expected >= 1)", p->iters);
  CLOQ_CHECK(isfinite(p->damp) && p->damp >= 0.0,
             "COMQ: invalid damping %g (expected finite, >= 0)", p->damp);
  CLOQ_CHECK(p->init == CLOQ_COMQ_INIT_RTN || p->init == CLOQ_COMQ_INIT_GPTQ,
             "COMQ: unknown start %d (expected CLOQ_COMQ_INIT_RTN or _GPTQ)", p->init);
  CLOQ_CHECK(cloq_fits_int(n_out) && cloq_fits_int(n_in),
             "COMQ: weight shape (%lld, %lld) does not fit the 32-bit BLAS interface",
             (long long)n_out, (long long)n_in);
  CLOQ_CALL(cloq_mul64(n_in, n_in, &nn));
  CLOQ_CHECK(nn == 0 || H, "COMQ: NULL Gram matrix");
  for (int64_t i = 0; i < n_out * n_in; i++)
    CLOQ_CHECK(isfinite(W[i]), "non-finite weight %g at row %lld, column %lld", (double)W[i],
               (long long)(i / n_in), (long long)(i % n_in));
  const int64_t bad = cloq_first_nonfinite_d(H, nn);
  CLOQ_CHECK(bad < 0, "COMQ: non-finite value in Gram matrix at (%lld, %lld)",
             (long long)(bad / n_in), (long long)(bad % n_in));
  return CLOQ_OK;
}

/* Hd and the positivity of its diagonal (the code step divides by Hd_jj). */
static int damped_gram(const double *H, int64_t n, double damp, double *Hd) {
  const double shift = cloq_gram_shift(H, n, damp);
  memcpy(Hd, H, (size_t)(n * n) * sizeof *Hd);
  for (int64_t j = 0; j < n; j++) {
    Hd[j * n + j] += shift;
    CLOQ_CHECK(Hd[j * n + j] > 0.0 && isfinite(Hd[j * n + j]),
               "COMQ: the damped Gram matrix has diagonal entry %g at column %lld (expected > "
               "0; a dead input channel needs damping): use a larger --damp (now %g)",
               Hd[j * n + j], (long long)j, damp);
  }
  return CLOQ_OK;
}

static int plan_make(int64_t n_in, const double *H, const cloq_comq_params *p, comq_plan *pl) {
  pl->n_in = n_in;
  pl->gs = (p->group_size == -1 || p->group_size > n_in) ? n_in : p->group_size;
  pl->ng = cloq_quant_ngroups(n_in, p->group_size);
  pl->maxq = (float)((1 << p->bits) - 1);
  if (!CLOQ_TRY_ALLOC(pl->Hd, n_in * n_in, "COMQ damped Gram matrix") ||
      !CLOQ_TRY_ALLOC(pl->hsum, pl->ng, "COMQ group curvatures") ||
      damped_gram(H, n_in, p->damp, pl->Hd) != 0) {
    plan_free(pl);
    return CLOQ_ERR;
  }
  for (int64_t g = 0, c0 = 0; g < pl->ng; g++, c0 += pl->gs) {
    const int64_t c1 = c0 + pl->gs < n_in ? c0 + pl->gs : n_in;
    double s = 0.0;
    for (int64_t j = c0; j < c1; j++)
      for (int64_t k = c0; k < c1; k++) s += pl->Hd[j * n_in + k];
    pl->hsum[g] = s;
  }
  return CLOQ_OK;
}

/* qsort context is not portable; the order key travels with the index instead. */
typedef struct {
  double d;
  int64_t j;
} order_key;

static int by_decreasing_key(const void *a, const void *b) {
  const order_key *x = a, *y = b;
  if (x->d != y->d) return x->d > y->d ? -1 : 1;
  return (x->j > y->j) - (x->j < y->j); /* ties keep index order: a stable sort */
}

/* order (rows, n_in): each row's columns by decreasing sqrt(Hd_jj) |w_j| (COMQ's ||X_j|| |w_j|,
 * damped). keys: n_in, caller-owned. */
static void greedy_orders(const float *W, int64_t rows, const comq_plan *pl, order_key *keys,
                          int64_t *order) {
  const int64_t n = pl->n_in;
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < n; j++) {
      keys[j].d = sqrt(pl->Hd[j * n + j]) * fabs((double)W[r * n + j]);
      keys[j].j = j;
    }
    qsort(keys, (size_t)n, sizeof *keys, by_decreasing_key);
    for (int64_t j = 0; j < n; j++) order[r * n + j] = keys[j].j;
  }
}

/* The starting grid: RTN's or GPTQ's, fast or ref. */
static int comq_start(const float *W, int64_t n_out, int64_t n_in, const double *H,
                      const cloq_comq_params *p, int ref, uint8_t *codes, float *scales,
                      float *zeros) {
  if (p->init == CLOQ_COMQ_INIT_RTN)
    return (ref ? cloq_quant_rtn_ref : cloq_quant_rtn)(W, n_out, n_in, p->bits, p->group_size,
                                                       codes, scales, zeros);
  const cloq_gptq_params gp = {.bits = p->bits, .group_size = p->group_size, .damp = p->damp,
                               .act_order = p->act_order, .block = p->block};
  return (ref ? cloq_quant_gptq_ref : cloq_quant_gptq)(W, n_out, n_in, H, &gp, codes, scales,
                                                       zeros);
}

/* ---- the per-row formulas, shared by both versions ------------------------------------------ */

typedef void (*axpy_fn)(int64_t n, double a, const double *x, double *y);

/* (a): one sweep over the codes of one row in its greedy order. c, q, g: the row's codes,
 * dequantized values and g = Hd r; s, z: its ng scales and zeros. Returns the number of codes
 * changed. */
static int64_t code_sweep(const comq_plan *pl, const int64_t *order, uint8_t *c, float *q,
                          double *g, const float *s, const float *z, axpy_fn axpy) {
  const int64_t n = pl->n_in;
  int64_t changed = 0;
  for (int64_t k = 0; k < n; k++) {
    const int64_t j = order[k], grp = j / pl->gs;
    const double *hj = pl->Hd + j * n, hjj = hj[j];
    const double t = (double)q[j] + g[j] / hjj;
    float cn = rintf((float)t / s[grp]) + z[grp];
    cn = cn >= 0.0f ? cn : 0.0f; /* also maps a NaN (an overflowing g) to 0 */
    cn = cn <= pl->maxq ? cn : pl->maxq;
    const float qn = (cn - z[grp]) * s[grp];
    const double delta = (double)qn - (double)q[j];
    if (!(delta * (delta * hjj - 2.0 * g[j]) < 0.0)) continue; /* also delta == 0 */
    c[j] = (uint8_t)cn;
    q[j] = qn;
    axpy(n, -delta, hj, g); /* g -= delta Hd[:, j] (= row j: Hd is symmetric) */
    changed++;
  }
  return changed;
}

/* v = code - z over a group (exact in float32: small integers), as float64. */
static void fill_v(const uint8_t *c, int64_t len, float z, double *v) {
  for (int64_t j = 0; j < len; j++) v[j] = (double)((float)c[j] - z);
}

/* (b), scale: s* = s + v^T g_G / (v^T Hd_GG v) with hv = Hd_GG v given. Returns 1 and the new
 * scale and dq (the change of the group's dequantized values) when there is a proposal. */
static int scale_proposal(const uint8_t *c, const float *q, const double *g, const double *hv,
                          int64_t len, float s, float z, float *sn, double *dq) {
  double num = 0.0, den = 0.0;
  for (int64_t j = 0; j < len; j++) {
    const double v = (double)((float)c[j] - z);
    num += v * g[j];
    den += v * hv[j];
  }
  if (!(den > 0.0)) return 0; /* all codes at the zero point, or an indefinite Hd_GG */
  const double sd = (double)s + num / den;
  if (!(sd > 0.0 && sd <= (double)FLT_MAX)) return 0;
  const float s1 = (float)sd;
  if (!(s1 > 0.0f) || s1 == s) return 0;
  for (int64_t j = 0; j < len; j++) dq[j] = (double)(((float)c[j] - z) * s1) - (double)q[j];
  *sn = s1;
  return 1;
}

/* (b), zero point: z - sum(g_G) / (s 1^T Hd_GG 1), rounded (ties to even) and clamped. */
static int zero_proposal(const uint8_t *c, const float *q, const double *g, int64_t len, float s,
                         float z, double hsum, float maxq, float *zn, double *dq) {
  if (!(hsum > 0.0)) return 0;
  double gsum = 0.0;
  for (int64_t j = 0; j < len; j++) gsum += g[j];
  double zr = rint((double)z - gsum / ((double)s * hsum));
  zr = zr >= 0.0 ? zr : 0.0; /* NaN -> 0 */
  zr = zr <= (double)maxq ? zr : (double)maxq;
  const float z1 = (float)zr + 0.0f; /* rint(-0.3) is -0.0: stored zeros carry no sign */
  if (z1 == z) return 0;
  for (int64_t j = 0; j < len; j++) dq[j] = (double)(((float)c[j] - z1) * s) - (double)q[j];
  *zn = z1;
  return 1;
}

/* The change of f when the group's values move by dq: dq^T Hd_GG dq - 2 dq^T g_G, with
 * uG = Hd_GG dq. */
static double group_change(const double *dq, const double *uG, const double *g, int64_t len) {
  double df = 0.0;
  for (int64_t j = 0; j < len; j++) df += dq[j] * (uG[j] - 2.0 * g[j]);
  return df;
}

/* An accepted group move: g -= u (u = Hd[:, G] dq, n_in long), the new scale and zero, and the
 * group's dequantized values recomputed as cloq_dequant does. */
static void group_commit(const double *u, int64_t n, const uint8_t *c, int64_t len, float sn,
                         float zn, double *g, float *s, float *z, float *q) {
  for (int64_t k = 0; k < n; k++) g[k] -= u[k];
  *s = sn;
  *z = zn;
  for (int64_t j = 0; j < len; j++) q[j] = ((float)c[j] - zn) * sn;
}

/* a . b (a row's f is r . g, g = Hd r). */
static double dot(const double *a, const double *b, int64_t n) {
  double s = 0.0;
  for (int64_t k = 0; k < n; k++) s += a[k] * b[k];
  return s;
}

/* ---- fast ---------------------------------------------------------------------------------- */

/* Rows per block of the fast version: rows are independent, so blocks bound the working memory
 * to O(COMQ_ROW_BLOCK n_in) whatever n_out is, while keeping the dgemms wide. */
enum { COMQ_ROW_BLOCK = 256 };

static void axpy_blas(int64_t n, double a, const double *x, double *y) {
  cblas_daxpy((int)n, a, x, 1, y, 1);
}

/* A block of consecutive rows: views into the caller's arrays. */
typedef struct {
  int64_t rows;
  const float *W;
  uint8_t *codes;
  float *scales, *zeros;
} comq_block;

/* The fast version's working arrays, for up to `cap` rows. */
typedef struct {
  float *Q;       /* (cap, n_in) dequantized */
  double *G;      /* (cap, n_in) R Hd */
  double *U;      /* (cap, n_in) update rows DQ Hd[G, :] (also R for the objective) */
  double *V;      /* (cap, gs) code - zero; once V Hd_GG is in T, the packed moves DQ */
  double *T;      /* (cap, gs) V Hd_GG */
  int64_t *order; /* (cap, n_in) greedy orders */
  order_key *keys;
  int64_t *rows;  /* (cap) the rows that propose a move */
  float *sn, *zn; /* (cap) their proposed scale and zero */
} comq_work;

static void work_free(comq_work *w) {
  free(w->Q), free(w->G), free(w->U), free(w->V), free(w->T), free(w->order), free(w->keys);
  free(w->rows), free(w->sn), free(w->zn);
  memset(w, 0, sizeof *w);
}

static int work_make(const comq_plan *pl, int64_t cap, comq_work *w) {
  const int64_t nel = cap * pl->n_in, ngs = cap * pl->gs;
  if (CLOQ_TRY_ALLOC(w->Q, nel, "COMQ dequantized weights") &&
      CLOQ_TRY_ALLOC(w->G, nel, "COMQ gradients R Hd") &&
      CLOQ_TRY_ALLOC(w->U, nel, "COMQ group update rows") &&
      CLOQ_TRY_ALLOC(w->V, ngs, "COMQ group codes") && CLOQ_TRY_ALLOC(w->T, ngs, "COMQ V Hd_GG") &&
      CLOQ_TRY_ALLOC(w->order, nel, "COMQ greedy orders") &&
      CLOQ_TRY_ALLOC(w->keys, pl->n_in, "COMQ greedy order keys") &&
      CLOQ_TRY_ALLOC(w->rows, cap, "COMQ proposing rows") &&
      CLOQ_TRY_ALLOC(w->sn, cap, "COMQ proposed scales") &&
      CLOQ_TRY_ALLOC(w->zn, cap, "COMQ proposed zeros"))
    return CLOQ_OK;
  work_free(w);
  return CLOQ_ERR;
}

/* Adds the block's f (row by row, as the ref) to *f for the current Q; leaves G = R Hd. */
static void objective_fast(const comq_plan *pl, comq_work *w, const comq_block *b, double *f) {
  const int64_t nel = b->rows * pl->n_in;
  const int m = (int)b->rows, n = (int)pl->n_in;
  for (int64_t i = 0; i < nel; i++) w->U[i] = (double)b->W[i] - (double)w->Q[i];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, n, 1.0, w->U, n, pl->Hd, n, 0.0,
              w->G, n);
  for (int64_t r = 0; r < b->rows; r++) *f += dot(w->U + r * n, w->G + r * n, n);
}

/* The moves DQ (packed in V) of the m_act proposing rows: U = DQ Hd[G, :] (one dgemm), then each
 * row keeps its move when it lowers f. Returns the number kept. */
static int64_t apply_moves(const comq_plan *pl, comq_work *w, int64_t grp, int64_t m_act,
                           const comq_block *b) {
  const int64_t n = pl->n_in, ng = pl->ng, c0 = grp * pl->gs;
  const int64_t len = c0 + pl->gs < n ? pl->gs : n - c0;
  if (m_act == 0) return 0;
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m_act, (int)n, (int)len, 1.0, w->V,
              (int)len, pl->Hd + c0 * n, (int)n, 0.0, w->U, (int)n);
  int64_t kept = 0;
  for (int64_t a = 0; a < m_act; a++) {
    const int64_t r = w->rows[a];
    const double *u = w->U + a * n;
    double *g = w->G + r * n;
    if (!(group_change(w->V + a * len, u + c0, g + c0, len) < 0.0)) continue;
    group_commit(u, n, b->codes + r * n + c0, len, w->sn[a], w->zn[a], g,
                 &b->scales[r * ng + grp], &b->zeros[r * ng + grp], w->Q + r * n + c0);
    kept++;
  }
  return kept;
}

/* (b) for group grp, all rows of the block: the scale step, then the zero step. */
static int64_t group_steps_fast(const comq_plan *pl, comq_work *w, int64_t grp,
                                const comq_block *b) {
  const int64_t n = pl->n_in, ng = pl->ng, c0 = grp * pl->gs;
  const int64_t len = c0 + pl->gs < n ? pl->gs : n - c0;
  for (int64_t r = 0; r < b->rows; r++)
    fill_v(b->codes + r * n + c0, len, b->zeros[r * ng + grp], w->V + r * len);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b->rows, (int)len, (int)len, 1.0,
              w->V, (int)len, pl->Hd + c0 * n + c0, (int)n, 0.0, w->T, (int)len);
  int64_t m_act = 0; /* V is free from here on: the moves are packed into it (m_act <= r) */
  for (int64_t r = 0; r < b->rows; r++) {
    const int64_t o = r * n + c0, k = r * ng + grp;
    w->zn[m_act] = b->zeros[k];
    if (scale_proposal(b->codes + o, w->Q + o, w->G + o, w->T + r * len, len, b->scales[k],
                       b->zeros[k], &w->sn[m_act], w->V + m_act * len))
      w->rows[m_act++] = r;
  }
  int64_t kept = apply_moves(pl, w, grp, m_act, b);
  m_act = 0;
  for (int64_t r = 0; r < b->rows; r++) {
    const int64_t o = r * n + c0, k = r * ng + grp;
    w->sn[m_act] = b->scales[k];
    if (zero_proposal(b->codes + o, w->Q + o, w->G + o, len, b->scales[k], b->zeros[k],
                      pl->hsum[grp], pl->maxq, &w->zn[m_act], w->V + m_act * len))
      w->rows[m_act++] = r;
  }
  return kept + apply_moves(pl, w, grp, m_act, b);
}

/* One block from its start to the end of the sweeps; adds its f before and after to f0, f1. */
static void block_fast(const comq_plan *pl, comq_work *w, int iters, int64_t group_size,
                       const comq_block *b, double *f0, double *f1) {
  const int64_t n = pl->n_in, ng = pl->ng;
  cloq_dequant(b->codes, b->scales, b->zeros, b->rows, n, group_size, w->Q);
  greedy_orders(b->W, b->rows, pl, w->keys, w->order);
  objective_fast(pl, w, b, f0); /* also the starting G */
  for (int it = 0; it < iters; it++) {
    int64_t changed = 0;
    for (int64_t r = 0; r < b->rows; r++)
      changed += code_sweep(pl, w->order + r * n, b->codes + r * n, w->Q + r * n, w->G + r * n,
                            b->scales + r * ng, b->zeros + r * ng, axpy_blas);
    for (int64_t grp = 0; grp < ng; grp++) changed += group_steps_fast(pl, w, grp, b);
    if (changed == 0) break; /* the next sweep would repeat this one exactly */
  }
  objective_fast(pl, w, b, f1);
}

int cloq_quant_comq(const float *W, int64_t n_out, int64_t n_in, const double *H,
                    const cloq_comq_params *p, uint8_t *codes, float *scales, float *zeros,
                    double *obj) {
  CLOQ_CALL(comq_check(W, n_out, n_in, H, p, codes, scales, zeros));
  if (obj) obj[0] = obj[1] = 0.0;
  if (n_out == 0 || n_in == 0) return CLOQ_OK;
  comq_plan pl = {0};
  CLOQ_CALL(plan_make(n_in, H, p, &pl));
  comq_work w = {0};
  const int64_t cap = n_out < COMQ_ROW_BLOCK ? n_out : COMQ_ROW_BLOCK;
  int rc = CLOQ_ERR;
  if (comq_start(W, n_out, n_in, H, p, 0, codes, scales, zeros) != 0 ||
      work_make(&pl, cap, &w) != 0)
    goto done;
  double f0 = 0.0, f1 = 0.0;
  for (int64_t r0 = 0; r0 < n_out; r0 += cap) {
    const comq_block b = {.rows = n_out - r0 < cap ? n_out - r0 : cap, .W = W + r0 * n_in,
                          .codes = codes + r0 * n_in, .scales = scales + r0 * pl.ng,
                          .zeros = zeros + r0 * pl.ng};
    block_fast(&pl, &w, p->iters, p->group_size, &b, &f0, &f1);
  }
  if (obj) {
    obj[0] = f0;
    obj[1] = f1;
  }
  rc = CLOQ_OK;
done:
  work_free(&w);
  plan_free(&pl);
  return rc;
}

/* ---- reference ------------------------------------------------------------------------------- */

static void axpy_ref(int64_t n, double a, const double *x, double *y) {
  for (int64_t k = 0; k < n; k++) y[k] += a * x[k];
}

/* The reference's per-row buffers. */
typedef struct {
  float *q;                 /* (n_in) dequantized row */
  double *r, *g, *u;        /* (n_in) w - q, Hd r, an update row Hd[:, G] dq */
  double *v, *hv, *dq;      /* (gs) */
  int64_t *order;           /* (n_in) the row's greedy order */
  order_key *keys;          /* (n_in) */
} comq_row;

static void row_free(comq_row *b) {
  free(b->q), free(b->r), free(b->g), free(b->u), free(b->v), free(b->hv), free(b->dq);
  free(b->order), free(b->keys);
  memset(b, 0, sizeof *b);
}

static int row_make(int64_t n, int64_t gs, comq_row *b) {
  if (CLOQ_TRY_ALLOC(b->q, n, "COMQ reference row") && CLOQ_TRY_ALLOC(b->r, n, "COMQ residual") &&
      CLOQ_TRY_ALLOC(b->g, n, "COMQ gradient") && CLOQ_TRY_ALLOC(b->u, n, "COMQ update row") &&
      CLOQ_TRY_ALLOC(b->v, gs, "COMQ group codes") && CLOQ_TRY_ALLOC(b->hv, gs, "COMQ Hd v") &&
      CLOQ_TRY_ALLOC(b->dq, gs, "COMQ group move") &&
      CLOQ_TRY_ALLOC(b->order, n, "COMQ greedy order") &&
      CLOQ_TRY_ALLOC(b->keys, n, "COMQ greedy order keys"))
    return CLOQ_OK;
  row_free(b);
  return CLOQ_ERR;
}

/* r = w - q, g = Hd r; returns r^T g (the row's f). */
static double row_objective_ref(const comq_plan *pl, const float *wrow, comq_row *b) {
  const int64_t n = pl->n_in;
  for (int64_t k = 0; k < n; k++) b->r[k] = (double)wrow[k] - (double)b->q[k];
  for (int64_t i = 0; i < n; i++) b->g[i] = dot(pl->Hd + i * n, b->r, n);
  return dot(b->r, b->g, n);
}

/* u = Hd[:, G] dq (rows c0.. of Hd, Hd symmetric), then the move if it lowers f. */
static int64_t apply_move_ref(const comq_plan *pl, comq_row *b, int64_t c0, int64_t len,
                              const uint8_t *c, float sn, float zn, float *s, float *z) {
  const int64_t n = pl->n_in;
  memset(b->u, 0, (size_t)n * sizeof *b->u);
  for (int64_t j = 0; j < len; j++) axpy_ref(n, b->dq[j], pl->Hd + (c0 + j) * n, b->u);
  if (!(group_change(b->dq, b->u + c0, b->g + c0, len) < 0.0)) return 0;
  group_commit(b->u, n, c + c0, len, sn, zn, b->g, s, z, b->q + c0);
  return 1;
}

/* (b) for every group of one row. */
static int64_t group_steps_ref(const comq_plan *pl, comq_row *b, const uint8_t *c, float *s,
                               float *z) {
  const int64_t n = pl->n_in;
  int64_t kept = 0;
  for (int64_t grp = 0, c0 = 0; grp < pl->ng; grp++, c0 += pl->gs) {
    const int64_t len = c0 + pl->gs < n ? pl->gs : n - c0;
    float s1 = s[grp], z1 = z[grp];
    fill_v(c + c0, len, z[grp], b->v);
    for (int64_t j = 0; j < len; j++) b->hv[j] = dot(pl->Hd + (c0 + j) * n + c0, b->v, len);
    if (scale_proposal(c + c0, b->q + c0, b->g + c0, b->hv, len, s[grp], z[grp], &s1, b->dq))
      kept += apply_move_ref(pl, b, c0, len, c, s1, z[grp], &s[grp], &z[grp]);
    if (zero_proposal(c + c0, b->q + c0, b->g + c0, len, s[grp], z[grp], pl->hsum[grp], pl->maxq,
                      &z1, b->dq))
      kept += apply_move_ref(pl, b, c0, len, c, s[grp], z1, &s[grp], &z[grp]);
  }
  return kept;
}

/* All sweeps of row r; adds the row's f before and after to f0, f1. */
static void row_ref(const float *W, const comq_plan *pl, int iters, int64_t group_size, int64_t r,
                    uint8_t *codes, float *scales, float *zeros, comq_row *b, double *f0,
                    double *f1) {
  const int64_t n = pl->n_in, ng = pl->ng;
  uint8_t *c = codes + r * n;
  float *s = scales + r * ng, *z = zeros + r * ng;
  cloq_dequant(c, s, z, 1, n, group_size, b->q);
  greedy_orders(W + r * n, 1, pl, b->keys, b->order);
  *f0 += row_objective_ref(pl, W + r * n, b);
  for (int it = 0; it < iters; it++) {
    int64_t changed = code_sweep(pl, b->order, c, b->q, b->g, s, z, axpy_ref);
    changed += group_steps_ref(pl, b, c, s, z);
    if (changed == 0) break; /* the next sweep would repeat this one exactly */
  }
  *f1 += row_objective_ref(pl, W + r * n, b);
}

int cloq_quant_comq_ref(const float *W, int64_t n_out, int64_t n_in, const double *H,
                        const cloq_comq_params *p, uint8_t *codes, float *scales, float *zeros,
                        double *obj) {
  CLOQ_CALL(comq_check(W, n_out, n_in, H, p, codes, scales, zeros));
  if (obj) obj[0] = obj[1] = 0.0;
  if (n_out == 0 || n_in == 0) return CLOQ_OK;
  comq_plan pl = {0};
  CLOQ_CALL(plan_make(n_in, H, p, &pl));
  comq_row b = {0};
  int rc = CLOQ_ERR;
  if (comq_start(W, n_out, n_in, H, p, 1, codes, scales, zeros) != 0 ||
      row_make(n_in, pl.gs, &b) != 0)
    goto done;
  double f0 = 0.0, f1 = 0.0;
  for (int64_t r = 0; r < n_out; r++)
    row_ref(W, &pl, p->iters, p->group_size, r, codes, scales, zeros, &b, &f0, &f1);
  if (obj) {
    obj[0] = f0;
    obj[1] = f1;
  }
  rc = CLOQ_OK;
done:
  row_free(&b);
  plan_free(&pl);
  return rc;
}
