/* cloq_err: see cloq_err.h. */
#include "cloq_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char err_buf[1024];
static int err_set;
static int err_rank = -1;

void cloq_err_set_rank(int rank) { err_rank = rank; }
int cloq_err_rank(void) { return err_rank; }

int cloq_err_set(const char *file, int line, const char *func, const char *fmt, ...) {
  if (err_set) return CLOQ_ERR; /* keep the root cause */
  const char *base = strrchr(file, '/');
  base = base ? base + 1 : file;
  int n;
  if (err_rank >= 0)
    n = snprintf(err_buf, sizeof err_buf, "rank %d: %s:%d: %s: ", err_rank, base, line, func);
  else
    n = snprintf(err_buf, sizeof err_buf, "%s:%d: %s: ", base, line, func);
  if (n < 0) n = 0;
  if ((size_t)n < sizeof err_buf) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf + n, sizeof err_buf - (size_t)n, fmt, ap);
    va_end(ap);
  }
  /* one line: fold any newline the reason may carry */
  for (char *p = err_buf; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
  err_set = 1;
  return CLOQ_ERR;
}

const char *cloq_err_msg(void) { return err_set ? err_buf : ""; }

void cloq_err_clear(void) {
  err_set = 0;
  err_buf[0] = 0;
}

void cloq_warn(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (err_rank >= 0)
    fprintf(stderr, "rank %d: warning: %s\n", err_rank, buf);
  else
    fprintf(stderr, "warning: %s\n", buf);
}

void *cloq_calloc_checked(int64_t nelem, size_t size) {
  if (nelem < 0) return NULL;
  if (nelem == 0) nelem = 1;
  if (size && (uint64_t)nelem > SIZE_MAX / size) return NULL;
  return calloc((size_t)nelem, size);
}

int cloq_mul64(int64_t a, int64_t b, int64_t *out) {
  if (a < 0 || b < 0) return CLOQ_FAIL("negative size factor (%lld x %lld)", (long long)a, (long long)b);
  if (a != 0 && b > INT64_MAX / a)
    return CLOQ_FAIL("size overflow (%lld x %lld)", (long long)a, (long long)b);
  *out = a * b;
  return CLOQ_OK;
}
