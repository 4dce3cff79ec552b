/* cloq_export: `cloq export`, a store handed off in the formats that transformers, PEFT and the
 * GPTQ loaders read (layouts and conventions: docs/export.md).
 *
 * How it is written: each output folder is a list of tensors planned up front (name, dtype,
 * shape, and where the values come from: a model tensor, a store module, or a packing of one),
 * then handed to io/hf_folder.c, which cuts it into shards of at most --shard-size MiB and asks
 * for the values shard by shard, so memory holds one shard and one store module at a time
 * whatever the model's size. A store module is read once and cached while the tensors made from
 * it (a dequantized weight, or GPTQ's four) are produced. The formats themselves live in io/:
 * hf_folder (shards, config.json, tokenizer files), gptq_pack (GPTQ's packing and layout) and
 * peft_adapter (PEFT's names, lora_B scaling, adapter_config.json). This file decides what goes
 * where, owns DIR's atomic replacement, and prints.
 *
 * Atomicity: everything goes into DIR.partial/ (marked by a file .cloq-export-partial, so that a
 * later run may delete a stale one and nothing else); cloq_export.json, the provenance, is written
 * last, then DIR.partial is renamed to DIR. With --force an earlier export at DIR is moved aside
 * to DIR.old only once the new one is complete, and deleted after the rename. --force never
 * deletes a folder that is not an export (no cloq_export.json) and is not empty.
 *
 * Numbers are validated where they leave the store (cloq_store_read_module): non-finite or
 * non-positive scales, zero points that are not integers in [0, 2^bits - 1], codes above
 * 2^bits - 1 and non-finite LoRA factors stop the export with a message naming block, module and
 * array; a value that does not fit the output dtype (float16 overflow, a scale that rounds to 0 in
 * float16) names the tensor.
 */
#include "cloq_export.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloq_clock.h"
#include "cloq_calib.h"
#include "cloq_err.h"
#include "cloq_linalg.h"
#include "cloq_modules.h"
#include "cloq_store.h"
#include "gptq_pack.h"
#include "hf_folder.h"
#include "peft_adapter.h"

#define DEFAULT_SHARD_MIB 4096.0
#define PARTIAL_MARK ".cloq-export-partial" /* in DIR.partial/ while it is being written */
#define DONE_FILE "cloq_export.json"        /* provenance; written last: an export is complete */
#define EXPORT_FORMAT "cloq-export"
#define EXPORT_FORMAT_VERSION 1
#define PATH_CAP CLOQ_HF_PATH_CAP

/* Where a tensor's values come from. */
enum {
  SRC_MODEL,   /* a tensor of the model (Hugging Face name `from`), converted to the dtype */
  SRC_Q,       /* the dequantized base Q of (block, module) */
  SRC_LORA_A,  /* the store's lora_A (r, in) */
  SRC_LORA_B,  /* the store's lora_B (out, r), times rank / lora_alpha */
  SRC_QWEIGHT, /* GPTQ: the codes packed along the input (in_pad * bits / 32, out) */
  SRC_QZEROS,  /* GPTQ: zero (v1: zero - 1) packed along the output (n_groups, out_pad*bits/32) */
  SRC_SCALES,  /* GPTQ: float16 scales (n_groups, out) */
  SRC_GIDX     /* GPTQ: column // group_size (in) */
};

typedef struct {
  char from[224]; /* a model tensor's name, as wide as cloq_hf_tensor.name */
  int src;
  int64_t block;
  int module;
} ex_src;

/* A folder's tensors: t[i] (name, dtype, shape) is made from s[i]. */
typedef struct {
  cloq_hf_tensor *t;
  ex_src *s;
  int64_t n, cap;
} plan;

typedef struct {
  const cloq_export_opts *o;
  cloq_model *mdl;        /* the model, recognized and read once */
  cloq_config cfg;        /* mdl->cfg */
  cloq_ckpt *st;            /* mdl->st */
  cloq_store *store;      /* NULL: no store (full-precision conversion) */
  cloq_store_meta meta;
  char model[PATH_CAP];   /* the model as given or recorded */
  int model_is_dir;
  char out[PATH_CAP];     /* DIR without trailing '/' */
  char partial[PATH_CAP + 16]; /* DIR.partial */
  char old[PATH_CAP + 16];     /* DIR.old: an earlier export moved aside during the swap */
  char base_abs[PATH_CAP];/* absolute DIR/base, what the adapter points to */
  double lora_alpha;
  int64_t *ranks;         /* a --rank-budget store: each module's rank (n_layers x 7), else NULL */
  /* the store module being turned into tensors */
  cloq_qmodule q;
  int64_t qb;
  int qm;
  const plan *cur;        /* the plan being written */
  float *scratch;         /* (largest tensor) float32 values before conversion */
  uint8_t *zcol;          /* (widest out, padded) zero points of one group */
  int64_t scratch_n, zcol_n;
  cloq_tok *tok;
  int tok_tried;
  /* GPTQ figures for the summary and the provenance */
  int64_t zero0_groups, groups_total;
  double scale_rel_max;
  int64_t pad_in, pad_from; /* a width that was padded (for the warning), 0: none */
} ex_ctx;

/* ---- small helpers -------------------------------------------------------------------------- */

static int exists(const char *p) {
  struct stat sb;
  return lstat(p, &sb) == 0;
}

static int is_dir(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f) {
  (void)sb, (void)flag, (void)f;
  return remove(p);
}

