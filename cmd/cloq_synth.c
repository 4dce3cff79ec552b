/* cloq_synth: `cloq synth`, synthetic Llama checkpoints in the Hugging Face layout, written at
 * close to disk speed without ever holding the model in memory. What the weights are and how they
 * are drawn: io/synth_ckpt.h.
 *
 * Streaming: every offset follows from the shapes, so the safetensors header (space-padded to
 * 4096 bytes) is written first and then the data in 64 MB batches, with O_DIRECT where the
 * filesystem has it; worker threads fill the next batch while this thread writes the current one.
 * The file is DIR/model.safetensors.partial until fdatasync + rename, and config.json is written
 * last, so an interrupted run never leaves a complete-looking model.
 */
#include "cloq_synth.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cloq_clock.h"
#include "cloq_cli.h"
#include "cloq_err.h"
#include "cloq_half_fast.h"
#include "cloq_ckpt.h"
#include "cloq_config.h"
#include "cloq_linalg.h"
#include "hf_folder.h"
#include "synth_ckpt.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is written from memory: a little-endian host is required"
#endif

#define BATCH_BYTES ((int64_t)64 << 20) /* per write; two such buffers are held */
#define ALIGN CLOQ_SYNTH_ALIGN          /* O_DIRECT: buffer address, file offset and length */
#define BATCH_PIECES 4096

/* ---- options ----------------------------------------------------------------------------------- */

typedef struct {
  const char *name;
  int64_t dim, layers, heads, kv_heads, mlp, vocab, max_pos;
} synth_preset;

static const synth_preset presets[] = {
    {"llama2-13b", 5120, 40, 40, 40, 13824, 32000, 4096},
    {"llama2-7b", 4096, 32, 32, 32, 11008, 32000, 4096},
    {"stories260k", 64, 5, 8, 4, 172, 512, 512},
};

typedef struct {
  const char *out;
  cloq_synth_spec s; /* shapes -1 until resolve_shapes: not given */
  int64_t calib_n, calib_t; /* calib_t -1: min(256, max_pos) */
  int threads;
  int force, help;
} synth_opts;

static void usage(void) {
  printf(
      "usage: cloq synth --out DIR [options]\n"
      "Writes a synthetic Llama checkpoint: DIR/config.json, DIR/model.safetensors (streamed; a 13B\n"
      "model never sits in memory) and DIR/calib.tok (a token file for --calib-format tokens).\n"
      "  --out DIR              output folder (created; refused if not empty, unless --force)\n"
      "  --force                write into a non-empty DIR, replacing the three files\n"
      "  --like NAME            preset: llama2-13b | llama2-7b | stories260k; flags below override it\n"
      "  --dim D --layers L --heads H --kv-heads K --mlp M --vocab V --max-pos P --head-dim HD\n"
      "                         shapes (without --like: dim, layers, heads, mlp, vocab required;\n"
      "                         kv-heads default H, max-pos 2048, head-dim D/H)\n"
      "  --dtype T              bf16 | f16 | f32 (default bf16)\n"
      "  --seed S               weights and calibration tokens depend only on S and the shapes\n"
      "                         (default 0)\n"
      "  --outlier-cols FRAC    fraction of input columns per block input with large weights\n"
      "                         (default 0.005; 0 for none)\n"
      "  --outlier-scale X      their standard deviation relative to the others (default 20)\n"
      "  --calib-samples N      lines of DIR/calib.tok (default 16)\n"
      "  --calib-seqlen T       tokens per line, BOS first, Zipf-like ids (default min(256, max-pos))\n"
      "  --threads N            generator threads (default: all cores; the output does not depend on it)\n");
}

