/* cloq_sample: `cloq sample`, sequences drawn from the full-precision model.
 *
 * What a sequence is: BOS followed by length - 1 drawn tokens, exactly `length` in all. Drawing
 * goes on through any BOS or EOS the model emits (documents packed one after another, as in a
 * text file cut into windows), so every sequence is a full calibration window.
 *
 * How a token is drawn from the logits l (float32, vocab) of the last position:
 *  - temperature 0: argmax (the lowest id among equal maxima); no random number is used;
 *  - otherwise, in float64: e_j = exp((l_j - max l) / temperature), S = sum of e_j in id order;
 *    with top-p < 1 the nucleus is the smallest prefix of the ids sorted by decreasing e_j (ties
 *    by increasing id) whose sum, accumulated in that order, reaches top_p * S; every other e_j is
 *    set to 0 and S re-summed in id order. Then one uniform u in [0, 1) (cloq_rng_uniform) picks
 *    the first id j whose running sum e_0 + ... + e_j, in id order, exceeds u * S.
 * Only ids with e_j >= (1 - top_p) / (vocab - 1) * S (and the argmax) can be in the nucleus (a
 * smaller one would leave more than 1 - top_p of the mass to at most vocab - 1 ids no larger than
 * itself), so only those are sorted, as llama2.c does; the result is the same as a full sort.
 * Sequence i draws from its own splitmix64 stream seeded cloq_seed_mix(seed, i, STREAM), so it
 * does not depend on --n and the tests can replay a draw from the dumped logits.
 *
 * Generation is incremental: cloq_worker_decode keeps every block's keys and values, so a token
 * costs one position's forward, not the whole prefix's. The output is written to FILE.tmp and
 * renamed into place only when complete.
 */
#include "cloq_sample.h"
#include "cloq_calib.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloq_cli.h"
#include "cloq_clock.h"
#include "cloq_err.h"
#include "cloq_config.h"
#include "cloq_ckpt.h"
#include "cloq_tok.h"
#include "cloq_linalg.h"
#include "cloq_signal.h"
#include "cloq_worker.h"

/* Third input of every sequence's seed (ASCII "sample"). Part of the output's definition: changing
 * it changes every sequence drawn with a given seed. */
#define STREAM 0x73616d706c65ULL
#define PROGRESS_SEC 10.0 /* at most one progress line this often */
#define DEFAULT_N 128
#define DEFAULT_LENGTH 512

typedef struct {
  const char *model, *out, *tokenizer, *dump_logits;
  int64_t n, length; /* length -1: min(DEFAULT_LENGTH, max_position_embeddings) */
  double temperature, top_p;
  uint64_t seed;
  int text, force, help;
} sample_opts;

static void usage(void) {
  printf(
      "usage: cloq sample --model DIR --out FILE [options]\n"
      "Draws sequences from the full-precision model: calibration data for\n"
      "`cloq init --calib FILE --calib-format tokens`, or held-out data (another --seed) for\n"
      "`cloq eval --data FILE --data-format tokens`. Each sequence is BOS and length - 1 drawn\n"
      "tokens; drawing goes on through BOS/EOS (documents are packed), so every sequence is a\n"
      "full window.\n"
      "  --model DIR            Hugging Face model folder (config.json, model.safetensors)\n"
      "  --out FILE             output, written to FILE.tmp and renamed (refused if it exists,\n"
      "                         unless --force)\n"
      "  --force                replace an existing FILE\n"
      "  --format F             tokens | text (default tokens: one sequence of ids per line;\n"
      "                         text: decoded with the tokenizer, sequences separated by a blank\n"
      "                         line, BOS/EOS inside a sequence written as a line break)\n"
      "  --tokenizer FILE       tokenizer for --format text: tokenizer.json, GGUF or llama2.c\n"
      "                         (default: the GGUF itself, DIR/tokenizer.json, DIR/tokenizer.bin\n"
      "                         or DIR/tok*.bin)\n"
      "  --n N                  number of sequences (default %d)\n"
      "  --length T             tokens per sequence, BOS included, 2..max_position_embeddings\n"
      "                         (default min(%d, max_position_embeddings))\n"
      "  --temperature F        softmax temperature, >= 0; 0 = greedy argmax (default 1.0)\n"
      "  --top-p F              nucleus sampling: keep the most likely tokens up to this mass,\n"
      "                         in (0, 1]; 1 = off (default 1.0)\n"
      "  --seed S               sequence i depends only on the model, the settings, S and i (not\n"
      "                         on --n) (default 0)\n"
      "  --dump-logits FILE     write the logits of every position of sequence 0 that a token was\n"
      "                         drawn from (length - 1 lines of vocab values; for tests)\n",
      DEFAULT_N, DEFAULT_LENGTH);
}

