/* fuzz_safetensors.c: libFuzzer target for the checkpoint reader (io/safetensors.c): a single
 * model.safetensors, the sharded form (model.safetensors.index.json and its shards), and a GGUF
 * file opened as a model. cloq_ckpt_open takes only a folder, so each input is written into a
 * scratch folder (tests/fuzz/fuzz_util.h):
 *   - input starting with "GGUF": the file model.gguf, opened as the model path;
 *   - else split at SHARD_SEP: one part is model.safetensors; two or more parts are the index
 *     (part 0) and the shards model-0000K-of-0000N.safetensors (parts 1..N).
 * Every tensor the headers name (and the Hugging Face names of a small Llama) is looked up and,
 * when small, read as float32. The reader maps files, so AddressSanitizer cannot see a read past a
 * shard's end: the values read are therefore compared, bit for bit, with the input's own bytes at
 * the header's data_offsets (parsed again here with jansson), which catches any tensor placed
 * outside its file or at the wrong offset. Error returns are the expected outcome for most inputs;
 * a crash, sanitizer report, leak or a mismatch (abort) is a failure. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloq_err.h"
#include "cloq_config.h"
#include "cloq_ckpt.h"
#include "cloq_half.h"
#include "cloq_gguf.h"
#include "fuzz_util.h"

#define SHARD_SEP "\n--cloq-fuzz-shard--\n"
#define MAX_SHARDS 8
#define MAX_READ ((int64_t)1 << 18) /* floats: larger tensors are looked up, not read */