/* Deletes path and everything under it (symbolic links are removed, not followed). */
static int rm_rf(const char *path) {
  if (!exists(path)) return CLOQ_OK;
  CLOQ_CHECK(nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0, "cannot remove %s: %s", path,
             strerror(errno));
  return CLOQ_OK;
}

/* 1 when folder d has no entry but . and .. */
static int dir_empty(const char *d) {
  DIR *h = opendir(d);
  if (!h) return 0;
  struct dirent *e;
  int empty = 1;
  while (empty && (e = readdir(h)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
  closedir(h);
  return empty;
}

/* `parent/leaf` with parent resolved to an absolute path (leaf need not exist yet). */
static int abs_path(const char *path, char *buf, size_t cap) {
  char tmp[PATH_CAP], rp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s", path);
  char *slash = strrchr(tmp, '/');
  const char *parent = ".", *leaf = tmp;
  if (slash) {
    *slash = 0;
    parent = slash == tmp ? "/" : tmp;
    leaf = slash + 1;
  }
  CLOQ_CHECK(realpath(parent, rp), "cannot resolve %s: %s", parent, strerror(errno));
  int n = snprintf(buf, cap, "%s/%s", strcmp(rp, "/") ? rp : "", leaf);
  CLOQ_CHECK(n > 0 && (size_t)n < cap, "path too long: %s", path);
  return CLOQ_OK;
}

/* The model path recorded in a store (its root attribute "model"), read before the model's shape
 * is known (cloq_store_open needs it). */
static int store_model(const char *path, char *buf, size_t cap) {
  CLOQ_CHECK(access(path, R_OK) == 0, "store %s does not exist or is not readable", path);
  CLOQ_CHECK(H5Fis_hdf5(path) > 0, "%s is not an HDF5 file", path);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  CLOQ_CHECK(f >= 0, "cannot open store %s", path);
  int rc = CLOQ_OK;
  hid_t a = H5Aexists(f, "model") > 0 ? H5Aopen(f, "model", H5P_DEFAULT) : -1;
  if (a < 0) {
    rc = CLOQ_FAIL("store %s records no model (not a cloq store?); give --model", path);
  } else {
    hid_t ft = H5Aget_type(a);
    size_t sz = H5Tget_size(ft);
    if (H5Tget_class(ft) != H5T_STRING || H5Tis_variable_str(ft) > 0 || sz == 0 || sz >= cap) {
      rc = CLOQ_FAIL("store %s: attribute model is not a short fixed-length string", path);
    } else {
      hid_t mt = H5Tcopy(H5T_C_S1);
      H5Tset_size(mt, sz);
      memset(buf, 0, cap);
      if (H5Aread(a, mt, buf) < 0) rc = CLOQ_FAIL("store %s: cannot read attribute model", path);
      H5Tclose(mt);
    }
    H5Tclose(ft);
    H5Aclose(a);
  }
  H5Fclose(f);
  return rc;
}

/* ---- numbers out of the store ---------------------------------------------------------------- */

/* Module m of block b into c->q (kept until another one is asked for). */
static int get_module(ex_ctx *c, int64_t b, int m) {
  if (c->qb == b && c->qm == m) return CLOQ_OK;
  cloq_qmodule_free(&c->q);
  c->qb = -1;
  CLOQ_CALL(cloq_qmodule_alloc(&c->cfg, b, m, c->meta.group_size, c->meta.rank, &c->q));
  CLOQ_CALL(cloq_store_read_module(c->store, b, m, &c->q)); /* validated there (see the top) */
  c->qb = b;
  c->qm = m;
  return CLOQ_OK;
}

/* ---- producing one tensor ------------------------------------------------------------------- */

static int produce(ex_ctx *c, const cloq_hf_tensor *t, const ex_src *s, void *buf) {
  int64_t n = cloq_hf_numel(t);
  float *f = t->dtype == CLOQ_DT_F32 ? (float *)buf : c->scratch;
  if (s->src != SRC_MODEL && s->src != SRC_GIDX) CLOQ_CALL(get_module(c, s->block, s->module));
  switch (s->src) {
  case SRC_MODEL:
    CLOQ_CALL(cloq_ckpt_read_f32(c->st, s->from, t->ndim, t->shape, f));
    return cloq_hf_from_f32(f, n, t->dtype, buf, t->name);
  case SRC_Q:
    cloq_dequant(c->q.codes, c->q.scales, c->q.zeros, c->q.n_out, c->q.n_in, c->meta.group_size,
                 f);
    return cloq_hf_from_f32(f, n, t->dtype, buf, t->name);
  case SRC_LORA_A: /* the leading rows: the module's own rank */
    memcpy(buf, c->q.A, (size_t)n * sizeof(float));
    return CLOQ_OK;
  case SRC_LORA_B: /* the leading t->shape[1] columns (the module's rank), compacted in place */
    if (t->shape[1] < c->q.rank) {
      for (int64_t i = 0; i < t->shape[0]; i++)
        memmove(c->q.B + i * t->shape[1], c->q.B + i * c->q.rank,
                (size_t)t->shape[1] * sizeof(float));
      c->qb = -1; /* q.B is no longer the store's */
    }
    return cloq_peft_lora_b(c->q.B, n, c->meta.rank, c->lora_alpha, buf, t->name);
  case SRC_QWEIGHT:
    cloq_gptq_qweight(&c->q, c->meta.bits, buf, t->shape[0]);
    return CLOQ_OK;
  case SRC_QZEROS:
    c->zero0_groups +=
        cloq_gptq_qzeros(&c->q, c->meta.bits, c->o->gptq_format, c->zcol, buf, t->shape[1]);
    c->groups_total += c->q.n_out * c->q.n_groups;
    return CLOQ_OK;
  case SRC_SCALES:
    return cloq_gptq_scales(&c->q, buf, t->name, &c->scale_rel_max);
  case SRC_GIDX:
    cloq_gptq_gidx(n, c->meta.group_size, buf);
    return CLOQ_OK;
  default:
    return CLOQ_FAIL("internal: tensor %s has no source", t->name);
  }
}

/* cloq_hf_produce_fn over c->cur. */
static int produce_cb(void *ctx, int64_t i, void *buf) {
  ex_ctx *c = ctx;
  return produce(c, &c->cur->t[i], &c->cur->s[i], buf);
}

/* ---- plans ---------------------------------------------------------------------------------- */

/* Appends tensor t, made from source src of (block b, module m) or model tensor `from`. */
static int add(plan *p, const cloq_hf_tensor *t, int src, int64_t b, int m, const char *from) {
  CLOQ_CHECK(p->n < p->cap, "internal: tensor plan overflow");
  p->t[p->n] = *t;
  ex_src *s = &p->s[p->n++];
  memset(s, 0, sizeof *s);
  if (from) snprintf(s->from, sizeof s->from, "%s", from);
  s->src = src;
  s->block = b;
  s->module = m;
  return CLOQ_OK;
}

static int plan_alloc(plan *p, int64_t cap) {
  p->n = 0;
  p->cap = cap;
  CLOQ_ALLOC(p->t, cap, "tensor plan");
  CLOQ_ALLOC(p->s, cap, "tensor plan");
  return CLOQ_OK;
}

static void plan_free(plan *p) {
  free(p->t);
  free(p->s);
}

/* A model tensor under its own name. */
static int add_model(plan *p, cloq_dtype dt, int64_t d0, int64_t d1, const char *name) {
  cloq_hf_tensor t;
  cloq_hf_tensor_set(&t, dt, d0, d1, "%s", name);
  return add(p, &t, SRC_MODEL, -1, -1, name);
}

enum { LIN_BASE, LIN_GPTQ };

/* A Hugging Face LlamaForCausalLM folder's tensors, in the model's order: the linears as the
 * dequantized base (LIN_BASE; from the model itself when there is no store) or as GPTQ's four
 * tensors (LIN_GPTQ), everything else from the model in dtype dt. */
static int plan_model(ex_ctx *c, int lin, cloq_dtype dt, plan *p) {
  const cloq_config *cfg = &c->cfg;
  CLOQ_CALL(plan_alloc(p, 3 + cfg->n_layers * (4 + 5 * CLOQ_NMOD)));
  CLOQ_CALL(add_model(p, dt, cfg->vocab_size, cfg->dim, "model.embed_tokens.weight"));
  for (int64_t b = 0; b < cfg->n_layers; b++) {
    char nm[160];
    for (int m = 0; m < CLOQ_NMOD; m++) {
      if (m == CLOQ_M_Q || m == CLOQ_M_GATE) {
        snprintf(nm, sizeof nm, "model.layers.%lld.%s.weight", (long long)b,
                 m == CLOQ_M_Q ? "input_layernorm" : "post_attention_layernorm");
        CLOQ_CALL(add_model(p, dt, cfg->dim, 0, nm));
      }
      if (m == CLOQ_M_Q && cfg->qk_norm) /* Qwen3's, in the model's dtype like the norms */
        for (int k = 0; k < 2; k++) {
          snprintf(nm, sizeof nm, "model.layers.%lld.self_attn.%s_norm.weight", (long long)b,
                   k ? "k" : "q");
          CLOQ_CALL(add_model(p, dt, cfg->head_dim, 0, nm));
        }
      int64_t no, ni;
      cloq_module_shape(cfg, m, &no, &ni);
      if (cfg->bias & (1u << m)) { /* never quantized: the model's own, in every format */
        snprintf(nm, sizeof nm, "model.layers.%lld.%s.bias", (long long)b, cloq_module_name[m]);
        CLOQ_CALL(add_model(p, dt, no, 0, nm));
      }
      snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)b, cloq_module_name[m]);
      cloq_hf_tensor t[4];
      if (lin == LIN_BASE) {
        cloq_hf_tensor_set(&t[0], dt, no, ni, "%s.weight", nm);
        CLOQ_CALL(c->store ? add(p, &t[0], SRC_Q, b, m, NULL)
                           : add(p, &t[0], SRC_MODEL, -1, -1, t[0].name));
        continue;
      }
      if ((ni % CLOQ_GPTQ_WORD_BITS || no % CLOQ_GPTQ_WORD_BITS) && !c->pad_in) {
        c->pad_from = ni % CLOQ_GPTQ_WORD_BITS ? ni : no;
        c->pad_in = cloq_gptq_pad32(c->pad_from);
      }
      cloq_gptq_tensors(nm, no, ni, c->meta.bits, c->meta.group_size, t);
      for (int k = 0; k < 4; k++) CLOQ_CALL(add(p, &t[k], SRC_QWEIGHT + k, b, m, NULL));
    }
  }
  CLOQ_CALL(add_model(p, dt, cfg->dim, 0, "model.norm.weight"));
  if (!cfg->tied) CLOQ_CALL(add_model(p, dt, cfg->vocab_size, cfg->dim, "lm_head.weight"));
  return CLOQ_OK;
}

