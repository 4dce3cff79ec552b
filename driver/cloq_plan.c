/* cloq_plan: see cloq_plan.h. */
#include "cloq_plan.h"

#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_mpi.h"

int cloq_plan_make(MPI_Comm comm, int64_t n_layers, cloq_plan *p) {
  memset(p, 0, sizeof *p);
  p->comm = comm;
  CLOQ_MPI(MPI_Comm_rank(comm, &p->rank));
  CLOQ_MPI(MPI_Comm_size(comm, &p->size));
  p->n_layers = n_layers;
  CLOQ_ALLOC(p->first, p->size + 1, "plan");
  for (int r = 0; r <= p->size; r++) p->first[r] = n_layers * r / p->size;
  p->b0 = p->first[p->rank];
  p->b1 = p->first[p->rank + 1];
  /* chain: rank 0, then owners > 0 in order */
  p->prev = p->next = -1;
  int last = 0;
  for (int r = 1; r < p->size; r++) {
    if (p->first[r + 1] == p->first[r]) continue;
    if (last == p->rank) p->next = r;
    if (r == p->rank) p->prev = last;
    last = r;
  }
  p->last = last;
  p->in_chain = p->rank == 0 || p->b1 > p->b0;
  return CLOQ_OK;
}

void cloq_plan_free(cloq_plan *p) {
  free(p->first);
  p->first = NULL;
}

int cloq_plan_owner(const cloq_plan *p, int64_t b) {
  for (int r = 0; r < p->size; r++)
    if (b >= p->first[r] && b < p->first[r + 1]) return r;
  return -1;
}
