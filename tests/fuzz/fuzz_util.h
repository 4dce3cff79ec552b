/* fuzz_util.h: what the libFuzzer targets whose parser reads only from a path share: one scratch
 * folder per fuzzer process (under $TMPDIR, else /tmp; removed at exit), into which each input is
 * written before the parser opens it. Header-only: every target is its own executable. */
#ifndef CLOQ_FUZZ_UTIL_H
#define CLOQ_FUZZ_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloq_err.h"

static char fuzz_dir_[4096];

static inline void fuzz_rm_dir_(void) {
  DIR *d = opendir(fuzz_dir_);
  if (d) {
    struct dirent *e;
    char p[8192];
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
        snprintf(p, sizeof p, "%s/%s", fuzz_dir_, e->d_name);
        unlink(p);
      }
    closedir(d);
  }
  rmdir(fuzz_dir_);
}

/* The scratch folder, made on first use; aborts when it cannot be made (the run would test
 * nothing). */
static inline const char *fuzz_dir(void) {
  if (!fuzz_dir_[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(fuzz_dir_, sizeof fuzz_dir_, "%s/cloq-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fuzz_dir_)) {
      perror("fuzz: mkdtemp");
      abort();
    }
    atexit(fuzz_rm_dir_);
  }
  return fuzz_dir_;
}

/* With $CLOQ_FUZZ_VERBOSE set (running a target on one file, to see what it does): what a call
 * returned, with the error message. Then clears the error. */
static inline void fuzz_report(const char *what, int rc) {
  static int verbose = -1;
  if (verbose < 0) verbose = getenv("CLOQ_FUZZ_VERBOSE") != NULL;
  if (verbose) fprintf(stderr, "%s: %s\n", what, rc == CLOQ_OK ? "ok" : cloq_err_msg());
  cloq_err_clear();
}

/* fuzz_dir()/name into out (cap bytes). */
static inline void fuzz_path(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", fuzz_dir(), name);
}

/* Writes data[0..n) to fuzz_dir()/name (replacing it); aborts on failure. */
static inline void fuzz_write(const char *name, const void *data, size_t n) {
  char p[8192];
  fuzz_path(p, sizeof p, name);
  FILE *f = fopen(p, "wb");
  if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
    perror(p);
    abort();
  }
}

/* Removes fuzz_dir()/name when it exists. */
static inline void fuzz_unlink(const char *name) {
  char p[8192];
  fuzz_path(p, sizeof p, name);
  unlink(p);
}

/* The next part of data[*pos..n) up to sep (non-empty; skipped) or the end: its start and
 * length; 0 once everything has been consumed (start with *pos = 0). */
static inline int fuzz_next_part(const uint8_t *data, size_t n, size_t *pos, const char *sep,
                          const uint8_t **part, size_t *len) {
  if (*pos > n) return 0;
  size_t sl = strlen(sep), i = *pos;
  while (i + sl <= n && memcmp(data + i, sep, sl)) i++;
  *part = data + *pos;
  if (i + sl <= n) {
    *len = i - *pos;
    *pos = i + sl;
  } else {
    *len = n - *pos;
    *pos = n + 1;
  }
  return 1;
}

#endif
