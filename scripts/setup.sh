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
# the version of a CPU build of torch that pip's find-links folders hold on this machine (empty if none)
torch_cpu_local() {
  local dirs
  dirs=$("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null || true)
  dirs="$dirs ${PIP_FIND_LINKS:-}"
  for d in $dirs; do
    # shellcheck disable=SC2012
    ls "$d" 2>/dev/null | sed -n 's/^torch-\([0-9.]*\)+cpu-.*\.whl$/\1/p' | sort -V | tail -n 1
  done | sort -V | tail -n 1
}
pip install -q --upgrade pip

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing PyTorch with CUDA"
    pip install -q "torch>=2.1"
  elif [ -n "$(torch_cpu_local)" ] && pip install -q "torch==$(torch_cpu_local)" 2>/dev/null; then
    echo "setup: no GPU, installed the local CPU build of PyTorch $(torch_cpu_local)"
  elif pip install -q --retries 0 --timeout 15 "torch>=2.1" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple 2>/dev/null; then
    echo "setup: no GPU, installed the CPU build of PyTorch from PyTorch's CPU index"
  else
    echo "setup: no GPU and PyTorch's CPU index is unreachable: installing PyTorch from PyPI (a CUDA build)"
    pip install -q "torch>=2.1"
  fi
fi
pip install -q -e ".[$EXTRAS]"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
