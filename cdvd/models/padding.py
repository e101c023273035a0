"""Padding frames to the multiple of 4 the reconstruction net needs, and cropping back."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(frames: torch.Tensor, multiple: int = 4) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the last two dims of ``frames`` (..., H, W) up to multiples of ``multiple``.

    Returns the padded tensor and the original (H, W) for :func:`crop_to`. The original code cropped the frame
    instead, losing up to 3 rows and columns of output.
    """
    h, w = frames.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return frames, (h, w)
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])
    mode = "reflect" if h > pad_h and w > pad_w else "replicate"
    padded = F.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
    return padded.reshape(*lead, *padded.shape[-3:]), (h, w)


def crop_to(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: keep the top-left (H, W)."""
    return frames[..., : size[0], : size[1]]
