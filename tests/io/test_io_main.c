/* test_io_main.c: the io test binary. `test_io GROUP` runs one group (config, safetensors, half,
 * tokenizer, nfc, data); no argument runs them all. Assets come from $CLOQ_ASSETS (meson sets
 * it). */
#include "test_io.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef CLOQ_TEST_ASSETS_DEFAULT
#define CLOQ_TEST_ASSETS_DEFAULT "../shared/assets"
#endif

const char *assets_dir(void) {
  const char *e = getenv("CLOQ_ASSETS");
  return e && e[0] ? e : CLOQ_TEST_ASSETS_DEFAULT;
}

char *join_path(const char *dir, const char *file) {
  size_t n = strlen(dir) + strlen(file) + 2;
  char *p = malloc(n);
  assert_non_null(p);
  snprintf(p, n, "%s/%s", dir, file);
  return p;
}

char *asset_path(const char *rel) { return join_path(assets_dir(), rel); }

char *make_tmpdir(void) {
  const char *base = getenv("TMPDIR");
  char *tmpl = join_path(base && base[0] ? base : "/tmp", "cloq-io-test-XXXXXX");
  if (!mkdtemp(tmpl)) {
    print_error("mkdtemp(%s) failed\n", tmpl);
    fail();
  }
  return tmpl;
}

void rm_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *p = join_path(dir, e->d_name);
    unlink(p);
    free(p);
  }
  closedir(d);
  rmdir(dir);
}

void write_bytes(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(len ? fwrite(data, 1, len, f) : 0, len);
  assert_int_equal(fclose(f), 0);
}

double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void expect_fail_(int rc, const char *word, const char *what, const char *file, int line) {
  const char *msg = cloq_err_msg();
  if (rc == 0) {
    print_error("%s:%d: %s succeeded; expected a failure mentioning \"%s\"\n", file, line, what,
                word);
    fail();
  }
  if (!strstr(msg, word)) {
    print_error("%s:%d: %s: expected a message containing \"%s\", got \"%s\"\n", file, line,
                what, word, msg);
    fail();
  }
  if (strchr(msg, '\n')) {
    print_error("%s:%d: %s: message is not one line: \"%s\"\n", file, line, what, msg);
    fail();
  }
  printf("    expected error [%s]: %s\n", word, msg);
  cloq_err_clear();
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    int (*run)(void);
  } groups[] = {{"config", run_config_tests},       {"safetensors", run_safetensors_tests},
                {"half", run_half_tests},           {"tokenizer", run_tokenizer_tests},
                {"nfc", run_nfc_tests},             {"data", run_data_tests}};
  int failed = 0, ran = 0;
  for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
    if (argc > 1 && strcmp(argv[1], groups[i].name)) continue;
    ran++;
    failed += groups[i].run();
  }
  if (!ran) {
    fprintf(stderr, "test_io: unknown group %s\n", argv[1]);
    return 2;
  }
  return failed ? 1 : 0;
}
