/* cloq_data: whole files and token files (io/data.c). Not collective; errors name the file and
 * the line. */
#ifndef CLOQ_DATA_H
#define CLOQ_DATA_H

#include <stddef.h>
#include <stdint.h>

/* Whole file into memory, NUL-terminated; *len excludes the NUL. */
int cloq_read_file(const char *path, char **buf, size_t *len);

/* A token file: one sequence per line, whitespace-separated non-negative integer ids; blank lines
 * are skipped. Every id must be < vocab_size (error names file, line and id). */
typedef struct {
  int64_t n;        /* number of sequences */
  int64_t *len;     /* len[i] tokens in sequence i */
  int32_t **ids;    /* ids[i][0..len[i]) */
} cloq_seqs;
int cloq_seqs_read_tokens(const char *path, int64_t vocab_size, cloq_seqs *out);
/* Frees len, ids and every ids[i] (each its own malloc), then zeroes *s; accepts NULL. */
void cloq_seqs_free(cloq_seqs *s);

#endif
