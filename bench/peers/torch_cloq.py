#!/usr/bin/env python3
"""CLoQ initialization written the way an ML engineer would write it in plain PyTorch (CPU):
the peer that `cloq init` is benchmarked against (benchmark (e)).

Pipeline (same math as cloq, see linalg/cloq_linalg.h and docs/store.md):
  1. load a Hugging Face Llama folder with transformers (LlamaForCausalLM, float32, CPU);
  2. forward hooks on every nn.Linear of the decoder blocks accumulate H = X^T X in float64 while
     ALL calibration samples go, one at a time, through the full-precision model (full-precision
     propagation: one pass collects every Gram at once);
  3. per module: RTN quantization (asymmetric min-max per group of input columns, float32, ties
     to even), damped eigendecomposition Hd = H + damp*mean(diag H) I = U diag(s) U^T
     (torch.linalg.eigh, float64, eigenvalues floored at 1e-12 max|s|), SVD of
     M = R (W-Q)^T with R = diag(sqrt s) U^T (torch.linalg.svd, float64), and the LoRA pair
     B = V_r sqrt(S_r), A = sqrt(S_r) P_r^T diag(s^-1/2) U^T (B A = (R^-1 M_r)^T).

Memory: every Gram of the model is alive at the end of the pass: sum over modules of
n_in^2 * 8 bytes (Llama-2-7B: ~1.8 GB per block, ~57 GB for 32 blocks with one Gram per module;
~44 GB with --share-grams), on top of the float32 model (27 GB for 7B). cloq streams blocks over
ranks and keeps only its own blocks' Grams.

By default one Gram and one eigendecomposition per module (what hooks on each linear give);
--share-grams computes them once per distinct input (q/k/v share the attention input, gate/up
the MLP input), as cloq does.

Output: one JSON line on stdout with per-stage wall times (s): import (torch, transformers),
load (model + samples), calib (forward pass + Gram accumulation), eig, quant, svd_factors, total
(load to the end, imports and --check excluded), process (all since start, --check included,
--out writing not); and peak RSS (MiB). --out FILE
writes lora_A, lora_B, codes, scales, zeros per module to a .safetensors
(keys model.layers.<b>.<module>.<name>, e.g. model.layers.0.self_attn.q_proj.lora_A).
--check computes, per module and outside the timings, the CLoQ objective
||X (Q + BA - W)^T||_F^2 = tr(D H D^T) (D = Q + BA - W) and checks it against the objective with
B A = 0 and against the closed-form optimum of the damped objective (sum of the discarded S_i^2).
"""
import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU only, even with a CUDA build of torch

import torch  # noqa: E402

MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
SHARED = {"self_attn.q_proj": "attn_in", "self_attn.k_proj": "attn_in",
          "self_attn.v_proj": "attn_in", "self_attn.o_proj": "o_in",
          "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in", "mlp.down_proj": "down_in"}


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_samples(args, model_dir):
    if args.calib_format == "tokens":
        seqs = []
        with open(args.calib) as f:
            for line in f:
                if line.strip():
                    seqs.append([int(t) for t in line.split()])
                if len(seqs) == args.nsamples:
                    break
        if len(seqs) < args.nsamples:
            sys.exit(f"torch_cloq: {args.calib} has {len(seqs)} samples, fewer than --nsamples")
        return [torch.tensor(s, dtype=torch.long) for s in seqs]
    # text: the model's own tokenizer, GPTQ-style random windows
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except Exception as e:  # noqa: BLE001
        sys.exit(f"torch_cloq: no Hugging Face tokenizer in {model_dir} ({type(e).__name__}); "
                 "use --calib-format tokens (bench/peers/make_tokens.py writes one)")
    with open(args.calib, encoding="utf-8") as f:
        ids = tok(f.read(), return_tensors="pt").input_ids[0]
    g = torch.Generator().manual_seed(args.seed)
    starts = torch.randint(0, len(ids) - args.seqlen, (args.nsamples,), generator=g)
    return [ids[s:s + args.seqlen] for s in starts.tolist()]


