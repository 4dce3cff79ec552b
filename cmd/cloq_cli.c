/* cloq_cli: option table, parsing and validation of values, and the checks of output paths that
 * must hold before any work starts (what they may not be: an input, a folder, a device). */
#include "cloq_cli.h"
#include "cloq_export.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloq_err.h"
#include "cloq_modules.h"
#include "cloq_signal.h"

/* Whether path names the file or folder whose stat is st. */
static int same_file(const struct stat *st, const char *path) {
  struct stat b;
  return path && stat(path, &b) == 0 && st->st_dev == b.st_dev && st->st_ino == b.st_ino;
}

/* The folder part of path into buf ("." when there is none). */
static void parent_of(const char *path, char *buf, size_t cap) {
  snprintf(buf, cap, "%s", path);
  char *s = strrchr(buf, '/');
  if (!s) snprintf(buf, cap, ".");
  else if (s == buf) buf[1] = '\0';
  else *s = '\0';
}

/* An output path of a run, checked before any work: not empty; if it exists, of the kind wanted
 * (a regular file, or a folder when want_dir) and not one of the run's inputs (inputs[0..n),
 * NULL entries skipped; a folder among them also counts as containing the output); its folder
 * exists and is writable. Whether an existing output may be replaced (--force) is the caller's
 * rule. */
static int check_output(const char *flag, const char *path, int want_dir,
                        const char *const *inputs, int n) {
  CLOQ_CHECK(path && path[0], "%s is empty", flag);
  struct stat st;
  if (stat(path, &st) == 0) {
    if (want_dir)
      CLOQ_CHECK(S_ISDIR(st.st_mode), "%s %s exists and is not a folder", flag, path);
    else
      CLOQ_CHECK(!S_ISDIR(st.st_mode), "%s %s is a folder (give a file name)", flag, path);
    CLOQ_CHECK(want_dir || S_ISREG(st.st_mode), "%s %s exists and is not a regular file", flag,
               path);
    for (int i = 0; i < n; i++)
      CLOQ_CHECK(!same_file(&st, inputs[i]), "%s %s is an input of this run (%s)", flag, path,
                 inputs[i]);
  }
  char dir[4096];
  parent_of(path, dir, sizeof dir);
  struct stat ds;
  CLOQ_CHECK(stat(dir, &ds) == 0 && S_ISDIR(ds.st_mode), "%s %s: folder %s does not exist", flag,
             path, dir);
  CLOQ_CHECK(access(dir, W_OK) == 0, "%s %s: folder %s is not writable", flag, path, dir);
  for (int i = 0; i < n; i++) {
    struct stat is;
    CLOQ_CHECK(!(inputs[i] && stat(inputs[i], &is) == 0 && S_ISDIR(is.st_mode) &&
                 same_file(&ds, inputs[i])),
               "%s %s is inside %s, an input of this run", flag, path, inputs[i]);
  }
  return CLOQ_OK;
}

static void defaults(cloq_opts *o) {
  memset(o, 0, sizeof *o);
  o->calib_format = "text";
  o->data_format = "text";
  o->bits = 4;
  o->group_size = 128;
  o->rank = 16;
  o->init = "cloq";
  o->quantizer = "rtn";
  o->damp = 0.01;
  o->nsamples = 128;
  o->seqlen = 0;
  o->seed = 0;
  o->propagate = "full";
  o->dist_threshold = 8192;
  o->dist_nb = 64;
  o->weights = "auto";
  const char *dev = getenv("CLOQ_DEVICE");
  o->device = dev && *dev ? dev : "auto";
  o->gptq_block = 128;
  o->magr_alpha = -1;
  o->magr_iters = 200;
  o->loftq_iters = 5;
  o->cloq_iters = 1;
  o->comq_iters = 3;
  o->comq_init = "rtn";
  o->quailora_iters = 10;
  o->rank_weight = "relative";
}

