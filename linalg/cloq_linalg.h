/* cloq_linalg: the pure math of cloq (no MPI, no files, no printing except cloq_warn).
 *
 * Layouts: every matrix is row-major and dense. A weight W is (n_out, n_in) float32, as in
 * Hugging Face checkpoints (y = x W^T). Calibration inputs X are (t, n_in) float32. Gram matrices
 * H are (n, n) float64. All element counts are int64_t. None of these functions is collective.
 *
 * Each kernel has a plain reference version (suffix _ref, straightforward loops, no BLAS/LAPACK)
 * that the fast version is tested against on random inputs.
 */
#ifndef CLOQ_LINALG_H
#define CLOQ_LINALG_H

#include <stdint.h>

/* ---- quantization (asymmetric min-max, per group of consecutive input columns) ---------------
 * For each row and each group g of group_size consecutive columns (the last group may be
 * shorter; group_size -1 means one group spanning the row):
 *   xmin = min(0, min w), xmax = max(0, max w)     (range extended to include 0)
 *   if xmin == xmax == 0: xmin = -1, xmax = 1      (as GPTQ does)
 *   scale = (xmax - xmin) / (2^bits - 1);  zero = rint(-xmin / scale)
 *   code  = clamp(rint(w / scale) + zero, 0, 2^bits - 1)
 *   dequantized w = (code - zero) * scale
 * Arithmetic is float32; rint rounds half to even (numpy/torch convention).
 * codes: (n_out, n_in) uint8; scales, zeros: (n_out, n_groups) float32 (zeros hold integers).
 * bits must be 2, 3, 4 or 8. */
/* ceil(n_in / group_size) (1 for group_size -1 or >= n_in, 0 for n_in 0); -1 for an invalid
 * group_size or n_in < 0. */
int64_t cloq_quant_ngroups(int64_t n_in, int64_t group_size);
/* Fail (nothing is guaranteed about the outputs then) on invalid bits or group_size, on a
 * non-finite weight (the message names row and column), and on a group whose range overflows
 * float32 or whose scale underflows to 0. Zero points are stored as +0.0, never -0.0. The fast
 * version is bitwise identical to the reference. */
int cloq_quant_rtn(const float *W, int64_t n_out, int64_t n_in, int bits, int64_t group_size,
                   uint8_t *codes, float *scales, float *zeros);
int cloq_quant_rtn_ref(const float *W, int64_t n_out, int64_t n_in, int bits, int64_t group_size,
                       uint8_t *codes, float *scales, float *zeros);
/* Q (n_out, n_in) float32 = dequantized codes. group_size must be the one the codes were made
 * with; an invalid one writes nothing. */
void cloq_dequant(const uint8_t *codes, const float *scales, const float *zeros, int64_t n_out,
                  int64_t n_in, int64_t group_size, float *Q);