/* PEFT's adapter: lora_A (r, in) and lora_B (out, r) of every linear. */
static int plan_adapter(ex_ctx *c, plan *p) {
  const cloq_config *cfg = &c->cfg;
  CLOQ_CALL(plan_alloc(p, cfg->n_layers * 2 * CLOQ_NMOD));
  for (int64_t b = 0; b < cfg->n_layers; b++)
    for (int m = 0; m < CLOQ_NMOD; m++) {
      int64_t no, ni;
      cloq_module_shape(cfg, m, &no, &ni);
      char nm[160];
      snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)b, cloq_module_name[m]);
      cloq_hf_tensor t[2];
      cloq_peft_tensors(nm, no, ni, c->ranks ? c->ranks[b * CLOQ_NMOD + m] : c->meta.rank, t);
      for (int k = 0; k < 2; k++) CLOQ_CALL(add(p, &t[k], SRC_LORA_A + k, b, m, NULL));
    }
  return CLOQ_OK;
}

/* ---- writing a plan ------------------------------------------------------------------------- */

/* Makes room for the largest float32 staging buffer and zero-point column the plan needs. */
/* *buf holds at least need elements of esz bytes (what it held is not kept). */
static int grow(void **buf, int64_t *cap, int64_t need, size_t esz, const char *what) {
  if (need <= *cap) return CLOQ_OK;
  free(*buf);
  *cap = 0;
  *buf = cloq_calloc_checked(need, esz);
  CLOQ_CHECK(*buf, "out of memory allocating %s (%lld elements)", what, (long long)need);
  *cap = need;
  return CLOQ_OK;
}

