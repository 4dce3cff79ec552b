/* cloq_data: whole files, token files (io/data.c) and JSON Lines records (io/jsonl.c). Not
 * collective; errors name the file and the line. */
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

/* A JSON Lines record's text: text[0..len) (UTF-8, no NUL, NUL-terminated after len; owned by the
 * reader, valid during the call); line: its 1-based line in the file. Returns CLOQ_OK to go on. */
typedef int (*cloq_jsonl_fn)(void *ctx, const char *text, size_t len, int64_t line);
/* Not collective (io/jsonl.c). JSON Lines as Hugging Face `datasets` writes it (Dataset.to_json):
 * one JSON object per line. Calls fn with the string value of `field` of every record, in file
 * order; lines of blanks only (space, tab, CR) are skipped. Stops with an error naming the file
 * and the line ("path:line: ...") at a line that is not valid JSON (or not UTF-8), not an object,
 * lacks the field, or whose field is not a string or holds a NUL character; an empty file and a
 * file without records are errors too. An error of fn stops the read and is returned.
 * *nrecords (may be NULL): the records read. */
int cloq_jsonl_read(const char *path, const char *field, cloq_jsonl_fn fn, void *ctx,
                    int64_t *nrecords);

#endif