/* ---- GPTQ / OPTQ (Frantar et al.) ---------------------------------------------------------------
 * Quantizes W (n_out, n_in) column by column, each column's rounding error spread over the
 * columns not yet quantized through the upper Cholesky factor of the damped inverse Gram matrix.
 * H: the full symmetric (n_in, n_in) Gram matrix X^T X, float64, not modified. Steps, as in the
 * GPTQ reference code (gptq.py):
 *   1. dead columns (H_jj == 0): H_jj = 1 and W[:, j] = 0 (in a working copy);
 *   2. act_order: columns are processed in order of decreasing H_jj (stable: ties keep index
 *      order); W and H are permuted accordingly (the output is in the original column order);
 *   3. H += damp * mean(diag H) * I (mean after step 1), Hinv = H^-1 (Cholesky), U = the upper
 *      Cholesky factor of Hinv (Hinv = U^T U);
 *   4. for each column j in processing order: w = W[:, j] (updated so far), q = quant(w),
 *      err = (w - q) / U_jj, W[:, k] -= err * U_jk for every later column k. The fast version
 *      applies these updates lazily in batches of `block` columns (GPTQ's lazy batch update:
 *      rank-1 updates inside the batch, one gemm for the rest of the row); the reference applies
 *      each update at once to every later column (no batches).
 * Grid: exactly RTN's (see above: range extended to 0, float32 arithmetic, rint ties to even),
 * applied per group of group_size consecutive ORIGINAL columns, so the output has the same
 * codes/scales/zeros layout as cloq_quant_rtn and dequantizes with cloq_dequant:
 *   - group_size -1: each row's scale/zero from the whole (step-1) row before any update;
 *   - without act_order: a group's scale/zero are computed from the updated W when its first
 *     column is reached (as GPTQ does; "updated" means every earlier column's error applied, so
 *     the result does not depend on `block`: the fast version starts a new batch at a group that
 *     would straddle a batch end, where gptq.py reads columns that lag the batch's updates);
 *   - with act_order: every group's scale/zero are computed from the step-1 W before any update
 *     (AutoGPTQ's static_groups), since a group's columns are no longer processed together.
 * Quantizing one entry: wf = (float)w, code = clamp(rintf(wf / scale) + zero, 0, 2^bits - 1),
 * q = (code - zero) * scale in float32; the error and the updates are float64.
 * Fails on invalid bits/group_size/block (block >= 1, checked by both versions so that the same
 * parameters pass or fail in both), a shape that does not fit, a non-finite W or H entry,
 * damp < 0 or non-finite, H not positive definite after damping (the message says so and
 * suggests a larger --damp), and the scale failures of RTN. */
typedef struct {
  int bits;            /* 2, 3, 4 or 8 */
  int64_t group_size;  /* -1 or >= 1, as for RTN */
  double damp;         /* fraction of mean(diag H) added to the diagonal (GPTQ's percdamp) */
  int act_order;       /* process columns by decreasing H_jj */
  int64_t block;       /* lazy batch width of the fast version (GPTQ: 128); ignored by _ref */
} cloq_gptq_params;
int cloq_quant_gptq(const float *W, int64_t n_out, int64_t n_in, const double *H,
                    const cloq_gptq_params *p, uint8_t *codes, float *scales, float *zeros);
int cloq_quant_gptq_ref(const float *W, int64_t n_out, int64_t n_in, const double *H,
                        const cloq_gptq_params *p, uint8_t *codes, float *scales, float *zeros);

/* ---- MagR (Zhang et al., NeurIPS 2024): weight magnitude reduction before quantization ---------
 * For each row w of W (n_out, n_in), approximately solves
 *     min_v 0.5 (v - w)^T Hn (v - w) + alpha * ||v||_inf        (per group: sum of the groups'
 *                                                                  ||v_g||_inf when group_size > 0)
 * with Hn = H / lambda_max(H) (H: the full symmetric undamped Gram matrix X^T X, float64, not
 * modified), by `iters` proximal gradient steps of step size 1, starting from v = w:
 *     v <- prox_{alpha ||.||_inf}(v - Hn (v - w)),
 *     prox_{a ||.||_inf}(z) = z - P_{||.||_1 <= a}(z)   (Moreau; P is the Euclidean projection
 *                                                        onto the l1 ball, Duchi et al. 2008)
 * applied to each row (group_size -1) or to each group of group_size consecutive columns (the
 * last group may be shorter). This lowers the largest magnitudes while keeping X v close to X w,
 * which makes the subsequent quantization grid finer. Iterates are float64; Wout (n_out, n_in)
 * float32 may not alias W. lambda_max: largest eigenvalue of H (LAPACK dsytrd + dstemr in the fast
 * version; the reference may use its own method). The fast version does each step for all rows
 * at once (one dsymm); the reference loops. A zero H leaves W unchanged.
 * Fails on alpha < 0 or non-finite, iters < 0, invalid group_size, non-finite W or H, an H
 * with no positive eigenvalue that is not zero (not a Gram matrix), and Wout overlapping W. */