void cloq_cli_usage(int cmd) {
  if (cmd == CLOQ_CMD_INIT) {
    printf(
        "usage: cloq init --model DIR --calib FILE --out FILE.h5 [options]\n"
        "Quantizes every linear layer of a Llama-family model and computes its LoRA initialization.\n"
        "  --model DIR|FILE.gguf  Hugging Face model folder (config.json, model.safetensors) or a\n"
        "                         GGUF file (F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1, dequantized)\n"
        "  --tokenizer FILE       tokenizer.json, GGUF or llama2.c tokenizer (default: the GGUF\n"
        "                         itself, DIR/tokenizer.json, DIR/tokenizer.bin or DIR/tok*.bin)\n"
        "  --calib FILE           calibration data\n"
        "  --calib-format F       text | tokens | jsonl (default text; tokens: one sample per\n"
        "                         line; jsonl: JSON Lines as `datasets` Dataset.to_json writes,\n"
        "                         one object per line, blank lines skipped: each record's\n"
        "                         --calib-field string is tokenized as a text file of it would be\n"
        "                         ([BOS +] text), records with \"\" skipped, and the records'\n"
        "                         tokens joined in file order; windows are drawn from them as\n"
        "                         from a text's, so a one-record file equals its text)\n"
        "  --calib-field NAME     jsonl: the field holding each record's text (default text)\n"
        "  --out FILE.h5          output store (refused if it exists, unless --force)\n"
        "  --force                overwrite an existing --out\n"
        "  --export DIR           then hand the store off: `cloq export --store OUT --out DIR`\n"
        "                         (DIR/base: HF model of Q, DIR/adapter: PEFT adapter; see\n"
        "                         cloq export --help)\n"
        "  --export-format LIST   formats for --export (default safetensors,peft; also gptq)\n");
    printf(
        "  --bits N               2 | 3 | 4 | 8 (default 4)\n"
        "  --group-size N         input columns per quantization group, -1 = whole row (default 128)\n"
        "  --rank N               LoRA rank r (default 16)\n"
        "  --init I               zero | svd | cloq | loftq | quailora (default cloq). loftq\n"
        "                         alternates Q = quant(W - L), L = SVD_r(W - Q), --loftq-iters\n"
        "                         times; quailora refines the svd init by calibrated least squares\n"
        "  --cloq-iters T         cloq: T joint alternations Q = quant(W - L), L = CLoQ(W - Q) at\n"
        "                         the largest rank (default 1: the closed form for quant(W)); the\n"
        "                         iterate of the lowest calibrated objective is kept\n"
        "  --loftq-iters T        LoftQ alternations (default 5; 1 equals --init svd); the\n"
        "                         iterate of the lowest calibrated objective is kept\n"
        "  --quailora-iters K     quailora: alternations of the B and A solves (default 10)\n"
        "  --rank-budget N        init: total LoRA parameters, sum of r_m (n_out + n_in) over every\n"
        "                         module; ranks are allocated per module (at most --rank) to\n"
        "                         minimize the calibrated objective (see README)\n"
        "  --rank-weight W        relative | raw (default relative): a module's gain measured\n"
        "                         relative to its zero-init objective, or raw\n"
        "  --quantizer Q          rtn | gptq | comq (default rtn). gptq: GPTQ/OPTQ with the same\n"
        "                         damped Gram matrix, same grid and groups as rtn; comq: greedy\n"
        "                         coordinate descent over codes, scales and zeros on that objective\n"
        "  --comq-iters K         comq: coordinate-descent sweeps (default 3)\n"
        "  --comq-init Q          comq: rtn | gptq, the starting grid (default rtn)\n"
        "  --act-order            gptq: quantize columns by decreasing H_jj (groups stay\n"
        "                         consecutive columns, their grids fixed beforehand)\n"
        "  --gptq-block N         gptq: lazy batch width (default 128)\n"
        "  --magr                 MagR: shrink each row's largest magnitudes by l-infinity\n"
        "                         proximal gradient steps that preserve X W^T, before the quantizer\n"
        "  --magr-alpha F         MagR penalty (default 0.001 with --group-size -1, else 0.0001)\n"
        "  --magr-iters N         MagR proximal steps (default 200)\n"
        "  --damp F               Gram damping, fraction of mean(diag H) (default 0.01)\n"
        "  --nsamples N           windows drawn from text (or jsonl), or the first N lines of a\n"
        "                         token file\n"
        "                         (default 128)\n"
        "  --seqlen N             tokens per window (default min(2048, max_position_embeddings))\n"
        "  --seed N               sampling and zero-init seed (default 0)\n"
        "  --propagate P          full | sequential (default full): what feeds block b's\n"
        "                         calibration inputs: the full-precision blocks before it\n"
        "                         (streamed through all ranks at once), or the already\n"
        "                         initialized Q + B A blocks (GPTQ-style, block by block)\n"
        "  --dist-threshold N     decompose matrices whose smaller side is >= N with ScaLAPACK\n"
        "                         over all ranks (default 8192; 1 forces it, 0 disables it)\n"
        "  --dist-block N         ScaLAPACK block size (default 64)\n"
        "  --weights W            resident | lazy | auto (default auto): owners hold their blocks'\n"
        "                         linears in float32 (resident), or convert one block at a time\n"
        "                         from the checkpoint as samples reach it (lazy: one block's\n"
        "                         worth of memory per rank); auto picks lazy when the resident\n"
        "                         weights would exceed a quarter of the node's memory per rank.\n"
        "                         Sequential propagation keeps them resident.\n"
        "  --dry-run              print the model's family and features, the plan (blocks per\n"
        "                         rank, peak memory, flops per stage) and stop\n");
    printf(
        "  --device D             cpu | cuda | auto (default auto, or $CLOQ_DEVICE): cuda runs the\n"
        "                         forward pass, Gram matrices, Cholesky factors, top-r\n"
        "                         eigensolves and the rtn and gptq quantizers on the GPU of each\n"
        "                         rank (local rank mod GPU count; comq stays on its CPU);\n"
        "                         auto falls back to the CPU with a one-line notice\n"
        "Re-running the same command after a crash or a SIGTERM resumes from the blocks\n"
        "complete in FILE.h5.partial.d/.\n"
        "Models: Hugging Face folders (config.json + safetensors) or GGUF files of the families\n"
        "  llama    Llama 2, Llama 3.x (rope_scaling llama3 or linear), attention/mlp biases\n"
        "  mistral  the sliding window (every layer)\n"
        "  qwen2    Qwen2, Qwen2.5: q/k/v biases (never quantized, carried to every export)\n"
        "  qwen3    q/k RMSNorm per head before RoPE, head_dim of its own\n"
        "  with GQA, any head_dim, tied or untied embeddings. Refused in one line: other\n"
        "  model_types (MoE: mixtral, qwen2_moe, qwen3_moe), RoPE types other than default,\n"
        "  linear and llama3 (yarn, dynamic, longrope), partial rotary, windows on some layers\n"
        "  only (Qwen's use_sliding_window), activations other than silu.\n");
  } else if (cmd == CLOQ_CMD_SWEEP) {
    printf(
        "usage: cloq sweep --model DIR --calib FILE --bits 2,3,4 --ranks 8,16,32,64 --out DIR\n"
        "One calibration pass and one Cholesky factor per distinct input for the whole sweep, one\n"
        "quantization and one top-r eigensolve per module and bits setting; every LoRA rank is\n"
        "a truncation of one basis solved at the largest, rounded up to a multiple of 64. Writes one\n"
        "store per configuration, DIR/b<bits>-r<rank>.h5, equal to what `cloq init` writes for that\n"
        "bits and rank (bitwise where both ranks round up to the same multiple of 64). Options:\n"
        "those of `cloq init` (see cloq init --help) except --bits, --rank and --export, plus\n"
        "  --bits LIST            comma-separated bits settings (2, 3, 4, 8), at most 4\n"
        "  --ranks LIST           comma-separated LoRA ranks, at most 16\n"
        "  --out DIR              output folder (created; stores already complete there are kept,\n"
        "                         --force recomputes them; partial ones are resumed)\n"
        "--propagate sequential is not available for sweeps (each configuration would need its\n"
        "own calibration pass).\n");
  } else if (cmd == CLOQ_CMD_EVAL) {
    printf(
        "usage: cloq eval --model DIR --data FILE [options]\n"
        "Perplexity of the full-precision model, or of a store's quantized (+ LoRA) model.\n"
        "  --model DIR|FILE.gguf  Hugging Face model folder or GGUF file\n"
        "  --tokenizer FILE       tokenizer.json, GGUF or llama2.c tokenizer (default: as init)\n"
        "  --store FILE.h5        evaluate (codes - zeros) * scales + lora_B @ lora_A instead\n"
        "  --data FILE            evaluation data\n"
        "  --data-format F        text | tokens | jsonl (default text: GPTQ protocol, [BOS +] whole\n"
        "                         text, non-overlapping windows of --seqlen; tokens: one sequence\n"
        "                         a line; jsonl: each record's --data-field as its own [BOS +]\n"
        "                         text, records joined in file order, then windows as for text)\n"
        "  --data-field NAME      jsonl: the field holding each record's text (default text)\n"
        "  --seqlen N             window length for text and jsonl (default min(2048,\n"
        "                         max_position_embeddings))\n"
        "  --limit N              evaluate only the first N windows or sequences (default all)\n"
        "  --dump-logits FILE     write the logits of the first positions of the first sequence\n"
        "                         (one row of vocab values per position)\n"
        "  --dump-positions N     how many positions --dump-logits writes (default 3; rows past\n"
        "                         the first sequence's end are zeros)\n"
        "  --force                overwrite an existing --dump-logits FILE\n"
        "  --device D             cpu | cuda | auto (default auto, or $CLOQ_DEVICE): the forward\n"
        "                         pass on each rank's GPU; the head stays on the CPU\n"
        "  --kl                   with --store: also run the full-precision model on the same\n"
        "                         tokens and report the mean KL(full precision || quantized) per\n"
        "                         predicted token (lines `ppl_fp <value>` and `kl <value>`)\n"
        "The last line printed is `ppl <value>` (of the store's model when --store is given).\n");
  } else {
    printf("usage: cloq <command> [options]    (cloq <command> --help for its options)\n"
           "commands:\n"
           "  init      quantize a model and compute LoRA initializations (zero, svd, cloq, loftq)\n"
           "            into a store\n"
           "  sweep     the same over lists of bits and ranks, sharing the expensive steps\n"
           "  eval      perplexity of a model, or of a store applied to it\n"
           "  synth     write a synthetic Hugging Face checkpoint (scale tests, benchmarks)\n"
           "  sample    draw token sequences or text from the model (calibration or eval data)\n"
           "  export    hand a store off: HF base model, PEFT adapter, GPTQ checkpoint\n"
           "  tokenize  encode text into token ids with a model's tokenizer (a token file)\n"
           "Runs as a plain process or under mpirun/srun with any number of ranks.\n");
  }
}

