#!/usr/bin/env bash
# Installs the peers' Python stack into bench/peers/.venv (git-ignored): CPU PyTorch, transformers,
# peft (+ accelerate, its dependency), safetensors, bitsandbytes and scipy (PEFT's LoftQ imports
# the first and builds its normal-float code book with the second), and numpy/h5py for the
# cross-check against a cloq store, and gguf (transformers' GGUF loader needs it: tests/e2e/test_gguf.py
# compares cloq's GGUF reader with it). Idempotent: a venv that already imports everything at the
# pinned versions is left as it is.
#
# peft is pinned to 0.18.1, the newest release whose LoftQ runs on a CPU-only machine: from 0.20
# on, LoftQ quantizes only through bitsandbytes on a hard-coded "cuda"/"xpu" device (see the
# header of peft_loftq.py).
#
# torch comes from the CPU wheel index (https://download.pytorch.org/whl/cpu, ~200 MB) when it is
# reachable. Where it is not (this workplace reaches PyPI only), it falls back to PyPI's torch,
# whose Linux wheel is the CUDA build and pulls the NVIDIA runtime wheels (several GB on disk);
# it runs on the CPU all the same (the peers never touch a GPU: they set CUDA_VISIBLE_DEVICES="").
# Usage: bash bench/peers/install.sh        (PYTHON=python3.11 to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}
CPU_INDEX=https://download.pytorch.org/whl/cpu
# Versions the figures in README.md were measured with.
PKGS=(transformers==5.23.0 peft==0.18.1 accelerate==1.15.0 safetensors==0.8.0 bitsandbytes==0.50.2
      scipy==1.17.1 numpy h5py gguf==0.19.0)

check() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md, torch, transformers, peft, safetensors, bitsandbytes, scipy, numpy, h5py, gguf
assert torch.__version__.split("+")[0] == "2.15.0" and peft.__version__ == "0.18.1"
assert transformers.__version__ == "5.23.0" and md.version("bitsandbytes") == "0.50.2"
assert md.version("gguf") == "0.19.0"
PY
}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if check; then
  echo "bench/peers/.venv: already installed ($("$VENV/bin/python" -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'))"
  exit 0
fi
PIP=("$VENV/bin/pip" install --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch; assert torch.__version__.split('+')[0] == '2.15.0'" 2>/dev/null; then
  if "${PIP[@]}" --retries 0 --timeout 20 --index-url "$CPU_INDEX" torch==2.15.0; then
    echo "torch: CPU build from $CPU_INDEX"
  else
    echo "torch: CPU wheel index unreachable; installing PyPI's torch (CUDA build with NVIDIA runtime wheels, several GB; used on the CPU only)" >&2
    "${PIP[@]}" torch==2.15.0
  fi
fi
"${PIP[@]}" "${PKGS[@]}"
check
"$VENV/bin/python" -c 'import torch, transformers, peft; print("installed: torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
du -sh "$VENV"
