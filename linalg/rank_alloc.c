/* Rank allocation under a parameter budget: see cloq_linalg.h. */
#include <math.h>
#include <stdlib.h>

#include "cloq_err.h"
#include "cloq_linalg.h"

/* The module whose next rank gains the most per parameter (and fits in `left` when fit is set),
 * or -1. Ties: the lowest index. */
static int64_t next_best(int64_t nmod, const int64_t *rmax, const int64_t *cost, const double *gain,
                         int64_t ldg, const double *weight, const int64_t *rank, int64_t left,
                         int fit) {
  int64_t best = -1;
  double bv = 0.0;
  for (int64_t m = 0; m < nmod; m++) {
    if (rank[m] >= rmax[m] || (fit && cost[m] > left)) continue;
    double v = weight[m] * gain[m * ldg + rank[m]] / (double)cost[m];
    if (v > bv) best = m, bv = v;
  }
  return best;
}

int cloq_rank_allocate(int64_t nmod, const int64_t *rmax, const int64_t *cost, const double *gain,
                       int64_t ldg, const double *weight, int64_t budget, int64_t rmin,
                       int64_t *rank, int64_t *prefix_used) {
  CLOQ_CHECK(nmod >= 1 && rmin >= 0 && budget >= 0, "rank allocation: invalid arguments");
  int64_t left = budget;
  for (int64_t m = 0; m < nmod; m++) {
    CLOQ_CHECK(cost[m] >= 1 && rmax[m] >= rmin && rmax[m] <= ldg,
               "rank allocation: module %lld: cost %lld, maximum rank %lld", (long long)m,
               (long long)cost[m], (long long)rmax[m]);
    CLOQ_CHECK(weight[m] >= 0 && isfinite(weight[m]), "rank allocation: module %lld: weight %g",
               (long long)m, weight[m]);
    for (int64_t k = 0; k < rmax[m]; k++)
      CLOQ_CHECK(isfinite(gain[m * ldg + k]) && gain[m * ldg + k] >= 0 &&
                     (k == 0 || gain[m * ldg + k] <= gain[m * ldg + k - 1]),
                 "rank allocation: module %lld: gains must be finite, >= 0 and non-increasing "
                 "(entry %lld)", (long long)m, (long long)k);
    rank[m] = rmin;
    left -= rmin * cost[m];
  }
  CLOQ_CHECK(left >= 0, "--rank-budget %lld is below the %lld parameters of rank %lld in every "
             "module", (long long)budget, (long long)(budget - left), (long long)rmin);
  /* the prefix: best ratio first, while it fits (optimal for the parameters it spends) */
  for (int64_t m; (m = next_best(nmod, rmax, cost, gain, ldg, weight, rank, left, 0)) >= 0 &&
                  cost[m] <= left;)
    rank[m]++, left -= cost[m];
  if (prefix_used) *prefix_used = budget - left;
  /* the rest of the budget: whatever still fits, best ratio first */
  for (int64_t m; (m = next_best(nmod, rmax, cost, gain, ldg, weight, rank, left, 1)) >= 0;)
    rank[m]++, left -= cost[m];
  return CLOQ_OK;
}
