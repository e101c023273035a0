"""Backward warping with validity masks (spec sections 1 and 2).

Sampling coordinates are computed, and images sampled, in float32 whatever the input dtype (under bf16 or fp16
autocast, or with half weights): bf16 holds whole numbers exactly only up to 256, so a bf16 grid would put pixel 257
of a 640-wide frame at 256 or 258. Results come back in the image's dtype. In float32 nothing changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _as(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype`` (itself when it already is: a traced export records no conversion)."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    return _as(tensor, torch.float32)


def _pixel_grid(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) flow in pixels -> (B, H, W, 2) grid in [-1, 1] for ``grid_sample(align_corners=True)``.

    Normalises pixel coordinates, ``2 * (x + u) / (W - 1) - 1``, in that order, as CDVD-TSP does.
    """
    _, _, height, width = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=flow.device, dtype=flow.dtype),
        torch.arange(width, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    if torch.jit.is_tracing():  # sizes are traced tensors: keep them in the graph (frames are >= 4 pixels wide)
        x_scale, y_scale = width - 1, height - 1
    else:
        x_scale, y_scale = max(width - 1, 1), max(height - 1, 1)
    x = 2.0 * (xs + flow[:, 0]) / x_scale - 1.0
    y = 2.0 * (ys + flow[:, 1]) / y_scale - 1.0
    return torch.stack((x, y), dim=-1)


def _normalised_grid(flow: torch.Tensor) -> torch.Tensor:
    """Same grid written the PWC-Net way: ``linspace(-1, 1, W) + u / ((W - 1) / 2)``.

    Equal to :func:`_pixel_grid` up to float round-off; kept separate to reproduce each original to the last bit.
    """
    _, _, height, width = flow.shape
    gx = torch.linspace(-1.0, 1.0, width, device=flow.device, dtype=flow.dtype).view(1, 1, width)
    gy = torch.linspace(-1.0, 1.0, height, device=flow.device, dtype=flow.dtype).view(1, height, 1)
    x = gx + flow[:, 0] / ((width - 1.0) / 2.0)
    y = gy + flow[:, 1] / ((height - 1.0) / 2.0)
    return torch.stack((x, y), dim=-1)


def warp_with_mask(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample (B, C, H, W) ``image`` at (x + u, y + v), the (B, 2, H, W) ``flow`` in pixels (x first): the image
    warp of CDVD-TSP outside PWC-Net.

    Returns:
        ``(warped * mask, mask)``; ``warped`` uses border padding, ``mask`` (B, C, H, W) is 1 where the bilinear
        footprint lies entirely inside the image (interpolated ones >= 0.999) and 0 elsewhere.
    """
    grid = _pixel_grid(_float32(flow))
    source = _float32(image)
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)
    ones = torch.ones_like(source)
    mask = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    mask = (mask >= 0.999).to(image.dtype)
    return _as(warped * mask, image.dtype), mask


def backwarp_zero(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """The warp inside PWC-Net: zero padding, and 0 wherever the footprint leaves the image.

    A channel of ones travels with the features; outputs are kept only where it arrives above 0.999.
    """
    grid = _normalised_grid(_float32(flow))
    source = _float32(features)
    ones = source.new_ones((source.shape[0], 1, *source.shape[2:]))
    sampled = F.grid_sample(
        torch.cat((source, ones), dim=1), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    mask = (sampled[:, -1:] > 0.999).to(sampled.dtype)
    return _as(sampled[:, :-1] * mask, features.dtype)