static int parse_args(int argc, char **argv, synth_opts *o) {
  memset(o, 0, sizeof *o);
  cloq_synth_spec *sp = &o->s;
  sp->dim = sp->layers = sp->heads = sp->kv_heads = sp->mlp = sp->vocab = sp->max_pos = -1;
  sp->head_dim = -1;
  o->s.dtype = CLOQ_DT_BF16;
  o->s.outlier_frac = 0.005;
  o->s.outlier_scale = 20;
  o->calib_n = 16;
  o->calib_t = -1;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  o->threads = cores < 1 ? 1 : cores > 64 ? 64 : (int)cores;
  /* a shape is at most 2^31 - 1 wide: ids and head counts are int32 downstream */
  const int64_t big = INT32_MAX;
  cloq_args sc = cloq_args_begin(argc, argv, 1, "synth");
  for (const char *f; (f = cloq_args_next(&sc));) {
    if (cloq_args_help_force(&sc, &o->help, &o->force)) continue;
    const char *a = cloq_args_peek(&sc);
    if (cloq_args_is(&sc, "--out")) o->out = a;
    else if (cloq_args_is(&sc, "--like")) {
      int found = 0;
      for (size_t k = 0; k < sizeof presets / sizeof presets[0]; k++) found |= !strcmp(a, presets[k].name);
      CLOQ_CHECK(found, "--like: '%s' is not one of llama2-13b, llama2-7b, stories260k", a);
      o->s.like = a;
    } else if (cloq_args_is(&sc, "--dim")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, big, &o->s.dim));
    else if (cloq_args_is(&sc, "--layers")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 20, &o->s.layers));
    else if (cloq_args_is(&sc, "--heads")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, big, &o->s.heads));
    else if (cloq_args_is(&sc, "--kv-heads")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, big, &o->s.kv_heads));
    else if (cloq_args_is(&sc, "--mlp")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, big, &o->s.mlp));
    else if (cloq_args_is(&sc, "--vocab")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 4, big, &o->s.vocab));
    else if (cloq_args_is(&sc, "--max-pos")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 2, big, &o->s.max_pos));
    else if (cloq_args_is(&sc, "--head-dim")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 2, big, &o->s.head_dim));
    else if (cloq_args_is(&sc, "--dtype")) {
      if (!strcmp(a, "bf16")) o->s.dtype = CLOQ_DT_BF16;
      else if (!strcmp(a, "f16")) o->s.dtype = CLOQ_DT_F16;
      else if (!strcmp(a, "f32")) o->s.dtype = CLOQ_DT_F32;
      else return CLOQ_FAIL("--dtype: '%s' is not one of bf16, f16, f32", a);
    } else if (cloq_args_is(&sc, "--seed")) {
      int64_t v;
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 0, INT64_MAX, &v));
      o->s.seed = (uint64_t)v;
    } else if (cloq_args_is(&sc, "--outlier-cols")) CLOQ_CALL(cloq_cli_parse_f64(f, a, 0, 0.5, &o->s.outlier_frac));
    else if (cloq_args_is(&sc, "--outlier-scale")) CLOQ_CALL(cloq_cli_parse_f64(f, a, 1, 1000, &o->s.outlier_scale));
    else if (cloq_args_is(&sc, "--calib-samples")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 24, &o->calib_n));
    else if (cloq_args_is(&sc, "--calib-seqlen")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 2, 1 << 24, &o->calib_t));
    else if (cloq_args_is(&sc, "--threads")) {
      int64_t v;
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 256, &v));
      o->threads = (int)v;
    } else
      return cloq_args_unknown(&sc);
  }
  CLOQ_CALL(sc.rc);
  if (o->help) return CLOQ_OK;
  CLOQ_CHECK(o->out, "--out is required");
  return CLOQ_OK;
}

