/* cloq_model: see model.h. */
#include "model.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloq_err.h"
#include "gguf_internal.h"

int cloq_model_open(const char *path, cloq_model **out) {
  *out = NULL;
  cloq_model *m;
  CLOQ_ALLOC(m, 1, "model");
  int rc = CLOQ_OK;
  struct stat sb;
  m->path = strdup(path);
  if (!m->path) rc = CLOQ_FAIL("out of memory");
  else if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
    m->is_gguf = 1;
    cloq_gguf *g = NULL;
    if (!cloq_is_gguf(path))
      rc = CLOQ_FAIL("%s is a file but not a GGUF model (no GGUF magic): give a GGUF file or a "
                     "Hugging Face model folder", path);
    else rc = cloq_gguf_open(path, &g);
    if (rc == CLOQ_OK) rc = cloq_gguf_config(g, &m->cfg);
    if (rc == CLOQ_OK) rc = cloq_ckpt_from_gguf(&g, path, &m->cfg, &m->st);
    cloq_gguf_close(&g);
  } else {
    rc = cloq_config_read(path, &m->cfg);
    if (rc == CLOQ_OK) rc = cloq_ckpt_open(path, &m->st);
  }
  if (rc == CLOQ_OK) rc = cloq_ckpt_check_layers(m->st, m->cfg.n_layers);
  if (rc != CLOQ_OK) {
    cloq_model_close(&m);
    return rc;
  }
  *out = m;
  return CLOQ_OK;
}

void cloq_model_close(cloq_model **pm) {
  if (!pm || !*pm) return;
  cloq_ckpt_close(&(*pm)->st);
  free((*pm)->path);
  free(*pm);
  *pm = NULL;
}

int cloq_model_tokenizer_path(const char *model, const char *override, char *path, size_t cap) {
  if (override) {
    snprintf(path, cap, "%s", override);
    return CLOQ_OK;
  }
  /* a GGUF model carries its tokenizer; a folder: tokenizer.json, then llama2.c files */
  struct stat sb;
  if (stat(model, &sb) == 0 && S_ISREG(sb.st_mode)) {
    snprintf(path, cap, "%s", model);
    return CLOQ_OK;
  }
  snprintf(path, cap, "%s/tokenizer.json", model);
  if (access(path, R_OK) == 0) return CLOQ_OK;
  snprintf(path, cap, "%s/tokenizer.bin", model);
  if (access(path, R_OK) == 0) return CLOQ_OK;
  DIR *d = opendir(model);
  CLOQ_CHECK(d, "cannot open model folder %s", model);
  struct dirent *e;
  char best[256] = "";
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n > 7 && n < sizeof best && !strncmp(e->d_name, "tok", 3) &&
        !strcmp(e->d_name + n - 4, ".bin") && (!best[0] || strcmp(e->d_name, best) < 0))
      snprintf(best, sizeof best, "%s", e->d_name);
  }
  closedir(d);
  CLOQ_CHECK(best[0], "no tokenizer found in %s (give --tokenizer FILE: tokenizer.json, a GGUF "
             "file or a llama2.c tokenizer)", model);
  snprintf(path, cap, "%s/%s", model, best);
  return CLOQ_OK;
}

int cloq_model_tokenizer(const cloq_model *m, const char *override, cloq_tok **out) {
  *out = NULL;
  if (!override && m->is_gguf) return cloq_gguf_tok(cloq_ckpt_gguf(m->st), m->cfg.vocab_size, out);
  char path[4096];
  CLOQ_CALL(cloq_model_tokenizer_path(m->path, override, path, sizeof path));
  return cloq_tok_load(path, m->cfg.vocab_size, out);
}
