#!/usr/bin/env python3
"""PEFT's LoftQ initialization on CPU: the peer that `cloq init` is benchmarked against
(benchmark (e)). Loads a Hugging Face Llama folder (LlamaForCausalLM, float32, CPU) and times
get_peft_model with
  LoraConfig(r, lora_alpha=r, target_modules=[q,k,v,o,gate,up,down]_proj,
             init_lora_weights="loftq", loftq_config=LoftQConfig(loftq_bits, loftq_iter)).
lora_alpha = r makes PEFT's scaling alpha/r = 1, so W ~ Q + B A holds as LoftQ computes it
(PEFT does not rescale the LoftQ factors).

What LoftQ needs on CPU, read from the PEFT sources (peft/utils/loftq_utils.py):
- PEFT >= 0.20 (0.21.2 checked): loftq_init raises unless bitsandbytes is installed, accepts
  only loftq_bits 4 (bitsandbytes NF4, blocksize 64) and 8 (bitsandbytes int8 row-wise), and
  moves the weight to compute_device = "xpu" if available else "cuda", hard-coded: on a machine
  without a GPU it fails ("Found no NVIDIA driver on your system"); bits 2 raise "Only nf4 and
  int8 quantization is supported". The pure-torch NFQuantizer was removed in 0.20.
  -> PEFT's current LoftQ cannot run on a CPU-only machine at all.
- PEFT 0.17-0.18 (0.18.1 is what install.sh pins; 0.19 only keeps the native path for a
  bitsandbytes without 4-bit support): bitsandbytes must still be importable, bits must be 2, 4
  or 8; bits 2 and 8 use PEFT's own pure-torch NFQuantizer (normal-float code book built with
  scipy, absmax per block of 64 consecutive elements of the flattened weight, so out*in must be
  a multiple of 64) on the weight's device, i.e. the CPU; bits 4 go to bitsandbytes NF4 on
  "cuda"/"xpu" whenever bitsandbytes has 4-bit support (any recent one), so they too fail on a
  CPU-only machine. --native-nf4 (default: on when no CUDA device is visible) makes 4 bits take
  PEFT's own NFQuantizer path on the CPU, the one PEFT took when bitsandbytes had no 4-bit
  support, by telling loftq_utils that bitsandbytes 4-bit is unavailable. NF4 of NFQuantizer and
  of bitsandbytes use the same normal-float idea with block 64 (code books not bit-identical).
- LoftQ is data-free (no calibration): per module, num_iter rounds of quantize(W - L R) and a
  full float32 torch.linalg.svd of the residual. The quantized weight is returned DEQUANTIZED
  (float32, same size as W) and written into the base layer: a "fake-quantized" model that must
  be saved and reloaded with a bitsandbytes config to be actually 4-bit.
- NFQuantizer memory: quantize_block builds a (numel, 2^bits) float32 distance tensor, i.e.
  numel * 2^bits * 4 bytes per weight (Llama-2-7B down_proj, 45M elements: 2.9 GB at 4 bits,
  46 GB at 8 bits).

Output: one JSON line on stdout with wall times (s): import (torch, transformers, peft), load,
loftq (the get_peft_model call), loftq_init_sum (of it, the time inside PEFT's loftq_init:
quantization + SVD), total (load + loftq), process (all since start), and peak RSS (MiB); with --check also ||W - Q - BA||_F / ||W||_F and ||W - Q||_F / ||W||_F
summed over modules (not timed). Exit status 2 with "status": "failed" when PEFT refuses the
setting (e.g. any LoftQ with PEFT >= 0.20 on a CPU-only machine).
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

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description="PEFT LoftQ init on CPU, benchmark peer")
    ap.add_argument("--model", required=True)
    ap.add_argument("--bits", type=int, default=4, help="loftq_bits")
    ap.add_argument("--iter", type=int, default=1, help="loftq_iter")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--native-nf4", choices=["auto", "on", "off"], default="auto",
                    help="4 bits through PEFT's own NFQuantizer on the CPU (auto: when no CUDA)")
    ap.add_argument("--check", action="store_true", help="weight reconstruction errors")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    import peft
    import peft.utils.loftq_utils as lq
    from peft import LoftQConfig, LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    T = {"import": time.perf_counter() - _T0}
    res = {"peer": "peft_loftq", "peft": peft.__version__, "torch": torch.__version__,
           "threads": args.threads, "bits": args.bits, "iter": args.iter, "rank": args.rank}
    native = args.native_nf4 == "on" or (args.native_nf4 == "auto"
                                         and not torch.cuda.is_available())
    if args.bits == 4 and native:
        if hasattr(lq, "NFQuantizer"):
            lq.is_bnb_4bit_available = lambda: False  # PEFT's own NF4 path, on the CPU
            res["quantizer"] = "peft NFQuantizer nf4 (native path), block 64"
        else:
            res["quantizer"] = "bitsandbytes nf4 (this PEFT has no native NFQuantizer)"
    elif args.bits in (2, 8) and hasattr(lq, "NFQuantizer"):
        res["quantizer"] = f"peft NFQuantizer nf{args.bits}, block 64"
    else:
        res["quantizer"] = f"bitsandbytes {'nf4' if args.bits == 4 else 'int8'}"

    # time spent inside loftq_init itself (quantize + SVD per module), apart from what
    # get_peft_model adds (wrapping modules, lazy imports of torch.ao / scipy on first use)
    T["loftq_init_sum"] = 0.0
    orig = lq.loftq_init

    def timed_loftq_init(*a, **k):
        t = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            T["loftq_init_sum"] += time.perf_counter() - t
    lq.loftq_init = timed_loftq_init
    import peft.tuners.lora.layer as lora_layer
    if hasattr(lora_layer, "loftq_init"):  # PEFT >= 0.20 imports it at module level
        lora_layer.loftq_init = timed_loftq_init

    t_all = time.perf_counter()
    t = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    T["load"] = time.perf_counter() - t
    W0 = {}
    if args.check:
        W0 = {n: m.weight.detach().clone() for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in TARGETS}

    cfg = LoraConfig(r=args.rank, lora_alpha=args.rank, lora_dropout=0.0,
                     target_modules=TARGETS, init_lora_weights="loftq",
                     loftq_config=LoftQConfig(loftq_bits=args.bits, loftq_iter=args.iter))
    t = time.perf_counter()
    try:
        pm = get_peft_model(model, cfg)
    except Exception as e:  # noqa: BLE001
        T["loftq"] = time.perf_counter() - t
        res.update({"status": "failed", "error": f"{type(e).__name__}: {e}",
                    "time_s": {k: round(v, 4) for k, v in T.items()},
                    "peak_rss_mib": round(peak_rss_mib(), 1)})
        print(json.dumps(res))
        sys.exit(2)
    T["loftq"] = time.perf_counter() - t
    T["total"] = time.perf_counter() - t_all
    T["process"] = time.perf_counter() - _T0
    res["status"] = "ok"
    res["modules"] = sum(1 for n, m in pm.named_modules() if hasattr(m, "lora_A")
                         and isinstance(getattr(m, "lora_A"), torch.nn.ModuleDict))
    if args.check:
        num, numq, den = 0.0, 0.0, 0.0
        with torch.no_grad():
            for n, m in pm.named_modules():
                if not (hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict)):
                    continue
                key = n[len("base_model.model."):]
                W = W0[key].double()
                Q = m.get_base_layer().weight.double()
                BA = m.lora_B["default"].weight.double() @ m.lora_A["default"].weight.double()
                BA = BA * m.scaling["default"]
                num += float(torch.sum((W - Q - BA) ** 2))
                numq += float(torch.sum((W - Q) ** 2))
                den += float(torch.sum(W ** 2))
        res["weight_rel_err"] = (num / den) ** 0.5
        res["weight_rel_err_no_lora"] = (numq / den) ** 0.5
    res["time_s"] = {k: round(v, 4) for k, v in T.items()}
    res["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
