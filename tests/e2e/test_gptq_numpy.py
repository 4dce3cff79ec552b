"""GPTQ and MagR (linalg/gptq.c, linalg/magr.c) against an independent float64 NumPy derivation.

The C kernels run through tests/linalg/gptq_tool (CLOQ_GPTQ_TOOL), fast and ref versions, on
random problems written to files. NumPy re-derives:
  - GPTQ as published (Frantar et al., gptq.py): dead columns (H_jj = 0 -> H_jj = 1, W[:, j] = 0),
    the act-order permutation (decreasing H_jj, stable), damping by damp * mean(diag H), Cholesky
    of the inverse (numpy.linalg.inv, then the upper factor), and the column loop with immediate
    updates; each entry quantized with float32 arithmetic on RTN's grid as cloq_linalg.h says
    (static scales for whole rows and for act_order, dynamic ones from the updated W otherwise);
  - MagR: proximal gradient with Hn = H / lambda_max (numpy.linalg.eigvalsh) and the prox written
    literally as z - P(z), P the l1-ball projection by sorting (Duchi et al. 2008, Fig. 1).
Checks: codes equal (the fraction that may differ is CODE_MISMATCH_FRAC, measured 0), scales and
zero points equal, objectives tr((W - Q) H (W - Q)^T) equal to OBJ_RTOL; MagR outputs within one
float32 ulp of the row's largest weight.
"""
import os

import numpy as np

from cloqtest import check, done, run_gptq_tool

f32, f64 = np.float32, np.float64

# Fraction of all compared codes that may differ from NumPy's (summation orders differ at the
# 1e-16 level; a code flips only at a float32 rounding tie of w / scale). Measured: 0.
CODE_MISMATCH_FRAC = 1e-3
# Objective agreement when the codes agree (measured: exactly equal).
OBJ_RTOL = 1e-9
# MagR: |C - NumPy| in float32 ulps of the row's largest |w| (measured: bitwise equal).
MAGR_ULPS = 1


# ---- NumPy GPTQ ---------------------------------------------------------------------------------

def grid(wg, bits):
    """RTN's scale/zero per row of wg (float32 arithmetic, range extended to 0)."""
    wg = wg.astype(f32)
    xmin = np.minimum(wg.min(1), f32(0))
    xmax = np.maximum(wg.max(1), f32(0))
    both = (xmin == 0) & (xmax == 0)
    xmin = np.where(both, f32(-1), xmin)
    xmax = np.where(both, f32(1), xmax)
    scale = ((xmax - xmin) / f32(2 ** bits - 1)).astype(f32)
    zero = (np.rint(-xmin / scale) + f32(0)).astype(f32)
    return scale, zero


def quant(w, scale, zero, bits):
    c = np.clip(np.rint(w.astype(f32) / scale) + zero, f32(0), f32(2 ** bits - 1)).astype(f32)
    return c.astype(np.uint8), ((c - zero) * scale).astype(f32).astype(f64)


