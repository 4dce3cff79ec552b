/* cloq_tokenize: `cloq tokenize`, text into token ids.
 *
 * What a sequence is: the text is cut at every occurrence of the delimiter (default "\n", a line
 * break; --delimiter S another string; --whole: not cut at all) and each piece is encoded on its
 * own (cloq_tok_encode), BOS first when the tokenizer adds one (cloq_tok_add_bos, as Hugging
 * Face's encode does; llama2.c tokenizers always; --no-bos never). Each sequence is one output
 * line, its ids separated by one space. An empty piece gives an empty line (or BOS alone). A
 * delimiter at the very end of the text ends the last sequence and starts no other: a file of N
 * lines gives N output lines whether or not its last line ends in '\n', and an empty file gives
 * none (--whole always gives one line). The delimiter belongs to no sequence; a "\r\n" file keeps
 * each line's '\r' unless the delimiter is "\r\n". Empty lines are what the token-file reader
 * skips (io/cloq_data.h), so the output reads back in `--data-format tokens` as the non-empty
 * sequences.
 *
 * The output goes to stdout, or to --out FILE (written to FILE.tmp and renamed into place only
 * when complete).
 */
#include "cloq_tokenize.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cloq_cli.h"
#include "cloq_clock.h"
#include "cloq_data.h"
#include "cloq_err.h"
#include "cloq_tok.h"
#include "model.h"

typedef struct {
  const char *tokenizer, *model, *text, *out, *delimiter;
  int whole, no_bos, force, help;
  char delim[256]; /* the delimiter with its escapes resolved (default "\n") */
  size_t delim_len;
} tokenize_opts;

static void usage(void) {
  printf(
      "usage: cloq tokenize (--tokenizer FILE | --model M) --text FILE [options]\n"
      "Encodes text into token ids, one sequence per line (ids separated by a space): the\n"
      "token files that `cloq init --calib-format tokens` and `cloq eval --data-format tokens`\n"
      "read.\n"
      "  --tokenizer FILE       tokenizer.json, a GGUF file (its tokenizer) or a llama2.c\n"
      "                         tokenizer\n"
      "  --model M              a model folder or GGUF file: its tokenizer, found as init and\n"
      "                         eval find it (the GGUF itself, DIR/tokenizer.json,\n"
      "                         DIR/tokenizer.bin or DIR/tok*.bin)\n"
      "  --text FILE            the text (UTF-8); - reads standard input\n"
      "  --delimiter S          what separates sequences (default \\n: one sequence per line);\n"
      "                         \\n, \\r, \\t and \\\\ are escapes. Each piece between delimiters\n"
      "                         is one output line (an empty piece, an empty line); a delimiter\n"
      "                         at the end of the text starts no further sequence\n"
      "  --whole                the whole text is one sequence (one output line)\n"
      "  --no-bos               no BOS (default: BOS first when the tokenizer adds one, as\n"
      "                         Hugging Face's encode does; llama2.c tokenizers always do)\n"
      "  --out FILE             write the ids to FILE (default: standard output); written to\n"
      "                         FILE.tmp and renamed, refused if FILE exists, unless --force\n"
      "  --force                replace an existing --out FILE\n");
}

/* The delimiter with its escapes resolved, into buf (cap bytes). */
static int unescape(const char *s, char *buf, size_t cap, size_t *len) {
  size_t k = 0;
  for (const char *p = s; *p; p++) {
    CLOQ_CHECK(k + 1 < cap, "--delimiter: longer than %zu bytes", cap - 1);
    char c = *p;
    if (c == '\\') {
      char e = *++p;
      if (e == 'n') c = '\n';
      else if (e == 'r') c = '\r';
      else if (e == 't') c = '\t';
      else if (e == '\\') c = '\\';
      else return CLOQ_FAIL("--delimiter: unknown escape '\\%c' (\\n, \\r, \\t, \\\\ are known)",
                            e ? e : ' ');
    }
    buf[k++] = c;
  }
  CLOQ_CHECK(k > 0, "--delimiter is empty");
  *len = k;
  return CLOQ_OK;
}

