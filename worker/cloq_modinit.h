/* cloq_modinit: one module's quantization and LoRA initialization, for every bits setting and
 * LoRA rank of a run. MPI-free: which rank runs a module, and where its decompositions run, is
 * blockinit's business, handed in as a solver (local LAPACK, the GPU, or ScaLAPACK over a group
 * of ranks) and an emit callback (write the result, or send it to the block's owner).
 *
 * Per module, with W (n_out, n_in), the input's Gram matrix H and its damped factor Hd = C C^T:
 *   MagR (optional, once), then per bits setting:
 *     Q = quant(W') (RTN or GPTQ with H), E = W - Q,
 *     zero:  objective = objective_zero = ||E C||_F^2;
 *     svd:   V = top-rmax basis of E (C = I), objective from F = E C: ||F||^2 - ||V_r^T F||^2;
 *     cloq:  V = top-rmax basis of E C, objectives from the solve (trace - top-r eigenvalues);
 *     then for each rank r of the sweep: the balanced split of V_r V_r^T E (leading r columns of
 *     the basis solved at the largest rank: smaller ranks are truncations).
 * The basis is solved at cloq_proj_solve_rank(largest rank): rounded up to a multiple of 64, at
 * most min(n_out, n_in); rank r always uses its leading r columns: so cloq init at rank r
 * and a sweep whose largest rank rounds up to the same multiple run the same calls and write
 * bitwise the same factors. The extra eigenvectors cost O(n^2) each, against the O(n^3)
 * tridiagonal reduction that every solve pays once.
 *   cloq with T = cloq_iters > 1: per bits setting, T iterates Q_t = quant(W' - L_(t-1)),
 *     L_t = CLoQ(W - Q_t) (L_0 = 0, so the first is the closed form), L_t at the sweep's largest
 *     rank (the float32 factors B A the store would hold); the iterate of the lowest objective at
 *     that rank is kept (the later on ties), so T > 1 is never worse there than T = 1. Each
 *     smaller rank r of a sweep keeps, among the same T iterates, the one of the lowest objective
 *     at r (trace minus its top r eigenvalues, from the same solve), with CLoQ's exact product for
 *     that Q: never worse than T = 1 at r either, but not what an alternation run at rank r would
 *     reach (its iterates follow the largest rank's L).
 *   quailora: per rank, the svd init, then quailora_iters calibrated least-squares alternations
 *     (cloq_lora_quailora), re-split in balance.
 *   loftq: per rank, T alternations Q = quant(W' - L), L = [W - Q]_r; the first (L = 0) is the
 *     svd init's and is solved once at the largest rank for every rank. The iterate of the lowest
 *     objective is kept (the later one on ties).
 * Every result's objectives are tr((W - Q - BA) Hd (W - Q - BA)^T) of the float64 product and the
 * same with B A = 0 (docs/store.md).
 */
#ifndef CLOQ_MODINIT_H
#define CLOQ_MODINIT_H

#include <stdint.h>

#include "cloq_backend.h"
#include "cloq_linalg.h"
#include "cloq_modules.h"

enum { CLOQ_INIT_ZERO, CLOQ_INIT_SVD, CLOQ_INIT_CLOQ, CLOQ_INIT_LOFTQ, CLOQ_INIT_QUAILORA };
enum { CLOQ_QUANT_RTN, CLOQ_QUANT_GPTQ, CLOQ_QUANT_COMQ };
enum { CLOQ_MAX_BITS = 4, CLOQ_MAX_RANKS = 16 };

typedef struct {
  int nbits;
  int bits[CLOQ_MAX_BITS];        /* quantization settings of the sweep */
  int nranks;
  int64_t ranks[CLOQ_MAX_RANKS];  /* LoRA ranks of the sweep; config c = ib * nranks + ir */
  int64_t group_size;
  int init;                       /* CLOQ_INIT_* */
  int quantizer;                  /* CLOQ_QUANT_* */
  int act_order;                  /* gptq */
  int64_t gptq_block;             /* gptq lazy batch width */
  int magr;                       /* MagR before the quantizer */
  double magr_alpha;
  int magr_iters;
  int loftq_iters;                /* loftq: alternations */
  int cloq_iters;                 /* cloq: joint alternations T (1: the closed form alone) */
  int comq_iters;                 /* comq: coordinate-descent sweeps */
  int comq_init;                  /* comq: CLOQ_COMQ_INIT_RTN or _GPTQ (act_order, gptq_block) */
  int quailora_iters;             /* quailora: least-squares alternations */
  int64_t rank_budget;            /* > 0: results carry their basis and captured values (q's
                                   * basis and captured allocated by the caller; cloq, one rank) */
  double damp;
  uint64_t seed;
  int64_t dist_threshold;         /* a module whose smaller side is >= this goes to ScaLAPACK */
  int64_t dist_nb;                /* ScaLAPACK block size */
  struct cloq_dev *dev;           /* factors, solves and quantizers run here (NULL: the CPU);
                                   * MagR, the splits and the objectives' products stay on the
                                   * CPU. Not owned. */
} cloq_init_params;

/* The largest LoRA rank of the sweep. */
int64_t cloq_init_max_rank(const cloq_init_params *ip);


/* Seconds per stage of one block. */
enum { CLOQ_ST_FACTOR, CLOQ_ST_QUANT, CLOQ_ST_INIT, CLOQ_ST_WRITE, CLOQ_NST };

/* Where a module's top-r problems are solved: cloq_proj_solve's contract (f NULL: C = I). */
typedef struct {
  int (*solve)(void *ctx, const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
               int64_t r, double *V, double *lam, double *trace);
  void *ctx;
} cloq_solver;

/* The solver of this process: cloq_dev_proj_solve on dev (NULL: LAPACK). */
cloq_solver cloq_solver_local(cloq_dev *dev);

typedef struct {
  const cloq_init_params *ip;
  int64_t b;                /* block, for messages and the zero init's seed */
  int m;                    /* module (CLOQ_MOD_*) */
  const float *W;           /* (n_out, n_in), the module's weight */
  const double *H;          /* the input's full symmetric Gram matrix (GPTQ, MagR) */
  const cloq_hfactor *f;    /* its damped factor (the objectives of every init; CLoQ's C) */
  cloq_solver solver;
  const uint8_t *todo;      /* nbits * nranks: the configs to produce */
  /* Receives config c's result (q->rank set; the arrays are borrowed for the call). */
  int (*emit)(void *ctx, int c, const cloq_qmodule *q);
  void *emit_ctx;
  double *sec;              /* CLOQ_NST stage seconds, accumulated */
} cloq_modjob;

/* Runs module j->m for every config to do. q: allocated by the caller for the module's shapes at
 * the largest rank of the sweep (cloq_qmodule_alloc), used as the results' storage. Returns CLOQ_OK or
 * CLOQ_ERR with the reason recorded (naming block and module). Not collective (the solver may
 * be: see blockinit). */
int cloq_module_init(const cloq_modjob *j, cloq_qmodule *q);

/* Work done by this process so far: partial eigensolves (top-r problems) and quantizations. */
void cloq_module_counts(int64_t *nsolve, int64_t *nquant);

#endif
