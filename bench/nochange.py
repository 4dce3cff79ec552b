"""No behaviour change, shown: the demo's stores (stories260K, 2 ranks, RTN group 32, rank 16,
zero and cloq inits at 2, 3 and 4 bits, 128 x 512 calibration tokens), a sweep (bits 2,3 x ranks
8,16, svd), a GPTQ + LoFTQ store and the exports of one store are made by two binaries; the stores'
layers (codes, scales, zeros, lora_A, lora_B) and per-module objectives are compared bitwise
(tests/e2e/storecmp.py), the printed perplexities as text, and the export folders file by file
(cloq_export.json, which records the tool and the time, aside). A synthetic model (`cloq synth`,
2 ranks' init and an export of it) is compared too: its weights and calibration tokens bytewise,
its config.json as parsed JSON (synth writes it with the HF folder writer since issue 15, so the
bytes changed, not the values), the store bitwise and the export file by file.
Usage: python3 bench/nochange.py BEFORE_BIN AFTER_BIN OUT_MD"""
import filecmp
import json
import os
import subprocess
import sys
import tempfile

import h5py

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from storecmp import load_layers, same_layers  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
A = os.environ.get("CLOQ_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
M, CAL, TEST = f"{A}/stories260K-hf", f"{A}/wikitext-2/wiki.valid.tokens", f"{A}/wikitext-2/wiki.test.raw"
MPIRUN = os.path.join(ROOT, "scripts", "mpirun.sh")
before, after, out_md = sys.argv[1:4]
work = tempfile.mkdtemp(prefix="cloq-nochange-")
env = dict(os.environ, OPENBLAS_NUM_THREADS="1", CLOQ_DEVICE="cpu")


def run(exe, args, np_=2):
    cmd = ([MPIRUN, "-np", str(np_), exe] if np_ > 1 else [exe]) + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)}: rc {p.returncode}: {p.stderr[-500:]}")
    return p.stdout


def objectives(path):
    with h5py.File(path, "r") as f:
        return {(b, m): (f[f"layers/{b}/{m}"].attrs["objective"], f[f"layers/{b}/{m}"].attrs["objective_zero"])
                for b in f["layers"] for m in f[f"layers/{b}"]}


rows, ok_all = [], True
stores = {}
for tag, exe in (("before", before), ("after", after)):
    d = os.path.join(work, tag)
    os.makedirs(d)
    s = {}
    for bits in (2, 3, 4):
        for init in ("zero", "cloq"):
            p = os.path.join(d, f"demo-{bits}-{init}.h5")
            run(exe, ["init", "--model", M, "--calib", CAL, "--out", p, "--bits", bits, "--group-size", 32,
                      "--rank", 16, "--init", init, "--nsamples", 128, "--seqlen", 512])
            ppl = run(exe, ["eval", "--model", M, "--data", TEST, "--store", p]).strip().splitlines()[-1]
            s[f"demo {bits} bits {init}"] = (p, ppl)
    sw = os.path.join(d, "sweep")
    run(exe, ["sweep", "--model", M, "--calib", CAL, "--out", sw, "--bits", "2,3", "--ranks", "8,16",
              "--init", "svd", "--group-size", 32, "--nsamples", 64, "--seqlen", 256])
    for f in sorted(os.listdir(sw)):
        if f.endswith(".h5"):
            s[f"sweep {f}"] = (os.path.join(sw, f), "")
    p = os.path.join(d, "gptq-loftq.h5")
    run(exe, ["init", "--model", M, "--calib", CAL, "--out", p, "--bits", 2, "--group-size", 32, "--rank", 8,
              "--quantizer", "gptq", "--init", "loftq", "--loftq-iters", 3, "--nsamples", 64, "--seqlen", 256])
    s["gptq + loftq x3"] = (p, "")
    # the same --out for both (adapter_config.json records the base's path), moved aside after
    ex, kept = os.path.join(work, "export"), os.path.join(d, "export")
    run(exe, ["export", "--store", s["demo 3 bits cloq"][0], "--out", ex, "--format", "safetensors,peft,gptq"], 1)
    os.rename(ex, kept)
    s["export"] = (kept, "")
    sy = os.path.join(work, "synth")  # one path for both: the export records the model's path
    run(exe, ["synth", "--out", sy, "--dim", 64, "--layers", 3, "--heads", 4, "--kv-heads", 2, "--mlp", 160,
              "--vocab", 300, "--max-pos", 256, "--seed", 5, "--calib-samples", 8, "--calib-seqlen", 64], 1)
    sp = os.path.join(d, "synth.h5")
    run(exe, ["init", "--model", sy, "--calib", f"{sy}/calib.tok", "--calib-format", "tokens", "--out", sp,
              "--bits", 3, "--group-size", 32, "--rank", 4, "--init", "cloq", "--nsamples", 8, "--seqlen", 64])
    run(exe, ["export", "--store", sp, "--out", ex, "--format", "safetensors,peft,gptq"], 1)
    os.rename(ex, os.path.join(d, "synth-export"))
    os.rename(sy, os.path.join(d, "synth-model"))
    s["synth model"] = (os.path.join(d, "synth-model"), "")
    s["synth store"] = (sp, "")
    s["synth export"] = (os.path.join(d, "synth-export"), "")
    stores[tag] = s
    s["fp ppl"] = ("", run(exe, ["eval", "--model", M, "--data", TEST]).strip().splitlines()[-1])