def rtn_quantize(W, bits, group_size):
    """float32 W (out, in) -> codes uint8, scales, zeros (out, n_groups) float32, Q float32."""
    n_out, n_in = W.shape
    gs = n_in if group_size < 0 or group_size >= n_in else group_size
    ng = -(-n_in // gs)
    # zero padding leaves min(0, min w) and max(0, max w) unchanged
    Wp = torch.nn.functional.pad(W, (0, ng * gs - n_in)).reshape(n_out, ng, gs)
    xmin = Wp.amin(dim=2).clamp(max=0)
    xmax = Wp.amax(dim=2).clamp(min=0)
    both0 = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both0, torch.full_like(xmin, -1.0), xmin)
    xmax = torch.where(both0, torch.full_like(xmax, 1.0), xmax)
    maxq = float(2 ** bits - 1)
    scale = (xmax - xmin) / maxq
    zero = torch.round(-xmin / scale) + 0.0  # + 0.0: store +0, never -0
    codes = torch.clamp(torch.round(Wp / scale[..., None]) + zero[..., None], 0, maxq)
    Q = ((codes - zero[..., None]) * scale[..., None]).reshape(n_out, ng * gs)[:, :n_in]
    codes = codes.reshape(n_out, ng * gs)[:, :n_in].to(torch.uint8)
    return codes, scale, zero, Q


def damped_eigh(H, damp):
    n = H.shape[0]
    Hd = H + damp * torch.diagonal(H).mean() * torch.eye(n, dtype=H.dtype)
    s, U = torch.linalg.eigh(Hd)
    mx = s.abs().max()
    floor = 1e-12 * mx if mx > 0 else torch.tensor(1e-300, dtype=s.dtype)
    return torch.clamp(s, min=floor), U


def cloq_factors(E, s, U, r):
    """E = W - Q (out, in) float64 -> B (out, r), A (r, in) float64 and the singular values."""
    sq = torch.sqrt(s)
    M = sq[:, None] * (U.T @ E.T)                       # R E^T, (in, out)
    P, S, Vt = torch.linalg.svd(M, full_matrices=False)
    rs = torch.sqrt(S[:r])
    B = Vt[:r].T * rs                                  # V_r sqrt(S)
    A = (rs[:, None] * P[:, :r].T) / sq[None, :] @ U.T  # sqrt(S) P_r^T diag(s^-1/2) U^T
    return B, A, S


def objective(D, H):
    return float(torch.sum((D @ H) * D))