/* Preset, then explicit flags; then the architecture's constraints, each naming its flags. */
static int resolve_shapes(synth_opts *o) {
  if (o->s.like) {
    const synth_preset *p = NULL;
    for (size_t k = 0; k < sizeof presets / sizeof presets[0]; k++)
      if (!strcmp(o->s.like, presets[k].name)) p = &presets[k];
    int explicit_heads = o->s.heads > 0;
    if (o->s.dim < 0) o->s.dim = p->dim;
    if (o->s.layers < 0) o->s.layers = p->layers;
    if (o->s.heads < 0) o->s.heads = p->heads;
    /* the preset's kv-heads only make sense with its head count; MHA otherwise */
    if (o->s.kv_heads < 0) o->s.kv_heads = explicit_heads ? o->s.heads : p->kv_heads;
    if (o->s.mlp < 0) o->s.mlp = p->mlp;
    if (o->s.vocab < 0) o->s.vocab = p->vocab;
    if (o->s.max_pos < 0) o->s.max_pos = p->max_pos;
  }
  static const char *const req[] = {"--dim", "--layers", "--heads", "--mlp", "--vocab"};
  const int64_t reqv[] = {o->s.dim, o->s.layers, o->s.heads, o->s.mlp, o->s.vocab};
  for (size_t k = 0; k < sizeof req / sizeof req[0]; k++)
    CLOQ_CHECK(reqv[k] > 0, "%s is required without --like", req[k]);
  if (o->s.kv_heads < 0) o->s.kv_heads = o->s.heads;
  if (o->s.max_pos < 0) o->s.max_pos = 2048;
  if (o->s.head_dim < 0) {
    CLOQ_CHECK(o->s.dim % o->s.heads == 0,
               "--heads %lld does not divide --dim %lld (give --head-dim to decouple them)",
               (long long)o->s.heads, (long long)o->s.dim);
    o->s.head_dim = o->s.dim / o->s.heads;
  }
  CLOQ_CHECK(o->s.heads % o->s.kv_heads == 0, "--kv-heads %lld does not divide --heads %lld",
             (long long)o->s.kv_heads, (long long)o->s.heads);
  CLOQ_CHECK(o->s.head_dim % 2 == 0, "head_dim %lld is odd: RoPE needs an even head_dim",
             (long long)o->s.head_dim);
  CLOQ_CHECK(o->s.head_dim <= INT32_MAX / o->s.heads,
             "--heads %lld x head_dim %lld is too large", (long long)o->s.heads,
             (long long)o->s.head_dim);
  if (o->calib_t < 0) o->calib_t = o->s.max_pos < 256 ? o->s.max_pos : 256;
  CLOQ_CHECK(o->calib_t <= o->s.max_pos, "--calib-seqlen %lld exceeds --max-pos %lld",
             (long long)o->calib_t, (long long)o->s.max_pos);
  return CLOQ_OK;
}

typedef struct {
  int64_t t, c, off; /* tensor, chunk, byte offset in the batch buffer */
} synth_piece;

/* One write's worth of pieces. O_DIRECT writes whole ALIGN blocks, so the previous batch's last
 * bytes past a block boundary (`lead` of them) are carried over to the front of this one's
 * buffer and the pieces are generated after them. */
typedef struct {
  synth_piece v[BATCH_PIECES];
  int64_t n, bytes;
  int64_t lead;        /* carried bytes in buf[0, lead) */
  unsigned char *buf;  /* ALIGN + BATCH_BYTES, ALIGN-aligned */
} synth_batch;

/* Fills b with the pieces from the cursor (ti, c) on, up to BATCH_BYTES, and advances it; *pos
 * is the data-area offset where b starts, advanced past it. */
static void next_batch(const cloq_synth_plan *p, int64_t *ti, int64_t *c, int64_t *pos,
                       synth_batch *b) {
  b->n = b->bytes = 0;
  b->lead = *pos % ALIGN; /* the data area starts ALIGN-aligned (see build_header) */
  while (*ti < p->nt && b->n < BATCH_PIECES) {
    const cloq_synth_tensor *t = &p->t[*ti];
    int64_t e0 = *c * CLOQ_SYNTH_CHUNK, ne = t->numel - e0 < CLOQ_SYNTH_CHUNK ? t->numel - e0 : CLOQ_SYNTH_CHUNK;
    int64_t nb = ne * (int64_t)p->esize;
    if (b->bytes + nb > BATCH_BYTES) break; /* a piece (<= 1 MB) always fits an empty batch */
    b->v[b->n++] = (synth_piece){*ti, *c, b->bytes};
    b->bytes += nb;
    if (++*c == t->nchunks) {
      ++*ti;
      *c = 0;
    }
  }
  *pos += b->bytes;
}