static int ensure_scratch(ex_ctx *c, const plan *p) {
  int64_t need = 0, zneed = 0;
  for (int64_t i = 0; i < p->n; i++) {
    if (cloq_hf_numel(&p->t[i]) > need) need = cloq_hf_numel(&p->t[i]);
    /* qzeros (n_groups, out_pad * bits / 32): one group's zero points are out_pad values */
    if (p->s[i].src == SRC_QZEROS && p->t[i].shape[1] / c->meta.bits * CLOQ_GPTQ_WORD_BITS > zneed)
      zneed = p->t[i].shape[1] / c->meta.bits * CLOQ_GPTQ_WORD_BITS;
  }
  void *p1 = c->scratch, *p2 = c->zcol;
  int rc = grow(&p1, &c->scratch_n, need, sizeof *c->scratch, "float32 staging buffer");
  c->scratch = p1;
  if (rc == CLOQ_OK) rc = grow(&p2, &c->zcol_n, zneed, sizeof *c->zcol, "zero points of one group");
  c->zcol = p2;
  return rc;
}

/* Writes plan p into dir: one file `single` when it fits one shard (or when single_only), else
 * --shard-size shards and their index (cloq_hf_write_shards). `what` labels progress. */
static int write_plan(ex_ctx *c, const plan *p, const char *dir, const char *single,
                      int single_only, const char *what) {
  CLOQ_CALL(ensure_scratch(c, p));
  c->cur = p;
  int rc = cloq_hf_write_shards(dir, p->t, p->n, single, single_only ? 0 : c->o->shard_mib,
                                produce_cb, c, what);
  c->cur = NULL;
  return rc;
}

/* ---- config, tokenizer ----------------------------------------------------------------------- */

/* config.json (and generation_config.json) in dir, from the model folder or the model's shape. */
static int write_config(ex_ctx *c, const char *dir, cloq_dtype dtype, json_t *quant) {
  return cloq_hf_write_config(dir, c->model_is_dir ? c->model : NULL, &c->cfg, c->tok, dtype,
                              quant);
}

/* Tokenizer files in dir (shown to the user as DIR/label): copied from a model folder that has
 * tokenizer.json (and no --tokenizer was given), else written by cloq_tok_write_hf from the
 * tokenizer cloq uses. A tokenizer that cannot be found, read or written is a warning, not a
 * failure: the weights are still usable. */
static int write_tokenizer(ex_ctx *c, const char *dir, const char *label) {
  if (!c->o->tokenizer && c->model_is_dir) {
    int copied;
    CLOQ_CALL(cloq_hf_copy_tokenizer(c->model, dir, &copied));
    if (copied) return CLOQ_OK;
  }
  if (!c->tok_tried) {
    c->tok_tried = 1;
    int rc = cloq_model_tokenizer(c->mdl, c->o->tokenizer, &c->tok);
    if (rc != CLOQ_OK) {
      cloq_warn("export: no tokenizer exported (%s); copy the model's tokenizer files into the "
                "exported folders by hand", cloq_err_msg());
      cloq_err_clear();
      cloq_tok_free(&c->tok);
    }
  }
  if (!c->tok) return CLOQ_OK;
  if (cloq_hf_write_tokenizer(c->tok, dir) != CLOQ_OK) {
    cloq_warn("export: %s/%s: tokenizer not written (%s); copy the model's tokenizer files there "
              "by hand", c->out, label, cloq_err_msg());
    cloq_err_clear();
  }
  return CLOQ_OK;
}

/* ---- the three folders ----------------------------------------------------------------------- */

static int mkdir_in(const char *parent, const char *name, char *path, size_t cap) {
  CLOQ_CALL(cloq_hf_join(path, cap, parent, name));
  CLOQ_CHECK(mkdir(path, 0777) == 0, "cannot create %s: %s", path, strerror(errno));
  return CLOQ_OK;
}

static int export_base(ex_ctx *c) {
  char dir[PATH_CAP];
  CLOQ_CALL(mkdir_in(c->partial, "base", dir, sizeof dir));
  plan p = {0};
  int rc = plan_model(c, LIN_BASE, c->o->dtype, &p);
  if (rc == CLOQ_OK) rc = write_plan(c, &p, dir, "model.safetensors", 0, "base");
  plan_free(&p);
  CLOQ_CALL(rc);
  CLOQ_CALL(write_tokenizer(c, dir, "base"));
  return write_config(c, dir, c->o->dtype, NULL);
}

