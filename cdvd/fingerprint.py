"""Digests that say what made a result: a model's weights and the source of the code that computes with them."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parent


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over a model's state dict (names, dtypes, shapes and values, in order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read now (in 1 MiB blocks); :func:`cdvd.inference.manifest.file_sha256` memoizes
    it per path, size and modification time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def source_sha256(*relative: str) -> str:
    """SHA-256 over the text of this package's source files or folders (``.py`` files, sorted), e.g. ``models``.

    A change to any of them changes the digest, so a cache keyed on it never serves what older code made.
    """
    digest = hashlib.sha256()
    for name in relative:
        path = PACKAGE / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(f"{file.relative_to(PACKAGE).as_posix()}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()
