"""Overlapping spatial tiles for frames too large for memory, blended back with linear ramps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TileSpec:
    """Overlapping spatial tiles: ``size`` pixels a side, ``overlap`` pixels shared by neighbours.

    Both multiples of 4 (the reconstruction net halves the size twice), ``0 <= overlap < size``.
    """

    size: int = 512
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 4:
            raise ValueError(f"tile size must be a multiple of 4 and at least 8, instead got {self.size}")
        if self.overlap < 0 or self.overlap % 4 or self.overlap >= self.size:
            raise ValueError(
                f"tile overlap must be a multiple of 4 in [0, size), instead got {self.overlap} (size {self.size})"
            )


def _tile_starts(length: int, size: int, overlap: int) -> list[int]:
    return [0] if length <= size else [*range(0, length - size, size - overlap), length - size]


def tile_regions(height: int, width: int, tile: TileSpec | None) -> list[tuple[slice, slice]]:
    """(rows, columns) slices of the tiles covering a (height, width) frame; one region without tiling."""
    if tile is None:
        return [(slice(0, height), slice(0, width))]
    rows = [slice(s, min(s + tile.size, height)) for s in _tile_starts(height, tile.size, tile.overlap)]
    cols = [slice(s, min(s + tile.size, width)) for s in _tile_starts(width, tile.size, tile.overlap)]
    return [(r, c) for r in rows for c in cols]


def _ramp(length: int, start: int, stop: int, total: int, overlap: int) -> torch.Tensor:
    """1-D blending weight of a tile spanning [start, stop) of ``total``: rises over ``overlap`` pixels at
    inner edges, flat at the frame's edges. Never zero, so every pixel is covered."""
    weight = torch.ones(length, dtype=torch.float64)
    if overlap > 0:
        ramp = (torch.arange(length, dtype=torch.float64) + 1.0) / (overlap + 1.0)
        if start > 0:
            weight = torch.minimum(weight, ramp)
        if stop < total:
            weight = torch.minimum(weight, ramp.flip(0))
    return weight


def tile_weights(height: int, width: int, regions: Sequence[tuple[slice, slice]], overlap: int) -> list[torch.Tensor]:
    """Per-region (h, w) blending weights, normalised so that they sum to 1 at every pixel."""
    weights = []
    total = torch.zeros(height, width, dtype=torch.float64)
    for rows, cols in regions:
        wy = _ramp(rows.stop - rows.start, rows.start, rows.stop, height, overlap)
        wx = _ramp(cols.stop - cols.start, cols.start, cols.stop, width, overlap)
        w = wy[:, None] * wx[None, :]
        weights.append(w)
        total[rows, cols] += w
    return [(w / total[rows, cols]).float() for w, (rows, cols) in zip(weights, regions, strict=True)]
