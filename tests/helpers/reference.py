"""Deterministic weights of ``shared/reference``: every tensor filled from its key name (see its README)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURE = Path(__file__).parents[1] / "fixtures" / "reference_case_a"


def deterministic_tensor(key: str, shape: list[int], salt: int = 0) -> torch.Tensor:
    n = int(np.prod(shape))
    c = (zlib.crc32(key.encode("utf-8")) + salt) % 2**32
    i = np.arange(n, dtype=np.uint64)
    u = ((i * np.uint64(2654435761) + np.uint64(c)) % np.uint64(2**32)).astype(np.float64) / 2**32
    if len(shape) >= 2:
        value = (2 * u - 1) / np.sqrt(n / shape[0])
    else:
        value = (2 * u - 1) * 0.01
    return torch.from_numpy(value.reshape(shape).astype(np.float32))


def reference_state_dict(salt: int = 0) -> dict[str, torch.Tensor]:
    """The original-format state dict of case_a, keys in the original order."""
    keys = json.loads((FIXTURE / "state_dict_keys.json").read_text())
    return {k: deterministic_tensor(k, shape, salt) for k, shape in keys.items()}


def reference_clip() -> torch.Tensor:
    """(1, 5, 3, 128, 192) float clip in [0, 1]."""
    frames = np.load(FIXTURE / "input_uint8.npy").astype(np.float32) / 255.0
    return torch.from_numpy(frames).permute(0, 3, 1, 2).unsqueeze(0).contiguous()


def reference_expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "expected.npz") as data:
        return {k: data[k] for k in data.files}