int cloq_magr(const float *W, int64_t n_out, int64_t n_in, const double *H, double alpha,
              int iters, int64_t group_size, float *Wout);
int cloq_magr_ref(const float *W, int64_t n_out, int64_t n_in, const double *H, double alpha,
                  int iters, int64_t group_size, float *Wout);

/* ---- COMQ (Zhang et al. 2024): coordinate-wise minimization of the layer objective --------------
 * Greedy coordinate descent, backpropagation-free, on the damped layer objective
 *     f(Q) = tr((W - Q) Hd (W - Q)^T),   Hd = H + damp * mean(diag H) * I
 * (H: the full symmetric (n_in, n_in) Gram matrix X^T X, float64, not modified) over the integer
 * codes AND the per-group scales and zero points, on RTN's grid and layout (codes (n_out, n_in)
 * uint8, scales and zeros (n_out, n_groups) float32, dequantized by cloq_dequant). Rows are
 * independent: f = sum over rows of r^T Hd r, r = w - q, q the float32-dequantized row.
 * Start: cloq_quant_rtn's grid (init CLOQ_COMQ_INIT_RTN) or cloq_quant_gptq's with the same bits,
 * group_size, damp, act_order and block (CLOQ_COMQ_INIT_GPTQ); the _ref version starts from the
 * _ref quantizers. Per row, with g = Hd r (float64) kept up to date after every accepted change:
 *   greedy order: columns by decreasing sqrt(Hd_jj) |w_j| (w the original row; stable, ties by
 *   index), as in the COMQ reference code; then `iters` sweeps of
 *   (a) codes, one column j at a time in that order: t = q_j + g_j / Hd_jj (the minimizer of f
 *       along q_j), code = clamp(rintf((float)t / s) + z, 0, 2^bits - 1) with the group's s, z
 *       (the grid formula of RTN, float32), q_new = (code - z) * s in float32; accepted when
 *       delta = q_new - q_j changes f by delta (delta Hd_jj - 2 g_j) < 0 (float64). f along a
 *       coordinate is a convex quadratic, so this is the nearest grid point to t; the test only
 *       refuses the ties (a change of f that is exactly 0 in exact arithmetic);
 *   (b) for each group G in column order: the scale, then the zero point, with the codes fixed.
 *       Scale: v = code - z over G, s* = s + v^T g_G / (v^T Hd_GG v) (the exact 1-D minimizer),
 *       rounded to float32; proposed only when finite, > 0 and != s. Zero point: the continuous
 *       minimizer z - sum(g_G) / (s 1^T Hd_GG 1), rounded to the nearest integer (ties to even),
 *       clamped to [0, 2^bits - 1]; proposed only when it differs from z. A proposal is
 *       accepted only when the change of f computed in float64 from the group's actual new
 *       float32-dequantized values, dq^T Hd_GG dq - 2 dq^T g_G, is < 0.
 *   Sweeps stop early once one changes nothing (the next would repeat it exactly).
 * So f never increases (up to float64 rounding of g): obj[1] <= obj[0]. Zero points stay
 * integers in range, stored as +0.0, never -0.0; scales stay finite and > 0.
 * obj (may be NULL): obj[0] = f at the start, obj[1] = f of the result, both float64 from the
 * float32-dequantized Q (obj[0] = obj[1] = 0 for an empty weight).
 * Fast: blocks of rows; per block G = R Hd by one dgemm, the code updates by cblas_daxpy on rows
 * of Hd (H must be symmetric), and each group's scale and zero steps for all rows of the block
 * at once (one dgemm for V Hd_GG, one for the updates of the rows that propose a move); working
 * memory O(n_in^2 + 256 n_in). Ref: loops, one row at a time. Both evaluate the same formulas
 * in different summation orders (BLAS), so g agrees to rounding and a code can differ only at a
 * rounding tie (measured: codes, scales and zeros bitwise equal on every test problem; the tests
 * bound the fraction). The result does not depend on the BLAS thread count.
 * Fails on invalid bits or group_size (as RTN), iters < 1, damp < 0 or non-finite, an unknown
 * init, a shape that does not fit the 32-bit BLAS interface, non-finite W (naming row and column)
 * or H, an Hd with a diagonal entry <= 0 (naming the column and suggesting a larger --damp), and
 * the failures of the starting quantizer (GPTQ's: block < 1, H not positive definite). */
