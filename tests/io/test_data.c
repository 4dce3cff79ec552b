/* test_data.c: whole-file reads and token files (blank lines skipped, every bad token reported
 * with file:line). */
#include "test_io.h"
#include "cloq_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_read_file(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  char *p = join_path(dir, "a.txt");
  const char text[] = "hello\n\0world"; /* an embedded NUL must survive */
  write_bytes(p, text, sizeof text - 1);
  char *buf;
  size_t len;
  CHECK_OK(cloq_read_file(p, &buf, &len));
  assert_int_equal(len, sizeof text - 1);
  assert_memory_equal(buf, text, len);
  assert_int_equal(buf[len], '\0');
  free(buf);
  write_bytes(p, "", 0);
  CHECK_OK(cloq_read_file(p, &buf, &len));
  assert_int_equal(len, 0);
  assert_int_equal(buf[0], '\0');
  free(buf);
  free(p);
  p = join_path(dir, "missing.txt");
  EXPECT_FAIL(cloq_read_file(p, &buf, &len), "missing.txt: cannot open");
  assert_null(buf);
  free(p);
  rm_dir(dir);
  free(dir);
}

static void test_tokens_ok(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  char *p = join_path(dir, "tok.txt");
  const char *text = "\n1 2  3\n\n   \t\n4\t511\r\n\r\n007"; /* no final newline */
  write_bytes(p, text, strlen(text));
  cloq_seqs s;
  CHECK_OK(cloq_seqs_read_tokens(p, 512, &s));
  assert_int_equal(s.n, 3);
  const int64_t want_len[3] = {3, 2, 1};
  const int32_t want[3][3] = {{1, 2, 3}, {4, 511, 0}, {7, 0, 0}};
  for (int64_t i = 0; i < 3; i++) {
    assert_int_equal(s.len[i], want_len[i]);
    for (int64_t k = 0; k < s.len[i]; k++) assert_int_equal(s.ids[i][k], want[i][k]);
  }
  cloq_seqs_free(&s);
  assert_int_equal(s.n, 0);
  assert_null(s.ids);
  cloq_seqs_free(&s); /* twice is harmless */
  cloq_seqs_free(NULL);
  free(p);
  rm_dir(dir);
  free(dir);
}

static void test_tokens_errors(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  char *p = join_path(dir, "bad.txt");
  static const struct {
    const char *text, *word;
  } cases[] = {
      {"1 2 x3\n", "bad.txt:1: token 'x3' is not a non-negative integer id"},
      {"1 2\n\n3 -4\n", "bad.txt:3: token '-4'"},
      {"1 2\n+5\n", "bad.txt:2: token '+5'"},
      {"1.5\n", "bad.txt:1: token '1.5'"},
      {"1\n2\n512\n", "bad.txt:3: token id 512 is out of range (vocab_size 512)"},
      {"99999999999999999999999\n", "bad.txt:1: token id 99999999999999999999999 is out of range"},
      {"", "no sequences in"},
      {"\n \n\t\r\n", "no sequences in"},
  };
  cloq_seqs s;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_bytes(p, cases[i].text, strlen(cases[i].text));
    EXPECT_FAIL(cloq_seqs_read_tokens(p, 512, &s), cases[i].word);
    assert_int_equal(s.n, 0);
    assert_null(s.ids);
  }
  free(p);
  p = join_path(dir, "missing.txt");
  EXPECT_FAIL(cloq_seqs_read_tokens(p, 512, &s), "cannot open");
  free(p);
  rm_dir(dir);
  free(dir);
}

int run_data_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_read_file),
      cmocka_unit_test(test_tokens_ok),
      cmocka_unit_test(test_tokens_errors),
  };
  return cmocka_run_group_tests_name("io/data", tests, NULL, NULL);
}
