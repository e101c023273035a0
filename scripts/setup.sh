#!/usr/bin/env bash
# Creates .venv with cdvd and everything it needs. Where no NVIDIA GPU is present, the CPU build of PyTorch goes in
# first (a plain `pip install torch` on Linux pulls a CUDA build of several GB): from a local wheel when pip's
# find-links has one, else from PyTorch's CPU index. Set CDVD_EXTRAS=test,cuda to choose the extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${CDVD_EXTRAS:-test}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing PyTorch with CUDA"
    pip install -q "torch>=2.1"
  elif pip install -q --no-index "torch==2.13.0" 2>/dev/null; then
    echo "setup: no GPU, installed the local CPU build of PyTorch 2.13.0"
  else
    echo "setup: no GPU, installing the CPU build of PyTorch from PyTorch's CPU index"
    pip install -q "torch>=2.1" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
pip install -q -e ".[$EXTRAS]"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