static int export_adapter(ex_ctx *c) {
  char dir[PATH_CAP];
  CLOQ_CALL(mkdir_in(c->partial, "adapter", dir, sizeof dir));
  plan p = {0};
  int rc = plan_adapter(c, &p);
  if (rc == CLOQ_OK) rc = write_plan(c, &p, dir, "adapter_model.safetensors", 1, "adapter");
  plan_free(&p);
  CLOQ_CALL(rc);
  /* the quantized base: this export's base/, else the model (with a warning: the adapter was
   * computed for Q, not for the full-precision W) */
  char model_abs[PATH_MAX];
  const char *base = c->base_abs;
  if (!(c->o->formats & CLOQ_EXPORT_SAFETENSORS)) {
    base = realpath(c->model, model_abs) ? model_abs : c->model;
    cloq_warn("export: adapter without base: its base_model_name_or_path is the full-precision "
              "model %s, but the LoRA factors belong to the quantized base; export "
              "--format safetensors,peft to get both", base);
  }
  return cloq_peft_write_config(dir, base, c->meta.rank, c->lora_alpha, c->ranks,
                                c->cfg.n_layers);
}

static int export_gptq(ex_ctx *c) {
  char dir[PATH_CAP];
  CLOQ_CALL(mkdir_in(c->partial, "gptq", dir, sizeof dir));
  plan p = {0};
  int rc = plan_model(c, LIN_GPTQ, CLOQ_DT_F16, &p);
  if (rc == CLOQ_OK && c->pad_in)
    cloq_warn("export: gptq: width %lld is not a multiple of 32: qweight/qzeros are padded with "
              "zero codes to %lld values; AutoGPTQ/GPTQModel kernels expect multiples of 32 and "
              "may refuse this checkpoint (docs/export.md)",
              (long long)c->pad_from, (long long)c->pad_in);
  if (rc == CLOQ_OK) rc = write_plan(c, &p, dir, "model.safetensors", 0, "gptq");
  plan_free(&p);
  CLOQ_CALL(rc);
  CLOQ_CALL(write_tokenizer(c, dir, "gptq"));
  cloq_gptq_format fmt = c->o->gptq_format;
  json_t *qc = cloq_gptq_quant_config(fmt, c->meta.bits, c->meta.group_size, c->meta.damp);
  CLOQ_CHECK(qc, "out of memory (quantize_config.json)");
  rc = cloq_hf_write_json(qc, dir, "quantize_config.json");
  if (rc != CLOQ_OK) {
    json_decref(qc);
    return rc;
  }
  CLOQ_CALL(write_config(c, dir, CLOQ_DT_F16, qc));
  printf("  gptq: format %s, scales in float16: max relative rounding %.3g\n",
         cloq_gptq_format_name(fmt), c->scale_rel_max);
  if (c->zero0_groups && fmt == CLOQ_GPTQ_V1)
    cloq_warn("export: gptq: %lld of %lld groups have zero point 0, which the v1 \"gptq\" format "
              "cannot hold (it stores zero - 1): their field reads back as 2^bits - 1, so a GPTQ "
              "loader dequantizes them with zero point 2^bits (v2 holds them; docs/export.md)",
              (long long)c->zero0_groups, (long long)c->groups_total);
  return CLOQ_OK;
}

/* DIR/cloq_export.json: where the export came from and with which settings. */
static int write_provenance(ex_ctx *c) {
  const cloq_export_opts *o = c->o;
  json_t *fm = json_array();
  if (o->formats & CLOQ_EXPORT_SAFETENSORS) json_array_append_new(fm, json_string("safetensors"));
  if (o->formats & CLOQ_EXPORT_PEFT) json_array_append_new(fm, json_string("peft"));
  if (o->formats & CLOQ_EXPORT_GPTQ) json_array_append_new(fm, json_string("gptq"));
  char store_abs[PATH_MAX];
  json_t *root = json_pack("{s:s, s:i, s:s, s:s, s:o, s:s}", "format", EXPORT_FORMAT,
                           "format_version", EXPORT_FORMAT_VERSION, "tool_version",
                           "cloq " CLOQ_VERSION, "model", c->model, "formats", fm, "dtype",
                           cloq_hf_dtype_name(o->dtype));
  CLOQ_CHECK(root, "out of memory (cloq_export.json)");
  if (c->store) {
    const cloq_store_meta *m = &c->meta;
    json_t *s = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:f, s:I, s:s, s:I, s:I, s:I}", "path",
        realpath(o->store, store_abs) ? store_abs : o->store, "init", m->init, "quantizer",
        m->quantizer, "calib_source", m->calib, "propagate", m->propagate, "bits", m->bits,
        "group_size", (json_int_t)m->group_size, "rank", (json_int_t)m->rank, "damp", m->damp,
        "seed", (json_int_t)m->seed, "calib_format", m->calib_format, "nsamples",
        (json_int_t)m->nsamples, "calib_tokens", (json_int_t)m->calib_tokens, "act_order",
        (json_int_t)m->act_order);
    if (s && m->calib_field[0]) json_object_set_new(s, "calib_field", json_string(m->calib_field));
    if (s) json_object_set_new(root, "store", s);
    if (o->formats & CLOQ_EXPORT_PEFT)
      json_object_set_new(root, "lora_alpha", cloq_hf_json_num(c->lora_alpha));
    if (o->formats & CLOQ_EXPORT_GPTQ) {
      json_object_set_new(root, "gptq_format", json_string(cloq_gptq_format_name(o->gptq_format)));
      json_object_set_new(root, "gptq_zero_point_0_groups", json_integer(c->zero0_groups));
      json_object_set_new(root, "gptq_groups", json_integer(c->groups_total));
      json_object_set_new(root, "gptq_scale_f16_max_rel_rounding", json_real(c->scale_rel_max));
    }
  }
  int rc = cloq_hf_write_json(root, c->partial, DONE_FILE);
  json_decref(root);
  return rc;
}