static int parse_args(int argc, char **argv, sample_opts *o) {
  memset(o, 0, sizeof *o);
  o->n = DEFAULT_N;
  o->length = -1;
  o->temperature = 1.0;
  o->top_p = 1.0;
  cloq_args sc = cloq_args_begin(argc, argv, 1, "sample");
  for (const char *f; (f = cloq_args_next(&sc));) {
    if (cloq_args_help_force(&sc, &o->help, &o->force)) continue;
    const char *a = cloq_args_peek(&sc);
    if (cloq_args_is(&sc, "--model")) o->model = a;
    else if (cloq_args_is(&sc, "--out")) o->out = a;
    else if (cloq_args_is(&sc, "--tokenizer")) o->tokenizer = a;
    else if (cloq_args_is(&sc, "--dump-logits")) o->dump_logits = a;
    else if (cloq_args_is(&sc, "--n")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, INT32_MAX, &o->n));
    else if (cloq_args_is(&sc, "--length")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 2, INT32_MAX, &o->length));
    else if (cloq_args_is(&sc, "--temperature")) {
      CLOQ_CALL(cloq_cli_parse_f64(f, a, -HUGE_VAL, HUGE_VAL, &o->temperature));
      CLOQ_CHECK(o->temperature >= 0, "--temperature: %g is negative", o->temperature);
    } else if (cloq_args_is(&sc, "--top-p")) {
      CLOQ_CALL(cloq_cli_parse_f64(f, a, -HUGE_VAL, HUGE_VAL, &o->top_p));
      CLOQ_CHECK(o->top_p > 0 && o->top_p <= 1, "--top-p: %g is not in (0, 1]", o->top_p);
    } else if (cloq_args_is(&sc, "--seed")) {
      int64_t v;
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 0, INT64_MAX, &v));
      o->seed = (uint64_t)v;
    } else if (cloq_args_is(&sc, "--format")) {
      if (!strcmp(a, "text")) o->text = 1;
      else if (!strcmp(a, "tokens")) o->text = 0;
      else return CLOQ_FAIL("--format: '%s' is not one of tokens, text", a);
    } else
      return cloq_args_unknown(&sc);
  }
  CLOQ_CALL(sc.rc);
  if (o->help) return CLOQ_OK;
  CLOQ_CHECK(o->model, "--model is required");
  CLOQ_CHECK(o->out, "--out is required");
  return CLOQ_OK;
}

/* ---- drawing one token ----------------------------------------------------------------------- */

typedef struct {
  double *e;     /* (vocab) unnormalized probabilities */
  int32_t *cand; /* (vocab) top-p candidates */
  unsigned char *kept; /* (vocab) all 0 between draws */
} draw_buf;

/* Decreasing e, ties by increasing id: a total order, so qsort's instability does not matter. */
static int by_prob(const void *a, const void *b, void *arg) {
  const double *e = arg;
  int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
  if (e[i] != e[j]) return e[i] > e[j] ? -1 : 1;
  return (i > j) - (i < j);
}

