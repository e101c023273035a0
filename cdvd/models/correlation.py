"""Cost volume of PWC-Net: the correlation of two feature maps over a 9 x 9 window of displacements.

Two implementations sit behind :func:`correlation`:

* :func:`correlation_torch`, plain PyTorch, any device and dtype, differentiable by autograd. It loops over the
  81 displacements so that no intermediate larger than one ``(B, C, H, W)`` product is ever alive.
* a cupy CUDA kernel (:mod:`cdvd.models.correlation_cupy`) with its own backward, used for CUDA tensors when cupy
  is importable. It computes in float32 whatever the input dtype (half and bfloat16 included).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

MAX_DISPLACEMENT = 4
NUM_DISPLACEMENTS = (2 * MAX_DISPLACEMENT + 1) ** 2  # 81 output channels

CorrelationBackend = Literal["auto", "torch", "cupy"]


def correlation_torch(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Correlation of ``first`` with ``second`` shifted by every (dy, dx) in [-4, 4]^2.

    Args:
        first: (B, C, H, W) features of the reference frame.
        second: (B, C, H, W) features of the other frame; zero outside the image.

    Returns:
        (B, 81, H, W); channel ``(dy + 4) * 9 + (dx + 4)`` holds
        ``sum_c first[c, y, x] * second[c, y + dy, x + dx] / C``.
    """
    if first.shape != second.shape or first.dim() != 4:
        raise ValueError(
            f"correlation expects two (B, C, H, W) tensors of one shape, instead got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    _, channels, height, width = first.shape
    d = MAX_DISPLACEMENT
    padded = F.pad(second, (d, d, d, d))
    planes = []
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            shifted = padded[:, :, d + dy : d + dy + height, d + dx : d + dx + width]
            planes.append((first * shifted).sum(dim=1))
    return torch.stack(planes, dim=1) / channels


def cupy_available() -> bool:
    """True when the cupy CUDA kernel can be used (cupy importable and a CUDA device present)."""
    if not torch.cuda.is_available():
        return False
    try:
        import cupy  # noqa: F401
    except Exception:  # cupy missing or built for another CUDA: fall back silently
        return False
    return True


def correlation(
    first: torch.Tensor, second: torch.Tensor, backend: CorrelationBackend = "auto"
) -> torch.Tensor:
    """Cost volume with the implementation chosen by ``backend``.

    ``auto`` takes the cupy kernel for CUDA tensors when cupy is installed and PyTorch otherwise; ``cupy`` insists
    on the kernel (an error on CPU tensors or without cupy); ``torch`` always uses PyTorch.
    """
    if backend == "torch":
        return correlation_torch(first, second)
    if backend == "cupy" or (backend == "auto" and first.is_cuda and cupy_available()):
        if not first.is_cuda:
            raise ValueError("correlation backend 'cupy' needs CUDA tensors; use backend 'torch' or 'auto' on CPU")
        from cdvd.models.correlation_cupy import correlation_cupy

        return correlation_cupy(first, second)
    if backend != "auto":
        raise ValueError(f"unknown correlation backend {backend!r}; expected 'auto', 'torch' or 'cupy'")
    return correlation_torch(first, second)