/* ---- the run --------------------------------------------------------------------------------- */

/* Checks DIR and prepares DIR.partial (a stale one of ours is deleted). */
static int prepare_out(ex_ctx *c) {
  const cloq_export_opts *o = c->o;
  size_t n = strlen(o->out);
  while (n > 1 && o->out[n - 1] == '/') n--;
  CLOQ_CHECK(n > 0 && n < sizeof c->out - 16, "--out: bad or too long path '%s'", o->out);
  memcpy(c->out, o->out, n);
  c->out[n] = 0;
  CLOQ_CHECK(strcmp(c->out, "/") && strcmp(c->out, ".") && strcmp(c->out, ".."),
             "--out %s: give a new folder's name", c->out);
  snprintf(c->partial, sizeof c->partial, "%s.partial", c->out);
  snprintf(c->old, sizeof c->old, "%s.old", c->out);
  char p[PATH_CAP];
  if (exists(c->out)) {
    CLOQ_CHECK(is_dir(c->out), "%s exists and is not a folder", c->out);
    CLOQ_CHECK(o->force, "%s exists (use --force to replace it)", c->out);
    CLOQ_CALL(cloq_hf_join(p, sizeof p, c->out, DONE_FILE));
    CLOQ_CHECK(access(p, F_OK) == 0 || dir_empty(c->out),
               "%s exists and is not a cloq export (no %s): not replacing it, even with --force",
               c->out, DONE_FILE);
  }
  const char *stale[2] = {c->partial, c->old};
  const char *mark[2] = {PARTIAL_MARK, DONE_FILE};
  for (int i = 0; i < 2; i++) {
    if (!exists(stale[i])) continue;
    CLOQ_CALL(cloq_hf_join(p, sizeof p, stale[i], mark[i]));
    CLOQ_CHECK(is_dir(stale[i]) && access(p, F_OK) == 0,
               "%s exists and was not left by cloq export: remove it or choose another --out",
               stale[i]);
    CLOQ_CALL(rm_rf(stale[i]));
  }
  CLOQ_CHECK(mkdir(c->partial, 0777) == 0, "cannot create %s: %s", c->partial, strerror(errno));
  CLOQ_CALL(cloq_hf_join(p, sizeof p, c->partial, PARTIAL_MARK));
  FILE *f = fopen(p, "w");
  CLOQ_CHECK(f && fclose(f) == 0, "cannot create %s", p);
  CLOQ_CALL(abs_path(c->out, p, sizeof p));
  CLOQ_CALL(cloq_hf_join(c->base_abs, sizeof c->base_abs, p, "base"));
  return CLOQ_OK;
}

/* DIR.partial -> DIR, an earlier export moved aside first and deleted after. */
static int swap_in(ex_ctx *c) {
  char p[PATH_CAP];
  int had_old = exists(c->out);
  if (had_old)
    CLOQ_CHECK(rename(c->out, c->old) == 0, "cannot move %s aside to %s: %s", c->out, c->old,
               strerror(errno));
  if (rename(c->partial, c->out) != 0) {
    int err = errno;
    if (had_old) rename(c->old, c->out);
    return CLOQ_FAIL("cannot rename %s to %s: %s", c->partial, c->out, strerror(err));
  }
  /* the marker goes only now: until the rename, a failure must still find DIR.partial ours */
  CLOQ_CALL(cloq_hf_join(p, sizeof p, c->out, PARTIAL_MARK));
  CLOQ_CHECK(remove(p) == 0, "cannot remove %s: %s", p, strerror(errno));
  if (had_old) CLOQ_CALL(rm_rf(c->old));
  return CLOQ_OK;
}

/* Each module's own rank (a --rank-budget store). */
static int load_ranks(ex_ctx *c) {
  int64_t n = c->cfg.n_layers * CLOQ_NMOD;
  CLOQ_ALLOC(c->ranks, n, "module ranks");
  for (int64_t k = 0; k < n; k++)
    CLOQ_CALL(cloq_store_read_rank(c->store, k / CLOQ_NMOD, (int)(k % CLOQ_NMOD), &c->ranks[k]));
  return CLOQ_OK;
}

static int load_inputs(ex_ctx *c) {
  const cloq_export_opts *o = c->o;
  if (o->model) {
    snprintf(c->model, sizeof c->model, "%s", o->model);
  } else {
    CLOQ_CHECK(o->store, "--model is required without --store");
    CLOQ_CALL(store_model(o->store, c->model, sizeof c->model));
  }
  CLOQ_CHECK(exists(c->model), "model %s%s does not exist%s", c->model,
             o->model ? "" : " (recorded in the store)", o->model ? "" : "; give --model");
  c->model_is_dir = is_dir(c->model);
  CLOQ_CALL(cloq_model_open(c->model, &c->mdl));
  c->cfg = c->mdl->cfg;
  c->st = c->mdl->st;
  if (o->store) {
    CLOQ_CALL(cloq_store_open(o->store, &c->cfg, &c->meta, &c->store));
    int b = c->meta.bits;
    CLOQ_CHECK(b == 2 || b == 3 || b == 4 || b == 8, "store %s: bits %d is not 2, 3, 4 or 8",
               o->store, b);
    c->lora_alpha = o->lora_alpha > 0 ? o->lora_alpha : (double)c->meta.rank;
    if (c->meta.rank_budget) CLOQ_CALL(load_ranks(c));
  }
  return CLOQ_OK;
}