enum { CLOQ_COMQ_INIT_RTN, CLOQ_COMQ_INIT_GPTQ };
typedef struct {
  int bits;            /* 2, 3, 4 or 8 */
  int64_t group_size;  /* -1 or >= 1, as for RTN */
  double damp;         /* Hd = H + damp * mean(diag H) * I */
  int iters;           /* K >= 1 sweeps */
  int init;            /* CLOQ_COMQ_INIT_RTN: start from cloq_quant_rtn's grid; _GPTQ: from
                          cloq_quant_gptq's (with act_order, block below) */
  int act_order;       /* GPTQ start only */
  int64_t block;       /* GPTQ start only: its lazy batch width */
} cloq_comq_params;
/* obj (may be NULL): obj[0] = f at the starting point, obj[1] = f of the result (float64, of the
 * float32-dequantized Q) */
int cloq_quant_comq(const float *W, int64_t n_out, int64_t n_in, const double *H,
                    const cloq_comq_params *p, uint8_t *codes, float *scales, float *zeros,
                    double *obj);
int cloq_quant_comq_ref(const float *W, int64_t n_out, int64_t n_in, const double *H,
                        const cloq_comq_params *p, uint8_t *codes, float *scales, float *zeros,
                        double *obj);

/* ---- Gram matrices ---------------------------------------------------------------------------
 * H (n, n) float64 += X^T X for X (t, n) float32. Products are formed in float64 (X is widened
 * first), so the sum is exact up to float64 rounding. Only the upper triangle (j >= i) of H is
 * updated; cloq_gram_symmetrize copies it to the lower triangle. work: t*n doubles, caller-owned.
 * The result depends only on the order of calls, never on threads. */
void cloq_gram_accumulate(double *H, const float *X, int64_t t, int64_t n, double *work);
void cloq_gram_accumulate_ref(double *H, const float *X, int64_t t, int64_t n);
void cloq_gram_symmetrize(double *H, int64_t n);

/* ---- damped eigendecomposition -----------------------------------------------------------------
 * Hd = H + damp * mean(diag H) * I (H full symmetric (n, n) float64, not modified).
 * Hd = U diag(s) U^T with s ascending, U (n, n) row-major whose COLUMNS are eigenvectors.
 * Eigenvalues <= floor, floor = 1e-12 * max(|s|) (or 1e-300 when H is zero), are raised to floor;
 * *nclamped reports how many (the caller warns, naming the layer). Fast: LAPACKE dsyevd.
 * Fails with "non-finite value in Gram matrix" on a NaN/inf entry, and on n < 1 or a negative or
 * non-finite damp. */
int cloq_eig_damped(const double *H, int64_t n, double damp, double *s, double *U,
                    int64_t *nclamped);
int cloq_eig_damped_ref(const double *H, int64_t n, double damp, double *s, double *U,
                        int64_t *nclamped); /* cyclic Jacobi */

/* ---- truncated SVD ---------------------------------------------------------------------------
 * M (m, n) float64 = P diag(S) V^T; returns the r leading triplets, S descending:
 * P (m, r), S (r), Vt (r, n). 1 <= r <= min(m, n). Fast: LAPACKE dgesdd; ref: one-sided Jacobi.
 * Singular vectors are determined up to sign; callers use only products where signs cancel.
 * Fails on r out of range or a non-finite entry of M. */
