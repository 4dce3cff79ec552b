/* cloq_hash.h: a 64-bit content digest (FNV-1a over 8-byte words, the tail byte by byte): not
 * cryptographic, for noticing that an input changed between a run and its resume. */
#ifndef CLOQ_HASH_H
#define CLOQ_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CLOQ_HASH_INIT 0xcbf29ce484222325ULL

static inline uint64_t cloq_hash(uint64_t h, const void *p, size_t n) {
  const unsigned char *c = (const unsigned char *)p;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, c + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  for (; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ULL;
  return h;
}

static inline uint64_t cloq_hash_i64(uint64_t h, int64_t v) { return cloq_hash(h, &v, sizeof v); }

#endif
