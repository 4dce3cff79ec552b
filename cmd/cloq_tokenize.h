/* cloq_tokenize: `cloq tokenize`, text into token ids with a model's tokenizer (or any tokenizer
 * file cloq reads), written as a token file: what `--calib-format tokens` / `--data-format tokens`
 * read, and what tests compare with other tokenizers.
 */
#ifndef CLOQ_TOKENIZE_H
#define CLOQ_TOKENIZE_H

/* Not collective: a plain single-process command (main calls it on rank 0 only, before and
 * without any MPI work). argv[0] is "tokenize"; the options follow (see `cloq tokenize --help`).
 * Returns 0, or 1 after printing one "cloq: error: ..." line on stderr. The ids go to stdout, or
 * to --out (then a one-line summary goes to stdout). */
int cloq_tokenize_main(int argc, char **argv);

#endif