def main():
    ap = argparse.ArgumentParser(description="CLoQ init in plain PyTorch (CPU), benchmark peer")
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--calib-format", choices=["tokens", "text"], default="tokens")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512, help="window length (text only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bits", type=int, default=4, choices=[2, 3, 4, 8])
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--share-grams", action="store_true",
                    help="one Gram/eigh per distinct input instead of one per module")
    ap.add_argument("--out", help="write A/B/codes/scales/zeros to this .safetensors")
    ap.add_argument("--check", action="store_true", help="check the objective (not timed)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from transformers import LlamaForCausalLM

    T = {"import": time.perf_counter() - _T0}
    t_all = time.perf_counter()

    t = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    samples = load_samples(args, args.model)
    T["load"] = time.perf_counter() - t

    # ---- calibration: one full-precision pass, hooks accumulate X^T X in float64 ----
    t = time.perf_counter()
    grams, counts, hooks, linears = {}, {}, [], {}
    for b, layer in enumerate(model.model.layers):
        for m in MODULES:
            lin = layer.get_submodule(m)
            linears[(b, m)] = lin
            key = (b, SHARED[m]) if args.share_grams else (b, m)
            if key in grams:
                continue  # another module with the same input already accumulates it
            n = lin.in_features
            grams[key] = torch.zeros(n, n, dtype=torch.float64)
            counts[key] = 0

            def hook(mod, inp, out, key=key):
                X = inp[0].reshape(-1, inp[0].shape[-1]).to(torch.float64)
                grams[key].addmm_(X.T, X)
                counts[key] += X.shape[0]
            hooks.append(lin.register_forward_hook(hook))
    ntok = 0
    with torch.no_grad():
        for ids in samples:
            model.model(input_ids=ids[None, :], use_cache=False)  # the head is not needed
            ntok += len(ids)
    for h in hooks:
        h.remove()
    T["calib"] = time.perf_counter() - t
    gram_bytes = sum(g.numel() * 8 for g in grams.values())

    # ---- per input: damped eigendecomposition ----
    t = time.perf_counter()
    eig = {}
    for key, H in grams.items():
        eig[key] = damped_eigh(H, args.damp)
    T["eig"] = time.perf_counter() - t

    # ---- per module: quantization, then SVD and factors ----
    T["quant"] = 0.0
    T["svd_factors"] = 0.0
    out = {}
    checks = []
    with torch.no_grad():
        for (b, m), lin in linears.items():
            key = (b, SHARED[m]) if args.share_grams else (b, m)
            W = lin.weight.detach()
            t = time.perf_counter()
            codes, scales, zeros, Q = rtn_quantize(W, args.bits, args.group_size)
            T["quant"] += time.perf_counter() - t
            t = time.perf_counter()
            s, U = eig[key]
            E = W.to(torch.float64) - Q.to(torch.float64)
            r = min(args.rank, *W.shape)
            B, A, S = cloq_factors(E, s, U, r)
            B32, A32 = B.to(torch.float32).contiguous(), A.to(torch.float32).contiguous()
            T["svd_factors"] += time.perf_counter() - t
            name = f"model.layers.{b}.{m}"
            if args.out:
                out.update({f"{name}.lora_A": A32, f"{name}.lora_B": B32,
                            f"{name}.codes": codes.contiguous(),
                            f"{name}.scales": scales.contiguous(),
                            f"{name}.zeros": zeros.contiguous()})
            if args.check:
                t_check = time.perf_counter()
                H = grams[key]
                n = H.shape[0]
                Hd = H + args.damp * torch.diagonal(H).mean() * torch.eye(n, dtype=H.dtype)
                D0 = -E
                D = D0 + B @ A
                D32 = Q.double() + B32.double() @ A32.double() - W.double()
                f0, f, f32 = objective(D0, H), objective(D, H), objective(D32, H)
                fd, fd_opt = objective(D, Hd), float(torch.sum(S[r:] ** 2))
                checks.append({"module": name, "f_zero": f0, "f": f, "f_f32": f32,
                               "f_damped": fd, "f_damped_opt": fd_opt,
                               "opt_rel_err": abs(fd - fd_opt) / max(fd_opt, 1e-300),
                               "ok": f <= f0 and f32 <= f0
                               and abs(fd - fd_opt) <= 1e-8 * max(objective(D0, Hd), 1e-300)})
                T["check"] = T.get("check", 0.0) + time.perf_counter() - t_check
    T["total"] = time.perf_counter() - t_all - T.get("check", 0.0)  # the check is not timed
    T["process"] = time.perf_counter() - _T0

    if args.out:
        from safetensors.torch import save_file
        save_file(out, args.out, metadata={"bits": str(args.bits),
                                           "group_size": str(args.group_size),
                                           "rank": str(args.rank), "damp": repr(args.damp)})
    if args.check:
        for c in checks:
            print(f"check {c['module']:34s} f0 {c['f_zero']:.6e} f {c['f']:.6e} "
                  f"(f32 factors {c['f_f32']:.6e}) damped f {c['f_damped']:.6e} "
                  f"opt {c['f_damped_opt']:.6e} rel {c['opt_rel_err']:.1e} "
                  f"{'ok' if c['ok'] else 'FAIL'}", file=sys.stderr)
    res = {"peer": "torch_cloq", "torch": torch.__version__, "threads": args.threads,
           "modules": len(linears), "grams": len(grams), "gram_mib": gram_bytes / 2**20,
           "nsamples": len(samples), "tokens": ntok, "bits": args.bits,
           "group_size": args.group_size, "rank": args.rank, "damp": args.damp,
           "time_s": {k: round(v, 4) for k, v in T.items()},
           "peak_rss_mib": round(peak_rss_mib(), 1)}
    if args.check:
        res["check"] = {"all_ok": all(c["ok"] for c in checks),
                        "max_opt_rel_err": max(c["opt_rel_err"] for c in checks),
                        "max_f_over_f0": max(c["f"] / c["f_zero"] for c in checks
                                             if c["f_zero"] > 0)}
    print(json.dumps(res))
    if args.check and not res["check"]["all_ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