def gptq_np(W, H, bits, gs, damp, act_order):
    n_out, n_in = W.shape
    W = W.astype(f64)
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    width = n_in if gs == -1 or gs > n_in else gs
    ng = -(-n_in // width)
    scales = np.zeros((n_out, ng), f32)
    zeros = np.zeros((n_out, ng), f32)
    static = gs == -1 or act_order
    if static:
        for g in range(ng):
            scales[:, g], zeros[:, g] = grid(W[:, g * width:(g + 1) * width], bits)
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(n_in)
    W = W[:, perm]
    H = H[np.ix_(perm, perm)]
    H[np.diag_indices(n_in)] += damp * np.mean(np.diag(H))
    Hinv = np.linalg.inv(H)
    U = np.linalg.cholesky((Hinv + Hinv.T) / 2).T  # upper, Hinv = U^T U
    codes = np.zeros((n_out, n_in), np.uint8)
    for j in range(n_in):
        c = perm[j]
        g = c // width
        if not static and c % width == 0:
            scales[:, g], zeros[:, g] = grid(W[:, j:j + width], bits)
        codes[:, c], q = quant(W[:, j], scales[:, g], zeros[:, g], bits)
        err = (W[:, j] - q) / U[j, j]
        W[:, j + 1:] -= np.outer(err, U[j, j + 1:])
    return codes, scales, zeros


def dequant(codes, scales, zeros, gs):
    n_in = codes.shape[1]
    width = n_in if gs == -1 or gs > n_in else gs
    g = np.arange(n_in) // width
    return ((codes.astype(f32) - zeros[:, g]) * scales[:, g]).astype(f64)


def objective(W, out, gs, H):
    E = dequant(*out, gs) - W.astype(f64)
    return float(np.einsum("ij,jk,ik->", E, H, E))


# ---- NumPy MagR ---------------------------------------------------------------------------------

def proj_l1(Z, a):
    """Rows of Z projected onto the l1 ball of radius a (Duchi et al., by sorting)."""
    if a == 0.0:  # the ball is {0}; below, cond would hold nowhere
        return np.zeros_like(Z)
    absz = np.abs(Z)
    m = Z.shape[1]
    u = -np.sort(-absz, axis=1)
    cs = np.cumsum(u, axis=1)
    cond = u - (cs - a) / np.arange(1, m + 1) > 0
    rho = m - np.argmax(cond[:, ::-1], axis=1)  # the largest j (1-based) where cond holds
    theta = (cs[np.arange(len(Z)), rho - 1] - a) / rho
    P = np.sign(Z) * np.maximum(absz - theta[:, None], 0.0)
    inside = absz.sum(1) <= a
    P[inside] = Z[inside]
    return P


def magr_np(W, H, alpha, iters, gs):
    n_in = W.shape[1]
    Hn = H / np.linalg.eigvalsh(H)[-1]
    W0 = W.astype(f64)
    V = W0.copy()
    width = n_in if gs == -1 or gs > n_in else gs
    for _ in range(iters):
        Z = V - (V - W0) @ Hn
        for c0 in range(0, n_in, width):
            Zg = Z[:, c0:c0 + width]
            V[:, c0:c0 + width] = Zg - proj_l1(Zg, alpha)
    return V


# ---- problems -----------------------------------------------------------------------------------

def gptq_problem(rng, n_out, n_in, t, dead=None):
    """Strongly correlated X = Z L diag(exp(0.5 N)), t > n_in; W with outliers."""
    L = rng.standard_normal((n_in, n_in)) / np.sqrt(n_in) + 0.1 * np.eye(n_in)
    X = (rng.standard_normal((t, n_in)) @ L) * np.exp(0.5 * rng.standard_normal(n_in))
    if dead is not None:
        X[:, dead] = 0.0
    X = X.astype(f32).astype(f64)
    W = (0.02 * rng.standard_normal((n_out, n_in))).astype(f32)
    W.flat[::37] *= 20
    return W, X.T @ X


def magr_problem(rng, n_out, n_in, t):
    """Low-rank correlated X (rank n_in / 4 plus noise): H has many small eigenvalues."""
    k = n_in // 4
    X = rng.standard_normal((t, k)) @ rng.standard_normal((k, n_in)) / np.sqrt(k)
    X = (X + 0.05 * rng.standard_normal((t, n_in))) * np.exp(0.5 * rng.standard_normal(n_in))
    X = X.astype(f32).astype(f64)
    W = (0.02 * rng.standard_normal((n_out, n_in))).astype(f32)
    W.flat[::37] *= 10
    return W, X.T @ X


rng = np.random.default_rng(20240611)

# (n_out, n_in, t, group, block, dead column): n_in not divisible by the group or the block,
# whole rows, groups straddling batch ends, a group wider than the batch, batch 1.
GPTQ_CASES = [(32, 100, 300, 32, 16, None), (24, 77, 250, 10, 8, 5), (16, 130, 400, -1, 32, None),
              (40, 256, 700, 128, 128, 17), (8, 50, 150, 7, 5, 0), (20, 96, 300, 64, 48, None),
              (12, 40, 120, 16, 1, 39)]
compared = {"gptq": 0, "gptq_ref": 0}
mismatched = {"gptq": 0, "gptq_ref": 0}
worst_obj = {"gptq": 0.0, "gptq_ref": 0.0}
for n_out, n_in, t, gs, block, dead in GPTQ_CASES:
    W, H = gptq_problem(rng, n_out, n_in, t, dead)
    for bits in (2, 3, 4, 8):
        for ao in (0, 1):
            damp = 0.01
            want = gptq_np(W, H, bits, gs, damp, ao)
            o_np = objective(W, want, gs, H)
            for mode in ("gptq", "gptq_ref"):
                what = f"{mode} ({n_out}, {n_in}) bits {bits} group {gs} block {block} act_order {ao}"
                p, got = run_gptq_tool(mode, W, H, [n_out, n_in, bits, gs, damp, ao, block])
                if got is None:
                    check(False, what + " runs", "exit 0", f"{p.returncode}: {p.stderr.strip()}")
                    continue
                bad = int((got[0] != want[0]).sum())
                compared[mode] += got[0].size
                mismatched[mode] += bad
                if bad == 0:
                    same = np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])
                    check(same, what + ": scales and zero points equal NumPy's", "equal",
                          f"{int((got[1] != want[1]).sum())} scales, "
                          f"{int((got[2] != want[2]).sum())} zeros differ")
                    o = objective(W, got, gs, H)
                    rel = abs(o - o_np) / o_np
                    worst_obj[mode] = max(worst_obj[mode], rel)
                    check(rel <= OBJ_RTOL, what + ": objective equals NumPy's", o_np, o)
                else:
                    print(f"note {what}: {bad} of {got[0].size} codes differ from NumPy's")