static int parse_args(int argc, char **argv, tokenize_opts *o) {
  memset(o, 0, sizeof *o);
  cloq_args sc = cloq_args_begin(argc, argv, 1, "tokenize");
  for (const char *f; (f = cloq_args_next(&sc));) {
    if (cloq_args_help_force(&sc, &o->help, &o->force)) continue;
    if (cloq_args_switch(&sc, "--whole")) {
      o->whole = 1;
      continue;
    }
    if (cloq_args_switch(&sc, "--no-bos")) {
      o->no_bos = 1;
      continue;
    }
    const char *a = cloq_args_peek(&sc);
    if (cloq_args_is(&sc, "--tokenizer")) o->tokenizer = a;
    else if (cloq_args_is(&sc, "--model")) o->model = a;
    else if (cloq_args_is(&sc, "--text")) o->text = a;
    else if (cloq_args_is(&sc, "--out")) o->out = a;
    else if (cloq_args_is(&sc, "--delimiter")) o->delimiter = a;
    else return cloq_args_unknown(&sc);
  }
  CLOQ_CALL(sc.rc);
  if (o->help) return CLOQ_OK;
  CLOQ_CHECK(!(o->tokenizer && o->model), "give either --tokenizer or --model, not both");
  CLOQ_CHECK(o->tokenizer || o->model, "--tokenizer FILE or --model M is required");
  CLOQ_CHECK(o->text, "--text is required (a file, or - for standard input)");
  CLOQ_CHECK(!(o->whole && o->delimiter), "give either --whole or --delimiter, not both");
  CLOQ_CHECK(!o->out || o->out[0], "--out is empty");
  o->delim[0] = '\n';
  o->delim_len = 1;
  if (o->delimiter) CLOQ_CALL(unescape(o->delimiter, o->delim, sizeof o->delim, &o->delim_len));
  return CLOQ_OK;
}

/* Standard input into memory, NUL-terminated, as cloq_read_file gives a file. */
static int read_stdin(char **buf, size_t *len) {
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  CLOQ_CHECK(b, "standard input: out of memory");
  for (;;) {
    if (n + 1 == cap) {
      char *g = cap > SIZE_MAX / 2 ? NULL : realloc(b, cap * 2);
      if (!g) {
        free(b);
        return CLOQ_FAIL("standard input: out of memory after %zu bytes", n);
      }
      b = g;
      cap *= 2;
    }
    size_t got = fread(b + n, 1, cap - 1 - n, stdin);
    n += got;
    if (got == 0) break;
  }
  if (ferror(stdin)) {
    free(b);
    return CLOQ_FAIL("standard input: read failed after %zu bytes", n);
  }
  b[n] = '\0';
  *buf = b;
  *len = n;
  return CLOQ_OK;
}

/* --out: not a folder, not the text itself, and replaced only with --force. */
static int check_out(const tokenize_opts *o) {
  struct stat so, st;
  if (stat(o->out, &so) != 0) return CLOQ_OK;
  CLOQ_CHECK(!S_ISDIR(so.st_mode), "--out %s is a folder (give a file name)", o->out);
  CLOQ_CHECK(!(strcmp(o->text, "-") && stat(o->text, &st) == 0 && st.st_dev == so.st_dev &&
               st.st_ino == so.st_ino), "--out %s is the --text file", o->out);
  CLOQ_CHECK(o->force, "%s exists (use --force to replace it)", o->out);
  return CLOQ_OK;
}

/* One sequence: its ids on one line. */
static int write_seq(FILE *f, const cloq_tok *tok, const char *s, size_t n, int bos,
                     int64_t *nids) {
  int32_t *ids;
  int64_t m;
  CLOQ_CALL(cloq_tok_encode(tok, s, n, bos, &ids, &m));
  for (int64_t j = 0; j < m; j++) fprintf(f, j ? " %d" : "%d", (int)ids[j]);
  fputc('\n', f);
  free(ids);
  *nids += m;
  return CLOQ_OK;
}