int cloq_cli_parse_i64(const char *flag, const char *v, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  CLOQ_CHECK(errno == 0 && end != v && *end == 0, "%s: '%s' is not an integer", flag, v);
  CLOQ_CHECK(x >= lo && x <= hi, "%s: %lld is out of range [%lld, %lld]", flag, x, (long long)lo,
             (long long)hi);
  *out = x;
  return CLOQ_OK;
}

/* A comma-separated list of integers in [lo, hi], at most cap of them. */
static int parse_list(const char *flag, const char *v, int64_t lo, int64_t hi, int cap,
                      int64_t *out, int *n) {
  char buf[256];
  CLOQ_CHECK(strlen(v) < sizeof buf, "%s: list too long", flag);
  snprintf(buf, sizeof buf, "%s", v);
  *n = 0;
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    CLOQ_CHECK(*n < cap, "%s: at most %d values", flag, cap);
    CLOQ_CALL(cloq_cli_parse_i64(flag, tok, lo, hi, &out[*n]));
    for (int i = 0; i < *n; i++)
      CLOQ_CHECK(out[i] != out[*n], "%s: %lld is listed twice", flag, (long long)out[*n]);
    (*n)++;
  }
  CLOQ_CHECK(*n > 0, "%s: empty list", flag);
  return CLOQ_OK;
}

