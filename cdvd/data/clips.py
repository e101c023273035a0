"""Pure helpers for clips: frame windows with reflection at the borders, paired crops and augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def reflect_index(index: int, n_frames: int) -> int:
    """Fold ``index`` into ``[0, n_frames)`` by reflection without repeating the edge frame, as often as needed:
    with 3 frames, ``-4 -3 -2 -1 0 1 2 3 4`` reads as ``0 1 2 1 0 1 2 1 0``. A 1-frame video gives 0."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, instead got {n_frames}")
    if n_frames == 1:
        return 0
    period = 2 * (n_frames - 1)
    index %= period
    return index if index < n_frames else period - index


def window_indices(center: int, length: int, n_frames: int) -> list[int]:
    """The ``length`` (5 for CDVD-TSP) frame indices around ``center`` (both in ``[0, n_frames)``; for an even length
    the centre is at ``length // 2``), reflected at the video's borders by :func:`reflect_index`.

    As the 2021 fork of CDVD-TSP reads videos: ``[1, 2, 3, 4, 5]`` is read as ``[3, 2, 1, 2, 3, 4, 5, 4, 3]``, so
    the window of frame 1 is ``[3, 2, 1, 2, 3]``.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, instead got {length}")
    if not 0 <= center < n_frames:
        raise ValueError(f"center must be in [0, {n_frames}), instead got {center}")
    start = center - length // 2
    return [reflect_index(i, n_frames) for i in range(start, start + length)]


def random_crop_box(height: int, width: int, patch: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ``patch`` x ``patch`` crop drawn uniformly inside a (height, width) frame."""
    if patch > height or patch > width:
        raise ValueError(f"patch {patch} does not fit in frames of {height}x{width}")
    return int(rng.integers(0, height - patch + 1)), int(rng.integers(0, width - patch + 1))


def draw_augment(rng: np.random.Generator, allow_transpose: bool = True) -> tuple[bool, bool, bool]:
    """Draw (hflip, vflip, transpose): the 8 flips and 90-degree rotations, uniformly. ``transpose`` (and with it the
    odd rotations) needs square frames: pass ``allow_transpose=False`` if they are not."""
    hflip, vflip, transpose = (bool(b) for b in rng.integers(0, 2, size=3))
    return hflip, vflip, transpose and allow_transpose


def apply_augment(frames: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    """One flip/rotation applied to every frame of a (T, H, W, C) clip: ``hflip`` mirrors left-right, ``vflip``
    top-bottom, ``transpose`` swaps H and W (with the flips: rotations by 90 degrees); a view where possible."""
    if hflip:
        frames = frames[:, :, ::-1]
    if vflip:
        frames = frames[:, ::-1]
    if transpose:
        frames = frames.transpose(0, 2, 1, 3)
    return frames


def frames_to_tensor(frames: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 RGB frames (T, H, W, 3) to a float32 tensor (T, 3, H, W) in [0, 1]."""
    array = np.ascontiguousarray(np.stack(frames) if not isinstance(frames, np.ndarray) else frames)
    tensor = torch.from_numpy(array).permute(0, 3, 1, 2)
    return tensor.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
