/* cloq_modules: the seven linear modules of a Llama block, their shapes, their Hugging Face
 * names, and which of the four distinct block inputs feeds each one. Header-only; shared by the
 * worker (forward pass, Gram matrices) and the store (layout). */
#ifndef CLOQ_MODULES_H
#define CLOQ_MODULES_H

#include <stdint.h>

#include "cloq_io.h"

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

#endif