int cloq_svd_trunc(const double *M, int64_t m, int64_t n, int64_t r, double *P, double *S,
                   double *Vt);
int cloq_svd_trunc_ref(const double *M, int64_t m, int64_t n, int64_t r, double *P, double *S,
                       double *Vt);

/* ---- the projection form: CLoQ and svd inits without decomposing H ---------------------------
 * E = W - Q (n_out, n_in) float64, Hd = H + damp * mean(diag H) * I = C C^T (n_in, n_in). The
 * minimizer of tr((E - L) Hd (E - L)^T) over rank-r L is L* = V V^T E, V (n_out, r) an
 * orthonormal basis of the top-r left singular vectors of F = E C: with any C, the objective is
 * ||E C - L C||_F^2 and by Eckart-Young the best rank-r approximation of F is V V^T F, which
 * L = V V^T E attains. V is found on the smaller side, so the only eigenproblem is
 * min(n_out, n_in) square and only its top r pairs are needed:
 *   n_out <= n_in (output side): V = top-r eigenvectors of G = F F^T (n_out, n_out);
 *   n_out >  n_in (input side):  P = top-r eigenvectors of K = F^T F (n_in, n_in), V = orth(F P)
 *                                (F P's columns have norms sqrt(lambda); orth: Householder QR).
 * The eigenvalues of G and K are the same lambda_1 >= lambda_2 >= ... (the squared singular
 * values of F), so the objectives come free: tr(G) = ||F||_F^2 for L = 0, and
 * tr(G) - (lambda_1 + ... + lambda_r) for L*. The svd init is the same with C = I (F = E): its
 * product is the truncated SVD [E]_r. H is never inverted and never eigendecomposed; the paper's
 * form (eig(Hd), then the SVD of R E^T, R = diag(sqrt s) U^T) gives the same product (see
 * docs/math.md and tests/linalg/test_proj.c). */

/* A factor of the damped Gram matrix, Hd = C C^T with C = P L: L (n, n) row-major lower
 * triangular whose columns >= rank are zero, P the permutation piv (row piv[k] of C is row k of
 * L; piv NULL: P = I). Owns L and piv. */
typedef struct {
  int64_t n;     /* order of H */
  int64_t rank;  /* n, unless Hd is singular (then from pivoted Cholesky, LAPACK's tolerance) */
  double *L;     /* (n, n) */
  int64_t *piv;  /* (n) or NULL */
} cloq_hfactor;
/* Hd = H + damp * mean(diag H) * I (H full symmetric (n, n), not modified) and its factor: dpotrf,
 * or when Hd is not positive definite or nearly singular (an undamped, rank-deficient H; a dpotrf
 * pivot below 1e-10 max(diag Hd)) dpstrf, diagonal pivoting with LAPACK's default tolerance,
 * which stops at the numerical rank. Fails on n < 1, a NaN/inf
 * entry ("non-finite value in Gram matrix"), a negative or non-finite damp. The ref is a
 * diagonal-pivoted Cholesky in loops (always pivoted, the same tolerance rule); its C differs
 * from the fast one's by an orthogonal factor, C C^T does not. */
int cloq_hfactor_make(const double *H, int64_t n, double damp, cloq_hfactor *f);
int cloq_hfactor_ref(const double *H, int64_t n, double damp, cloq_hfactor *f);
/* Frees L and piv (accepts a zeroed f). */
void cloq_hfactor_free(cloq_hfactor *f);

/* F (n_out, n_in) = E C (f NULL: F = E). Fast: one dtrmm (after permuting E's columns when
 * pivoted). Fails on a shape that does not fit or f->n != n_in. */
int cloq_proj_apply(const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                    double *F);

