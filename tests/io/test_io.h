/* test_io.h: helpers shared by the io unit tests (one binary, one group per source file). */
#ifndef TEST_IO_H
#define TEST_IO_H

#include <setjmp.h> /* cmocka needs these before its header */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloq_err.h"

/* The assets folder: $CLOQ_ASSETS, else the default compiled in by meson. */
const char *assets_dir(void);
/* assets_dir()/rel, malloc'd. */
char *asset_path(const char *rel);
/* dir/file, malloc'd. */
char *join_path(const char *dir, const char *file);
/* A fresh empty directory under $TMPDIR (or /tmp), malloc'd; rm_dir removes it and its files. */
char *make_tmpdir(void);
void rm_dir(const char *dir);
void write_bytes(const char *path, const void *data, size_t len);
double now_seconds(void);

/* A call that must succeed; on failure the recorded error is printed. */
#define CHECK_OK(call)                                                                             \
  do {                                                                                             \
    if ((call) != 0) {                                                                             \
      print_error("%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cloq_err_msg());          \
      fail();                                                                                      \
    }                                                                                              \
  } while (0)

/* A call that must fail with a one-line message containing word. */
#define EXPECT_FAIL(call, word) expect_fail_((call), (word), #call, __FILE__, __LINE__)
void expect_fail_(int rc, const char *word, const char *what, const char *file, int line);

int run_config_tests(void);
int run_safetensors_tests(void);
int run_half_tests(void);
int run_tokenizer_tests(void);
int run_nfc_tests(void);
int run_data_tests(void);

#endif
