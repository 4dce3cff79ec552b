/* jsonl.c: JSON Lines text records, as Hugging Face `datasets` exports them (Dataset.to_json:
 * one JSON object per line, pandas' escapes: \uXXXX for every non-ASCII character, "\/").
 *
 * Like a token file, a JSON Lines file is often the product of someone else's pipeline, so every
 * defect stops the read with the file, the 1-based line and what is wrong: a calibration run that
 * silently drops records gives a subtly different initialization. Blank lines are the one thing
 * skipped (an editor's trailing newline, concatenated exports).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_data.h"
#include "cloq_err.h"
#include "cloq_json.h"

/* The object's keys, comma-separated, into buf (cut with "..." when they do not fit). */
static void list_keys(json_t *obj, char *buf, size_t cap) {
  buf[0] = 0;
  size_t used = 0;
  const char *k;
  json_t *v;
  json_object_foreach(obj, k, v) {
    int n = snprintf(buf + used, cap - used, "%s\"%s\"", used ? ", " : "", k);
    if (n < 0 || (size_t)n >= cap - used) {
      snprintf(buf + (cap > 4 ? cap - 4 : 0), cap > 4 ? 4 : cap, "...");
      return;
    }
    used += (size_t)n;
  }
  (void)v;
}

static int blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* One line, text[0..n) without its '\n': the record's string, or an error naming path:line. */
static int one_record(const char *path, int64_t line, const char *text, size_t n,
                      const char *field, cloq_jsonl_fn fn, void *ctx) {
  json_error_t e;
  /* JSON_ALLOW_NUL: a \u0000 in a field that is not read is no concern of ours; the field read
   * is checked below with its own message. Duplicate keys: the last wins, as in Python's json. */
  json_t *rec = json_loadb(text, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  if (!rec)
    return CLOQ_FAIL("%s:%lld: not valid JSON: %s (column %d)", path, (long long)line, e.text,
                     e.column);
  int rc = CLOQ_OK;
  json_t *v = json_is_object(rec) ? json_object_get(rec, field) : NULL;
  char keys[160];
  if (!json_is_object(rec)) {
    rc = CLOQ_FAIL("%s:%lld: %s, not a JSON object (one record per line)", path, (long long)line,
                   cloq_json_kind(rec));
  } else if (!v) {
    list_keys(rec, keys, sizeof keys);
    rc = CLOQ_FAIL("%s:%lld: the record has no field \"%s\" (its fields: %s)",
                   path, (long long)line, field, keys[0] ? keys : "none");
  } else if (!json_is_string(v)) {
    rc = CLOQ_FAIL("%s:%lld: field \"%s\" is %s, not a string", path, (long long)line, field,
                   cloq_json_kind(v));
  } else if (memchr(json_string_value(v), 0, json_string_length(v))) {
    rc = CLOQ_FAIL("%s:%lld: field \"%s\" holds a NUL character (\\u0000): not text", path,
                   (long long)line, field);
  } else {
    rc = fn(ctx, json_string_value(v), json_string_length(v), line);
  }
  json_decref(rec);
  return rc;
}

int cloq_jsonl_read(const char *path, const char *field, cloq_jsonl_fn fn, void *ctx,
                    int64_t *nrecords) {
  if (nrecords) *nrecords = 0;
  char *text;
  size_t size;
  CLOQ_CALL(cloq_read_file(path, &text, &size));
  int64_t line = 0, n = 0;
  int rc = size == 0 ? CLOQ_FAIL("%s is empty", path) : CLOQ_OK;
  for (size_t pos = 0; rc == CLOQ_OK && pos < size;) {
    line++;
    const char *eol = memchr(text + pos, '\n', size - pos);
    size_t end = eol ? (size_t)(eol - text) : size;
    size_t p = pos;
    while (p < end && blank(text[p])) p++;
    if (p < end) {
      rc = one_record(path, line, text + pos, end - pos, field, fn, ctx);
      n++;
    }
    pos = end + 1;
  }
  free(text);
  if (rc == CLOQ_OK && n == 0)
    rc = CLOQ_FAIL("%s: no records (%lld blank lines; JSON Lines: one object per line)", path,
                   (long long)line);
  if (rc == CLOQ_OK && nrecords) *nrecords = n;
  return rc;
}