/* The top-r problem above: V (n_out, r) row-major with orthonormal columns in order of
 * decreasing eigenvalue, lam (r) those eigenvalues (clamped at 0: G and K are semidefinite) and
 * *trace = ||F||_F^2. f NULL: C = I (the svd init). Fast: dtrmm, dsyrk, then dsytrd, dstemr
 * (range 'I': the top r pairs only) and dormtr on the smaller side, then for the input side a
 * dgemm and a Householder QR.
 * Ref: loops, the Jacobi eigensolver (all pairs, the top r kept), modified Gram-Schmidt.
 * Eigenvectors are determined up to sign (and rotation inside a repeated eigenvalue): callers use
 * V V^T only. Fails on r outside [1, min(n_out, n_in)], a non-finite E (naming the entry), or an
 * eigensolver failure (info decoded). */
int cloq_proj_solve(const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                    int64_t r, double *V, double *lam, double *trace);
int cloq_proj_solve_ref(const double *E, int64_t n_out, int64_t n_in, const cloq_hfactor *f,
                        int64_t r, double *V, double *lam, double *trace);

/* The rank at which to solve for a LoRA of rank r: r rounded up to a multiple of
 * CLOQ_SOLVE_QUANTUM, at most min(n_out, n_in). A basis solved at it serves every rank it rounds
 * from as a truncation, so runs whose largest ranks round alike make the same calls (a sweep's
 * stores are bitwise a single run's); the extra eigenvectors cost O(n^2) each against the
 * O(n^3) reduction every solve pays. */
enum { CLOQ_SOLVE_QUANTUM = 64 };
int64_t cloq_proj_solve_rank(int64_t r, int64_t n_out, int64_t n_in);

/* cap[j] = ||v_j^T F||^2 for the first rmax columns v_j of V (n_out, rmax): the part of tr(F F^T)
 * that V captures, so the objective of L = V_r V_r^T E is ||F||^2 - (cap_0 + ... + cap_{r-1})
 * (for the CLoQ basis, cap = lam). One dgemm. Fails on an invalid shape or allocation. */
int cloq_proj_captured(const double *V, int64_t n_out, int64_t rmax, const double *F,
                       int64_t n_in, double *cap);
/* trace - (cap_0 + ... + cap_{r-1}), summed smallest first and clamped at 0; exactly 0 when
 * r = nside (= min(n_out, n_in): the rank-r product is E itself). */
double cloq_proj_objective(double trace, const double *cap, int64_t r, int64_t nside);

/* ---- LoRA factors ------------------------------------------------------------------------------
 * The rank-r product L = V_r V_r^T E (V_r: the leading r columns of V (n_out, rmax)) split in
 * balance, in the weight's own units: with the SVD Z = V_r^T E = Y diag(S) Zt (r x n_in),
 *   B = V_r Y diag(sqrt S)  (n_out, r),   A = diag(sqrt S) Zt  (r, n_in),
 * so B A = L and B^T B = A A^T = diag(S), the singular values of the product itself (the svd and
 * LoftQ inits are split the same way; CLoQ's product carries no activation scale into either
 * factor). Rank r of a sweep uses the leading r columns of the basis solved at the largest rank.
 * float32 outputs (fails when an entry does not fit); the _d variant keeps float64 (tests).
 * Ref: loops and the Jacobi SVD. */
int cloq_lora_split(const double *V, const double *E, int64_t n_out, int64_t n_in, int64_t rmax,
                    int64_t r, float *A, float *B);
int cloq_lora_split_d(const double *V, const double *E, int64_t n_out, int64_t n_in,
                      int64_t rmax, int64_t r, double *A, double *B);
int cloq_lora_split_ref(const double *V, const double *E, int64_t n_out, int64_t n_in,
                        int64_t rmax, int64_t r, float *A, float *B);