def folder_diffs(pa, pb):
    """Files that differ between two folders (cloq_export.json aside), by content."""
    def diffs(c):
        out = list(c.left_only) + list(c.right_only) + list(c.diff_files) + list(c.funny_files)
        # dircmp compares by stat signature first: compare every common file's bytes
        out += [f for f in c.common_files if not filecmp.cmp(os.path.join(c.left, f), os.path.join(c.right, f),
                                                            shallow=False)]
        for sub in c.subdirs.values():
            out += diffs(sub)
        return sorted(set(out))
    return diffs(filecmp.dircmp(pa, pb, ignore=["cloq_export.json"]))


for k in stores["before"]:
    (pa, ta), (pb, tb) = stores["before"][k], stores["after"][k]
    if k in ("export", "synth export"):
        bad = folder_diffs(pa, pb)
        same = not bad
        rows.append((k, "every file byte-identical" if same else f"differ: {bad}", ""))
    elif k == "synth model":
        same_bytes = [f for f in ("model.safetensors", "calib.tok")
                      if filecmp.cmp(os.path.join(pa, f), os.path.join(pb, f), shallow=False)]
        ca, cb = (json.load(open(os.path.join(x, "config.json"))) for x in (pa, pb))
        same = len(same_bytes) == 2 and ca == cb
        rows.append((k, f"{', '.join(same_bytes)} byte-identical; config.json "
                        f"{'equal as JSON' if ca == cb else 'DIFFERS as JSON'}", ""))
    elif pa:
        oa, ob = objectives(pa), objectives(pb)
        same = same_layers(load_layers(pa), load_layers(pb)) and oa == ob
        note = "layers and objectives bitwise equal"
        if not same and k.startswith("gptq + loftq"):
            # intended: LoftQ now keeps its best iterate (issue 15); never worse on any module
            diff = [m for m in oa if oa[m] != ob[m]]
            worse = [m for m in diff if ob[m][0] > oa[m][0]]
            same = not worse
            note = (f"{len(diff)} of {len(oa)} modules differ, as intended (the best iterate kept): none worse; "
                    f"total objective {sum(v[0] for v in oa.values()):.6g} -> {sum(v[0] for v in ob.values()):.6g}")
        elif not same:
            note = "DIFFER"
        rows.append((k, note, f"{ta} / {tb}" if ta else ""))
        same = same and ta == tb
    else:
        same = ta == tb
        rows.append((k, "", f"{ta} / {tb}"))
    ok_all &= same

with open(out_md, "w") as f:
    f.write(f"# No behaviour change: {os.path.basename(before)} (before) against {os.path.basename(after)} (after)\n\n")
    f.write(f"`python3 bench/nochange.py {before} {after} {out_md}`\n\n")
    f.write("| output | stores / exports | printed (before / after) |\n|---|---|---|\n")
    for r in rows:
        f.write(f"| {r[0]} | {r[1]} | {r[2]} |\n")
    f.write(f"\nAll equal: {'yes' if ok_all else 'NO'}\n")
print(open(out_md).read())
sys.exit(0 if ok_all else 1)
