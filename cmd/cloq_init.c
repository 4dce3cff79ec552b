/* cloq_init: `cloq init` and `cloq sweep` (init is a sweep of one configuration), collective
 * over comm, in phases; after each every rank agrees on the outcome (AGREE), so a failure on any
 * rank ends the run on all of them with one error line and no rank left waiting:
 *   load (each rank its blocks) -> rank 0 draws calibration samples -> store layout (collective)
 *   -> calibration stream through the chain (Gram matrices in float64) -> each owner quantizes
 *   and initializes its blocks, writing independently (or all ranks together, block by block, for
 *   decompositions shared over ScaLAPACK and for sequential propagation) -> finish. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloq_blockinit.h"
#include "cloq_cmd.h"
#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_export.h"
#include "cloq_hash.h"
#include "cloq_linalg.h"
#include "cloq_progress.h"
#include "cloq_run.h"
#include "cloq_signal.h"
#include "cloq_store.h"
#include "cloq_producer.h"

/* What an init or sweep run shares between its phases. */
typedef struct {
  const cloq_opts *o;
  cloq_init_params ip;
  int nconf;
  cloq_store *stores[CLOQ_MAX_BITS * CLOQ_MAX_RANKS];
  char paths[CLOQ_MAX_BITS * CLOQ_MAX_RANKS][1100];
  uint8_t *todo;       /* (n_layers, nconf): config c still needs block b */
  int64_t ntodo;       /* blocks with some config to do */
  int sequential;
  int group;           /* every block is a group block (cloq_block_needs_group) */
  double t0, t_init;
  int64_t reported;
} init_run;

static int block_todo(const init_run *r, int64_t b) {
  for (int c = 0; c < r->nconf; c++)
    if (r->todo[b * r->nconf + c]) return 1;
  return 0;
}

static void make_params(const cloq_opts *o, cloq_init_params *ip) {
  memset(ip, 0, sizeof *ip);
  ip->nbits = o->nbits;
  for (int i = 0; i < o->nbits; i++) ip->bits[i] = o->bits_list[i];
  ip->nranks = o->nranks;
  for (int i = 0; i < o->nranks; i++) ip->ranks[i] = o->rank_list[i];
  ip->group_size = o->group_size;
  ip->init = !strcmp(o->init, "zero")    ? CLOQ_INIT_ZERO
             : !strcmp(o->init, "svd")   ? CLOQ_INIT_SVD
             : !strcmp(o->init, "loftq") ? CLOQ_INIT_LOFTQ
             : !strcmp(o->init, "quailora") ? CLOQ_INIT_QUAILORA
                                         : CLOQ_INIT_CLOQ;
  ip->quantizer = !strcmp(o->quantizer, "gptq")   ? CLOQ_QUANT_GPTQ
                  : !strcmp(o->quantizer, "comq") ? CLOQ_QUANT_COMQ
                                                  : CLOQ_QUANT_RTN;
  ip->cloq_iters = (int)o->cloq_iters;
  ip->comq_iters = (int)o->comq_iters;
  ip->comq_init = !strcmp(o->comq_init, "gptq") ? CLOQ_COMQ_INIT_GPTQ : CLOQ_COMQ_INIT_RTN;
  ip->quailora_iters = (int)o->quailora_iters;
  ip->rank_budget = o->rank_budget;
  ip->act_order = o->act_order;
  ip->gptq_block = o->gptq_block;
  ip->magr = o->magr;
  ip->magr_alpha = o->magr_alpha;
  ip->magr_iters = (int)o->magr_iters;
  ip->loftq_iters = (int)o->loftq_iters;
  ip->damp = o->damp;
  ip->seed = (uint64_t)o->seed;
  ip->dist_threshold = o->dist_threshold;
  ip->dev = o->dev;
  ip->dist_nb = o->dist_nb;
}

static int check_ranks(const cloq_opts *o, const cloq_config *cfg) {
  int64_t floor = 0; /* --rank-budget: rank 1 in every module */
  for (int m = 0; m < CLOQ_NMOD; m++) {
    int64_t no, ni;
    cloq_module_shape(cfg, m, &no, &ni);
    floor += cfg->n_layers * (no + ni);
  }
  CLOQ_CHECK(!o->rank_budget || o->rank_budget >= floor,
             "--rank-budget %lld is below the %lld parameters of rank 1 in every module",
             (long long)o->rank_budget, (long long)floor);
  for (int i = 0; i < o->nranks; i++) {
    int64_t r = o->rank_list[i];
    for (int m = 0; m < CLOQ_NMOD; m++) {
      int64_t no, ni;
      cloq_module_shape(cfg, m, &no, &ni);
      int64_t lim = no < ni ? no : ni;
      CLOQ_CHECK(r <= lim, "%s %lld exceeds min(n_out, n_in) = %lld of %s (%lld x %lld)",
                 o->cmd == CLOQ_CMD_SWEEP ? "--ranks: rank" : "--rank", (long long)r,
                 (long long)lim, cloq_module_name[m], (long long)no, (long long)ni);
    }
  }
  return CLOQ_OK;
}