/* Whole initializations of one module, for tools and tests (the worker runs the steps itself to
 * share them across a sweep):
 * svd:  B A = [E]_r, cloq_proj_solve with C = I, then the balanced split.
 * cloq: B A = the calibrated optimum for the damped H (full symmetric (n_in, n_in)):
 *       cloq_hfactor_make, cloq_proj_solve, the balanced split; *objective (may be NULL) receives
 *       tr((E - BA) Hd (E - BA)^T) of the float64 product.
 * zero: B = 0, A uniform in [-1/sqrt(n_in), 1/sqrt(n_in)] (PEFT's kaiming_uniform(a=sqrt 5)
 *       bound) from cloq_rng seeded with `seed`; the product is 0.
 * The _ref variants use the _ref kernels. Fail on r outside [1, min(n_out, n_in)], a non-finite
 * E or H, or a factor entry that overflows float32. */
int cloq_lora_svd(const double *E, int64_t n_out, int64_t n_in, int64_t r, float *A, float *B);
int cloq_lora_svd_ref(const double *E, int64_t n_out, int64_t n_in, int64_t r, float *A,
                      float *B);
int cloq_lora_cloq(const double *E, int64_t n_out, int64_t n_in, const double *H, double damp,
                   int64_t r, float *A, float *B, double *objective);
int cloq_lora_cloq_ref(const double *E, int64_t n_out, int64_t n_in, const double *H,
                       double damp, int64_t r, float *A, float *B, double *objective);
void cloq_lora_zero(int64_t n_out, int64_t n_in, int64_t r, uint64_t seed, float *A, float *B);

/* QuAILoRA (Lawton et al. 2024): calibrated refinement of a start (the svd init's factors) by
 * alternating exact block minimizations of the damped objective
 *     f(A, B) = tr((E - BA) Hd (E - BA)^T),  Hd = H + damp * mean(diag H) * I
 * (E (n_out, n_in) float64; H full symmetric (n_in, n_in), not modified). One alternation:
 *   B-step: B = E Hd A^T (A Hd A^T)^-1;
 *   A-step: A = (B^T B)^-1 B^T E. Hd drops out: with Hd = C C^T, C invertible,
 *           f = ||(E - BA) C||_F^2 = ||E C - B (A C)||_F^2, minimized over A C by B^+ E C, so over
 *           A by B^+ E whatever C.
 * Each step minimizes f exactly over one factor, so f never increases, and f >= CLoQ's optimum
 * (cloq_lora_cloq's *objective) always. The r x r systems are solved by Cholesky
 * (cloq_hfactor_make: dpotrf, diagonal-pivoted when singular or nearly so). A singular one (a
 * zero row of A, as an svd start from an E of rank < r has, or a zero column of B) gets the basic
 * solution: its leading nonsingular pivoted block is solved and the other rows of the new factor
 * are 0. That is still an exact minimizer (the systems are consistent: A Hd E^T has its columns
 * in range(A) = range(A Hd A^T)), so f still does not increase; the product keeps that lower rank
 * from then on. After the last alternation the product B A (float64) is re-split in balance:
 * V = orth(B) (Householder QR; V V^T B A = B A), then cloq_lora_split(V, B A), so that
 * B^T B = A A^T = diag(singular values of B A) like every other init.
 * A (r, n_in), B (n_out, r) float32: in: the starting factors (the svd init's, from the caller);
 * out: the refined, balanced factors. iters >= 0 alternations (0: the re-split only).
 * obj (iters + 1, may be NULL): obj[0] = f of the start, obj[k] = f after k alternations (of the
 * float64 iterates, before the re-split and its float32 rounding), evaluated as
 * tr(E Hd E^T) - 2 tr(B A Hd E^T) + tr(B^T B A Hd A^T): rounding relative to tr(E Hd E^T).
 * Cost: O(iters (n_out n_in r + n_in^2 r)), plus once a Cholesky of Hd (n_in^3 / 3, to prove it
 * positive definite) and, when obj is given, tr(E Hd E^T) (n_out n_in^2).
 * Fast: dsymm/dgemm, Cholesky through LAPACK, dgeqrf/dorgqr. Ref: loops, the hand-written
 * pivoted Cholesky (cloq_hfactor_ref), modified Gram-Schmidt, cloq_lora_split_ref.
 * Fail on r outside [1, min(n_out, n_in)], iters < 0, a non-finite E, H, A or B, damp < 0 or
 * non-finite, an Hd that is not positive definite (numerical rank < n_in), a non-finite iterate,
 * or a factor entry that overflows float32. */
