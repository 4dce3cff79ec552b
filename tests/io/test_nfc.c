/* test_nfc.c: io/unicode_nfc.c on cases whose NFC is known by hand (each also what Python's
 * unicodedata.normalize("NFC", ...) gives): composition, canonical ordering, blocking, singletons,
 * composition exclusions, Hangul, bytes that are not UTF-8, the stretch logic (long ASCII runs,
 * long runs of marks), and the three modes on a character newer than `tokenizers`' Unicode 9.0.0.
 * tests/e2e/test_nfc.py compares every code point alone and 350,000 sequences with unicodedata and
 * `tokenizers`. */
#include "test_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_nfc.h"

/* NFC of in[0..n) in mode must be want[0..wn). */
static void expect_nfc_n(const char *in, size_t n, int mode, const char *want, size_t wn) {
  char *out;
  size_t len;
  CHECK_OK(cloq_nfc(in, n, mode, 0, &out, &len));
  if (len != wn || memcmp(out, want, wn) || out[len] != '\0') {
    print_error("NFC (mode %d) of \"%.*s\": expected %zu bytes \"%.*s\", got %zu bytes \"%.*s\"\n",
                mode, (int)n, in, wn, (int)wn, want, len, (int)len, out);
    fail();
  }
  free(out);
}

static void expect_nfc(const char *in, const char *want) {
  for (int mode = 0; mode < 3; mode++) expect_nfc_n(in, strlen(in), mode, want, strlen(want));
}

static void test_nfc_compose(void **state) {
  (void)state;
  expect_nfc("", "");
  expect_nfc("plain ASCII", "plain ASCII");
  expect_nfc("e\xcc\x81", "\xc3\xa9");                    /* e U+0301 -> U+00E9 */
  expect_nfc("caf\xc3\xa9 cafe\xcc\x81", "caf\xc3\xa9 caf\xc3\xa9");
  expect_nfc("\xe2\x84\xab", "\xc3\x85");                  /* singleton U+212B -> U+00C5 */
  expect_nfc("\xe2\x84\xa6", "\xce\xa9");                  /* singleton U+2126 -> U+03A9 */
  expect_nfc("A\xcc\x8a", "\xc3\x85");
  expect_nfc("\xe0\xa5\x98", "\xe0\xa4\x95\xe0\xa4\xbc");  /* excluded U+0958 -> U+0915 U+093C */
  expect_nfc("\xe0\xa4\x95\xe0\xa4\xbc", "\xe0\xa4\x95\xe0\xa4\xbc");
  expect_nfc("\xcd\x84", "\xcc\x88\xcc\x81");              /* non-starter U+0344 -> U+0308 U+0301 */
  /* ordering: U+0316 (class 220) goes before U+0301 (230) and does not block it */
  expect_nfc("a\xcc\x81\xcc\x96", "\xc3\xa1\xcc\x96");
  expect_nfc("a\xcc\x96\xcc\x81", "\xc3\xa1\xcc\x96");
  /* A + U+030A + U+0323: U+0323 (220) first, A + U+0323 -> U+1EA0, U+030A stays */
  expect_nfc("A\xcc\x8a\xcc\xa3", "\xe1\xba\xa0\xcc\x8a");
  /* blocking: a second U+0301 (same class) stays; a starter in between blocks */
  expect_nfc("a\xcc\x81\xcc\x81", "\xc3\xa1\xcc\x81");
  expect_nfc("a\xe1\x84\x80\xcc\x81", "a\xe1\x84\x80\xcc\x81");
  /* two steps: U+1E08 from C + U+0327 + U+0301 in any order of the marks */
  expect_nfc("C\xcc\x81\xcc\xa7", "\xe1\xb8\x88");
  expect_nfc("\xc3\x87\xcc\x81", "\xe1\xb8\x88");
  /* Hangul: L V T, LV T, an LVT syllable and a T (no more composition), a mark in the way */
  expect_nfc("\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xea\xb0\x81");
  expect_nfc("\xea\xb0\x80\xe1\x86\xa8", "\xea\xb0\x81");
  expect_nfc("\xea\xb0\x81\xe1\x86\xa8", "\xea\xb0\x81\xe1\x86\xa8");
  expect_nfc("\xe1\x84\x80\xcc\x81\xe1\x85\xa1", "\xe1\x84\x80\xcc\x81\xe1\x85\xa1");
  /* a leading mark composes with nothing */
  expect_nfc("\xcc\x81" "e", "\xcc\x81" "e");
}

/* Bytes that are not well-formed UTF-8 are copied, and nothing composes across them. */
static void test_nfc_invalid_utf8(void **state) {
  (void)state;
  expect_nfc("e\xff\xcc\x81", "e\xff\xcc\x81");
  expect_nfc("e\xcc", "e\xcc");                             /* truncated */
  expect_nfc("\xc0\x80\xe0\x80\x80", "\xc0\x80\xe0\x80\x80"); /* overlong */
  expect_nfc("\xed\xa0\x80", "\xed\xa0\x80");               /* surrogate */
  expect_nfc("\xf4\x90\x80\x80", "\xf4\x90\x80\x80");       /* above U+10FFFF */
  expect_nfc("\x80" "e\xcc\x81\xbf", "\x80\xc3\xa9\xbf");   /* stray continuation bytes */
  expect_nfc_n("e\0\xcc\x81", 4, CLOQ_NFC_CHECKED, "e\0\xcc\x81", 4); /* NUL is a starter */
}