/* Whether this rank keeps its blocks' linears lazily (see --weights). auto: when the resident
 * float32 weights of the rank's blocks would exceed a quarter of the node's memory divided by the
 * ranks on the node. Not collective in effect (results do not depend on it). */
static int use_lazy(const init_run *r, const run_ctx *c) {
  if (r->sequential || !strcmp(r->o->weights, "resident")) return 0;
  if (!strcmp(r->o->weights, "lazy")) return 1;
  double per_block = 0;
  for (int m = 0; m < CLOQ_NMOD; m++) {
    int64_t no, ni;
    cloq_module_shape(&c->cfg, m, &no, &ni);
    per_block += 4.0 * (double)no * (double)ni;
  }
  double node = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
  int local = c->size; /* an upper bound of the ranks sharing this node */
  return per_block * (double)(c->plan.b1 - c->plan.b0) > node / 4.0 / (double)local;
}

/* ---- the plan (--dry-run) ------------------------------------------------------------------- */

/* Prints, per rank, the blocks owned, the peak memory expected and the flops per stage. Sizes
 * follow the buffers the code allocates; flops are the usual leading-order counts. */
static void print_plan(const init_run *r, const run_ctx *c, const int64_t stats[4]) {
  const cloq_config *cfg = &c->cfg;
  const cloq_init_params *ip = &r->ip;
  double d = (double)cfg->dim, T = (double)stats[1], tok = (double)stats[2];
  double qd = (double)(cfg->n_heads * cfg->head_dim), H = (double)cfg->hidden_dim;
  double params = 0;
  for (int m = 0; m < CLOQ_NMOD; m++) {
    int64_t no, ni;
    cloq_module_shape(cfg, m, &no, &ni);
    params += (double)no * (double)ni;
  }
  double gram_bytes = 0, factor_flops = 0, gram_flops = 0;
  for (int in = 0; in < CLOQ_NIN; in++) {
    double n = (double)cloq_input_dim(cfg, in);
    gram_bytes += 8 * n * n;
    factor_flops += n * n * n / 3.0; /* Cholesky of Hd, every init (the objectives use it) */
    gram_flops += tok * n * (n + 1);
  }
  /* per module and bits setting (cloq_modinit.c): F = E C (trmm), G or K (syrk) on the smaller
   * side ns, the top rmax eigenpairs (dsytrd 4/3 ns^3 + back-transformation), the input side's
   * F P, the splits (V^T E and V Y for each rank of the sweep); svd also multiplies V^T F for its
   * objectives. Workspace: the largest module's buffers while its unit's factor is held. */
  double initf = 0, init_ws = 0, rsum = 0;
  for (int i = 0; i < ip->nranks; i++) rsum += (double)ip->ranks[i];
  int cloq = ip->init == CLOQ_INIT_CLOQ, loftq = ip->init == CLOQ_INIT_LOFTQ;
  for (int m = 0; m < CLOQ_NMOD; m++) {
    int64_t no_, ni_;
    cloq_module_shape(cfg, m, &no_, &ni_);
    double no = (double)no_, ni = (double)ni_, ns = no < ni ? no : ni, nl = no < ni ? ni : no;
    double rmax = (double)cloq_proj_solve_rank(cloq_init_max_rank(ip), no_, ni_);
    double f = no * ni * ni; /* E C: every init, for the objectives */
    if (ip->init != CLOQ_INIT_ZERO) {
      f += ns * ns * nl + 4.0 / 3.0 * ns * ns * ns + 4.0 * ns * ns * rmax; /* syrk, eig */
      if (no > ni) f += 2.0 * no * ni * rmax;                                /* F P */
      f += 4.0 * no * ni * rsum;                                             /* splits */
      if (!cloq) f += 2.0 * no * ni * rmax;                                  /* V^T F */
      /* LoftQ: the first alternation is shared by the ranks; each rank then does T - 1 more */
      if (loftq) f *= 1.0 + (double)ip->nranks * (double)(ip->loftq_iters > 1 ? ip->loftq_iters - 1 : 0);
      if (cloq) f *= (double)ip->cloq_iters; /* the joint alternation: a solve per iterate */
      /* QuAILoRA: per rank and alternation, E Hd A^T, A Hd A^T and B^T E */
      if (ip->init == CLOQ_INIT_QUAILORA)
        f += (double)ip->quailora_iters * (4.0 * no * ni + 4.0 * ni * ni) * rsum;
    }
    initf += f;
    double ws = 8 * ni * ni                    /* the unit's factor */
                + no * ni * (8 + 4)            /* E, dequantized Q */
                + (cloq ? 0 : 8 * no * ni);    /* F for the objectives */
    if (ip->init != CLOQ_INIT_ZERO)
      ws += 8 * no * ni + 8 * ns * ns          /* the solve's F and G or K */
            + 8 * (ns + 2 * no) * rmax * 2;    /* eigenvectors, F P, V (and LoftQ's first) */
    /* LoftQ: its target; from 2 alternations the first error and the best iterate kept */
    if (loftq) ws += 4 * no * ni + (ip->loftq_iters > 1 ? 9 * no * ni + 4 * rmax * (no + ni) : 0);
    /* CLoQ's alternation: its target, the kept iterate's quantization, factors and basis; each
     * smaller rank of a sweep keeps its own best iterate's quantization and factors */
    if (cloq && ip->cloq_iters > 1)
      ws += (9 * no * ni + 4 * rmax * (no + ni) + 16 * no * rmax) +
            (ip->nranks - 1) * (no * ni + 8.0 * no * ni / ip->group_size + 4 * rmax * (no + ni));
    if (ip->magr) ws += 4 * no * ni + 8 * ni * ni; /* MagR's weight, its eigensolver's copy of H */
    if (ip->quantizer == CLOQ_QUANT_GPTQ || (ip->quantizer == CLOQ_QUANT_COMQ &&
                                             ip->comq_init == CLOQ_COMQ_INIT_GPTQ))
      ws += 8 * ni * ni * 2 + no * ni * 8;
    /* COMQ: Hd, its rows' orders and G = R Hd, R for a block of 256 rows */
    if (ip->quantizer == CLOQ_QUANT_COMQ) ws += 8 * ni * ni + 3 * 8 * 256 * ni;
    if (ws > init_ws) init_ws = ws;
  }
  double fwd_flops = tok * (2 * params + 4 * T / 2 * qd); /* linears + causal attention */
  /* the Gram matrices are always accumulated (objectives, GPTQ, MagR): widening buffer */
  double act = T * (3 * d + 3 * qd + 2 * H) * 4 + T * T * 4 + T * (d > H ? d : H) * 8;
  double stream = 2 * (T * d * 4 + T * 4 + 8);
  /* the checkpoint's pages are dropped once a tensor is converted (cloq_ckpt_read_f32) */
  const double esz = 0.0;
  /* MPI, HDF5, OpenBLAS: measured at stories260K; a build with the CUDA backend also maps and
   * relocates cuBLAS/cuSOLVER at load, 250 MiB of RSS measured here, GPU or not */
  const double base = (48.0 + (cloq_backend_has_cuda() ? 250.0 : 0.0)) * 1024 * 1024;
  const char *gb = "GiB";
  double G = 1024.0 * 1024.0 * 1024.0;
  printf("plan: %s propagation, %d rank(s), %lld blocks; %s%s\n",
         r->sequential ? "sequential" : "full-precision", c->size, (long long)cfg->n_layers,
         r->group ? "decompositions shared by all ranks (ScaLAPACK above " : "each owner "
                                                                            "initializes its blocks",
         r->group ? "the threshold)" : "");
  for (int k = 0; k < c->size; k++) {
    int64_t nb = c->plan.first[k + 1] - c->plan.first[k];
    /* lazy weights: one block's linears (the plan assumes this rank's choice holds for all) */
    double w = (use_lazy(r, c) && nb ? 1.0 : (double)nb) * params * 4 + (double)nb * 2 * d * 4;
    double grams = r->sequential ? (nb ? gram_bytes : 0) : (double)nb * gram_bytes;
    double hs = r->sequential && nb ? tok * d * 4 : 0;
    double mapped = (double)nb * (params + 2 * d) * esz;
    double mem = base + (nb ? w + mapped + grams + act + stream + init_ws + hs : 0);
    if (k == 0)
      mem += (double)cfg->vocab_size * d * (4 + esz) + stream + tok * 8 +
             (r->sequential ? tok * d * 4 : 0);
    printf("rank %d: blocks [%lld, %lld) (%lld), peak memory ~%.2f %s (weights %.2f, Gram %.2f, "
           "activations %.2f, init workspace %.2f%s)\n",
           k, (long long)c->plan.first[k], (long long)c->plan.first[k + 1], (long long)nb, mem / G,
           gb, w / G, grams / G, (act + stream) / G, init_ws / G,
           k == 0 ? ", + embedding table and samples" : "");
    if (nb)
      printf("rank %d: flops: forward %.3g, gram %.3g, factor %.3g, init %.3g (x %d bits)\n", k,
             fwd_flops * (double)nb, gram_flops * (double)nb, factor_flops * (double)nb,
             initf * (double)nb * ip->nbits, ip->nbits);
  }
  fflush(stdout);
}