typedef struct {
  char name[64];
  const uint8_t *bytes;
  size_t len;
  json_t *hdr; /* the parsed header, or NULL */
  uint64_t hlen;
} part;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *parse_header(const part *p, uint64_t *hlen) {
  if (p->len < 8) return NULL;
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= (uint64_t)p->bytes[i] << (8 * i);
  if (n > p->len - 8) return NULL;
  *hlen = n;
  return json_loadb((const char *)p->bytes + 8, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
}

/* Reads tensor name and compares it with the bytes of the file it lives in (parts[0..np)). */
static void check_tensor(const cloq_ckpt *st, const char *name, part *parts, int np) {
  cloq_tensor t;
  int frc = cloq_ckpt_find(st, name, &t);
  fuzz_report(name, frc);
  if (frc != CLOQ_OK) return;
  if (t.ndim < 0 || t.ndim > 4 || t.numel < 0) abort();
  if (t.numel > MAX_READ) return;
  float *out = malloc((size_t)(t.numel ? t.numel : 1) * sizeof *out);
  if (!out) return;
  /* a rank that differs: a shape mismatch, reported before anything is read */
  if (cloq_ckpt_read_f32(st, name, t.ndim == 4 ? 3 : t.ndim + 1, t.shape, out) == CLOQ_OK) abort();
  fuzz_report("  read with another rank", CLOQ_ERR);
  int rrc = cloq_ckpt_read_f32(st, name, t.ndim, t.shape, out), ok = rrc == CLOQ_OK;
  fuzz_report("  read", rrc);
  /* the oracle: safetensors files only (a GGUF model's tensors are dequantized) */
  const part *p = NULL;
  for (int i = 0; i < np && !p; i++) {
    size_t fl = strlen(t.file), nl = strlen(parts[i].name);
    if (fl > nl && t.file[fl - nl - 1] == '/' && !strcmp(t.file + fl - nl, parts[i].name) &&
        parts[i].hdr)
      p = &parts[i];
  }
  if (ok && p && (t.dtype == CLOQ_DT_F32 || t.dtype == CLOQ_DT_F16 || t.dtype == CLOQ_DT_BF16)) {
    json_t *off = json_object_get(json_object_get(p->hdr, name), "data_offsets");
    json_int_t b = json_integer_value(json_array_get(off, 0));
    size_t es = t.dtype == CLOQ_DT_F32 ? 4 : 2;
    uint64_t start = 8 + p->hlen + (uint64_t)b, nb = (uint64_t)t.numel * es;
    if (!json_is_integer(json_array_get(off, 0)) || b < 0 || start > p->len ||
        nb > p->len - start) {
      fprintf(stderr, "fuzz: tensor %s of %s: bytes outside the file\n", name, p->name);
      abort();
    }
    const uint8_t *src = p->bytes + start;
    if (t.data != NULL && memcmp(t.data, src, (size_t)nb)) {
      fprintf(stderr, "fuzz: tensor %s of %s: data pointer not at its offset\n", name, p->name);
      abort();
    }
    for (int64_t i = 0; i < t.numel; i++) {
      float want;
      if (es == 4) {
        memcpy(&want, src + 4 * i, 4);
      } else {
        uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
        want = t.dtype == CLOQ_DT_F16 ? cloq_f16_to_f32(h) : cloq_bf16_to_f32(h);
      }
      if (memcmp(&want, &out[i], 4)) {
        fprintf(stderr, "fuzz: tensor %s of %s: value %lld differs\n", name, p->name,
                (long long)i);
        abort();
      }
    }
  }
  free(out);
}

/* The Hugging Face names of a small Llama (what a GGUF model's tensors are renamed to). */
static void check_llama_names(const cloq_ckpt *st, part *parts, int np) {
  static const char *const top[] = {"model.embed_tokens.weight", "model.norm.weight",
                                    "lm_head.weight"};
  static const char *const mods[] = {
      "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
      "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
      "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
  for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) check_tensor(st, top[i], parts, np);
  char name[128];
  for (int l = 0; l < 2; l++)
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
      snprintf(name, sizeof name, "model.layers.%d.%s", l, mods[i]);
      check_tensor(st, name, parts, np);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int prev_shards = 0;
  part parts[MAX_SHARDS + 1];
  int np = 0;
  char model[8192];
  fuzz_unlink("model.safetensors");
  fuzz_unlink("model.safetensors.index.json");
  fuzz_unlink("model.gguf");
  for (int i = 1; i <= prev_shards; i++) {
    char nm[64];
    snprintf(nm, sizeof nm, "model-%05d-of-%05d.safetensors", i, prev_shards);
    fuzz_unlink(nm);
  }
  prev_shards = 0;
  if (size >= 4 && !memcmp(data, "GGUF", 4)) {
    fuzz_write("model.gguf", data, size);
    fuzz_path(model, sizeof model, "model.gguf");
  } else {
    size_t pos = 0;
    const uint8_t *b;
    size_t n;
    while (np < MAX_SHARDS + 1 && fuzz_next_part(data, size, &pos, SHARD_SEP, &b, &n)) {
      parts[np].bytes = b;
      parts[np].len = n;
      parts[np].hdr = NULL;
      np++;
    }
    if (np == 1) {
      strcpy(parts[0].name, "model.safetensors");
    } else {
      strcpy(parts[0].name, "model.safetensors.index.json");
      for (int i = 1; i < np; i++)
        snprintf(parts[i].name, sizeof parts[i].name, "model-%05d-of-%05d.safetensors", i,
                 np - 1);
      prev_shards = np - 1;
    }
    for (int i = 0; i < np; i++) fuzz_write(parts[i].name, parts[i].bytes, parts[i].len);
    snprintf(model, sizeof model, "%s", fuzz_dir());
  }

  cloq_ckpt *st = NULL;
  int rc;
  if (np == 0) { /* GGUF: parsed once, its config, then its tensors (as cloq_model_open does) */
    cloq_gguf *g = NULL;
    cloq_config cfg;
    rc = cloq_gguf_open(model, &g);
    if (rc == CLOQ_OK) rc = cloq_gguf_config(g, &cfg);
    if (rc == CLOQ_OK) rc = cloq_ckpt_from_gguf(&g, model, &cfg, &st);
    cloq_gguf_close(&g);
  } else {
    rc = cloq_ckpt_open(model, &st);
  }
  fuzz_report("cloq_ckpt_open", rc);
  if (rc == CLOQ_OK) {
    for (int i = np == 1 ? 0 : 1; i < np; i++) /* the shards (not the index) */
      parts[i].hdr = parse_header(&parts[i], &parts[i].hlen);
    for (int i = 0; i < np; i++) {
      const char *key;
      json_t *val;
      json_object_foreach(parts[i].hdr, key, val) check_tensor(st, key, parts, np);
    }
    check_llama_names(st, parts, np);
    (void)cloq_ckpt_has(st, "no such tensor");
    cloq_ckpt_close(&st);
    for (int i = 0; i < np; i++) json_decref(parts[i].hdr);
  }
  if (st) abort(); /* a failed open leaves *out NULL */
  cloq_err_clear();
  return 0;
}