/* Long stretches: an ASCII run ending in a letter that composes, and 1000 marks after one. */
static void test_nfc_long(void **state) {
  (void)state;
  size_t n = 100000;
  char *in = malloc(n + 3), *want = malloc(n + 2);
  assert_non_null(in);
  assert_non_null(want);
  memset(in, 'x', n);
  memcpy(in + n - 1, "e\xcc\x81", 3);
  memset(want, 'x', n);
  memcpy(want + n - 1, "\xc3\xa9", 2);
  expect_nfc_n(in, n + 2, CLOQ_NFC_CHECKED, want, n + 1);
  /* a U+0301 x 1000 U+0316: U+0316 moves to the front, the first U+0301 composes */
  size_t k = 1000, len = 1 + 2 * k + 2;
  char *marks = malloc(len), *mw = malloc(len);
  assert_non_null(marks);
  assert_non_null(mw);
  marks[0] = 'a';
  for (size_t i = 0; i < k; i++) memcpy(marks + 1 + 2 * i, "\xcc\x81", 2);
  memcpy(marks + 1 + 2 * k, "\xcc\x96", 2);
  memcpy(mw, "\xc3\xa1\xcc\x96", 4);
  for (size_t i = 0; i + 1 < k; i++) memcpy(mw + 4 + 2 * i, "\xcc\x81", 2);
  expect_nfc_n(marks, len, CLOQ_NFC_CHECKED, mw, len - 1);
  /* a (U+0301 U+0316) x 500 U+0345: sorted by class (the counting sort of long runs) to
   * U+0316 x 500 (220), U+0301 x 500 (230), U+0345 (240); a + U+0301 composes */
  for (size_t i = 0; i < k / 2; i++) memcpy(marks + 1 + 4 * i, "\xcc\x81\xcc\x96", 4);
  memcpy(marks + 1 + 2 * k, "\xcd\x85", 2);
  memcpy(mw, "\xc3\xa1", 2);
  for (size_t i = 0; i < k / 2; i++) memcpy(mw + 2 + 2 * i, "\xcc\x96", 2);
  for (size_t i = 0; i + 1 < k / 2; i++) memcpy(mw + 2 + k + 2 * i, "\xcc\x81", 2);
  memcpy(mw + 2 * k, "\xcd\x85", 2);
  expect_nfc_n(marks, len, CLOQ_NFC_CHECKED, mw, len - 1);
  free(in);
  free(want);
  free(marks);
  free(mw);
}

/* U+1DF6 (class 232, Unicode 10) between a and U+0301: the tables put U+0301 first and compose
 * (U+00E1 U+1DF6); Unicode 9.0.0 sees a starter and leaves all three. Checked mode refuses, naming
 * the character and its byte offset plus base. U+08D3 (Unicode 11, class 220) alone after a letter
 * normalizes alike in both, and is accepted. */
static void test_nfc_versions(void **state) {
  (void)state;
  const char *in = "xa\xe1\xb7\xb6\xcc\x81";
  expect_nfc_n(in, strlen(in), CLOQ_NFC_CURRENT, "x\xc3\xa1\xe1\xb7\xb6", 6);
  expect_nfc_n(in, strlen(in), CLOQ_NFC_TOKENIZERS, in, strlen(in));
  char *out = (char *)1;
  size_t len = 1;
  EXPECT_FAIL(cloq_nfc(in, strlen(in), CLOQ_NFC_CHECKED, 0, &out, &len), "U+1DF6 at byte 2");
  assert_null(out);
  assert_int_equal(len, 0);
  EXPECT_FAIL(cloq_nfc(in, strlen(in), CLOQ_NFC_CHECKED, 40, &out, &len), "U+1DF6 at byte 42");
  EXPECT_FAIL(cloq_nfc(in, strlen(in), CLOQ_NFC_CHECKED, 0, &out, &len), "Unicode 9.0.0");
  expect_nfc("a\xe0\xa3\x93", "a\xe0\xa3\x93");
  assert_int_equal(cloq_nfc_newer(0x1DF6), 1);
  assert_int_equal(cloq_nfc_newer(0x08D3), 1);
  assert_int_equal(cloq_nfc_newer(0x0301), 0);
  assert_int_equal(cloq_nfc_newer(0x10FFFF), 0);
  assert_string_equal(cloq_nfc_tokenizers_version(), "9.0.0");
  printf("    NFC tables: Unicode %s; `tokenizers`: Unicode %s\n", cloq_nfc_unicode_version(),
         cloq_nfc_tokenizers_version());
  EXPECT_FAIL(cloq_nfc("a", 1, 7, 0, &out, &len), "unknown mode 7");
}

int run_nfc_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_nfc_compose), cmocka_unit_test(test_nfc_invalid_utf8),
      cmocka_unit_test(test_nfc_long),    cmocka_unit_test(test_nfc_versions),
  };
  return cmocka_run_group_tests_name("io/nfc", tests, NULL, NULL);
}