static int check_bits(int64_t v) {
  CLOQ_CHECK(v == 2 || v == 3 || v == 4 || v == 8, "--bits: %lld is not one of 2, 3, 4, 8",
             (long long)v);
  return CLOQ_OK;
}

int cloq_cli_parse_f64(const char *flag, const char *v, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  CLOQ_CHECK(errno == 0 && end != v && *end == 0 && isfinite(x), "%s: '%s' is not a number",
             flag, v);
  CLOQ_CHECK(x >= lo && x <= hi, "%s: %g is out of range [%g, %g]", flag, x, lo, hi);
  *out = x;
  return CLOQ_OK;
}

cloq_args cloq_args_begin(int argc, char **argv, int first, const char *cmd) {
  cloq_args s;
  memset(&s, 0, sizeof s);
  s.argc = argc;
  s.argv = argv;
  s.i = first - 1;
  s.cmd = cmd;
  return s;
}

const char *cloq_args_next(cloq_args *s) {
  if (s->rc != CLOQ_OK || ++s->i >= s->argc) return NULL;
  const char *a = s->argv[s->i];
  s->why = 0;
  s->inl = NULL;
  if (strcmp(a, "-h") && strncmp(a, "--", 2)) {
    s->rc = CLOQ_FAIL("unexpected argument '%s' (see cloq %s --help)", a, s->cmd);
    return NULL;
  }
  const char *eq = strchr(a, '=');
  size_t n = eq ? (size_t)(eq - a) : strlen(a);
  if (n >= sizeof s->flag) {
    s->rc = CLOQ_FAIL("unknown option %.40s... for 'cloq %s' (see cloq %s --help)", a, s->cmd,
                      s->cmd);
    return NULL;
  }
  memcpy(s->flag, a, n);
  s->flag[n] = 0;
  if (eq) s->inl = eq + 1;
  for (int k = 0; k < s->nseen; k++)
    if (!strcmp(s->seen[k], s->flag)) {
      s->rc = CLOQ_FAIL("%s is given twice", s->flag);
      return NULL;
    }
  if (s->nseen < (int)(sizeof s->seen / sizeof s->seen[0])) strcpy(s->seen[s->nseen++], s->flag);
  return s->flag;
}