/* The draw the file comment defines; lg (V) float32 logits. */
static int32_t draw_token(const float *lg, int64_t V, double temp, double top_p, cloq_rng *g,
                          draw_buf *db) {
  int64_t am = 0;
  for (int64_t j = 1; j < V; j++)
    if (lg[j] > lg[am]) am = j;
  if (temp == 0) return (int32_t)am;
  double *e = db->e, mx = (double)lg[am], S = 0;
  for (int64_t j = 0; j < V; j++) {
    e[j] = exp(((double)lg[j] - mx) / temp);
    S += e[j];
  }
  if (top_p < 1 && V > 1) {
    double cut = (1 - top_p) / (double)(V - 1) * S * (1 - 1e-9); /* margin for rounding */
    int64_t nc = 0;
    for (int64_t j = 0; j < V; j++)
      if (e[j] >= cut || j == am) db->cand[nc++] = (int32_t)j;
    qsort_r(db->cand, (size_t)nc, sizeof *db->cand, by_prob, e);
    double acc = 0, goal = top_p * S;
    int64_t keep = nc;
    for (int64_t k = 0; k < nc; k++) {
      acc += e[db->cand[k]];
      if (acc >= goal) {
        keep = k + 1;
        break;
      }
    }
    /* zero everything outside the nucleus and re-sum in id order */
    for (int64_t k = 0; k < keep; k++) db->kept[db->cand[k]] = 1;
    S = 0;
    for (int64_t j = 0; j < V; j++) {
      if (!db->kept[j]) e[j] = 0;
      S += e[j];
    }
    for (int64_t k = 0; k < keep; k++) db->kept[db->cand[k]] = 0;
  }
  double target = cloq_rng_uniform(g) * S, acc = 0;
  int64_t last = am;
  for (int64_t j = 0; j < V; j++) {
    if (e[j] <= 0) continue;
    acc += e[j];
    if (acc > target) return (int32_t)j;
    last = j;
  }
  return (int32_t)last; /* u * S rounded up to the total: the last id with mass */
}

/* ---- output ---------------------------------------------------------------------------------- */

/* One sequence as text: llama2.c's decoding (the ' ' after BOS dropped, <0xNN> pieces as the
 * byte NN, other control bytes skipped as run.c's safe_printf does, bytes >= 0x80 kept so that
 * UTF-8 survives); BOS/EOS (ids 1, 2) inside the sequence start a new line, <unk> is skipped. */
static void write_text(FILE *f, const cloq_tok *tok, const int32_t *ids, int64_t len) {
  for (int64_t j = 1; j < len; j++) {
    int32_t id = ids[j];
    if (id == 1 || id == 2) {
      fputc('\n', f);
      continue;
    }
    if (id == 0) continue;
    size_t n;
    const char *p = cloq_tok_decode(tok, ids[j - 1], id, &n);
    if (!p || n == 0) continue;
    unsigned char b0 = (unsigned char)p[0];
    if (n == 1 && b0 < 0x80 && !(isprint(b0) || isspace(b0))) continue;
    fwrite(p, 1, n, f);
  }
  fputc('\n', f);
}

static int write_tokens_line(FILE *f, const int32_t *ids, int64_t len) {
  for (int64_t j = 0; j < len; j++) fprintf(f, j ? " %d" : "%d", (int)ids[j]);
  fputc('\n', f);
  return CLOQ_OK;
}

static int dump_logits(const char *path, const float *lg, int64_t rows, int64_t vocab) {
  FILE *f = fopen(path, "w");
  CLOQ_CHECK(f, "%s: cannot create: %s", path, strerror(errno));
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < vocab; j++)
      fprintf(f, "%.9g%c", (double)lg[i * vocab + j], j + 1 == vocab ? '\n' : ' ');
  int bad = ferror(f);
  CLOQ_CHECK(fclose(f) == 0 && !bad, "%s: write failed", path);
  return CLOQ_OK;
}

