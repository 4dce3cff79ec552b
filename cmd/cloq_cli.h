/* cloq_cli: the command line. Every rank parses argv identically (mpirun gives each the same
 * arguments), so all ranks agree on the settings without a broadcast; only rank 0 prints usage
 * or the error line. Not collective. */
#ifndef CLOQ_CLI_H
#define CLOQ_CLI_H

#include <stdint.h>

enum { CLOQ_CMD_INIT = 1, CLOQ_CMD_EVAL = 2, CLOQ_CMD_SWEEP = 3 };

typedef struct {
  int cmd;
  int help;               /* --help given: print usage, exit 0 */
  const char *model;      /* --model DIR (config.json + model.safetensors[.index.json]) */
  const char *tokenizer;  /* --tokenizer FILE (llama2.c format); default: found in DIR */
  /* init */
  const char *calib;      /* --calib FILE */
  const char *calib_format; /* text | tokens | jsonl */
  const char *calib_field;  /* --calib-field (jsonl): the records' text field; NULL otherwise */
  const char *out;        /* --out FILE.h5 */
  int force;
  int bits;
  int64_t group_size;
  int64_t rank;
  const char *init;       /* zero | svd | cloq | loftq | quailora */
  const char *quantizer;  /* rtn | gptq | comq */
  int act_order;          /* --act-order (gptq) */
  int64_t gptq_block;     /* --gptq-block: lazy batch width (gptq) */
  int magr;               /* --magr: MagR preprocessing before the quantizer */
  double magr_alpha;      /* --magr-alpha (< 0: default, 1e-3 whole rows, 1e-4 groups) */
  int64_t magr_iters;     /* --magr-iters */
  int64_t loftq_iters;    /* --loftq-iters T (init loftq) */
  int64_t cloq_iters;     /* --cloq-iters T (init cloq; 1: the closed form alone) */
  int64_t comq_iters;     /* --comq-iters K (quantizer comq) */
  const char *comq_init;  /* --comq-init rtn | gptq (quantizer comq) */
  int64_t quailora_iters; /* --quailora-iters K (init quailora) */
  int64_t rank_budget;    /* --rank-budget N: total LoRA parameters (0: off; init only) */
  const char *rank_weight;/* --rank-weight raw | relative: how the budget weighs modules */
  double damp;
  int64_t nsamples;
  int64_t seqlen;         /* 0: min(2048, max_position_embeddings) */
  int64_t seed;
  const char *propagate;  /* full | sequential */
  int64_t dist_threshold; /* ScaLAPACK for matrices whose smaller side is >= this (0: never) */
  int dist_threshold_set; /* --dist-threshold given (else 0 when every rank has a GPU) */
  int64_t dist_nb;        /* ScaLAPACK block size */
  int dry_run;            /* print the plan (blocks, memory, flops per rank) and stop */
  const char *weights;    /* resident | lazy | auto: how owners hold their blocks' linears */
  const char *export_dir; /* init --export DIR: cloq export of the finished store (rank 0) */
  const char *export_format; /* init --export-format LIST (default safetensors,peft) */
  /* sweep: --bits and --ranks take comma lists (init: one value each) */
  int nbits;
  int bits_list[4];
  int nranks;
  int64_t rank_list[16];
  /* eval */
  const char *store;
  const char *data;
  const char *data_format;  /* text | tokens | jsonl */
  const char *data_field;   /* --data-field (jsonl), as calib_field */
  int64_t limit;          /* evaluate at most this many windows/sequences (0: all) */
  const char *dump_logits;/* write the first positions' logits of the first sequence here */
  int64_t dump_positions; /* how many (0: the default, 3) */
  int kl;                 /* --kl: also the KL divergence from the full-precision model */
  const char *device;     /* --device cpu | cuda | auto (default $CLOQ_DEVICE, else auto) */
  struct cloq_dev *dev;   /* set by main after parsing: the device opened for --device on this
                           * rank (NULL: the CPU); not owned by the options */
} cloq_opts;

/* Parses argv into o (defaults first). Returns 0, or CLOQ_ERR with the reason recorded. */
int cloq_cli_parse(int argc, char **argv, cloq_opts *o);
/* One integer flag value in [lo, hi], else an error naming the flag (every command). */
int cloq_cli_parse_i64(const char *flag, const char *v, int64_t lo, int64_t hi, int64_t *out);
/* One finite number in [lo, hi], else an error naming the flag (every command). */
int cloq_cli_parse_f64(const char *flag, const char *v, double lo, double hi, double *out);

/* The argument scanner every command uses:
 *   cloq_args s = cloq_args_begin(argc, argv, first, "export");
 *   for (const char *f; (f = cloq_args_next(&s));) {
 *     if (cloq_args_switch(&s, "--force")) { ...; continue; }
 *     const char *a = cloq_args_peek(&s);
 *     if (cloq_args_is(&s, "--out")) o->out = a;
 *     ...
 *     else return cloq_args_unknown(&s);
 *   }
 *   CLOQ_CALL(s.rc);
 * "--flag value" and "--flag=value" are the same. A flag given twice, an argument that is not an
 * option, a value missing after a known flag, a value given to a switch and an unknown flag each
 * get their own message. */
typedef struct {
  int argc;
  char **argv;
  int i;                /* argv[i]: the current flag */
  const char *cmd;      /* the command, for messages */
  char flag[64];        /* the current flag, without "=value" */
  const char *inl;      /* its "=value" part, or NULL */
  int why;              /* why the current flag matched nothing: 0 unknown, 1 no value, 2 a
                         * value given to a switch */
  int rc;               /* CLOQ_OK, or CLOQ_ERR with the reason recorded (after the loop) */
  int nseen;
  char seen[64][64];
} cloq_args;

cloq_args cloq_args_begin(int argc, char **argv, int first, const char *cmd);
/* The next flag, or NULL when there is no more or on an error (s->rc). */
const char *cloq_args_next(cloq_args *s);
/* The end of a single-process command (synth, sample, export): rc of its parse, then usage on
 * --help, else run(opts); one error line on failure. The process's exit status (128 + signal when
 * a signal stopped it). */
int cloq_cli_finish(int rc, int help, void (*usage)(void), int (*run)(const void *), const void *opts);
/* The switches every command has: --help / -h (sets *help and ends the scan; the caller then
 * returns with the usage) and --force (sets *force). 1 when the current flag was one of them. */
int cloq_args_help_force(cloq_args *s, int *help, int *force);
/* The current flag is the switch `name` (no value). */
int cloq_args_switch(cloq_args *s, const char *name);
/* The current flag's value, whether or not a branch will take it (NULL when there is none). */
const char *cloq_args_peek(const cloq_args *s);
/* The current flag is `name` and has its value (then consumed); 0 otherwise. */
int cloq_args_is(cloq_args *s, const char *name);
/* The error for a flag no branch took: unknown, missing its value, or a switch given a value. */
int cloq_args_unknown(const cloq_args *s);
/* Usage text for a command (0: top level). */
void cloq_cli_usage(int cmd);

#endif
