"""Tiny datasets for the data tests: frames whose pixels say where they come from.

Every frame is uint8 RGB: red = row, green = column, blue = 10 * frame index + video id (+ 100 in the GT),
so a test can check that a crop, flip or rotation was the same for every frame of a clip and its GT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdvd.data.io import write_rgb

SIZE = (24, 32)
GT_OFFSET = 100


def encoded_frame(video: int, frame: int, size: tuple[int, int] = SIZE, gt: bool = False) -> np.ndarray:
    """(H, W, 3) uint8: red = row, green = column, blue = 10 * frame + video (+ GT_OFFSET for GT)."""
    height, width = size
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.arange(height)[:, None]
    image[..., 1] = np.arange(width)[None, :]
    image[..., 2] = 10 * frame + video + (GT_OFFSET if gt else 0)
    return image


def write_video(
    folder: Path,
    n_frames: int,
    video: int = 0,
    gt: bool = False,
    size: tuple[int, int] = SIZE,
    ext: str = ".png",
) -> list[Path]:
    paths = []
    for k in range(n_frames):
        path = folder / f"{k:05d}{ext}"
        write_rgb(path, encoded_frame(video, k, size, gt))
        paths.append(path)
    return paths


def make_tree(
    root: Path,
    layout: str,
    videos: dict[str, int],
    split: str | None = None,
    *,
    gt: bool = True,
    size: tuple[int, int] = SIZE,
    names: tuple[str, str] | None = None,
    nested_reds: bool = False,
) -> Path:
    """Write ``videos`` ({name: n_frames}) in ``layout`` under ``root``; return ``root``.

    ``names`` overrides the (blur, gt) folder names of the folder/dvd/gopro layouts.
    """
    for v, (name, n) in enumerate(videos.items()):
        if layout == "folder":
            blur_name, gt_name = names or ("blur", "gt")
            base = root / split if split else root
            blur_dir, gt_dir = base / blur_name / name, base / gt_name / name
        elif layout == "dvd":
            blur_name, gt_name = names or ("input", "GT")
            base = root / split if split else root
            blur_dir, gt_dir = base / name / blur_name, base / name / gt_name
        elif layout == "gopro":
            blur_name, gt_name = names or ("blur", "sharp")
            base = root / split if split else root
            blur_dir, gt_dir = base / name / blur_name, base / name / gt_name
        elif layout == "reds":
            assert split is not None
            base = root / split if nested_reds else root
            blur_dir, gt_dir = base / f"{split}_blur" / name, base / f"{split}_sharp" / name
        else:
            raise ValueError(layout)
        write_video(blur_dir, n, v, size=size)
        if gt:
            write_video(gt_dir, n, v, gt=True, size=size)
    return root


def decode(clip: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and blue codes of a float clip (T, 3, H, W) in [0, 1], as ints (T, H, W)."""
    values = np.rint(np.asarray(clip) * 255).astype(int)
    return values[:, 0], values[:, 1], values[:, 2]


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A small CDVD-TSP (n_feat 4, one res-block) with seeded random weights, saved in the original .pt format."""
    import torch

    from cdvd.checkpoints import save_original
    from cdvd.models import CDVDTSP

    torch.manual_seed(seed)
    save_original(CDVDTSP(n_feat=4, n_resblock=1), path)
    return path