/* ---- the run --------------------------------------------------------------------------------- */

typedef struct {
  cloq_model *model;
  cloq_config cfg;
  cloq_ckpt *st; /* model->st */
  cloq_tok *tok;
  cloq_worker *w;
  float *embed;  /* (vocab, dim) */
  float *logits; /* (vocab) */
  float *dump;   /* (length - 1, vocab) with --dump-logits */
  int32_t *ids;  /* (length) */
  draw_buf db;
  FILE *f;
  char *tmp;
} sample_ctx;

static void ctx_free(sample_ctx *c) {
  if (c->f) {
    fclose(c->f);
    remove(c->tmp); /* only open on failure: nothing is left at FILE or FILE.tmp */
  }
  free(c->tmp);
  free(c->ids);
  free(c->dump);
  free(c->logits);
  free(c->embed);
  free(c->db.e);
  free(c->db.cand);
  free(c->db.kept);
  cloq_worker_destroy(&c->w);
  cloq_tok_free(&c->tok);
  cloq_model_close(&c->model);
}

static int sample_run(const sample_opts *o, sample_ctx *c, double t_start) {
  struct stat sb;
  if (stat(o->out, &sb) == 0) {
    CLOQ_CHECK(!S_ISDIR(sb.st_mode), "--out %s is a folder", o->out);
    CLOQ_CHECK(o->force, "%s exists (use --force to replace it)", o->out);
  }
  CLOQ_CALL(cloq_model_open(o->model, &c->model));
  c->cfg = c->model->cfg;
  c->st = c->model->st;
  const cloq_config *cfg = &c->cfg;
  int64_t T = o->length > 0 ? o->length : cfg->max_pos < DEFAULT_LENGTH ? cfg->max_pos
                                                                        : DEFAULT_LENGTH;
  CLOQ_CHECK(T >= 2 && T <= cfg->max_pos,
             "--length %lld is out of range [2, %lld] (max_position_embeddings)", (long long)T,
             (long long)cfg->max_pos);
  int64_t V = cfg->vocab_size, D = cfg->dim;
  CLOQ_CHECK(V <= INT32_MAX, "vocab_size %lld does not fit token ids", (long long)V);
  CLOQ_CHECK(cfg->bos_id >= 0 && cfg->bos_id < V, "bos_token_id %lld is not below vocab_size %lld",
             (long long)cfg->bos_id, (long long)V);
  if (o->text) CLOQ_CALL(cloq_model_tokenizer(c->model, o->tokenizer, &c->tok));
  int64_t ne, nd;
  CLOQ_CALL(cloq_mul64(V, D, &ne));
  CLOQ_ALLOC(c->embed, ne, "embedding table");
  int64_t shape[2] = {V, D};
  CLOQ_CALL(cloq_ckpt_read_f32(c->st, "model.embed_tokens.weight", 2, shape, c->embed));
  cloq_worker_params wp = {.b0 = 0, .b1 = cfg->n_layers, .head = 1, .max_t = T, .kv_cache = 1};
  CLOQ_CALL(cloq_worker_create(cfg, c->st, &wp, &c->w));
  CLOQ_ALLOC(c->logits, V, "logits");
  CLOQ_ALLOC(c->ids, T, "token ids");
  CLOQ_ALLOC(c->db.e, V, "probabilities");
  CLOQ_ALLOC(c->db.cand, V, "probabilities");
  CLOQ_ALLOC(c->db.kept, V, "probabilities");
  if (o->dump_logits) {
    CLOQ_CALL(cloq_mul64(T - 1, V, &nd));
    CLOQ_ALLOC(c->dump, nd, "dumped logits");
  }

  size_t plen = strlen(o->out);
  CLOQ_ALLOC(c->tmp, plen + 5, "path");
  snprintf(c->tmp, plen + 5, "%s.tmp", o->out);
  c->f = fopen(c->tmp, "w");
  CLOQ_CHECK(c->f, "%s: cannot create: %s", c->tmp, strerror(errno));
  printf("cloq sample: %s: %lld sequences of %lld tokens, temperature %g, top-p %g, seed %llu, "
         "%s -> %s\n",
         o->model, (long long)o->n, (long long)T, o->temperature, o->top_p,
         (unsigned long long)o->seed, o->text ? "text" : "tokens", o->out);
  fflush(stdout);

  cloq_signal_install();
  double t0 = cloq_now(), last = t0;
  for (int64_t i = 0; i < o->n; i++) {
    cloq_rng g;
    cloq_rng_seed(&g, cloq_seed_mix(o->seed, (uint64_t)i, STREAM));
    c->ids[0] = (int32_t)cfg->bos_id;
    for (int64_t pos = 0; pos + 1 < T; pos++) {
      CLOQ_CALL(cloq_worker_decode(c->w, c->embed + (int64_t)c->ids[pos] * D, pos, c->logits));
      if (i == 0 && c->dump) memcpy(c->dump + pos * V, c->logits, (size_t)V * sizeof(float));
      c->ids[pos + 1] = draw_token(c->logits, V, o->temperature, o->top_p, &g, &c->db);
    }
    if (o->text) {
      if (i) fputc('\n', c->f);
      write_text(c->f, c->tok, c->ids, T);
    } else {
      CLOQ_CALL(write_tokens_line(c->f, c->ids, T));
    }
    CLOQ_CHECK(!ferror(c->f), "%s: write failed: %s", c->tmp, strerror(errno));
    int sig = cloq_signal_pending();
    CLOQ_CHECK(!sig, "stopped by signal %d after %lld of %lld sequences; nothing written", sig,
               (long long)(i + 1), (long long)o->n);
    double now = cloq_now();
    if (now - last >= PROGRESS_SEC && i + 1 < o->n) {
      double rate = (double)((i + 1) * (T - 1)) / (now - t0);
      printf("sample: %lld/%lld sequences, %.0f tokens/s, ETA %.0f s\n", (long long)(i + 1),
             (long long)o->n, rate, (double)((o->n - i - 1) * (T - 1)) / rate);
      fflush(stdout);
      last = now;
    }
  }
  double gen_sec = cloq_now() - t0;
  FILE *f = c->f;
  c->f = NULL;
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) {
    remove(c->tmp);
    return CLOQ_FAIL("%s: write failed: %s", c->tmp, strerror(errno));
  }
  if (rename(c->tmp, o->out) != 0) {
    int err = errno;
    remove(c->tmp);
    return CLOQ_FAIL("%s: cannot rename to %s: %s", c->tmp, o->out, strerror(err));
  }
  if (c->dump) CLOQ_CALL(dump_logits(o->dump_logits, c->dump, T - 1, V));
  int64_t gen = o->n * (T - 1);
  printf("sampled %lld sequences, %lld tokens (%lld drawn) in %.2f s (%.2f s total): "
         "%.0f tokens/s -> %s\n",
         (long long)o->n, (long long)(o->n * T), (long long)gen, gen_sec, cloq_now() - t_start,
         gen_sec > 0 ? (double)gen / gen_sec : 0.0, o->out);
  fflush(stdout);
  return CLOQ_OK;
}

typedef struct {
  sample_opts o;
  double t_start;
} sample_job;

static int run(const void *p) {
  const sample_job *j = p;
  sample_ctx c;
  memset(&c, 0, sizeof c);
  int rc = sample_run(&j->o, &c, j->t_start);
  ctx_free(&c);
  return rc;
}

int cloq_sample_main(int argc, char **argv) {
  sample_job j = {.t_start = cloq_now()};
  int rc = parse_args(argc, argv, &j.o);
  return cloq_cli_finish(rc, j.o.help, usage, run, &j);
}
