/* cloq_modules: the seven linear modules of a Llama block, their shapes, their Hugging Face
 * names, and which of the four distinct block inputs feeds each one, shared by the worker
 * (forward pass, Gram matrices) and the store (layout); and cloq_qmodule, one quantized module. */
#ifndef CLOQ_MODULES_H
#define CLOQ_MODULES_H

#include <stdint.h>

#include "cloq_config.h"

/* The most iterations an iterative init records (--cloq-iters, --quailora-iters). */
enum { CLOQ_MAX_ITERS = 256 };

enum {
  CLOQ_M_Q, CLOQ_M_K, CLOQ_M_V, CLOQ_M_O, CLOQ_M_GATE, CLOQ_M_UP, CLOQ_M_DOWN, CLOQ_NMOD
};

/* The distinct inputs of a block: one Gram matrix (and one eigendecomposition) each. */
enum { CLOQ_IN_ATTN, CLOQ_IN_O, CLOQ_IN_MLP, CLOQ_IN_DOWN, CLOQ_NIN };

static const char *const cloq_module_name[CLOQ_NMOD] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

static const int cloq_module_input[CLOQ_NMOD] = {CLOQ_IN_ATTN, CLOQ_IN_ATTN, CLOQ_IN_ATTN,
                                                 CLOQ_IN_O,    CLOQ_IN_MLP,  CLOQ_IN_MLP,
                                                 CLOQ_IN_DOWN};

static const char *const cloq_input_name[CLOQ_NIN] = {"attn_in", "o_proj_in", "mlp_in",
                                                      "down_proj_in"};

/* Width of input i. */
static inline int64_t cloq_input_dim(const cloq_config *c, int i) {
  switch (i) {
  case CLOQ_IN_ATTN: return c->dim;
  case CLOQ_IN_O: return c->n_heads * c->head_dim;
  case CLOQ_IN_MLP: return c->dim;
  default: return c->hidden_dim;
  }
}

/* Weight shape (n_out, n_in) of module m, as stored in the checkpoint. */
static inline void cloq_module_shape(const cloq_config *c, int m, int64_t *n_out, int64_t *n_in) {
  switch (m) {
  case CLOQ_M_Q: *n_out = c->n_heads * c->head_dim; break;
  case CLOQ_M_K:
  case CLOQ_M_V: *n_out = c->n_kv_heads * c->head_dim; break;
  case CLOQ_M_O:
  case CLOQ_M_DOWN: *n_out = c->dim; break;
  default: *n_out = c->hidden_dim; break;
  }
  *n_in = cloq_input_dim(c, cloq_module_input[m]);
}

/* One quantized module as the store holds it: its shapes and its five arrays, row-major (made by
 * the worker's module init, written and read by the store, cloq_store_read.c defining the three
 * functions below). */
typedef struct {
  int64_t n_out, n_in, n_groups, rank;
  uint8_t *codes;  /* (n_out, n_in) */
  float *scales;   /* (n_out, n_groups) */
  float *zeros;    /* (n_out, n_groups) */
  float *A;        /* (rank, n_in) */
  float *B;        /* (n_out, rank) */
  /* Calibrated objective tr((W - Q - BA) Hd (W - Q - BA)^T) with the damped Gram matrix Hd, and
   * that of the same quantizer's Q with B A = 0 (the zero init); NaN where not computed. */
  double objective, objective_zero;
  /* Iterative inits (--cloq-iters T > 1, quailora): the objective of each iterate, in order
   * (cloq: T iterates of the alternation, each at this module's rank; quailora: the svd start,
   * then each alternation), and which one the factors are (1-based). n_iter 0: not iterative. */
  int n_iter, iter_chosen;
  double iter_obj[CLOQ_MAX_ITERS + 1];
  /* --rank-budget runs only (else NULL): the CLoQ basis V (n_out, rank), float32, and what each of
   * its columns captures of the objective (rank), from which the ranks are allocated at the end
   * (cloq_store_allocate_ranks). */
  float *basis;
  double *captured;
  /* The module's own LoRA rank after a --rank-budget allocation (its factors' rows/columns from
   * it to `rank` are zero); 0: `rank`. */
  int64_t rank_alloc;
} cloq_qmodule;

/* Sets the shapes of module m for a group size and LoRA rank; arrays stay NULL. */
void cloq_qmodule_shape(const cloq_config *cfg, int m, int64_t group_size, int64_t rank,
                        cloq_qmodule *q);
/* Sets the shapes and allocates zeroed arrays (the error names block b and the module). */
int cloq_qmodule_alloc(const cloq_config *cfg, int64_t b, int m, int64_t group_size,
                       int64_t rank, cloq_qmodule *q);
/* Allocates q's basis and captured arrays (a --rank-budget run), zeroed. */
int cloq_qmodule_alloc_budget(cloq_qmodule *q);
/* Frees the arrays; accepts a zeroed or partly allocated q. */
void cloq_qmodule_free(cloq_qmodule *q);

#endif