static void ctx_free(ex_ctx *c) {
  cloq_qmodule_free(&c->q);
  free(c->ranks);
  free(c->scratch);
  free(c->zcol);
  cloq_tok_free(&c->tok);
  cloq_store_close(&c->store);
  cloq_model_close(&c->mdl);
  c->st = NULL;
}

void cloq_export_default_opts(cloq_export_opts *o) {
  memset(o, 0, sizeof *o);
  o->formats = CLOQ_EXPORT_SAFETENSORS | CLOQ_EXPORT_PEFT;
  o->dtype = CLOQ_DT_F32;
  o->shard_mib = DEFAULT_SHARD_MIB;
  o->gptq_format = CLOQ_GPTQ_V2;
}

static int export_all(ex_ctx *c) {
  const cloq_export_opts *o = c->o;
  CLOQ_CHECK(o->out && o->out[0], "--out is required");
  CLOQ_CHECK(o->formats && !(o->formats & ~7u), "no export format given");
  CLOQ_CHECK(o->store || o->formats == CLOQ_EXPORT_SAFETENSORS,
             "--store is required for --format peft and gptq (without a store only "
             "--format safetensors, a conversion of the model, is possible)");
  CLOQ_CHECK(o->dtype == CLOQ_DT_F32 || o->dtype == CLOQ_DT_F16 || o->dtype == CLOQ_DT_BF16,
             "--dtype: only f32, f16 and bf16");
  CLOQ_CHECK(o->lora_alpha >= 0 && isfinite(o->lora_alpha), "--lora-alpha %g: not a positive "
             "number", o->lora_alpha);
  CLOQ_CHECK(o->shard_mib > 0 && isfinite(o->shard_mib), "--shard-size %g: not positive",
             o->shard_mib);
  CLOQ_CHECK(cloq_gptq_format_name(o->gptq_format), "--gptq-format: only v1 and v2");
  /* refuse an existing DIR before reading anything; then the inputs, then DIR.partial */
  if (exists(o->out) && !o->force) {
    CLOQ_CHECK(0, "%s exists (use --force to replace it)", o->out);
  }
  CLOQ_CALL(load_inputs(c));
  CLOQ_CALL(prepare_out(c));
  char what[64] = "";
  if (o->formats & CLOQ_EXPORT_SAFETENSORS) strcat(what, ", base");
  if (o->formats & CLOQ_EXPORT_PEFT) strcat(what, ", adapter");
  if (o->formats & CLOQ_EXPORT_GPTQ) strcat(what, ", gptq");
  printf("cloq export: %s%s%s -> %s (%s), base in %s\n", c->model, c->store ? " + " : "",
         c->store ? o->store : "", c->out, what + 2, cloq_hf_dtype_name(o->dtype));
  if (c->store)
    printf("  store: %d bits, group size %lld, rank %lld, init %s, quantizer %s; lora_alpha %g "
           "(PEFT scaling %g)\n",
           c->meta.bits, (long long)c->meta.group_size, (long long)c->meta.rank, c->meta.init,
           c->meta.quantizer, c->lora_alpha, c->lora_alpha / (double)c->meta.rank);
  fflush(stdout);
  if (o->formats & CLOQ_EXPORT_SAFETENSORS) CLOQ_CALL(export_base(c));
  if (o->formats & CLOQ_EXPORT_PEFT) CLOQ_CALL(export_adapter(c));
  if (o->formats & CLOQ_EXPORT_GPTQ) CLOQ_CALL(export_gptq(c));
  CLOQ_CALL(write_provenance(c));
  return swap_in(c);
}

int cloq_export_run(const cloq_export_opts *o) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors come back through cloq_err, one line */
  double t0 = cloq_now();
  ex_ctx c;
  memset(&c, 0, sizeof c);
  c.o = o;
  c.qb = -1;
  int rc = export_all(&c);
  /* a failure leaves nothing at DIR.partial (and DIR as it was) */
  if (rc != CLOQ_OK && c.partial[0] && exists(c.partial)) {
    char p[PATH_CAP];
    if (cloq_hf_join(p, sizeof p, c.partial, PARTIAL_MARK) == CLOQ_OK && access(p, F_OK) == 0)
      rm_rf(c.partial);
  }
  if (rc == CLOQ_OK) {
    printf("exported %s in %.2f s:", c.out, cloq_now() - t0);
    if (o->formats & CLOQ_EXPORT_SAFETENSORS) printf(" %s/base", c.out);
    if (o->formats & CLOQ_EXPORT_PEFT) printf(" %s/adapter", c.out);
    if (o->formats & CLOQ_EXPORT_GPTQ) printf(" %s/gptq", c.out);
    printf("\n");
    fflush(stdout);
  }
  ctx_free(&c);
  return rc;
}

/* ---- command line ---------------------------------------------------------------------------- */

