/* cloq_blockinit: see cloq_blockinit.h. The math lives in linalg/; this file sequences it per
 * block and owns the buffers. */
#include "cloq_blockinit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_linalg.h"

typedef struct {
  uint8_t *codes;
  float *scales, *zeros, *Q, *A, *B;
  double *E;
} modbufs;

static void mb_free(modbufs *m) {
  free(m->codes);
  free(m->scales);
  free(m->zeros);
  free(m->Q);
  free(m->A);
  free(m->B);
  free(m->E);
  memset(m, 0, sizeof *m);
}

static int init_module(cloq_worker *w, const cloq_config *cfg, int64_t b, int m,
                       const cloq_init_params *ip, const double *s, const double *U,
                       cloq_store *store, double sec[CLOQ_NST]) {
  int64_t no, ni, n, ng, r = ip->rank;
  cloq_module_shape(cfg, m, &no, &ni);
  CLOQ_CALL(cloq_mul64(no, ni, &n));
  ng = cloq_quant_ngroups(ni, ip->group_size);
  const float *W = cloq_worker_block(w, b)->w[m];
  modbufs mb = {0};
  int rc = CLOQ_OK;
#define MB_ALLOC(p, cnt)                                                                           \
  do {                                                                                             \
    (p) = cloq_calloc_checked((cnt), sizeof(*(p)));                                                \
    if (!(p)) { rc = CLOQ_FAIL("out of memory for block %lld %s", (long long)b, cloq_module_name[m]); goto done; } \
  } while (0)
  MB_ALLOC(mb.codes, n);
  MB_ALLOC(mb.scales, no * ng);
  MB_ALLOC(mb.zeros, no * ng);
  MB_ALLOC(mb.Q, n);
  MB_ALLOC(mb.E, n);
  MB_ALLOC(mb.A, r * ni);
  MB_ALLOC(mb.B, no * r);
#undef MB_ALLOC
  double t0 = cloq_now();
  rc = cloq_quant_rtn(W, no, ni, ip->bits, ip->group_size, mb.codes, mb.scales, mb.zeros);
  if (rc) {
    CLOQ_FAIL("quantizing block %lld %s", (long long)b, cloq_module_name[m]);
    goto done;
  }
  cloq_dequant(mb.codes, mb.scales, mb.zeros, no, ni, ip->group_size, mb.Q);
  for (int64_t i = 0; i < n; i++) mb.E[i] = (double)W[i] - (double)mb.Q[i];
  double t1 = cloq_now();
  sec[CLOQ_ST_QUANT] += t1 - t0;
  switch (ip->init) {
  case CLOQ_INIT_ZERO:
    cloq_lora_zero(no, ni, r, cloq_seed_mix(ip->seed, (uint64_t)b, (uint64_t)m), mb.A, mb.B);
    break;
  case CLOQ_INIT_SVD: rc = cloq_lora_svd(mb.E, no, ni, r, mb.A, mb.B); break;
  default: rc = cloq_lora_cloq(mb.E, no, ni, s, U, r, mb.A, mb.B); break;
  }
  if (rc) goto done;
  double t2 = cloq_now();
  sec[CLOQ_ST_INIT] += t2 - t1;
  rc = cloq_store_write_module(store, b, m, mb.codes, mb.scales, mb.zeros, mb.A, mb.B);
  sec[CLOQ_ST_WRITE] += cloq_now() - t2;
done:
  mb_free(&mb);
  return rc;
}

int cloq_block_init(cloq_worker *w, const cloq_config *cfg, int64_t b, const cloq_init_params *ip,
                    cloq_store *store, double sec[CLOQ_NST]) {
  for (int i = 0; i < CLOQ_NST; i++) sec[i] = 0;
  for (int in = 0; in < CLOQ_NIN; in++) {
    int64_t n = cloq_input_dim(cfg, in), nn;
    CLOQ_CALL(cloq_mul64(n, n, &nn));
    double *s = NULL, *U = NULL;
    if (ip->init == CLOQ_INIT_CLOQ) {
      double *H = cloq_worker_gram(w, b, in);
      CLOQ_CHECK(H, "block %lld has no Gram matrix", (long long)b);
      cloq_gram_symmetrize(H, n);
      for (int64_t i = 0; i < nn; i++)
        CLOQ_CHECK(isfinite(H[i]), "non-finite Gram matrix entry in block %lld input %s",
                   (long long)b, cloq_input_name[in]);
      CLOQ_ALLOC(s, n, "eigenvalues");
      U = cloq_calloc_checked(nn, sizeof *U);
      if (!U) {
        free(s);
        return CLOQ_FAIL("out of memory for eigenvectors of block %lld %s", (long long)b,
                         cloq_input_name[in]);
      }
      double t0 = cloq_now();
      int64_t ncl = 0;
      int rc = cloq_eig_damped(H, n, ip->damp, s, U, &ncl);
      sec[CLOQ_ST_EIG] += cloq_now() - t0;
      if (rc) {
        free(s);
        free(U);
        return CLOQ_FAIL("eigendecomposition of block %lld %s", (long long)b, cloq_input_name[in]);
      }
      if (ncl > 0)
        cloq_warn("block %lld input %s: %lld eigenvalues of the damped Gram matrix were "
                  "non-positive and were clamped (raise --damp or use more calibration tokens)",
                  (long long)b, cloq_input_name[in], (long long)ncl);
    }
    int rc = CLOQ_OK;
    for (int m = 0; m < CLOQ_NMOD && rc == CLOQ_OK; m++)
      if (cloq_module_input[m] == in) rc = init_module(w, cfg, b, m, ip, s, U, store, sec);
    free(s);
    free(U);
    CLOQ_CALL(rc);
  }
  double t0 = cloq_now();
  CLOQ_CALL(cloq_store_mark_block(store, b));
  sec[CLOQ_ST_WRITE] += cloq_now() - t0;
  cloq_worker_free_gram(w, b);
  return CLOQ_OK;
}