/* ---- phases ------------------------------------------------------------------------------ */

/* Rank 0's side of the progress lines: blocks finished elsewhere arrive as messages. */
static int progress_local(init_run *r, run_ctx *c, const double *v) {
  if (c->rank != 0) return CLOQ_MPI_RC(MPI_Send(v, PROG_N, MPI_DOUBLE, 0, TAG_PROGRESS, c->comm));
  if (v[1] != 0) cloq_progress_print(v, c->cfg.n_layers, ++r->reported, r->ntodo, r->t0, r->t_init);
  return CLOQ_OK;
}

/* A block's progress line, from its owner to rank 0 (which prints it). */
static int progress_relay(run_ctx *c, int owner, double *v) {
  if (owner == 0) return CLOQ_OK;
  if (c->rank == owner) return CLOQ_MPI_RC(MPI_Send(v, PROG_N, MPI_DOUBLE, 0, TAG_PROGRESS, c->comm));
  if (c->rank == 0)
    return CLOQ_MPI_RC(
        MPI_Recv(v, PROG_N, MPI_DOUBLE, owner, TAG_PROGRESS, c->comm, MPI_STATUS_IGNORE));
  return CLOQ_OK;
}

/* Full-precision propagation, after the stream: owners initialize their blocks concurrently
 * (local), or all ranks go through the blocks together (group). */
