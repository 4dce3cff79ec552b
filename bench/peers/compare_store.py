#!/usr/bin/env python3
"""Cross-checks torch_cloq.py's --out (.safetensors) against a cloq store (.h5) made with the same
model, calibration tokens and settings: per module, codes (count of differing entries), scales
and zeros (max relative / absolute difference) and the LoRA product B A (relative Frobenius
difference; the factors themselves are determined only up to signs and rotations within equal
singular values). Prints one line per module and a JSON summary; exits 1 when a product differs
by more than --tol or a quantization array differs beyond float32 rounding ties.
Usage: compare_store.py STORE.h5 PEER.safetensors [--tol 1e-4]
"""
import argparse
import json
import sys

import h5py
import numpy as np
from safetensors.numpy import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("peer")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    f = h5py.File(a.store, "r")
    p = load_file(a.peer)
    rows = []
    for b in sorted(f["layers"].keys(), key=int):
        for m in sorted(f["layers"][b].keys()):
            g = f["layers"][b][m]
            k = f"model.layers.{b}.{m}"
            c0, c1 = g["codes"][()], p[f"{k}.codes"]
            s0, s1 = g["scales"][()], p[f"{k}.scales"]
            z0, z1 = g["zeros"][()], p[f"{k}.zeros"]
            P0 = g["lora_B"][()].astype(np.float64) @ g["lora_A"][()].astype(np.float64)
            P1 = p[f"{k}.lora_B"].astype(np.float64) @ p[f"{k}.lora_A"].astype(np.float64)
            rows.append({
                "module": k,
                "codes_diff": int(np.count_nonzero(c0 != c1)),
                "codes_maxabs": int(np.abs(c0.astype(int) - c1.astype(int)).max()),
                "scales_rel": float(np.max(np.abs(s0 - s1) / np.abs(s0))),
                "zeros_absdiff": float(np.max(np.abs(z0 - z1))),
                "ba_rel": float(np.linalg.norm(P0 - P1) / np.linalg.norm(P0)),
            })
    for r in rows:
        print(f"{r['module']:34s} codes diff {r['codes_diff']:4d} (max |d| {r['codes_maxabs']}) "
              f"scales rel {r['scales_rel']:.1e} zeros |d| {r['zeros_absdiff']:.0f} "
              f"BA rel {r['ba_rel']:.2e}", file=sys.stderr)
    n_codes = sum(int(np.prod(f["layers"][b][m]["codes"].shape))
                  for b in f["layers"] for m in f["layers"][b])
    summ = {"modules": len(rows), "codes": n_codes,
            "codes_differing": sum(r["codes_diff"] for r in rows),
            "codes_max_abs_diff": max(r["codes_maxabs"] for r in rows),
            "scales_max_rel": max(r["scales_rel"] for r in rows),
            "zeros_max_abs_diff": max(r["zeros_absdiff"] for r in rows),
            "ba_max_rel": max(r["ba_rel"] for r in rows),
            "ba_median_rel": float(np.median([r["ba_rel"] for r in rows]))}
    summ["ok"] = (summ["ba_max_rel"] <= a.tol and summ["codes_max_abs_diff"] <= 1
                  and summ["scales_max_rel"] <= 1e-6 and summ["zeros_max_abs_diff"] <= 1)
    print(json.dumps(summ))
    sys.exit(0 if summ["ok"] else 1)


if __name__ == "__main__":
    main()
