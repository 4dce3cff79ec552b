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
#
# --gptqmodel also makes bench/peers/.venv-gptqmodel for tests/e2e/test_gptqmodel.py: GPTQModel
# 7.7.0 and optimum 2.3.0 (PEFT refuses every LoRA model once gptqmodel is importable without
# optimum >= 1.24: peft/import_utils.py, is_gptqmodel_available). It is a venv of its own layered
# on .venv (a .pth adds .venv's site-packages), so torch, transformers and peft are .venv's and
# .venv itself is left as it is. It cannot go into .venv: GPTQModel 7.7 requires torchao >= 0.18,
# and with any torchao importable PEFT 0.18.1's LoRA dispatch imports
# torchao.quantization.LinearActivationQuantizedTensor for every nn.Linear, which torchao 0.18 no
# longer has (ImportError: PeftModel.from_pretrained on a plain model fails, as in test_export).
# GPTQModel is an sdist (pure Python; its kernels are compiled at run time; its dependency pypcre
# compiles C here) and brings datasets, pandas, pyarrow, torchao and others: ~370 MB, about
# 1 min 40 s cold here (README.md).
# Usage: bash bench/peers/install.sh [--gptqmodel]   (PYTHON=python3.11 to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
GPTQ=0
for a in "$@"; do
  case "$a" in
    --gptqmodel) GPTQ=1 ;;
    *) echo "usage: bash bench/peers/install.sh [--gptqmodel]" >&2; exit 2 ;;
  esac
done
VENV=.venv
PY=${PYTHON:-python3}
CPU_INDEX=https://download.pytorch.org/whl/cpu
# Versions the figures in README.md were measured with.
PKGS=(transformers==5.23.0 peft==0.18.1 accelerate==1.15.0 safetensors==0.8.0 bitsandbytes==0.50.2
      scipy==1.17.1 numpy h5py gguf==0.19.0)
GVENV=.venv-gptqmodel
GPTQ_PKGS=(gptqmodel==7.7.0 optimum==2.3.0)

check() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md, torch, transformers, peft, safetensors, bitsandbytes, scipy, numpy, h5py, gguf
assert torch.__version__.split("+")[0] == "2.15.0" and peft.__version__ == "0.18.1"
assert transformers.__version__ == "5.23.0" and md.version("bitsandbytes") == "0.50.2"
assert md.version("gguf") == "0.19.0"
PY
}

# .venv-gptqmodel sees .venv's stack (first on its path: no other copy) and has GPTQModel's.
# Versions only: importing gptqmodel takes ~10 s, and test_gptqmodel imports it anyway.
gcheck() {
  "$GVENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md
assert md.version("torch").split("+")[0] == "2.15.0" and md.version("peft") == "0.18.1"
assert md.version("transformers") == "5.23.0" and md.version("accelerate") == "1.15.0"
assert md.version("gptqmodel") == "7.7.0" and md.version("optimum") == "2.3.0"
PY
}

# .venv-gptqmodel on top of a complete .venv (see the top).
gptqmodel_venv() {
  if gcheck; then
    echo "bench/peers/$GVENV: already installed (gptqmodel 7.7.0, optimum 2.3.0 over .venv)"
    return 0
  fi
  [ -x "$GVENV/bin/python" ] || "$VENV/bin/python" -m venv "$GVENV"
  local base over
  base=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  over=$("$GVENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # addsitedir, not a bare path: .pth files in .venv's site-packages are processed too
  echo "import site; site.addsitedir('$base')" > "$over/zz_peers_venv.pth"
  # the pins of .venv named again, so that pip takes them from there and installs no other copy
  "$GVENV/bin/pip" install --disable-pip-version-check "${GPTQ_PKGS[@]}" torch==2.15.0 \
    transformers==5.23.0 peft==0.18.1 accelerate==1.15.0 safetensors==0.8.0
  gcheck
  echo "installed: bench/peers/$GVENV (gptqmodel 7.7.0, optimum 2.3.0 over .venv)"
  du -sh "$GVENV"
}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if check; then
  echo "bench/peers/.venv: already installed ($("$VENV/bin/python" -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'))"
  [ "$GPTQ" = 0 ] || gptqmodel_venv
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
[ "$GPTQ" = 0 ] || gptqmodel_venv