typedef struct {
  const cloq_synth_plan *p;
  synth_batch *b;
  int k, nthreads;
} gen_arg;

static void *gen_thread(void *arg) {
  const gen_arg *g = arg;
  for (int64_t i = g->k; i < g->b->n; i += g->nthreads)
    cloq_synth_piece(g->p, g->b->v[i].t, g->b->v[i].c, g->b->buf + g->b->lead + g->b->v[i].off);
  return NULL;
}

typedef struct {
  pthread_t tid[256];
  int started[256];
  gen_arg arg[256];
  int n;
} gen_pool;

/* Starts filling b on n threads; a thread that cannot be started does its share here, so the
 * result is the same either way. */
static void gen_start(gen_pool *g, const cloq_synth_plan *p, synth_batch *b, int n) {
  g->n = n;
  for (int k = 0; k < n; k++) {
    g->arg[k] = (gen_arg){p, b, k, n};
    g->started[k] = pthread_create(&g->tid[k], NULL, gen_thread, &g->arg[k]) == 0;
    if (!g->started[k]) gen_thread(&g->arg[k]);
  }
}

static void gen_join(gen_pool *g) {
  for (int k = 0; k < g->n; k++)
    if (g->started[k]) pthread_join(g->tid[k], NULL);
  g->n = 0;
}

/* ---- output ------------------------------------------------------------------------------------ */

static char *path_join(const char *dir, const char *file) {
  size_t n = strlen(dir) + strlen(file) + 2;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s/%s", dir, file);
  return s;
}

static const char *fmt_bytes(char *buf, size_t cap, int64_t b) {
  if (b >= 1000000000) snprintf(buf, cap, "%.2f GB", (double)b / 1e9);
  else if (b >= 1000000) snprintf(buf, cap, "%.1f MB", (double)b / 1e6);
  else snprintf(buf, cap, "%.1f kB", (double)b / 1e3);
  return buf;
}

/* *direct: the file is open with O_DIRECT. A filesystem that refuses an O_DIRECT write (EINVAL:
 * larger blocks, or an unaligned remainder after a short write) gets it buffered instead. */
static int write_all(int fd, int *direct, const char *path, const unsigned char *p, int64_t n) {
  while (n > 0) {
    size_t want = n > ((int64_t)1 << 30) ? (size_t)1 << 30 : (size_t)n;
    ssize_t k = write(fd, p, want);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EINVAL && *direct) {
      int fl = fcntl(fd, F_GETFL);
      CLOQ_CHECK(fl != -1 && fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0,
                 "%s: cannot leave O_DIRECT: %s", path, strerror(errno));
      *direct = 0;
      continue;
    }
    CLOQ_CHECK(k > 0, "%s: write failed: %s", path, k < 0 ? strerror(errno) : "no progress");
    p += k;
    n -= k;
  }
  return CLOQ_OK;
}

/* The DIR checks: created if absent; an existing non-empty one only with --force, and then the
 * previous model.safetensors and config.json go first so that an interruption cannot leave an
 * old model beside new files. */