/* Every sequence of text[0..len) to f; *nseq sequences and *nids ids written. */
static int write_all(const tokenize_opts *o, const cloq_tok *tok, const char *text, size_t len,
                     FILE *f, int64_t *nseq, int64_t *nids) {
  int bos = o->no_bos ? 0 : cloq_tok_add_bos(tok);
  *nseq = *nids = 0;
  if (o->whole) {
    *nseq = 1;
    return write_seq(f, tok, text, len, bos, nids);
  }
  const char *dl_s = o->delim;
  size_t dl = o->delim_len, start = 0;
  while (start < len) {
    const char *hit = NULL;
    for (const char *p = text + start; (size_t)(p - text) + dl <= len;) {
      p = memchr(p, dl_s[0], len - dl + 1 - (size_t)(p - text));
      if (!p || !memcmp(p, dl_s, dl)) {
        hit = p;
        break;
      }
      p++;
    }
    size_t end = hit ? (size_t)(hit - text) : len;
    CLOQ_CALL(write_seq(f, tok, text + start, end - start, bos, nids));
    ++*nseq;
    start = hit ? end + dl : len;
  }
  return CLOQ_OK;
}

static const char *kind_name(const cloq_tok *t) {
  int k = cloq_tok_kind(t);
  return k == CLOQ_TOK_LLAMA2C ? "llama2.c" : k == CLOQ_TOK_SPM ? "SentencePiece BPE"
                                                                : "byte-level BPE";
}

static int tokenize_run(const tokenize_opts *o, cloq_model **m, cloq_tok **tok, char **text,
                        FILE **tmpf, char **tmp) {
  double t0 = cloq_now();
  if (o->out) CLOQ_CALL(check_out(o));
  if (o->model) {
    CLOQ_CALL(cloq_model_open(o->model, m));
    CLOQ_CALL(cloq_model_tokenizer(*m, NULL, tok));
  } else {
    CLOQ_CALL(cloq_tok_load(o->tokenizer, 0, tok));
  }
  size_t len;
  if (!strcmp(o->text, "-")) CLOQ_CALL(read_stdin(text, &len));
  else CLOQ_CALL(cloq_read_file(o->text, text, &len));
  FILE *f = stdout;
  if (o->out) {
    size_t pl = strlen(o->out) + 5;
    CLOQ_ALLOC(*tmp, pl, "path");
    snprintf(*tmp, pl, "%s.tmp", o->out);
    *tmpf = f = fopen(*tmp, "w");
    CLOQ_CHECK(f, "%s: cannot create: %s", *tmp, strerror(errno));
  }
  int64_t nseq, nids;
  CLOQ_CALL(write_all(o, *tok, *text, len, f, &nseq, &nids));
  if (!o->out) {
    CLOQ_CHECK(fflush(stdout) == 0 && !ferror(stdout), "standard output: write failed: %s",
               strerror(errno));
    return CLOQ_OK;
  }
  *tmpf = NULL;
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) return CLOQ_FAIL("%s: write failed: %s", *tmp, strerror(errno));
  CLOQ_CHECK(rename(*tmp, o->out) == 0, "%s: cannot rename to %s: %s", *tmp, o->out,
             strerror(errno));
  printf("cloq tokenize: %s: %zu bytes -> %lld sequence%s, %lld ids (%s, %lld ids, bos %s) in "
         "%.2f s -> %s\n", o->text, len, (long long)nseq, nseq == 1 ? "" : "s", (long long)nids,
         kind_name(*tok), (long long)cloq_tok_size(*tok),
         !o->no_bos && cloq_tok_add_bos(*tok) ? "added" : "none", cloq_now() - t0, o->out);
  return CLOQ_OK;
}

static int run(const void *p) {
  const tokenize_opts *o = p;
  cloq_model *m = NULL;
  cloq_tok *tok = NULL;
  char *text = NULL, *tmp = NULL;
  FILE *tmpf = NULL;
  int rc = tokenize_run(o, &m, &tok, &text, &tmpf, &tmp);
  if (tmpf) fclose(tmpf);
  if (rc != CLOQ_OK && tmp) remove(tmp); /* nothing is left at FILE.tmp */
  free(tmp);
  free(text);
  cloq_tok_free(&tok);
  cloq_model_close(&m);
  return rc;
}

int cloq_tokenize_main(int argc, char **argv) {
  tokenize_opts o;
  int rc = parse_args(argc, argv, &o);
  return cloq_cli_finish(rc, o.help, usage, run, &o);
}
