/* cloq_plan: which rank owns which transformer blocks, and the chain the stream follows (rank 0
 * first, then the owners in order). Every rank computes the same plan. */
#ifndef CLOQ_PLAN_H
#define CLOQ_PLAN_H

#include <mpi.h>
#include <stdint.h>

typedef struct {
  MPI_Comm comm;
  int rank, size;
  int64_t n_layers;
  int64_t *first;  /* first[r] .. first[r+1]: blocks of rank r (size+1 entries) */
  int64_t b0, b1;  /* this rank's blocks */
  int prev, next;  /* neighbours in the chain, -1 where none */
  int in_chain;    /* rank 0, or owns blocks */
  int last;        /* rank that ends the chain (owns the last block, or 0) */
} cloq_plan;

/* Not collective (every rank computes the same plan). Contiguous ranges balanced by cost; all
 * blocks of a Llama model cost the same, so by count. Ranks beyond n_layers own nothing. */
int cloq_plan_make(MPI_Comm comm, int64_t n_layers, cloq_plan *p);
void cloq_plan_free(cloq_plan *p);
/* Owner rank of block b. */
int cloq_plan_owner(const cloq_plan *p, int64_t b);

#endif
