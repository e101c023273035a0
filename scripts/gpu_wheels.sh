#!/usr/bin/env bash
# The wheels the GPU machine lacks, into .gpu-wheels/ (git-ignored), to travel there with the device tool's carry.
#
#   bash scripts/gpu_wheels.sh          # about 37 MB, most of it PyAV; then see scripts/bench_gpu.py's docstring
#
# The GPU machine has PyTorch, Lightning, torchmetrics, cupy, OpenCV, scikit-image, rich and tensorboard, not Hydra
# (hydra-core, omegaconf, antlr4-python3-runtime), pytorch-msssim, torch-lr-finder or PyAV (av), which cdvd imports
# (cdvd.inference reaches av through cdvd.video, cdvd.losses imports pytorch-msssim, cdvd.training.module Hydra). Each
# is taken at the version installed in this checkout's .venv (the versions the tests ran with), plus cdvd's own
# wheel (pip wheel --no-deps .) for its console scripts and packaged configs. PyAV is compiled code: it is fetched
# for the GPU machine's Python (GPU_PYTHON, default 3.12, x86-64 manylinux); the others are pure Python, built here
# where PyPI has only a source archive (antlr4-python3-runtime). The folder is replaced whole, or left as it was.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
GPU_PYTHON=${GPU_PYTHON:-3.12}
DEST=.gpu-wheels
PARTIAL=$DEST.partial
PURE="hydra-core omegaconf antlr4-python3-runtime pytorch-msssim torch-lr-finder"

installed() { # the version of package $1 in $PYTHON's environment
    "$PYTHON" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"
}

rm -rf "$PARTIAL"
mkdir -p "$PARTIAL"
for name in $PURE; do
    "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$PARTIAL" "$name==$(installed "$name")"
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$PARTIAL" "av==$(installed av)"
# cdvd from a copy of the files git would send (tracked, and untracked but not ignored): no build/ or egg-info
# left in the checkout, and nothing stale from an earlier build in the wheel
SOURCE=$(mktemp -d)
trap 'rm -rf "$SOURCE"' EXIT
git ls-files -z --cached --others --exclude-standard |
    tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$SOURCE"
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$PARTIAL" "$SOURCE"
rm -rf "$DEST"
mv "$PARTIAL" "$DEST"
ls -1 "$DEST"
du -sh "$DEST"