int cloq_cli_finish(int rc, int help, void (*usage)(void), int (*run)(const void *), const void *opts) {
  if (rc == CLOQ_OK && help) {
    usage();
    return 0;
  }
  if (rc == CLOQ_OK) rc = run(opts);
  if (rc == CLOQ_OK) return 0;
  fprintf(stderr, "cloq: error: %s\n", cloq_err_msg());
  return cloq_signal_pending() ? 128 + cloq_signal_pending() : 1;
}

int cloq_args_help_force(cloq_args *s, int *help, int *force) {
  if (!strcmp(s->flag, "--help") || !strcmp(s->flag, "-h")) {
    *help = 1;
    s->i = s->argc; /* nothing after --help matters */
    return 1;
  }
  if (!cloq_args_switch(s, "--force")) return 0;
  *force = 1;
  return 1;
}

int cloq_args_switch(cloq_args *s, const char *name) {
  if (strcmp(s->flag, name)) return 0;
  if (s->inl) s->why = 2;
  return !s->inl;
}

const char *cloq_args_peek(const cloq_args *s) {
  return s->inl ? s->inl : s->i + 1 < s->argc ? s->argv[s->i + 1] : NULL;
}

int cloq_args_is(cloq_args *s, const char *name) {
  if (strcmp(s->flag, name)) return 0;
  if (!cloq_args_peek(s)) {
    s->why = 1;
    return 0;
  }
  if (!s->inl) s->i++;
  return 1;
}

int cloq_args_unknown(const cloq_args *s) {
  if (s->why == 1) return CLOQ_FAIL("%s needs a value", s->flag);
  if (s->why == 2) return CLOQ_FAIL("%s takes no value", s->flag);
  return CLOQ_FAIL("unknown option %s for 'cloq %s' (see cloq %s --help)", s->flag, s->cmd, s->cmd);
}

/* A flag that only applies with another setting: an error when given without it. */
static int check_given(const cloq_args *s, const char *flag, const char *needs, int ok) {
  if (ok) return CLOQ_OK;
  for (int k = 0; k < s->nseen; k++)
    if (!strcmp(s->seen[k], flag)) return CLOQ_FAIL("%s needs %s", flag, needs);
  return CLOQ_OK;
}

static int one_of(const char *flag, const char *v, const char *const *allowed) {
  for (int i = 0; allowed[i]; i++)
    if (strcmp(v, allowed[i]) == 0) return CLOQ_OK;
  char list[256] = "";
  for (int i = 0; allowed[i]; i++) {
    strncat(list, allowed[i], sizeof list - strlen(list) - 1);
    if (allowed[i + 1]) strncat(list, ", ", sizeof list - strlen(list) - 1);
  }
  return CLOQ_FAIL("%s: '%s' is not one of %s", flag, v, list);
}

/* The JSON Lines field flag: only with format jsonl, then "text" unless given; a name that fits
 * the store's attribute (cloq_store_meta.calib_field). */
static int check_field(const char *flag, const char *fmt_flag, const char *fmt,
                       const char **field) {
  int jsonl = !strcmp(fmt, "jsonl");
  CLOQ_CHECK(!*field || jsonl, "%s needs %s jsonl (this run: %s %s)", flag, fmt_flag, fmt_flag,
             fmt);
  if (!jsonl) return CLOQ_OK;
  if (!*field) *field = "text";
  CLOQ_CHECK((*field)[0], "%s is empty", flag);
  CLOQ_CHECK(strlen(*field) < 256, "%s: a name of %zu bytes, longer than 255", flag,
             strlen(*field));
  return CLOQ_OK;
}