static int init_blocks(init_run *r, run_ctx *c, cloq_initctx *x) {
  int rc = CLOQ_OK;
  r->t_init = cloq_now();
  if (r->group) {
    for (int64_t b = 0; b < c->cfg.n_layers; b++) {
      if (!block_todo(r, b)) continue;
      int sig = cloq_mpi_any(c->comm, cloq_signal_pending());
      if (sig) {
        if (rc == CLOQ_OK)
          rc = CLOQ_FAIL("stopped by signal %d before block %lld; re-run the same command to "
                         "resume", sig, (long long)b);
        break;
      }
      int owner = cloq_plan_owner(&c->plan, b);
      double v[PROG_N] = {(double)b, 0, (double)owner, 0};
      if (c->rank == owner) v[3] = cloq_worker_forward_seconds(c->w, b);
      int r2 = cloq_block_init(x, b, owner, 1, r->todo + b * r->nconf, v + 4);
      v[1] = r2 == CLOQ_OK;
      if (rc == CLOQ_OK) rc = r2;
      r2 = progress_relay(c, owner, v);
      if (rc == CLOQ_OK) rc = r2;
      if (c->rank == 0 && v[1] != 0)
        cloq_progress_print(v, c->cfg.n_layers, ++r->reported, r->ntodo, r->t0, r->t_init);
      if (cloq_mpi_any(c->comm, rc)) break;
    }
    return rc == CLOQ_STOPPED ? CLOQ_OK : rc;
  }
  for (int64_t b = c->plan.b0; b < c->plan.b1; b++) {
    if (!block_todo(r, b)) continue;
    double v[PROG_N] = {(double)b, 0, (double)c->rank, 0};
    if (rc == CLOQ_OK && cloq_signal_pending())
      rc = CLOQ_FAIL("stopped by signal %d before block %lld; re-run the same command to resume",
                     cloq_signal_pending(), (long long)b);
    if (rc == CLOQ_OK) {
      v[3] = cloq_worker_forward_seconds(c->w, b);
      rc = cloq_block_init(x, b, c->rank, 0, r->todo + b * r->nconf, v + 4);
    }
    v[1] = rc == CLOQ_OK;
    int e = progress_local(r, c, v);
    if (rc == CLOQ_OK) rc = e;
  }
  if (c->rank == 0) {
    int64_t others = 0;
    for (int64_t b = 0; b < c->cfg.n_layers; b++)
      if (block_todo(r, b) && (b < c->plan.b0 || b >= c->plan.b1)) others++;
    for (int64_t i = 0; i < others; i++) {
      double v[PROG_N];
      int e = CLOQ_MPI_RC(
          MPI_Recv(v, PROG_N, MPI_DOUBLE, MPI_ANY_SOURCE, TAG_PROGRESS, c->comm, MPI_STATUS_IGNORE));
      if (e != CLOQ_OK) {
        if (rc == CLOQ_OK) rc = e;
        break;
      }
      if (v[1] != 0) cloq_progress_print(v, c->cfg.n_layers, ++r->reported, r->ntodo, r->t0, r->t_init);
    }
  }
  return rc;
}

/* Sequential propagation: block by block, the owner holds every sample's hidden state, runs the
 * full-precision block once for its Gram matrices, the block is initialized (its decompositions
 * spread over all ranks), and the owner runs the samples through Q + B A to make the next
 * block's inputs. Hidden states move when the next block has another owner. */