static int prepare_dir(const synth_opts *o) {
  struct stat st;
  if (stat(o->out, &st) != 0) {
    CLOQ_CHECK(errno == ENOENT, "%s: %s", o->out, strerror(errno));
    CLOQ_CHECK(mkdir(o->out, 0777) == 0, "%s: cannot create: %s", o->out, strerror(errno));
    return CLOQ_OK;
  }
  CLOQ_CHECK(S_ISDIR(st.st_mode), "%s exists and is not a folder", o->out);
  DIR *d = opendir(o->out);
  CLOQ_CHECK(d, "%s: cannot open: %s", o->out, strerror(errno));
  int empty = 1;
  struct dirent *e;
  while (empty && (e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
  closedir(d);
  CLOQ_CHECK(empty || o->force, "%s exists and is not empty (use --force to write into it)",
             o->out);
  static const char *const stale[] = {"model.safetensors", "config.json"};
  for (int i = 0; i < 2; i++) {
    char *f = path_join(o->out, stale[i]);
    CLOQ_CHECK(f, "out of memory");
    int bad = unlink(f) != 0 && errno != ENOENT;
    int err = errno;
    if (bad) {
      CLOQ_FAIL("%s: cannot remove: %s", f, strerror(err));
      free(f);
      return CLOQ_ERR;
    }
    free(f);
  }
  return CLOQ_OK;
}

/* FILE-based small outputs: written to PATH.tmp, checked, renamed into place. */
static int close_rename(FILE *f, const char *tmp, const char *path) {
  int bad = ferror(f);
  int err = errno;
  if (fclose(f) != 0 && !bad) {
    bad = 1;
    err = errno;
  }
  if (bad) {
    remove(tmp);
    return CLOQ_FAIL("%s: write failed: %s", tmp, strerror(err));
  }
  if (rename(tmp, path) != 0) {
    err = errno;
    remove(tmp);
    return CLOQ_FAIL("%s: cannot rename to %s: %s", tmp, path, strerror(err));
  }
  return CLOQ_OK;
}

/* DIR/config.json: the config export generates for a model of this shape (cloq_hf_config_json),
 * with eos_token_id 2, torch_dtype and the settings that made the weights. */
static int write_config(const synth_opts *o) {
  const cloq_config cfg = {.dim = o->s.dim, .hidden_dim = o->s.mlp, .n_layers = o->s.layers,
                           .n_heads = o->s.heads, .n_kv_heads = o->s.kv_heads,
                           .head_dim = o->s.head_dim, .vocab_size = o->s.vocab,
                           .max_pos = o->s.max_pos,
                           .norm_eps = 1e-5, .rope_theta = 10000.0, .tied = 0, .bos_id = 1};
  json_t *root = cloq_hf_config_json(&cfg);
  if (!root) return CLOQ_ERR;
  json_t *meta = json_pack("{s:s, s:s, s:I}", "version", CLOQ_VERSION, "like",
                           o->s.like ? o->s.like : "", "seed", (json_int_t)o->s.seed);
  int bad = !meta || json_object_set_new(root, "eos_token_id", json_integer(2)) ||
            json_object_set_new(root, "torch_dtype",
                                json_string(cloq_hf_dtype_name(o->s.dtype))) ||
            json_object_set_new(meta, "outlier_cols", cloq_hf_json_num(o->s.outlier_frac)) ||
            json_object_set_new(meta, "outlier_scale", cloq_hf_json_num(o->s.outlier_scale)) ||
            json_object_set(root, "cloq_synth", meta);
  int rc = bad ? CLOQ_FAIL("out of memory (config.json)") : cloq_hf_write_json(root, o->out,
                                                                              "config.json");
  json_decref(meta);
  json_decref(root);
  return rc;
}

/* DIR/calib.tok, written to calib.tok.tmp, checked, renamed into place. */
static int write_calib(const synth_opts *o) {
  char *path = path_join(o->out, "calib.tok"), *tmp = path_join(o->out, "calib.tok.tmp");
  if (!path || !tmp) {
    free(path);
    free(tmp);
    return CLOQ_FAIL("out of memory");
  }
  FILE *f = fopen(tmp, "w");
  int rc = CLOQ_OK;
  if (!f) {
    rc = CLOQ_FAIL("%s: cannot create: %s", tmp, strerror(errno));
  } else {
    /* Zipf-like ids: rank r = floor(V' ^ u) - 1 with u uniform gives P(r) ~ 1 / ((r + 1.5) ln V')
     * (Zipf with s = 1, as word frequencies), over the ordinary ids 3.. (0-2 are unk/bos/eos). */
    cloq_rng g;
    cloq_rng_seed(&g, cloq_seed_mix(o->s.seed, ((uint64_t)1 << 63) | 0x63616c6962ULL, 0));
    const int64_t ord = o->s.vocab - 3;
    const double lv = log((double)ord + 1);
    for (int64_t s = 0; s < o->calib_n && !ferror(f); s++) {
      fputs("1", f);
      for (int64_t i = 1; i < o->calib_t; i++) {
        int64_t r = (int64_t)floor(exp(cloq_rng_uniform(&g) * lv)) - 1;
        if (r < 0) r = 0;
        if (r >= ord) r = ord - 1;
        fprintf(f, " %lld", (long long)(3 + r));
      }
      fputc('\n', f);
    }
  }
  if (f) rc = close_rename(f, tmp, path);
  free(path);
  free(tmp);
  return rc;
}

/* Leaves O_DIRECT for a write whose length is not whole blocks (the file's last bytes). */
static int leave_direct(int fd, int *direct, const char *path) {
  if (!*direct) return CLOQ_OK;
  int fl = fcntl(fd, F_GETFL);
  CLOQ_CHECK(fl != -1 && fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0, "%s: cannot leave O_DIRECT: %s",
             path, strerror(errno));
  *direct = 0;
  return CLOQ_OK;
}

typedef struct {
  int64_t reported;    /* tensors already counted in a printed line */
  int64_t group_bytes; /* of the group being written */
  double t_group, t_data;
} synth_progress;

/* One line for every group (embedding, layer, final norm + lm_head) whose last tensor is now
 * written: tensors [0, done_upto) are on disk, `written` data bytes so far. */
static void report(const cloq_synth_plan *p, synth_progress *pr, int64_t done_upto,
                   int64_t written) {
  const cloq_synth_spec *o = p->o;
  char b1[32], b2[32];
  for (; pr->reported < done_upto; pr->reported++) {
    const cloq_synth_tensor *t = &p->t[pr->reported];
    pr->group_bytes += t->bytes;
    if (pr->reported + 1 < p->nt && p->t[pr->reported + 1].group == t->group) continue;
    double now = cloq_now(), dt = now - pr->t_group;
    double rate = (double)written / (now - pr->t_data + 1e-9);
    fmt_bytes(b1, sizeof b1, pr->group_bytes);
    if (t->group == 0)
      printf("embed: %s (%lld, %lld) %s  %s  %.2f s\n", t->name, (long long)t->rows,
             (long long)t->cols, cloq_synth_dtype_name(o->dtype), b1, dt);
    else if (t->group <= o->layers)
      printf("layer %lld/%lld: 9 tensors  %s  %.2f s  %s/s  ETA %.0f s\n", (long long)t->group,
             (long long)o->layers, b1, dt, fmt_bytes(b2, sizeof b2, (int64_t)rate),
             (double)(p->data_bytes - written) / rate);
    else
      printf("head: model.norm.weight (%lld), lm_head.weight (%lld, %lld) %s  %s  %.2f s\n",
             (long long)o->dim, (long long)t->rows, (long long)t->cols, cloq_synth_dtype_name(o->dtype), b1, dt);
    fflush(stdout);
    pr->group_bytes = 0;
    pr->t_group = now;
  }
}

/* Streams the header and every tensor into DIR/model.safetensors.partial, syncs, renames.
 * The file is opened with O_DIRECT where the filesystem allows it: on a VM the copy into the page
 * cache alone ran at 0.2-0.6 GB/s against 2.3-2.7 GB/s for direct writes, and a 25 GB stream would
 * otherwise push everything else out of the cache. Without O_DIRECT, writeback is started after
 * every batch and waited for two batches later, which keeps the dirty page cache bounded. */
static int write_model(const synth_opts *o, const cloq_synth_plan *p, double t_start) {
  char *path = path_join(o->out, "model.safetensors");
  char *part = path_join(o->out, "model.safetensors.partial");
  synth_batch *bt[2] = {calloc(1, sizeof(synth_batch)), calloc(1, sizeof(synth_batch))};
  gen_pool *pool = calloc(1, sizeof *pool);
  const int64_t hbytes = 8 + (int64_t)p->header_len; /* a multiple of ALIGN */
  unsigned char *hdr = aligned_alloc(ALIGN, (size_t)hbytes);
  int rc = CLOQ_OK, fd = -1, direct = 1;
  if (!path || !part || !bt[0] || !bt[1] || !pool || !hdr ||
      !(bt[0]->buf = aligned_alloc(ALIGN, (size_t)(ALIGN + BATCH_BYTES))) ||
      !(bt[1]->buf = aligned_alloc(ALIGN, (size_t)(ALIGN + BATCH_BYTES))))
    rc = CLOQ_FAIL("out of memory (two %lld MB write buffers)", (long long)(BATCH_BYTES >> 20));
  if (rc == CLOQ_OK) {
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
    if (fd < 0 && errno == EINVAL) { /* tmpfs and some network filesystems */
      direct = 0;
      fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    }
    if (fd < 0) rc = CLOQ_FAIL("%s: cannot create: %s", part, strerror(errno));
  }
  if (rc == CLOQ_OK) {
    for (int i = 0; i < 8; i++) hdr[i] = (unsigned char)((uint64_t)p->header_len >> (8 * i));
    memcpy(hdr + 8, p->header, p->header_len);
    rc = write_all(fd, &direct, part, hdr, hbytes);
  }

  int64_t ti = 0, c = 0, pos = 0, written = 0, fpos = hbytes, kicked = hbytes, waited = hbytes;
  synth_progress pr = {0, 0, cloq_now(), cloq_now()};
  int cur = 0, stayed_direct = direct;
  if (rc == CLOQ_OK) {
    next_batch(p, &ti, &c, &pos, bt[cur]);
    gen_start(pool, p, bt[cur], o->threads);
    gen_join(pool);
  }
  while (rc == CLOQ_OK && bt[cur]->n > 0) {
    synth_batch *now = bt[cur], *nxt = bt[1 - cur];
    next_batch(p, &ti, &c, &pos, nxt);
    if (nxt->n > 0) gen_start(pool, p, nxt, o->threads);
    /* whole blocks go out now; the rest (nxt->lead bytes) moves to the front of the next batch,
     * whose pieces start after it (disjoint from what the threads are filling) */
    const int64_t have = now->lead + now->bytes, whole = have / ALIGN * ALIGN;
    if (nxt->n > 0) memcpy(nxt->buf, now->buf + whole, (size_t)(have - whole));
    rc = write_all(fd, &direct, part, now->buf, whole);
    stayed_direct = direct;
    if (rc == CLOQ_OK && nxt->n == 0 && have > whole) {
      rc = leave_direct(fd, &direct, part);
      if (rc == CLOQ_OK) rc = write_all(fd, &direct, part, now->buf + whole, have - whole);
    }
    if (rc == CLOQ_OK) {
      written += now->bytes;
      fpos += nxt->n == 0 ? have : whole;
    }
    if (rc == CLOQ_OK && !direct) {
      /* Advisory (errors surface at fdatasync): start writeback of what was just written, wait
       * for what is two batches old, so the stream runs at disk speed instead of stalling the
       * machine when the kernel's dirty limit is hit. */
      sync_file_range(fd, kicked, fpos - kicked, SYNC_FILE_RANGE_WRITE);
      kicked = fpos;
      if (fpos - waited > 2 * BATCH_BYTES) {
        int64_t upto = fpos - 2 * BATCH_BYTES;
        sync_file_range(fd, waited, upto - waited,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER);
        waited = upto;
      }
    }
    gen_join(pool);
    if (rc != CLOQ_OK) break;
    /* the tensor of the last piece is out only with its last chunk (and its carried tail) */
    const synth_piece *last = &now->v[now->n - 1];
    int complete = last->c == p->t[last->t].nchunks - 1 && (nxt->n == 0 || have == whole);
    report(p, &pr, complete ? last->t + 1 : last->t, written);
    cur = 1 - cur;
  }
  if (rc == CLOQ_OK && fpos != hbytes + p->data_bytes)
    rc = CLOQ_FAIL("%s: wrote %lld bytes, expected %lld", part, (long long)fpos,
                   (long long)(hbytes + p->data_bytes));
  if (rc == CLOQ_OK && fdatasync(fd) != 0)
    rc = CLOQ_FAIL("%s: fdatasync failed: %s", part, strerror(errno));
  if (fd >= 0 && close(fd) != 0 && rc == CLOQ_OK)
    rc = CLOQ_FAIL("%s: close failed: %s", part, strerror(errno));
  if (rc == CLOQ_OK && rename(part, path) != 0)
    rc = CLOQ_FAIL("%s: cannot rename to %s: %s", part, path, strerror(errno));
  if (rc != CLOQ_OK && fd >= 0) unlink(part); /* a failed multi-GB partial is only in the way */
  if (rc == CLOQ_OK) {
    double sec = cloq_now() - t_start;
    char b1[32], b2[32];
    printf("wrote %s: %s (%lld tensors, %s) in %.1f s, %s/s%s\n", path,
           fmt_bytes(b1, sizeof b1, fpos), (long long)p->nt, cloq_synth_dtype_name(o->s.dtype), sec,
           fmt_bytes(b2, sizeof b2, (int64_t)((double)fpos / sec)),
           stayed_direct ? "" : " (buffered: this filesystem refused O_DIRECT)");
  }
  if (bt[0]) free(bt[0]->buf);
  if (bt[1]) free(bt[1]->buf);
  free(bt[0]);
  free(bt[1]);
  free(hdr);
  free(pool);
  free(path);
  free(part);
  return rc;
}

/* A 25 GB model that finds the disk full after ten minutes is worse than one line now. */
static int check_space(const synth_opts *o, int64_t need) {
  struct statvfs v;
  if (statvfs(o->out, &v) != 0) return CLOQ_OK; /* unknown: the writes will tell */
  double avail = (double)v.f_bavail * (double)v.f_frsize;
  char b1[32], b2[32];
  CLOQ_CHECK(avail >= (double)need, "%s: the model needs %s but only %s are free there", o->out,
             fmt_bytes(b1, sizeof b1, need), fmt_bytes(b2, sizeof b2, (int64_t)avail));
  return CLOQ_OK;
}

static int synth_run(synth_opts *o) {
  CLOQ_CALL(resolve_shapes(o));
  double t0 = cloq_now();
  cloq_synth_plan p;
  int rc = cloq_synth_plan_make(&o->s, &p);
  if (rc == CLOQ_OK) rc = prepare_dir(o);
  if (rc == CLOQ_OK) rc = check_space(o, p.data_bytes + 8 + (int64_t)p.header_len);
  if (rc == CLOQ_OK) {
    char b[32];
    printf("synth: %s%sdim %lld, %lld layers, %lld heads (%lld kv, head_dim %lld), mlp %lld, "
           "vocab %lld, max-pos %lld, %s, seed %llu, outlier columns %g x %g -> %s/model.safetensors "
           "(%s, %lld tensors), %d threads\n",
           o->s.like ? o->s.like : "", o->s.like ? "-like: " : "", (long long)o->s.dim,
           (long long)o->s.layers, (long long)o->s.heads, (long long)o->s.kv_heads,
           (long long)o->s.head_dim, (long long)o->s.mlp, (long long)o->s.vocab, (long long)o->s.max_pos,
           cloq_synth_dtype_name(o->s.dtype), (unsigned long long)o->s.seed, o->s.outlier_frac, o->s.outlier_scale,
           o->out, fmt_bytes(b, sizeof b, p.data_bytes + 8 + (int64_t)p.header_len),
           (long long)p.nt, o->threads);
    fflush(stdout);
    cloq_synth_table_init();
    rc = write_calib(o);
  }
  if (rc == CLOQ_OK) rc = write_model(o, &p, t0);
  if (rc == CLOQ_OK) rc = write_config(o);
  if (rc == CLOQ_OK)
    printf("wrote %s/config.json and %s/calib.tok (%lld x %lld tokens)\n", o->out, o->out,
           (long long)o->calib_n, (long long)o->calib_t);
  cloq_synth_plan_free(&p);
  return rc;
}

static int run(const void *o) {
  synth_opts copy = *(const synth_opts *)o; /* synth_run fills in the defaults */
  return synth_run(&copy);
}

int cloq_synth_main(int argc, char **argv) {
  synth_opts o;
  int rc = parse_args(argc, argv, &o);
  return cloq_cli_finish(rc, o.help, usage, run, &o);
}
