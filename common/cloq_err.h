/* cloq_err: the one status type and the checking macros of the whole program.
 *
 * Every fallible function returns int: 0 (CLOQ_OK) on success, non-zero on failure. On failure
 * it records one line, "rank N: file:line: what failed: why", in a per-process buffer and
 * returns; callers propagate with CLOQ_CALL until a place that can report it (main, or the
 * collective agreement in driver/). The first error recorded wins: later CLOQ_CALL frames do not
 * overwrite the root cause. Not thread-safe (the program is one thread per rank; BLAS threads
 * never call into this module).
 *
 * linalg/ and io/ use only this header (no MPI). MPI calls are checked, and ranks agree on an
 * outcome, through cloq_mpi.h.
 */
#ifndef CLOQ_ERR_H
#define CLOQ_ERR_H

#include <stdarg.h>

/* CLOQ_STOPPED: a collective step that ended because another rank failed or a stop signal came;
 * that rank (or the signal) reports it, not this one. */
enum { CLOQ_OK = 0, CLOQ_ERR = 1, CLOQ_STOPPED = 2 };

/* Records the error line (if none is recorded yet) and returns CLOQ_ERR. */
int cloq_err_set(const char *file, int line, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The recorded line ("" when none). */
const char *cloq_err_msg(void);
/* Forget the recorded error (used by tests that expect a failure and go on). */
void cloq_err_clear(void);
/* The rank shown in messages; set once by main after MPI_Init. -1 prints no rank. */
void cloq_err_set_rank(int rank);
int cloq_err_rank(void);
/* Warnings: "rank N: warning: ..." to stderr, always (they name a layer or setting). */
void cloq_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fail with a formatted reason. */
#define CLOQ_FAIL(...) cloq_err_set(__FILE__, __LINE__, __func__, __VA_ARGS__)

/* Propagate a failing cloq call. */
#define CLOQ_CALL(expr)                                                                            \
  do {                                                                                             \
    int cloq_call_rc_ = (expr);                                                                    \
    if (cloq_call_rc_ != 0) return CLOQ_ERR;                                                       \
  } while (0)

/* Check a condition; fail with a formatted reason when it does not hold. */
#define CLOQ_CHECK(cond, ...)                                                                      \
  do {                                                                                             \
    if (!(cond)) return CLOQ_FAIL(__VA_ARGS__);                                                    \
  } while (0)

/* LAPACK(E) info decoding: <0 names the illegal argument, >0 is a convergence failure. */
#define CLOQ_LAPACK(name, info_expr)                                                               \
  do {                                                                                             \
    int cloq_info_ = (int)(info_expr);                                                             \
    if (cloq_info_ < 0)                                                                            \
      return CLOQ_FAIL("%s: argument %d had an illegal value", name, -cloq_info_);                \
    if (cloq_info_ > 0)                                                                            \
      return CLOQ_FAIL("%s: failed to converge (info=%d)", name, cloq_info_);                     \
  } while (0)

/* Allocation that fails with a message naming what and how many bytes. */
#define CLOQ_ALLOC(ptr, nelem, what)                                                               \
  do {                                                                                             \
    (ptr) = cloq_calloc_checked((int64_t)(nelem), sizeof(*(ptr)));                                 \
    if (!(ptr))                                                                                    \
      return CLOQ_FAIL("out of memory allocating %s (%lld elements of %zu bytes)", what,          \
                       (long long)(nelem), sizeof(*(ptr)));                                        \
  } while (0)

#include <stddef.h>
#include <stdint.h>
/* calloc with an overflow check on nelem*size; NULL on overflow or failure; nelem 0 gives a
 * valid pointer. */
void *cloq_calloc_checked(int64_t nelem, size_t size);
/* a*b for element counts; fails (returns CLOQ_ERR) on overflow or negative factors. */
int cloq_mul64(int64_t a, int64_t b, int64_t *out);

/* Zeroed allocation of nelem elements of *ptr into ptr; evaluates to 1 on success, else records
 * "out of memory allocating <what> (...)" at the caller's line and evaluates to 0, so that the
 * caller can free what it already holds before returning CLOQ_ERR:
 *   if (!CLOQ_TRY_ALLOC(a, n, "a") || !CLOQ_TRY_ALLOC(b, n, "b")) goto fail; */
#define CLOQ_TRY_ALLOC(ptr, nelem, what)                                                           \
  ((((ptr) = cloq_calloc_checked((int64_t)(nelem), sizeof(*(ptr)))) != NULL) ||                   \
   (CLOQ_FAIL("out of memory allocating %s (%lld elements of %zu bytes)", (what),                 \
              (long long)(nelem), sizeof(*(ptr))),                                                 \
    0))

#endif