int cloq_lora_quailora(const double *E, int64_t n_out, int64_t n_in, const double *H, double damp,
                       int64_t r, int iters, float *A, float *B, double *obj);
int cloq_lora_quailora_ref(const double *E, int64_t n_out, int64_t n_in, const double *H,
                           double damp, int64_t r, int iters, float *A, float *B, double *obj);

/* ---- rank allocation under a parameter budget -------------------------------------------------
 * Module m at rank r has CLoQ objective trace_m - (gain_m,0 + ... + gain_m,r-1) (its top-r
 * eigenvalues, non-increasing) and costs r * cost_m parameters (cost_m = n_out + n_in). Minimizing
 * the weighted total sum_m weight_m * objective_m(r_m) under sum_m r_m cost_m <= budget, with
 * rmin <= r_m <= rmax_m, is a knapsack whose items (one more rank of one module) have
 * non-increasing value within a module. Greedy: every module starts at rmin; then the item of the
 * highest weight * gain / cost is taken while it fits (the prefix). Exchange argument: the prefix
 * takes, for each module, its items in order, and every item it took has a ratio >= every item
 * it did not, so no allocation spending at most *prefix_used parameters does better (the
 * fractional relaxation's optimum at that budget is integral and equals it). The prefix stops at
 * the first item that does not fit ("optimal up to the last step"); the rest of the budget is
 * then filled with the items that still fit, best ratio first, which can only lower the
 * objective. Items of zero gain are never taken. Ties: the lowest module index.
 * gain: (nmod, ldg) row-major, entries 0..rmax_m - 1 read. rank (nmod) out; prefix_used (may be
 * NULL): the parameters the prefix spent. Fails on an invalid argument, gains that are negative,
 * non-finite or increasing, and a budget below rmin in every module. */
int cloq_rank_allocate(int64_t nmod, const int64_t *rmax, const int64_t *cost, const double *gain,
                       int64_t ldg, const double *weight, int64_t budget, int64_t rmin,
                       int64_t *rank, int64_t *prefix_used);

/* Calibrated objective tr((E - BA) H (E - BA)^T) = ||X (Q + BA - W)^T||_F^2 for H = X^T X
 * (pass B = A = NULL, r = 0 for the objective of the bare quantized weight). float64.
 * Reads only the upper triangle of H. On an invalid shape or an allocation failure it records
 * the error (cloq_err_msg) and returns NaN. */
double cloq_objective(const double *E, const float *A, const float *B, int64_t n_out,
                      int64_t n_in, int64_t r, const double *H);
/* The same with H + shift * I in place of H (the damped objective: shift = damp * mean(diag H),
 * see cloq_gram_shift). */
double cloq_objective_shifted(const double *E, const float *A, const float *B, int64_t n_out,
                              int64_t n_in, int64_t r, const double *H, double shift);
/* damp * mean(diag H) for H (n, n): the diagonal shift of the damped Gram matrix. */
double cloq_gram_shift(const double *H, int64_t n, double damp);

/* ---- deterministic random numbers (splitmix64), independent of platform and rank count ------- */
typedef struct { uint64_t s; } cloq_rng;
void cloq_rng_seed(cloq_rng *g, uint64_t seed);
uint64_t cloq_rng_u64(cloq_rng *g);
double cloq_rng_uniform(cloq_rng *g);   /* [0, 1) with 53 random bits */
double cloq_rng_normal(cloq_rng *g);    /* Box-Muller */
/* Mix several integers into one seed (e.g. seed, block, module). */
uint64_t cloq_seed_mix(uint64_t a, uint64_t b, uint64_t c);

#endif
