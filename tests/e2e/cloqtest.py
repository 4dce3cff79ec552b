"""Shared helpers of the end-to-end tests: how to run cloq (plain or under mpirun), where the
assets are, and a check() that prints expected vs got and counts failures."""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

CLOQ = os.environ.get("CLOQ_BIN", "build/cmd/cloq")
MPIRUN = os.environ.get("CLOQ_MPIRUN", "scripts/mpirun.sh")
ASSETS = os.environ.get("CLOQ_ASSETS", os.path.join(os.path.dirname(__file__), "../../../shared/assets"))
MODEL = os.path.join(ASSETS, "stories260K-hf")
REF = os.path.join(ASSETS, "stories260K", "reference_outputs.json")
WIKI_VALID = os.path.join(ASSETS, "wikitext-2", "wiki.valid.tokens")
WIKI_TEST = os.path.join(ASSETS, "wikitext-2", "wiki.test.raw")

_failures = 0
_checks = 0


GPTQ_TOOL = os.environ.get("CLOQ_GPTQ_TOOL", "build/tests/linalg/gptq_tool")


def run_gptq_tool(mode, W, H, params):
    """tests/linalg/gptq_tool MODE on W (float32) and H (float64; None for rtn): (process,
    outputs). Outputs (None on failure): MagR's Wout, else [codes, scales, zeros], plus COMQ's
    objectives [start, result] when the tool wrote them."""
    d = tempfile.mkdtemp(prefix="cloq-tool-")
    W.astype("<f4").tofile(os.path.join(d, "W.f32"))
    if H is not None:
        H.astype("<f8").tofile(os.path.join(d, "H.f64"))
    with open(os.path.join(d, "params.txt"), "w") as f:
        f.write(" ".join(repr(x) for x in params) + "\n")
    p = subprocess.run([GPTQ_TOOL, mode, d, d], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    out = None
    if p.returncode == 0:
        n_out, n_in = W.shape
        if mode.startswith("magr"):
            out = np.fromfile(os.path.join(d, "Wout.f32"), "<f4").reshape(n_out, n_in)
        else:
            out = [np.fromfile(os.path.join(d, "codes.u8"), np.uint8).reshape(n_out, n_in),
                   np.fromfile(os.path.join(d, "scales.f32"), "<f4").reshape(n_out, -1),
                   np.fromfile(os.path.join(d, "zeros.f32"), "<f4").reshape(n_out, -1)]
            if os.path.exists(os.path.join(d, "obj.f64")):
                out.append(np.fromfile(os.path.join(d, "obj.f64"), "<f8"))
    for name in os.listdir(d):
        os.remove(os.path.join(d, name))
    os.rmdir(d)
    return p, out


def check(ok, what, expected=None, got=None):
    global _failures, _checks
    _checks += 1
    if ok:
        print(f"ok   {what}")
    else:
        _failures += 1
        print(f"FAIL {what}: expected {expected}, got {got}")


def done():
    print(f"{_checks - _failures} of {_checks} checks passed")
    sys.exit(1 if _failures else 0)


def _pairs(args):
    """[(flag, value or None)] of an argument list ("--flag value", "--flag=value", switches)."""
    out, i, args = [], 0, [str(a) for a in args]
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            out.append(tuple(a.split("=", 1)))
        elif a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append((a, args[i + 1]))
            i += 1
        else:
            out.append((a, None))
        i += 1
    return out


def override(base, extra):
    """base with the flags that extra sets replaced by extra's (cloq refuses a flag given twice)."""
    new = {f for f, _ in _pairs(extra)}
    keep = [x for f, v in _pairs(base) if f not in new for x in ((f,) if v is None else (f, v))]
    return keep + [str(a) for a in extra]


def run(args, np_=0, env=None, timeout=600, allow_dup=False):
    """np_ = 0: a plain process; otherwise mpirun -np np_. Returns CompletedProcess. A flag given
    twice is a mistake of the test (cloq refuses it), unless allow_dup (the test of that)."""
    flags = [f for f, _ in _pairs(args) if f.startswith("--")]
    dup = sorted({f for f in flags if flags.count(f) > 1})
    assert allow_dup or not dup, f"test passes {dup} twice: {args}"
    cmd = ([CLOQ] if np_ == 0 else [MPIRUN, "-np", str(np_), CLOQ]) + [str(a) for a in args]
    e = dict(os.environ)
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    # the tests compare bitwise with CPU goldens and count stderr lines: the CPU unless a test
    # asks for a device (test_device does)
    e.setdefault("CLOQ_DEVICE", "cpu")
    if env:
        e.update(env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


def ppl_of(proc):
    lines = [l for l in proc.stdout.strip().splitlines() if l.strip()]
    if proc.returncode != 0 or not lines or not lines[-1].startswith("ppl "):
        raise RuntimeError(f"cloq failed (rc {proc.returncode}): {proc.stderr.strip()}")
    return float(lines[-1].split()[1])


def reference():
    with open(REF) as f:
        return json.load(f)


def tmpdir():
    return tempfile.mkdtemp(prefix="cloq-test-")


def write_tokens(path, seqs):
    with open(path, "w") as f:
        for s in seqs:
            f.write(" ".join(str(int(i)) for i in s) + "\n")


def read_safetensors_typed(path):
    """Independent reader: ({name: (dtype string, array)}, __metadata__) for F32/F16/BF16/I32."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    kinds = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I32": "<i4"}
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = v["dtype"]
        if dt not in kinds:
            raise ValueError(f"{path}: tensor {k}: dtype {dt}")
        arr = np.frombuffer(data[8 + n + a:8 + n + b], dtype=kinds[dt])
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[k] = (dt, arr.reshape(v["shape"]))
    return out, hdr.get("__metadata__")


def read_safetensors(path):
    """Independent reader: name -> float32 array (F32 only, as the asset is)."""
    out = {}
    for k, (dt, a) in read_safetensors_typed(path)[0].items():
        assert dt == "F32"
        out[k] = a
    return out


def load_tok(path):
    """llama2.c tokenizer file -> (pieces, scores)."""
    with open(path, "rb") as f:
        f.read(4)
        pieces, scores = [], []
        while True:
            h = f.read(8)
            if len(h) < 8:
                break
            sc, ln = struct.unpack("<fi", h)
            pieces.append(f.read(ln))
            scores.append(sc)
    return pieces, scores


def bpe_merge(b, pieces, scores, lut):
    """llama2.c's BPE of the bytes b: UTF-8 characters (a lead byte and up to 3 continuation
    bytes) as pieces, else byte fallback <0xXX> = 3 + byte, then the best-scoring merge first
    (run.c's floor -1e10), leftmost on ties. Quadratic; for short texts or chunks."""
    syms = []
    i = 0
    while i < len(b):
        j = i + 1
        while j < len(b) and (b[j] & 0xC0) == 0x80 and j - i < 4:
            j += 1
        cp = b[i:j]
        if cp in lut:
            syms.append(lut[cp])
        else:
            syms.extend(x + 3 for x in cp)
        i = j
    while True:
        best, bi, bid = -1e10, -1, -1
        for k in range(len(syms) - 1):
            m = pieces[syms[k]] + pieces[syms[k + 1]]
            if m in lut and scores[lut[m]] > best:
                best, bi, bid = scores[lut[m]], k, lut[m]
        if bi < 0:
            return syms
        syms[bi:bi + 2] = [bid]


def encode(text, pieces, scores, bos=True):
    """Plain llama2.c BPE (quadratic; for short texts), independent of io/tokenizer.c."""
    lut = {p: i for i, p in enumerate(pieces)}
    toks = [1] if bos else []
    return toks + bpe_merge((" " + text).encode("utf-8") if text else b"", pieces, scores, lut)


def model_copy(d, name):
    """A writable copy of stories260K-hf in d/name."""
    import shutil
    m = os.path.join(d, name)
    shutil.copytree(MODEL, m)
    os.chmod(os.path.join(m, "model.safetensors"), 0o644)
    os.chmod(os.path.join(m, "config.json"), 0o644)
    return m


def _tensor_span(m, tensor):
    p = os.path.join(m, "model.safetensors")
    data = bytearray(open(p, "rb").read())
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    lo, hi = hdr[tensor]["data_offsets"]
    return p, data, 8 + n + lo, 8 + n + hi


def poke_float(m, tensor, index, value):
    """Sets float32 entry `index` of `tensor` in m/model.safetensors."""
    p, data, lo, _ = _tensor_span(m, tensor)
    data[lo + 4 * index:lo + 4 * index + 4] = struct.pack("<f", value)
    open(p, "wb").write(bytes(data))


def zero_tensor(m, tensor):
    """Sets every entry of `tensor` in m/model.safetensors to 0."""
    p, data, lo, hi = _tensor_span(m, tensor)
    data[lo:hi] = bytes(hi - lo)
    open(p, "wb").write(bytes(data))


# cloq's seed mixing (common/cloq_hash.h, linalg/rng.c): splitmix64 finalizer, for tests that
# replay a documented draw
M64, GG = (1 << 64) - 1, 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def seed_mix(a, b, c):
    h = mix64((a + GG) & M64)
    h = mix64(h ^ ((b + 2 * GG) & M64))
    return mix64(h ^ ((c + 3 * GG) & M64))


def write_safetensors_f32(path, tensors):
    """A single-file safetensors checkpoint of float32 tensors, written independently of cloq."""
    hdr, blobs, off = {}, [], 0
    for k in sorted(tensors):
        b = np.ascontiguousarray(tensors[k], dtype="<f4").tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(tensors[k].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