static int run_sequential(init_run *r, run_ctx *c, cloq_initctx *x, int64_t nsamples,
                          int64_t max_t) {
  const cloq_config *cfg = &c->cfg;
  int64_t d = cfg->dim, *len = NULL;
  float **hs = NULL, *tmp = NULL;
  int rc = CLOQ_OK;
  CLOQ_ALLOC(len, nsamples, "sample lengths");
  if (c->rank == 0)
    for (int64_t s = 0; s < nsamples; s++) len[s] = c->samples.len[s];
  rc = cloq_mpi_bcast(len, nsamples, MPI_INT64_T, sizeof *len, 0, c->comm);
  hs = calloc(nsamples, sizeof *hs);
  tmp = malloc((size_t)(max_t * d) * sizeof *tmp);
  if (rc == CLOQ_OK && (!hs || !tmp)) rc = CLOQ_FAIL("out of memory for the hidden states");
  /* rank 0 embeds every sample */
  if (c->rank == 0)
    for (int64_t s = 0; s < nsamples && rc == CLOQ_OK; s++) {
      hs[s] = malloc((size_t)(len[s] * d) * sizeof(float));
      if (!hs[s]) { rc = CLOQ_FAIL("out of memory for the hidden states"); break; }
      for (int64_t i = 0; i < len[s]; i++) {
        int32_t id = c->samples.ids[s][i];
        if (id < 0 || id >= cfg->vocab_size) {
          rc = CLOQ_FAIL("token id %d at position %lld of sample %lld is outside the vocabulary",
                         (int)id, (long long)i, (long long)s);
          break;
        }
        memcpy(hs[s] + i * d, c->embed + (int64_t)id * d, (size_t)d * sizeof(float));
      }
    }
  int holder = 0;
  int64_t last_todo = -1;
  for (int64_t b = 0; b < cfg->n_layers; b++)
    if (block_todo(r, b)) last_todo = b;
  r->t_init = cloq_now();
  for (int64_t b = 0; b <= last_todo; b++) {
    int owner = cloq_plan_owner(&c->plan, b);
    if (cloq_mpi_any(c->comm, rc)) break;
    int sig = cloq_mpi_any(c->comm, cloq_signal_pending());
    if (sig) {
      rc = CLOQ_FAIL("stopped by signal %d before block %lld; re-run the same command to resume",
                     sig, (long long)b);
      break;
    }
    /* move the hidden states to the block's owner */
    if (owner != holder) {
      for (int64_t s = 0; s < nsamples; s++) {
        int e = CLOQ_OK;
        if (c->rank == holder) {
          e = cloq_mpi_send(hs[s], len[s] * d, MPI_FLOAT, sizeof(float), owner, TAG_SEQ, c->comm);
          free(hs[s]);
          hs[s] = NULL;
        } else if (c->rank == owner) {
          hs[s] = malloc((size_t)(len[s] * d) * sizeof(float));
          if (!hs[s]) /* the holder would block on its send */
            cloq_mpi_abort(c->comm, "out of memory for the hidden states");
          e = cloq_mpi_recv(hs[s], len[s] * d, MPI_FLOAT, sizeof(float), holder, TAG_SEQ, c->comm);
        }
        if (rc == CLOQ_OK) rc = e;
      }
      holder = owner;
    }
    int todo = block_todo(r, b);
    double v[PROG_N] = {(double)b, 0, (double)owner, 0};
    if (c->rank == owner && todo) {
      /* the full-precision block on every sample, for its Gram matrices */
      double t0 = cloq_now();
      rc = cloq_worker_alloc_gram(c->w, b);
      for (int64_t s = 0; s < nsamples && rc == CLOQ_OK; s++) {
        memcpy(tmp, hs[s], (size_t)(len[s] * d) * sizeof(float));
        rc = cloq_worker_forward_block(c->w, b, tmp, len[s]);
      }
      v[3] = cloq_now() - t0;
    }
    if (cloq_mpi_any(c->comm, rc)) break;
    if (todo) {
      int r2 = cloq_block_init(x, b, owner, c->size > 1, r->todo + b * r->nconf, v + 4);
      v[1] = r2 == CLOQ_OK;
      if (r2 != CLOQ_STOPPED) rc = r2;
    } else if (c->rank == owner) {
      rc = cloq_block_apply_done(x, b); /* resumed: the block's Q + B A from its file */
    }
    /* the next block's inputs */
    if (c->rank == owner && rc == CLOQ_OK && b < last_todo)
      for (int64_t s = 0; s < nsamples && rc == CLOQ_OK; s++)
        rc = cloq_worker_forward_block(c->w, b, hs[s], len[s]);
    if (todo) {
      int e = progress_relay(c, owner, v);
      if (rc == CLOQ_OK) rc = e;
      if (c->rank == 0 && v[1] != 0)
        cloq_progress_print(v, cfg->n_layers, ++r->reported, r->ntodo, r->t0, r->t_init);
    }
  }
  for (int64_t s = 0; hs && s < nsamples; s++) free(hs[s]);
  free(hs);
  free(tmp);
  free(len);
  return rc;
}

/* Output path of config (ib, ir): --out for init, DIR/b<bits>-r<rank>.h5 for a sweep. */
static int config_path(const cloq_opts *o, int ib, int ir, char *buf, size_t cap) {
  int n = o->cmd == CLOQ_CMD_SWEEP
              ? snprintf(buf, cap, "%s/b%d-r%lld.h5", o->out, o->bits_list[ib],
                         (long long)o->rank_list[ir])
              : snprintf(buf, cap, "%s", o->out);
  CLOQ_CHECK(n > 0 && (size_t)n < cap, "output path too long");
  return CLOQ_OK;
}

/* Rank 0, after a store is finished: the summary of its per-layer objectives (ratio of each
 * layer's calibrated objective to that of the zero init with the same quantizer). */
