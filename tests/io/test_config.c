/* test_config.c: config.json of the real stories260K-hf model, the transformers defaults, and
 * one error per kind of bad key (the message must name the key). */
#include "test_io.h"
#include "cloq_config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON "1e-05" must parse to the same double as the literal: exact comparison */
#define CONFIG_REAL_TOL 0.0

static void check_real(double want, double got, const char *what) {
  if (fabs(want - got) > CONFIG_REAL_TOL * fabs(want)) {
    print_error("%s: expected %.17g, got %.17g\n", what, want, got);
    fail();
  }
}

static void test_config_stories(void **state) {
  (void)state;
  char *dir = asset_path("stories260K-hf");
  cloq_config c;
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.dim, 64);
  assert_int_equal(c.hidden_dim, 172);
  assert_int_equal(c.n_layers, 5);
  assert_int_equal(c.n_heads, 8);
  assert_int_equal(c.n_kv_heads, 4);
  assert_int_equal(c.head_dim, 8);
  assert_int_equal(c.vocab_size, 512);
  assert_int_equal(c.max_pos, 512);
  assert_int_equal(c.tied, 1);
  assert_int_equal(c.bos_id, 1);
  check_real(10000.0, c.rope_theta, "rope_theta");
  check_real(1e-5, c.norm_eps, "rms_norm_eps");
  free(dir);
}

/* Writes DIR/config.json: a minimal valid config with the keys of the JSON object patch put over
 * it (a key with a JSON value replaces the default one). */
static void write_config(const char *dir, const char *patch) {
  json_t *c = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i}", "model_type", "llama", "hidden_size", 96,
                        "intermediate_size", 256, "num_hidden_layers", 2, "num_attention_heads",
                        6, "vocab_size", 300);
  json_error_t err;
  json_t *p = json_loads(patch, 0, &err);
  if (!c || !p) {
    print_error("bad test patch %s: %s\n", patch, err.text);
    fail();
  }
  assert_int_equal(json_object_update(c, p), 0);
  char *path = join_path(dir, "config.json");
  assert_int_equal(json_dump_file(c, path, JSON_INDENT(2)), 0);
  free(path);
  json_decref(p);
  json_decref(c);
}

static void test_config_defaults(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  write_config(dir, "{\"head_dim\": null, \"rope_scaling\": null}");
  cloq_config c;
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.n_kv_heads, 6);
  assert_int_equal(c.head_dim, 16);
  assert_int_equal(c.max_pos, 2048);
  assert_int_equal(c.tied, 0);
  assert_int_equal(c.bos_id, 1);
  check_real(1e-6, c.norm_eps, "default rms_norm_eps");
  check_real(10000.0, c.rope_theta, "default rope_theta");
  /* an integer-valued rope_theta is common in real configs */
  write_config(dir, "{\"rope_theta\": 500000, \"model_type\": \"mistral\"}");
  CHECK_OK(cloq_config_read(dir, &c));
  check_real(500000.0, c.rope_theta, "integer rope_theta");
  rm_dir(dir);
  free(dir);
}

static void test_config_errors(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  cloq_config c;
  EXPECT_FAIL(cloq_config_read(dir, &c), "config.json"); /* no file */

  char *p = join_path(dir, "config.json");
  const char *missing = "{\"model_type\": \"llama\", \"intermediate_size\": 256, "
                        "\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"vocab_size\": 3}";
  write_bytes(p, missing, strlen(missing));
  EXPECT_FAIL(cloq_config_read(dir, &c), "required key hidden_size is missing");
  write_bytes(p, "{\"hidden_size\": ", 16);
  EXPECT_FAIL(cloq_config_read(dir, &c), "JSON");
  write_bytes(p, "[1, 2]", 6);
  EXPECT_FAIL(cloq_config_read(dir, &c), "object");
  free(p);

  static const struct {
    const char *extra, *word;
  } cases[] = {
      {"{\"hidden_size\": \"96\"}", "key hidden_size must be an integer"},
      {"{\"hidden_size\": 96.0}", "key hidden_size must be an integer"},
      {"{\"hidden_size\": -96}", "key hidden_size must be positive"},
      {"{\"num_key_value_heads\": 4}", "num_key_value_heads"},
      {"{\"num_key_value_heads\": true}", "num_key_value_heads must be an integer"},
      {"{\"head_dim\": 15}", "head_dim"},
      {"{\"rms_norm_eps\": \"1e-5\"}", "key rms_norm_eps must be a number"},
      {"{\"rms_norm_eps\": 0}", "rms_norm_eps"},
      {"{\"tie_word_embeddings\": 1}", "key tie_word_embeddings must be true or false"},
      {"{\"hidden_act\": \"gelu\"}", "hidden_act"},
      {"{\"attention_bias\": true}", "attention_bias"},
      {"{\"mlp_bias\": true}", "mlp_bias"},
      {"{\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}", "rope_scaling"},
      {"{\"model_type\": \"gpt2\"}", "model_type"},
      {"{\"model_type\": 3}", "model_type must be a string"},
      {"{\"bos_token_id\": 300}", "bos_token_id"},
      {"{\"vocab_size\": 0}", "vocab_size"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_config(dir, cases[i].extra);
    EXPECT_FAIL(cloq_config_read(dir, &c), cases[i].word);
  }
  rm_dir(dir);
  free(dir);
}

int run_config_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_stories),
      cmocka_unit_test(test_config_defaults),
      cmocka_unit_test(test_config_errors),
  };
  return cmocka_run_group_tests_name("io/config", tests, NULL, NULL);
}
