/* data.c: whole-file reads and token files (the calibration input once it has been tokenized).
 *
 * A token file is plain text: one sequence per line, ids separated by blanks. It is what a user
 * writes when the calibration tokens come from another tokenizer (or from generation), so every
 * defect is reported with file:line and the offending token rather than silently skipped: a
 * calibration run that quietly loses sequences gives a subtly different initialization.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cloq_err.h"
#include "cloq_data.h"

int cloq_read_file(const char *path, char **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return CLOQ_FAIL("%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(f);
    return CLOQ_FAIL("%s: not a regular file", path);
  }
  size_t size = (size_t)st.st_size;
  if ((uint64_t)st.st_size >= SIZE_MAX) {
    fclose(f);
    return CLOQ_FAIL("%s: too large (%lld bytes)", path, (long long)st.st_size);
  }
  char *b = malloc(size + 1);
  if (!b) {
    fclose(f);
    return CLOQ_FAIL("%s: out of memory reading %zu bytes", path, size);
  }
  size_t got = fread(b, 1, size, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || got != size) {
    free(b);
    return CLOQ_FAIL("%s: read %zu of %zu bytes%s", path, got, size, bad ? ": I/O error" : "");
  }
  b[size] = '\0';
  *buf = b;
  *len = size;
  return CLOQ_OK;
}

/* Blanks between ids; '\r' is one so that files written on Windows read the same. */
static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* Appends one parsed line (ids[0..n)) as a new sequence, growing the arrays geometrically. */
static int seqs_push(cloq_seqs *s, int64_t *cap, const int32_t *ids, int64_t n, const char *path) {
  if (s->n == *cap) {
    int64_t nc = *cap ? 2 * *cap : 64;
    int64_t *nlen = realloc(s->len, (size_t)nc * sizeof *nlen);
    if (!nlen) return CLOQ_FAIL("%s: out of memory (%lld sequences)", path, (long long)nc);
    s->len = nlen;
    int32_t **nids = realloc(s->ids, (size_t)nc * sizeof *nids);
    if (!nids) return CLOQ_FAIL("%s: out of memory (%lld sequences)", path, (long long)nc);
    s->ids = nids;
    *cap = nc;
  }
  int32_t *copy = malloc((size_t)n * sizeof *copy);
  if (!copy) return CLOQ_FAIL("%s: out of memory (%lld tokens)", path, (long long)n);
  memcpy(copy, ids, (size_t)n * sizeof *copy);
  s->ids[s->n] = copy;
  s->len[s->n] = n;
  s->n++;
  return CLOQ_OK;
}

/* The parse proper; on failure the caller frees whatever was built. */
static int parse_tokens(const char *path, const char *text, size_t size, int64_t vocab_size,
                        cloq_seqs *out) {
  int64_t cap = 0, line_cap = 0;
  int32_t *line_ids = NULL;
  int64_t lineno = 0;
  size_t pos = 0;
  int rc = CLOQ_OK;
  while (pos < size && rc == CLOQ_OK) {
    lineno++;
    const char *eol = memchr(text + pos, '\n', size - pos);
    size_t end = eol ? (size_t)(eol - text) : size;
    int64_t n = 0;
    size_t p = pos;
    while (rc == CLOQ_OK) {
      while (p < end && is_blank(text[p])) p++;
      if (p == end) break;
      size_t q = p;
      while (q < end && !is_blank(text[q])) q++;
      /* digits only: a sign, a decimal point or a letter is not a token id */
      int64_t v = 0;
      int bad = 0, big = 0;
      for (size_t i = p; i < q; i++) {
        char c = text[i];
        if (c < '0' || c > '9') {
          bad = 1;
          break;
        }
        if (v < vocab_size) v = v * 10 + (c - '0'); /* stops growing once out of range */
        if (v >= vocab_size) big = 1;
      }
      int w = q - p > 40 ? 40 : (int)(q - p);
      for (size_t i = p; bad && i < q; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
          rc = CLOQ_FAIL("%s:%lld: byte 0x%02x at column %lld is not part of a token id (not a "
                         "token file?)", path, (long long)lineno, (unsigned char)text[i],
                         (long long)(i - pos) + 1);
          break;
        }
      if (rc != CLOQ_OK) break;
      if (bad) {
        rc = CLOQ_FAIL("%s:%lld: token '%.*s%s' is not a non-negative integer id", path,
                       (long long)lineno, w, text + p, q - p > 40 ? "..." : "");
        break;
      }
      if (big) {
        rc = CLOQ_FAIL("%s:%lld: token id %.*s%s is out of range (vocab_size %lld)", path,
                       (long long)lineno, w, text + p, q - p > 40 ? "..." : "",
                       (long long)vocab_size);
        break;
      }
      if (n == line_cap) {
        int64_t nc = line_cap ? 2 * line_cap : 256;
        int32_t *g = realloc(line_ids, (size_t)nc * sizeof *g);
        if (!g) {
          rc = CLOQ_FAIL("%s:%lld: out of memory (%lld tokens)", path, (long long)lineno,
                         (long long)nc);
          break;
        }
        line_ids = g;
        line_cap = nc;
      }
      line_ids[n++] = (int32_t)v;
      p = q;
    }
    if (rc == CLOQ_OK && n > 0) rc = seqs_push(out, &cap, line_ids, n, path);
    pos = end + 1;
  }
  free(line_ids);
  if (rc == CLOQ_OK && out->n == 0) rc = CLOQ_FAIL("no sequences in %s", path);
  return rc;
}

int cloq_seqs_read_tokens(const char *path, int64_t vocab_size, cloq_seqs *out) {
  memset(out, 0, sizeof *out);
  CLOQ_CHECK(vocab_size > 0 && vocab_size <= (int64_t)INT32_MAX + 1,
             "%s: vocab_size %lld out of range", path, (long long)vocab_size);
  char *text;
  size_t size;
  CLOQ_CALL(cloq_read_file(path, &text, &size));
  int rc = parse_tokens(path, text, size, vocab_size, out);
  free(text);
  if (rc != CLOQ_OK) cloq_seqs_free(out);
  return rc;
}

void cloq_seqs_free(cloq_seqs *s) {
  if (!s) return;
  for (int64_t i = 0; i < s->n; i++) free(s->ids ? s->ids[i] : NULL);
  free(s->ids);
  free(s->len);
  memset(s, 0, sizeof *s);
}