static void usage(void) {
  printf(
      "usage: cloq export --store S.h5 --out DIR [options]\n"
      "Hands a store off to transformers / PEFT / GPTQ loaders (docs/export.md):\n"
      "  DIR/base/     (safetensors) the dequantized base Q + the model's other tensors, config,\n"
      "                tokenizer: transformers' LlamaForCausalLM.from_pretrained loads it\n"
      "  DIR/adapter/  (peft) the LoRA factors: AutoPeftModelForCausalLM.from_pretrained(\n"
      "                \"DIR/adapter\") loads base + adapter = Q + B A\n"
      "  DIR/gptq/     (gptq) codes, zero points and float16 scales packed as a GPTQ checkpoint\n"
      "                that GPTQModel loads (format gptq_v2, see --gptq-format)\n"
      "  --store S.h5           the store (`cloq init --out`); may be left out only for\n"
      "                         --format safetensors: the model converted to HF layout\n"
      "  --out DIR              output folder, written as DIR.partial and renamed at the end\n"
      "  --force                replace an existing DIR (an earlier export or an empty folder),\n"
      "                         only once the new one is complete\n"
      "  --format LIST          comma-separated from safetensors, peft, gptq\n"
      "                         (default safetensors,peft)\n"
      "  --model M              model folder or GGUF file (default: the one the store records)\n"
      "  --tokenizer FILE       tokenizer to write as tokenizer.json when the model folder has\n"
      "                         none (default: found in the model folder, or the GGUF file)\n"
      "  --dtype T              f32 | f16 | bf16 for base/ (default f32: the store's Q exactly)\n"
      "  --lora-alpha A         adapter's lora_alpha (default: the rank, PEFT scaling 1); lora_B\n"
      "                         is multiplied by rank / A so that scaling * B A is the store's\n"
      "  --shard-size MIB       largest safetensors shard of base/ and gptq/ (default %.0f)\n"
      "  --gptq-format V        v2 | v1 (default v2). v2: GPTQModel's gptq_v2, zero points as\n"
      "                         they are; v1: AutoGPTQ's gptq, zero - 1 (zero 0 does not fit;\n"
      "                         GPTQModel refuses v1 for asymmetric checkpoints)\n",
      DEFAULT_SHARD_MIB);
}

int cloq_export_parse_formats(const char *a, unsigned *out) {
  *out = 0;
  const char *p = a;
  CLOQ_CHECK(*a, "--format: empty list");
  while (*p) {
    size_t n = strcspn(p, ",");
    unsigned f = n == 11 && !strncmp(p, "safetensors", n) ? CLOQ_EXPORT_SAFETENSORS
                 : n == 4 && !strncmp(p, "peft", n)       ? CLOQ_EXPORT_PEFT
                 : n == 4 && !strncmp(p, "gptq", n)       ? CLOQ_EXPORT_GPTQ
                                                          : 0;
    CLOQ_CHECK(f, "--format: '%.*s' is not one of safetensors, peft, gptq", (int)n, p);
    *out |= f;
    p += n;
    if (*p == ',') p++;
  }
  return CLOQ_OK;
}

static int parse_pos(const char *flag, const char *v, double *out) {
  CLOQ_CALL(cloq_cli_parse_f64(flag, v, -HUGE_VAL, HUGE_VAL, out));
  CLOQ_CHECK(*out > 0, "%s: '%s' is not a positive number", flag, v);
  return CLOQ_OK;
}

static int parse_args(int argc, char **argv, cloq_export_opts *o, int *help) {
  cloq_export_default_opts(o);
  *help = 0;
  cloq_args sc = cloq_args_begin(argc, argv, 1, "export");
  for (const char *f; (f = cloq_args_next(&sc));) {
    if (cloq_args_help_force(&sc, help, &o->force)) continue;
    const char *a = cloq_args_peek(&sc);
    if (cloq_args_is(&sc, "--store")) o->store = a;
    else if (cloq_args_is(&sc, "--out")) o->out = a;
    else if (cloq_args_is(&sc, "--model")) o->model = a;
    else if (cloq_args_is(&sc, "--tokenizer")) o->tokenizer = a;
    else if (cloq_args_is(&sc, "--format")) CLOQ_CALL(cloq_export_parse_formats(a, &o->formats));
    else if (cloq_args_is(&sc, "--lora-alpha")) CLOQ_CALL(parse_pos(f, a, &o->lora_alpha));
    else if (cloq_args_is(&sc, "--shard-size")) CLOQ_CALL(parse_pos(f, a, &o->shard_mib));
    else if (cloq_args_is(&sc, "--gptq-format")) {
      o->gptq_format = !strcmp(a, "v1") ? CLOQ_GPTQ_V1 : CLOQ_GPTQ_V2;
      CLOQ_CHECK(!strcmp(a, "v1") || !strcmp(a, "v2"), "--gptq-format: '%s' is not v1 or v2", a);
    } else if (cloq_args_is(&sc, "--dtype")) {
      if (!strcmp(a, "f32")) o->dtype = CLOQ_DT_F32;
      else if (!strcmp(a, "f16")) o->dtype = CLOQ_DT_F16;
      else if (!strcmp(a, "bf16")) o->dtype = CLOQ_DT_BF16;
      else return CLOQ_FAIL("--dtype: '%s' is not one of f32, f16, bf16", a);
    } else
      return cloq_args_unknown(&sc);
  }
  CLOQ_CALL(sc.rc);
  if (*help) return CLOQ_OK;
  CLOQ_CHECK(o->out, "--out is required");
  return CLOQ_OK;
}

static int run(const void *o) { return cloq_export_run(o); }

int cloq_export_main(int argc, char **argv) {
  cloq_export_opts o;
  int help = 0;
  int rc = parse_args(argc, argv, &o, &help);
  return cloq_cli_finish(rc, help, usage, run, &o);
}
