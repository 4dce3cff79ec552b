/* cloq_blockinit: see cloq_blockinit.h. The math lives in linalg/; this file sequences it per
 * block and owns the buffers. */
#include "cloq_blockinit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_linalg.h"

static int init_module(cloq_worker *w, const cloq_config *cfg, int64_t b, int m,
                       const cloq_init_params *ip, const double *s, const double *U,
                       cloq_store *store, double sec[CLOQ_NST]) {
  cloq_qmodule q;
  CLOQ_CALL(cloq_qmodule_alloc(cfg, b, m, ip->group_size, ip->rank, &q));
  int64_t no = q.n_out, ni = q.n_in, r = q.rank, n = no * ni; /* product checked by alloc */
  const float *W = cloq_worker_block(w, b)->w[m];
  float *Q = cloq_calloc_checked(n, sizeof *Q);
  double *E = cloq_calloc_checked(n, sizeof *E);
  int rc = Q && E ? CLOQ_OK
                  : CLOQ_FAIL("out of memory for block %lld %s", (long long)b, cloq_module_name[m]);
  double t0 = cloq_now();
  if (rc == CLOQ_OK)
    rc = cloq_quant_rtn(W, no, ni, ip->bits, ip->group_size, q.codes, q.scales, q.zeros);
  if (rc == CLOQ_OK) {
    cloq_dequant(q.codes, q.scales, q.zeros, no, ni, ip->group_size, Q);
    for (int64_t i = 0; i < n; i++) E[i] = (double)W[i] - (double)Q[i];
  }
  double t1 = cloq_now();
  sec[CLOQ_ST_QUANT] += t1 - t0;
  if (rc == CLOQ_OK) {
    switch (ip->init) {
    case CLOQ_INIT_ZERO:
      cloq_lora_zero(no, ni, r, cloq_seed_mix(ip->seed, (uint64_t)b, (uint64_t)m), q.A, q.B);
      break;
    case CLOQ_INIT_SVD: rc = cloq_lora_svd(E, no, ni, r, q.A, q.B); break;
    default: rc = cloq_lora_cloq(E, no, ni, s, U, r, q.A, q.B); break;
    }
  }
  double t2 = cloq_now();
  sec[CLOQ_ST_INIT] += t2 - t1;
  if (rc == CLOQ_OK) rc = cloq_store_write_module(store, b, m, &q);
  sec[CLOQ_ST_WRITE] += cloq_now() - t2;
  free(Q);
  free(E);
  cloq_qmodule_free(&q);
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
