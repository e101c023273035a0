"""Digests that say what made a result: a model's weights, a file's bytes (an input, a checkpoint, a cached model)
and the source of the code that computes with them."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where weights are hashed: cdvd.video hashes files without it
    import torch

PACKAGE = Path(__file__).resolve().parent


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over a model's state dict (names, dtypes, shapes and values, in order)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of all of a file's bytes, read now (never from a cache: what decides whether a result is reused must
    be the content, not a name, a size or a time). The project's one file digest: input frames and videos
    (:mod:`cdvd.inference.manifest`), checkpoints (``cdvd-eval``), cached models (:mod:`cdvd.backends.openvino`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def source_sha256(*relative: str) -> str:
    """SHA-256 over this package's source files or folders (their ``.py`` files, sorted), e.g. ``models``: a cache
    keyed on it never serves what older code made."""
    digest = hashlib.sha256()
    for name in relative:
        path = PACKAGE / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(f"{file.relative_to(PACKAGE).as_posix()}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()