for mode in ("gptq", "gptq_ref"):
    frac = mismatched[mode] / compared[mode]
    check(frac <= CODE_MISMATCH_FRAC,
          f"{mode}: {mismatched[mode]} of {compared[mode]} codes differ from NumPy's "
          f"(worst relative objective difference {worst_obj[mode]:.3g})",
          f"<= {CODE_MISMATCH_FRAC}", frac)

# the contract's failure on an indefinite H reaches the caller with its advice
Wbad = np.ones((2, 3), f32)
Hbad = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
for mode in ("gptq", "gptq_ref"):
    p, _ = run_gptq_tool(mode, Wbad, Hbad, [2, 3, 4, -1, 0.0, 0, 2])
    check(p.returncode == 1 and "not positive definite" in p.stderr and "--damp" in p.stderr,
          f"{mode}: indefinite H with damp 0 fails naming --damp", "exit 1 + message",
          f"{p.returncode}: {p.stderr.strip()}")

# ---- MagR ---------------------------------------------------------------------------------------
MAGR_CASES = [(32, 128, 400, -1, 1e-3, 200), (32, 128, 400, 32, 1e-4, 200),
              (16, 100, 300, 30, 1e-4, 200), (12, 70, 60, 16, 1e-3, 50), (8, 64, 200, -1, 0.0, 20)]
for n_out, n_in, t, gs, alpha, iters in MAGR_CASES:
    W, H = magr_problem(rng, n_out, n_in, t)
    want = magr_np(W, H, alpha, iters, gs)
    ulp = np.spacing(np.abs(W).max(1).astype(f32)).astype(f64)[:, None]
    for mode in ("magr", "magr_ref"):
        what = f"{mode} ({n_out}, {n_in}) group {gs} alpha {alpha} iters {iters}"
        p, got = run_gptq_tool(mode, W, H, [n_out, n_in, alpha, iters, gs])
        if got is None:
            check(False, what + " runs", "exit 0", f"{p.returncode}: {p.stderr.strip()}")
            continue
        d = np.abs(got.astype(f64) - want)
        worst = float((d / ulp).max())
        check(worst <= MAGR_ULPS, what + f": within {MAGR_ULPS} float32 ulp of NumPy "
              f"({int((got != want.astype(f32)).sum())} of {got.size} float32 values differ, "
              f"largest |diff| {d.max():.3g})", f"<= {MAGR_ULPS} ulp", f"{worst:.3g} ulp")
    if alpha == 0.0:
        check(np.array_equal(got, W), "magr alpha 0 returns W unchanged", "W", "changed")
    else:
        width = n_in if gs == -1 else gs
        shrunk = all((np.abs(got[:, c:c + width]).max(1) <= np.abs(W[:, c:c + width]).max(1)).all()
                     for c in range(0, n_in, width))
        check(shrunk, f"magr group {gs}: no group maximum grows", "all <=", "some grew")

done()