static int print_objectives(const char *path, const cloq_config *cfg) {
  cloq_store *s = NULL;
  cloq_store_meta meta;
  CLOQ_CALL(cloq_store_open(path, cfg, &meta, &s));
  double sum = 0, lo = INFINITY, hi = -INFINITY, tot = 0, tot0 = 0;
  int64_t n = 0, blo = 0, bhi = 0;
  int mlo = 0, mhi = 0, rc = CLOQ_OK;
  for (int64_t b = 0; b < cfg->n_layers && rc == CLOQ_OK; b++)
    for (int m = 0; m < CLOQ_NMOD && rc == CLOQ_OK; m++) {
      double ob, oz;
      rc = cloq_store_read_objective(s, b, m, &ob, &oz);
      if (rc != CLOQ_OK) break;
      double ratio = oz > 0 ? ob / oz : 1.0;
      sum += ratio, n++, tot += ob, tot0 += oz;
      if (ratio < lo) lo = ratio, blo = b, mlo = m;
      if (ratio > hi) hi = ratio, bhi = b, mhi = m;
    }
  cloq_store_close(&s);
  CLOQ_CALL(rc);
  printf("objective %s (%s %s, %d bits, rank %lld): layer/zero-init ratio mean %.4f, min %.4f "
         "(block %lld %s), max %.4f (block %lld %s); total %.6g vs zero init %.6g\n",
         path, meta.quantizer, meta.init, meta.bits, (long long)meta.rank, sum / (double)n, lo,
         (long long)blo, cloq_module_name[mlo], hi, (long long)bhi, cloq_module_name[mhi], tot,
         tot0);
  return CLOQ_OK;
}

