/* cloq_json: what the JSON readers (config.c, jsonl.c) share for their error messages. Header-only;
 * nothing here is collective. */
#ifndef CLOQ_JSON_H
#define CLOQ_JSON_H

#include <jansson.h>

/* "an object", "a string", ...: what a JSON value is, for "must be X, found Y" errors. */
static inline const char *cloq_json_kind(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
  }
  return "?";
}

#endif
