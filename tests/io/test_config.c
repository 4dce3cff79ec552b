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
      {"{\"attention_bias\": 1}", "key attention_bias must be true or false"},
      {"{\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 2.0}}", "rope_type \"yarn\""},
      {"{\"rope_parameters\": {\"rope_type\": \"dynamic\", \"factor\": 2.0}}", "\"dynamic\""},
      {"{\"rope_parameters\": {\"rope_type\": \"longrope\"}}", "\"longrope\""},
      {"{\"rope_scaling\": {\"rope_type\": \"linear\"}}", "needs factor"},
      {"{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}", "low_freq_factor"},
      {"{\"rope_parameters\": {\"rope_type\": \"default\", \"partial_rotary_factor\": 0.5}}",
       "partial_rotary_factor"},
      {"{\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"default\"}}}",
       "per-layer RoPE"},
      {"{\"model_type\": \"gpt2\"}", "model_type \"gpt2\" is not supported"},
      {"{\"model_type\": \"mixtral\"}", "mixture-of-experts"},
      {"{\"model_type\": \"qwen2_moe\"}", "mixture-of-experts"},
      {"{\"model_type\": \"qwen3_moe\"}", "model_type \"qwen3_moe\""},
      {"{\"model_type\": \"qwen2\", \"use_sliding_window\": true}", "use_sliding_window"},
      {"{\"model_type\": \"qwen3\", \"head_dim\": 16, \"layer_types\": [\"full_attention\", "
       "\"sliding_attention\"]}", "layer_types[1]"},
      {"{\"model_type\": \"mistral\", \"sliding_window\": 0}", "sliding_window"},
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

/* The four families: what each key turns on, in the transformers 4 and 5 spellings. */
static void test_config_families(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  cloq_config c;
  /* Llama 3.1 as transformers 4 saved it */
  write_config(dir, "{\"rope_theta\": 500000.0, \"rope_scaling\": {\"rope_type\": \"llama3\", "
               "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
               "\"original_max_position_embeddings\": 8192}, \"tie_word_embeddings\": true}");
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.family, CLOQ_FAM_LLAMA);
  assert_int_equal(c.rope_type, CLOQ_ROPE_LLAMA3);
  check_real(500000.0, c.rope_theta, "rope_theta");
  check_real(8.0, c.rope_factor, "factor");
  check_real(4.0, c.rope_high, "high_freq_factor");
  assert_int_equal(c.rope_orig_max, 8192);
  assert_int_equal(c.tied, 1);
  assert_int_equal(c.bias, 0);
  /* the same in transformers 5's rope_parameters, which holds rope_theta */
  write_config(dir, "{\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 250000.0, "
               "\"factor\": 32.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
               "\"original_max_position_embeddings\": 8192}}");
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.rope_type, CLOQ_ROPE_LLAMA3);
  check_real(250000.0, c.rope_theta, "rope_parameters.rope_theta");
  check_real(32.0, c.rope_factor, "factor");
  /* the older "type" spelling, linear */
  write_config(dir, "{\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}, "
               "\"attention_bias\": true, \"mlp_bias\": true}");
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.rope_type, CLOQ_ROPE_LINEAR);
  check_real(2.0, c.rope_factor, "factor");
  assert_int_equal(c.bias, 0x7f); /* every linear */
  /* qwen2: q/k/v biases whatever attention_bias says; qwen3: q/k norms, head_dim 128 default */
  write_config(dir, "{\"model_type\": \"qwen2\", \"use_sliding_window\": false, "
               "\"sliding_window\": 4096}");
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.family, CLOQ_FAM_QWEN2);
  assert_int_equal(c.bias, 0x7);
  assert_int_equal(c.window, 0);
  assert_int_equal(c.qk_norm, 0);
  write_config(dir, "{\"model_type\": \"qwen3\", \"layer_types\": [\"full_attention\"]}");
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.family, CLOQ_FAM_QWEN3);
  assert_int_equal(c.qk_norm, 1);
  assert_int_equal(c.head_dim, 128);
  assert_int_equal(c.bias, 0);
  write_config(dir, "{\"model_type\": \"qwen3\", \"head_dim\": 24, \"attention_bias\": true}");
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.head_dim, 24);
  assert_int_equal(c.bias, 0xf);
  /* mistral: the window (null: none), every layer sliding */
  write_config(dir, "{\"model_type\": \"mistral\", \"sliding_window\": 4096, \"layer_types\": "
               "[\"sliding_attention\", \"sliding_attention\"]}");
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.family, CLOQ_FAM_MISTRAL);
  assert_int_equal(c.window, 4096);
  write_config(dir, "{\"model_type\": \"mistral\", \"sliding_window\": null}");
  CHECK_OK(cloq_config_read(dir, &c));
  assert_int_equal(c.window, 0);
  rm_dir(dir);
  free(dir);
}

/* cloq_rope_inv_freq against transformers' formulas, written out here in double (llama3: the
 * three bands of _compute_llama3_parameters). */
static void test_rope_inv_freq(void **state) {
  (void)state;
  cloq_config c = {.head_dim = 128, .rope_theta = 500000.0, .rope_type = CLOQ_ROPE_LLAMA3,
                   .rope_factor = 8.0, .rope_low = 1.0, .rope_high = 4.0, .rope_orig_max = 8192};
  double inv[64];
  cloq_rope_inv_freq(&c, NULL, inv);
  int low = 0, mid = 0, high = 0;
  for (int i = 0; i < 64; i++) {
    double f = pow(500000.0, -(double)(2 * i) / 128.0), wl = 2 * M_PI / f, want;
    if (wl < 8192.0 / 4.0) {
      want = f;
      high++;
    } else if (wl > 8192.0 / 1.0) {
      want = f / 8.0;
      low++;
    } else {
      double sm = (8192.0 / wl - 1.0) / 3.0;
      want = (1 - sm) * f / 8.0 + sm * f;
      mid++;
    }
    check_real(want, inv[i], "llama3 inverse frequency");
  }
  assert_true(low > 0 && mid > 0 && high > 0); /* all three bands are exercised */
  c.rope_type = CLOQ_ROPE_LINEAR;
  c.rope_factor = 4.0;
  cloq_rope_inv_freq(&c, NULL, inv);
  check_real(pow(500000.0, -2.0 / 128.0) / 4.0, inv[1], "linear");
  c.rope_type = CLOQ_ROPE_FREQS;
  double one[64];
  float ones[64];
  for (int i = 0; i < 64; i++) ones[i] = i == 3 ? 2.0f : 1.0f;
  cloq_rope_inv_freq(&c, ones, one);
  check_real(pow(500000.0, -6.0 / 128.0) / 2.0, one[3], "rope_freqs divisor");
  check_real(pow(500000.0, -8.0 / 128.0), one[4], "rope_freqs divisor 1");
}

int run_config_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_stories),
      cmocka_unit_test(test_config_defaults),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_config_families),
      cmocka_unit_test(test_rope_inv_freq),
  };
  return cmocka_run_group_tests_name("io/config", tests, NULL, NULL);
}