int cloq_cli_parse(int argc, char **argv, cloq_opts *o) {
  defaults(o);
  CLOQ_CHECK(argc >= 2, "no command given (commands: init, sweep, eval, synth, sample, export, "
             "tokenize; see cloq --help)");
  const char *c = argv[1];
  if (!strcmp(c, "init")) o->cmd = CLOQ_CMD_INIT;
  else if (!strcmp(c, "sweep")) o->cmd = CLOQ_CMD_SWEEP;
  else if (!strcmp(c, "eval")) o->cmd = CLOQ_CMD_EVAL;
  else if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) {
    o->help = 1;
    return CLOQ_OK;
  } else if (!strcmp(c, "--version")) {
    printf("cloq %s\n", CLOQ_VERSION);
    exit(0);
  } else
    return CLOQ_FAIL("unknown command '%s' (commands: init, sweep, eval, synth, sample, export, "
                     "tokenize)", c);
  int init = o->cmd == CLOQ_CMD_INIT || o->cmd == CLOQ_CMD_SWEEP;
  int sweep = o->cmd == CLOQ_CMD_SWEEP;
  int64_t list[16];
  int64_t v;
  cloq_args sc = cloq_args_begin(argc, argv, 2, c);
  for (const char *f; (f = cloq_args_next(&sc));) {
    /* --force: init, sweep: the store; eval: --dump-logits */
    if (cloq_args_help_force(&sc, &o->help, &o->force)) continue;
    if (cloq_args_switch(&sc, "--dry-run") && init) {
      o->dry_run = 1;
      continue;
    }
    if (cloq_args_switch(&sc, "--act-order") && init) {
      o->act_order = 1;
      continue;
    }
    if (cloq_args_switch(&sc, "--magr") && init) {
      o->magr = 1;
      continue;
    }
    if (cloq_args_switch(&sc, "--kl") && !init) {
      o->kl = 1;
      continue;
    }
    const char *a = cloq_args_peek(&sc);
    if (cloq_args_is(&sc, "--model")) o->model = a;
    else if (cloq_args_is(&sc, "--tokenizer")) o->tokenizer = a;
    else if (cloq_args_is(&sc, "--seqlen")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 20, &o->seqlen));
    else if (cloq_args_is(&sc, "--device")) {
      CLOQ_CALL(one_of(f, a, (const char *const[]){"cpu", "cuda", "auto", NULL}));
      o->device = a;
    }
    else if (init && cloq_args_is(&sc, "--calib")) o->calib = a;
    else if (init && cloq_args_is(&sc, "--calib-format")) {
      CLOQ_CALL(one_of(f, a, (const char *const[]){"text", "tokens", "jsonl", NULL}));
      o->calib_format = a;
    } else if (init && cloq_args_is(&sc, "--calib-field")) o->calib_field = a;
    else if (init && cloq_args_is(&sc, "--out")) o->out = a;
    else if (init && !sweep && cloq_args_is(&sc, "--bits")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, INT32_MIN, INT32_MAX, &v));
      CLOQ_CALL(check_bits(v));
      o->bits = (int)v;
    } else if (sweep && cloq_args_is(&sc, "--bits")) {
      CLOQ_CALL(parse_list(f, a, INT32_MIN, INT32_MAX, 4, list, &o->nbits));
      for (int k = 0; k < o->nbits; k++) {
        CLOQ_CALL(check_bits(list[k]));
        o->bits_list[k] = (int)list[k];
      }
    } else if (sweep && cloq_args_is(&sc, "--ranks")) {
      CLOQ_CALL(parse_list(f, a, 1, 1 << 20, 16, o->rank_list, &o->nranks));
    } else if (init && cloq_args_is(&sc, "--propagate")) {
      CLOQ_CALL(one_of(f, a, (const char *const[]){"full", "sequential", NULL}));
      o->propagate = a;
    } else if (init && cloq_args_is(&sc, "--dist-threshold")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 0, INT64_MAX, &o->dist_threshold));
      o->dist_threshold_set = 1;
    } else if (init && !sweep && cloq_args_is(&sc, "--export")) {
      o->export_dir = a;
    } else if (init && !sweep && cloq_args_is(&sc, "--export-format")) {
      unsigned fm;
      CLOQ_CALL(cloq_export_parse_formats(a, &fm));
      o->export_format = a;
    } else if (init && cloq_args_is(&sc, "--weights")) {
      CLOQ_CALL(one_of(f, a, (const char *const[]){"resident", "lazy", "auto", NULL}));
      o->weights = a;
    } else if (init && cloq_args_is(&sc, "--dist-block")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 16, &o->dist_nb));
    } else if (init && cloq_args_is(&sc, "--group-size")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, -1, INT64_MAX, &o->group_size));
      CLOQ_CHECK(o->group_size != 0, "--group-size: 0 is not allowed (use -1 for whole rows)");
    } else if (init && !sweep && cloq_args_is(&sc, "--rank")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 20, &o->rank));
    else if (init && cloq_args_is(&sc, "--init")) {
      CLOQ_CALL(one_of(f, a, (const char *const[]){"zero", "svd", "cloq", "loftq", "quailora", NULL}));
      o->init = a;
    } else if (init && cloq_args_is(&sc, "--quantizer")) {
      CLOQ_CALL(one_of(f, a, (const char *const[]){"rtn", "gptq", "comq", NULL}));
      o->quantizer = a;
    } else if (init && cloq_args_is(&sc, "--cloq-iters")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, CLOQ_MAX_ITERS, &o->cloq_iters));
    } else if (init && cloq_args_is(&sc, "--comq-iters")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 10, &o->comq_iters));
    } else if (init && cloq_args_is(&sc, "--comq-init")) {
      CLOQ_CALL(one_of(f, a, (const char *const[]){"rtn", "gptq", NULL}));
      o->comq_init = a;
    } else if (init && cloq_args_is(&sc, "--quailora-iters")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 0, CLOQ_MAX_ITERS - 1, &o->quailora_iters));
    } else if (init && !sweep && cloq_args_is(&sc, "--rank-budget")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, INT64_MAX, &o->rank_budget));
    } else if (init && !sweep && cloq_args_is(&sc, "--rank-weight")) {
      CLOQ_CALL(one_of(f, a, (const char *const[]){"raw", "relative", NULL}));
      o->rank_weight = a;
    } else if (init && cloq_args_is(&sc, "--gptq-block")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 20, &o->gptq_block));
    } else if (init && cloq_args_is(&sc, "--magr-alpha")) {
      CLOQ_CALL(cloq_cli_parse_f64(f, a, -HUGE_VAL, HUGE_VAL, &o->magr_alpha));
      CLOQ_CHECK(o->magr_alpha >= 0, "--magr-alpha: %g must be >= 0", o->magr_alpha);
    } else if (init && cloq_args_is(&sc, "--magr-iters")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 0, 1 << 20, &o->magr_iters));
    } else if (init && cloq_args_is(&sc, "--loftq-iters")) {
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 10, &o->loftq_iters));
    } else if (init && cloq_args_is(&sc, "--damp")) {
      CLOQ_CALL(cloq_cli_parse_f64(f, a, -HUGE_VAL, HUGE_VAL, &o->damp));
      CLOQ_CHECK(o->damp >= 0, "--damp: %g must be >= 0", o->damp);
    } else if (init && cloq_args_is(&sc, "--nsamples"))
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 24, &o->nsamples));
    else if (init && cloq_args_is(&sc, "--seed")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 0, INT64_MAX, &o->seed));
    else if (!init && cloq_args_is(&sc, "--store")) o->store = a;
    else if (!init && cloq_args_is(&sc, "--data")) o->data = a;
    else if (!init && cloq_args_is(&sc, "--data-format")) {
      CLOQ_CALL(one_of(f, a, (const char *const[]){"text", "tokens", "jsonl", NULL}));
      o->data_format = a;
    } else if (!init && cloq_args_is(&sc, "--data-field")) o->data_field = a;
    else if (!init && cloq_args_is(&sc, "--limit")) CLOQ_CALL(cloq_cli_parse_i64(f, a, 0, INT64_MAX, &o->limit));
    else if (!init && cloq_args_is(&sc, "--dump-logits")) o->dump_logits = a;
    else if (!init && cloq_args_is(&sc, "--dump-positions"))
      CLOQ_CALL(cloq_cli_parse_i64(f, a, 1, 1 << 20, &o->dump_positions));
    else
      return cloq_args_unknown(&sc);
  }
  CLOQ_CALL(sc.rc);
  if (o->help) return CLOQ_OK;
  CLOQ_CHECK(!strcmp(o->device, "cpu") || !strcmp(o->device, "cuda") || !strcmp(o->device, "auto"),
             "CLOQ_DEVICE: '%s' is not one of cpu, cuda, auto", o->device);
  if (init)
    CLOQ_CALL(check_field("--calib-field", "--calib-format", o->calib_format, &o->calib_field));
  else
    CLOQ_CALL(check_field("--data-field", "--data-format", o->data_format, &o->data_field));
  CLOQ_CHECK(o->model, "--model is required");
  CLOQ_CHECK(o->model[0], "--model is empty");
  const char *inputs[] = {o->model, o->tokenizer, init ? o->calib : o->data, o->store};
  if (init) {
    CLOQ_CHECK(o->calib, "--calib is required");
    CLOQ_CHECK(strcmp(o->propagate, "sequential") != 0 || strcmp(o->weights, "lazy") != 0,
               "--weights lazy needs --propagate full (sequential propagation replaces each "
               "block's weights by Q + B A in memory)");
    CLOQ_CHECK(o->out, "--out is required");
    CLOQ_CALL(check_output("--out", o->out, sweep, inputs, 4));
    CLOQ_CHECK(!o->act_order || !strcmp(o->quantizer, "gptq") ||
                   (!strcmp(o->quantizer, "comq") && !strcmp(o->comq_init, "gptq")),
               "--act-order needs --quantizer gptq (or comq with --comq-init gptq)");
    CLOQ_CALL(check_given(&sc, "--cloq-iters", "--init cloq", !strcmp(o->init, "cloq")));
    CLOQ_CALL(check_given(&sc, "--quailora-iters", "--init quailora",
                          !strcmp(o->init, "quailora")));
    CLOQ_CALL(check_given(&sc, "--comq-iters", "--quantizer comq", !strcmp(o->quantizer, "comq")));
    CLOQ_CALL(check_given(&sc, "--comq-init", "--quantizer comq", !strcmp(o->quantizer, "comq")));
    CLOQ_CALL(check_given(&sc, "--rank-weight", "--rank-budget", o->rank_budget > 0));
    CLOQ_CHECK(!o->rank_budget || !strcmp(o->init, "cloq"),
               "--rank-budget needs --init cloq (ranks are allocated by CLoQ's eigenvalues)");
    if (o->magr_alpha < 0) o->magr_alpha = o->group_size == -1 ? 1e-3 : 1e-4;
    CLOQ_CHECK(!o->export_format || o->export_dir, "--export-format needs --export DIR");
    /* refuse before hours of work, not after: cloq export itself refuses an existing DIR that
     * is not an earlier export even with --force */
    CLOQ_CHECK(!o->export_dir || o->force || access(o->export_dir, F_OK) != 0,
               "--export %s already exists (give --force to replace an earlier export, or another "
               "folder)", o->export_dir);
    if (!sweep) {
      o->nbits = 1, o->bits_list[0] = o->bits;
      o->nranks = 1, o->rank_list[0] = o->rank;
    } else {
      CLOQ_CHECK(o->nbits > 0, "--bits is required (a comma-separated list)");
      CLOQ_CHECK(o->nranks > 0, "--ranks is required (a comma-separated list)");
      CLOQ_CHECK(strcmp(o->propagate, "sequential") != 0,
                 "--propagate sequential is not available for sweeps: each configuration would "
                 "need its own calibration pass (run cloq init per configuration)");
      o->bits = o->bits_list[0];
      o->rank = o->rank_list[0];
    }
  } else {
    CLOQ_CHECK(o->data, "--data is required");
    CLOQ_CHECK(!o->kl || o->store, "--kl needs --store (the quantized model to compare)");
    CLOQ_CHECK(!o->dump_positions || o->dump_logits, "--dump-positions needs --dump-logits");
    if (o->dump_logits) {
      CLOQ_CALL(check_output("--dump-logits", o->dump_logits, 0, inputs, 4));
      CLOQ_CHECK(o->force || access(o->dump_logits, F_OK) != 0,
                 "--dump-logits %s exists (use --force to overwrite it)", o->dump_logits);
    }
  }
  return CLOQ_OK;
}