/* `cloq init` and `cloq sweep` (init is a sweep of one configuration). Collective. */
int cloq_cmd_init(const cloq_opts *o, MPI_Comm comm) {
  run_ctx c = {.comm = comm};
  init_run r = {.o = o, .sequential = !strcmp(o->propagate, "sequential")};
  CLOQ_MPI(MPI_Comm_rank(comm, &c.rank));
  CLOQ_MPI(MPI_Comm_size(comm, &c.size));
  r.t0 = cloq_now();
  make_params(o, &r.ip);
  r.nconf = o->nbits * o->nranks;
  cloq_signal_install();
  int rc = CLOQ_OK;
  if (o->cmd == CLOQ_CMD_SWEEP && c.rank == 0 && !o->dry_run && mkdir(o->out, 0777) != 0 &&
      errno != EEXIST)
    rc = CLOQ_FAIL("cannot create folder %s: %s", o->out, strerror(errno));
  for (int ib = 0; ib < o->nbits && rc == CLOQ_OK; ib++)
    for (int ir = 0; ir < o->nranks && rc == CLOQ_OK; ir++)
      rc = config_path(o, ib, ir, r.paths[ib * o->nranks + ir], sizeof r.paths[0]);
  if (rc == CLOQ_OK) rc = cloq_run_load_model(o, &c);
  if (rc == CLOQ_OK) rc = check_ranks(o, &c.cfg);
  AGREE(rc);
  r.group = c.size > 1 && (r.sequential || cloq_block_needs_group(&c.cfg, &r.ip, c.size));
  AGREE(cloq_run_load_samples(o, &c, 0));
  int64_t stats[4];
  AGREE(cloq_run_bcast_stats(&c, stats));
  if (c.rank == 0) {
    printf("cloq %s: %s: %lld blocks, d %lld, mlp %lld, heads %lld/%lld; %d rank(s)\n",
           o->cmd == CLOQ_CMD_SWEEP ? "sweep" : "init", o->model, (long long)c.cfg.n_layers,
           (long long)c.cfg.dim, (long long)c.cfg.hidden_dim, (long long)c.cfg.n_heads,
           (long long)c.cfg.n_kv_heads, c.size);
    printf("settings: quantizer %s, bits", o->quantizer);
    for (int i = 0; i < o->nbits; i++) printf("%s%d", i ? "," : " ", o->bits_list[i]);
    printf(", group %lld, init %s, rank", (long long)o->group_size, o->init);
    for (int i = 0; i < o->nranks; i++) printf("%s%lld", i ? "," : " ", (long long)o->rank_list[i]);
    printf(", damp %g, seed %lld, propagate %s", o->damp, (long long)o->seed, o->propagate);
    if (!strcmp(o->quantizer, "comq"))
      printf(", comq %lld sweeps from %s", (long long)o->comq_iters, o->comq_init);
    if (!strcmp(o->init, "cloq") && o->cloq_iters > 1)
      printf(", %lld joint alternations", (long long)o->cloq_iters);
    if (!strcmp(o->init, "quailora")) printf(", %lld QuAILoRA alternations", (long long)o->quailora_iters);
    if (o->rank_budget)
      printf(", rank budget %lld parameters (%s weights)", (long long)o->rank_budget, o->rank_weight);
    printf("\n");
    printf("calibration: %lld samples, %lld tokens from %s (%s", (long long)stats[0],
           (long long)stats[2], o->calib, o->calib_format);
    if (o->calib_field)
      printf(", field \"%s\" of %lld records, %lld with text", o->calib_field,
             (long long)c.samples.nrecords, (long long)c.samples.ndocs);
    printf(")\n");
    if (o->dry_run) {
      char feat[256];
      cloq_config_features(&c.cfg, feat, sizeof feat);
      printf("family: %s (%s); features: %s\n", cloq_family_name(c.cfg.family),
             cloq_family_arch(c.cfg.family), feat);
      print_plan(&r, &c, stats);
    }
    fflush(stdout);
  }
  if (o->dry_run) {
    cloq_run_free(&c);
    return CLOQ_OK;
  }
  /* content digests, computed by rank 0 (it holds the samples): the checkpoint and the samples'
   * token ids */
  char model_digest[24] = "", calib_digest[24] = "";
  if (c.rank == 0) {
    uint64_t h = CLOQ_HASH_INIT;
    for (int64_t s = 0; s < c.samples.n; s++) {
      h = cloq_hash_i64(h, c.samples.len[s]);
      h = cloq_hash(h, c.samples.ids[s], (size_t)c.samples.len[s] * sizeof(int32_t));
    }
    snprintf(calib_digest, sizeof calib_digest, "%016llx", (unsigned long long)h);
    snprintf(model_digest, sizeof model_digest, "%016llx",
             (unsigned long long)cloq_ckpt_digest(c.st));
  }
  /* every block file records them too */
  AGREE(CLOQ_MPI_RC(MPI_Bcast(model_digest, sizeof model_digest, MPI_CHAR, 0, comm)));
  AGREE(CLOQ_MPI_RC(MPI_Bcast(calib_digest, sizeof calib_digest, MPI_CHAR, 0, comm)));
  /* one store per configuration; a resume finds its complete blocks */
  int64_t nl = c.cfg.n_layers;
  r.todo = calloc((size_t)(nl * r.nconf), 1);
  AGREE(r.todo ? CLOQ_OK : CLOQ_FAIL("out of memory"));
  const int comq = !strcmp(o->quantizer, "comq");
  for (int ib = 0; ib < o->nbits; ib++)
    for (int ir = 0; ir < o->nranks; ir++) {
      int k = ib * o->nranks + ir;
      cloq_store_meta meta = {.bits = o->bits_list[ib],
                              .group_size = o->group_size,
                              .rank = o->rank_list[ir],
                              .damp = o->damp,
                              .seed = o->seed,
                              .nsamples = stats[0],
                              .seqlen = stats[3],
                              .calib_tokens = stats[2],
                              .nranks = c.size,
                              .dist_threshold = o->dist_threshold,
                              .act_order = o->act_order,
                              .gptq_block = !strcmp(o->quantizer, "gptq") ||
                                                    (comq && !strcmp(o->comq_init, "gptq"))
                                                ? o->gptq_block : 0,
                              .magr = o->magr,
                              .magr_alpha = o->magr ? o->magr_alpha : 0,
                              .magr_iters = o->magr ? o->magr_iters : 0,
                              .loftq_iters = !strcmp(o->init, "loftq") ? o->loftq_iters : 0,
                              .cloq_iters = !strcmp(o->init, "cloq") && o->cloq_iters > 1
                                                ? o->cloq_iters : 0,
                              .comq_iters = comq ? o->comq_iters : 0,
                              .comq_init = comq && !strcmp(o->comq_init, "gptq"),
                              .quailora_iters = !strcmp(o->init, "quailora") ? o->quailora_iters : 0,
                              .rank_budget = o->rank_budget,
                              .rank_weight_raw = o->rank_budget && !strcmp(o->rank_weight, "raw")};
      snprintf(meta.model, sizeof meta.model, "%s", o->model);
      snprintf(meta.calib, sizeof meta.calib, "%s", o->calib);
      snprintf(meta.calib_format, sizeof meta.calib_format, "%s", o->calib_format);
      snprintf(meta.calib_field, sizeof meta.calib_field, "%s",
               o->calib_field ? o->calib_field : "");
      snprintf(meta.init, sizeof meta.init, "%s", o->init);
      snprintf(meta.quantizer, sizeof meta.quantizer, "%s", o->quantizer);
      snprintf(meta.propagate, sizeof meta.propagate, "%s", o->propagate);
      memcpy(meta.model_digest, model_digest, sizeof meta.model_digest);
      memcpy(meta.calib_digest, calib_digest, sizeof meta.calib_digest);
      int64_t ndone = 0;
      /* a sweep extended or re-run keeps the configurations already complete */
      int complete = o->cmd == CLOQ_CMD_SWEEP && !o->force && access(r.paths[k], F_OK) == 0;
      AGREE(CLOQ_MPI_RC(MPI_Bcast(&complete, 1, MPI_INT, 0, comm)));
      if (complete) {
        if (c.rank == 0) printf("keeping %s: already complete\n", r.paths[k]);
        continue;
      }
      AGREE(cloq_store_begin(comm, r.paths[k], o->force, &c.cfg, &meta, &r.stores[k], &ndone));
      if (c.rank == 0 && ndone > 0) {
        printf("resuming %s: %lld of %lld blocks already complete\n", r.paths[k], (long long)ndone,
               (long long)nl);
        fflush(stdout);
      }
      for (int64_t b = 0; b < nl && c.rank == 0; b++)
        r.todo[b * r.nconf + k] = !cloq_store_block_done(r.stores[k], b);
    }
  /* every rank must see the same answer: rank 0 looked, the others take its view */
  AGREE(cloq_mpi_bcast(r.todo, nl * r.nconf, MPI_UINT8_T, 1, 0, comm));
  for (int64_t b = 0; b < nl; b++) r.ntodo += block_todo(&r, b);

  /* every init needs the Gram matrices: the objectives, GPTQ and MagR use them */
  rc = CLOQ_OK;
  if (c.plan.b1 > c.plan.b0) {
    cloq_worker_params wp = {.b0 = c.plan.b0, .b1 = c.plan.b1, .gram = 1,
                             .gram_lazy = r.sequential, .max_t = stats[1],
                             .lazy = use_lazy(&r, &c), .dev = o->dev};
    rc = cloq_worker_create(&c.cfg, c.st, &wp, &c.w);
    /* blocks already complete need no Gram matrices (never touched: no memory used) */
    for (int64_t b = c.plan.b0; b < c.plan.b1 && rc == CLOQ_OK && !r.sequential; b++)
      if (!block_todo(&r, b)) cloq_worker_free_gram(c.w, b);
  }
  AGREE(rc);
  cloq_initctx x = {.comm = comm, .rank = c.rank, .size = c.size, .cfg = &c.cfg, .st = c.st,
                    .w = c.w, .ip = &r.ip, .stores = r.stores, .apply = r.sequential};
  if (r.ntodo > 0 && r.sequential) {
    AGREE(run_sequential(&r, &c, &x, stats[0], stats[1]));
  } else if (r.ntodo > 0) {
    double ts = cloq_now();
    AGREE(cloq_stream_run(&c.plan, c.w, c.cfg.dim, c.cfg.vocab_size, c.embed, stats[0], cloq_run_source,
                          NULL, &c, 1));
    if (c.rank == 0) {
      printf("calibration pass: %.2f s\n", cloq_now() - ts);
      fflush(stdout);
    }
    AGREE(init_blocks(&r, &c, &x));
  }
  for (int k = 0; k < r.nconf && o->rank_budget; k++) { /* init: one store */
    int64_t used = 0;
    AGREE(cloq_store_allocate_ranks(r.stores[k], !strcmp(o->rank_weight, "relative"), &used));
    if (c.rank == 0)
      printf("rank budget: %lld of %lld LoRA parameters allocated (%s weights, ranks 1 to %lld)\n",
             (long long)used, (long long)o->rank_budget, o->rank_weight, (long long)o->rank);
  }
  for (int k = 0; k < r.nconf; k++)
    if (r.stores[k]) AGREE(cloq_store_finish(&r.stores[k]));
  rc = CLOQ_OK;
  for (int k = 0; k < r.nconf && c.rank == 0 && rc == CLOQ_OK; k++)
    rc = print_objectives(r.paths[k], &c.cfg);
  AGREE(rc);
  if (o->export_dir && c.rank == 0) { /* the hand-off, same command (init only: one store) */
    cloq_export_opts eo;
    cloq_export_default_opts(&eo);
    eo.store = o->out;
    eo.out = o->export_dir;
    eo.model = o->model;
    eo.tokenizer = o->tokenizer;
    eo.force = o->force;
    if (o->export_format) rc = cloq_export_parse_formats(o->export_format, &eo.formats);
    if (rc == CLOQ_OK) rc = cloq_export_run(&eo);
  }
  AGREE(rc);
  int64_t cnt[3], tot[3];
  cloq_block_counts(cnt);
  AGREE(CLOQ_MPI_RC(MPI_Reduce(cnt, tot, 3, MPI_INT64_T, MPI_SUM, 0, comm)));
  if (c.rank == 0)
    printf("work: %lld calibration pass(es), %lld factorizations, %lld partial eigensolves, %lld "
           "quantizations for %d configuration(s) of %lld blocks\n",
           (long long)(r.ntodo > 0), (long long)tot[0], (long long)tot[1],
           (long long)tot[2], r.nconf, (long long)r.ntodo);
  cloq_run_report_rss(comm, c.rank, c.size);
  if (c.rank == 0) {
    if (r.nconf == 1) printf("wrote %s in %.2f s\n", o->out, cloq_now() - r.t0);
    else printf("wrote %d stores in %s in %.2f s\n", r.nconf, o->out, cloq_now() - r.t0);
  }
  free(r.todo);
  cloq_run_free(&c);
  return CLOQ_OK;
fail:
  for (int k = 0; k < r.nconf; k++) cloq_store_abandon(&r.stores[k]);
  free(r.todo);
  cloq_run_free(&c);
  return CLOQ_ERR;
}

