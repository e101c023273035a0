"""Cost volume of PWC-Net: the correlation of two feature maps over a 9 x 9 window of displacements.

Two implementations sit behind :func:`correlation`:

* :func:`correlation_torch`, plain PyTorch, any device and dtype, differentiable (first order). It loops over
  the 81 displacements so that no intermediate larger than one ``(B, C, H, W)`` product is ever alive, forward
  and backward.
* a cupy CUDA kernel (:mod:`cdvd.models.correlation_cupy`) with its own backward, used for CUDA tensors when
  cupy is importable. It computes in float32 whatever the input dtype (half and bfloat16 included).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from cdvd.errors import ConfigError
from cdvd.models.correlation_window import MAX_DISPLACEMENT, NUM_DISPLACEMENTS

logger = logging.getLogger(__name__)

CorrelationBackend = Literal["auto", "torch", "cupy"]
CORRELATION_BACKENDS: tuple[str, ...] = get_args(CorrelationBackend)


def check_corr_backend(value: object, key: str = "corr_backend") -> None:
    """The one rule for the correlation backend setting: one of :data:`CORRELATION_BACKENDS`, else a ConfigError naming
    ``key`` (``corr_backend`` for ``cdvd-deblur``, ``model.net.corr_backend`` for training)."""
    if value not in CORRELATION_BACKENDS:
        raise ConfigError(f"{key}={value}: expected one of {', '.join(CORRELATION_BACKENDS)}")


def _windows(padded: torch.Tensor, height: int, width: int) -> Iterator[torch.Tensor]:
    """The 81 shifted views of ``padded`` (``second`` zero-padded by 4), in channel order (dy, then dx)."""
    size = 2 * MAX_DISPLACEMENT + 1
    for dy in range(size):
        for dx in range(size):
            yield padded[:, :, dy : dy + height, dx : dx + width]


def _correlation_forward(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The cost volume without autograd: one (B, C, H, W) product buffer reused for all 81 displacements.

    Reusing the buffer and writing each sum straight into its output channel avoids 81 fresh allocations (page
    faults for large frames) and the final stack; the values are bitwise those of stacking (f1 * f2).sum(1)
    over the displacements.
    """
    batch, channels, height, width = first.shape
    d = MAX_DISPLACEMENT
    padded = F.pad(second, (d, d, d, d))
    out = first.new_empty((batch, NUM_DISPLACEMENTS, height, width))
    product = torch.empty_like(first)
    for k, shifted in enumerate(_windows(padded, height, width)):
        torch.mul(first, shifted, out=product)
        torch.sum(product, dim=1, out=out[:, k])
    return out.div_(channels)


def _correlation_functional(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The cost volume as one stack of 81 channel sums, with no ``out=`` writes: what tracers and exporters record.

    ``torch.jit.trace`` (and so OpenVINO's converter) records the buffer-reusing loop of
    :func:`_correlation_forward` differently on each run ("Graphs differed across invocations") and
    ``torch.export`` cannot express its writes into slices; this form is traceable and gives the same values.
    """
    height, width = first.shape[-2:]
    d = MAX_DISPLACEMENT
    padded = F.pad(second, (d, d, d, d))
    sums = [(first * shifted).sum(dim=1) for shifted in _windows(padded, height, width)]
    return torch.stack(sums, dim=1) / first.shape[1]


def _tracing() -> bool:
    """True inside ``torch.jit.trace``, ``torch.export`` / ``torch.compile`` (dynamo) or an ONNX export."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


class _CorrelationFunction(torch.autograd.Function):
    """Autograd wrapper whose backward accumulates in place (``addcmul_``) instead of 81 autograd branches."""

    @staticmethod
    def forward(ctx: Any, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(first, second)
        return _correlation_forward(first, second)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        first, second = ctx.saved_tensors
        batch, channels, height, width = first.shape
        d = MAX_DISPLACEMENT
        size = 2 * d + 1
        need_first, need_second = ctx.needs_input_grad[:2]
        grad = grad / channels
        padded = F.pad(second, (d, d, d, d))
        grad_first = torch.zeros_like(first) if need_first else None
        # d out[k, y, x] / d second[y + dy, x + dx] = first[y, x]: accumulate in the padded frame, then crop
        grad_padded = first.new_zeros((batch, channels, height + 2 * d, width + 2 * d)) if need_second else None
        for k in range(NUM_DISPLACEMENTS):
            dy, dx = divmod(k, size)
            weight = grad[:, k : k + 1]
            if grad_first is not None:
                grad_first.addcmul_(padded[:, :, dy : dy + height, dx : dx + width], weight)
            if grad_padded is not None:
                grad_padded[:, :, dy : dy + height, dx : dx + width].addcmul_(first, weight)
        grad_second = grad_padded[:, :, d : d + height, d : d + width] if grad_padded is not None else None
        return grad_first, grad_second


def correlation_torch(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Correlation of the (B, C, H, W) features ``first`` (the reference frame) with ``second`` (the other frame,
    zero outside the image) shifted by every (dy, dx) in [-4, 4]^2, in plain PyTorch (module docstring).

    Returns:
        (B, 81, H, W); channel ``(dy + 4) * 9 + (dx + 4)`` holds
        ``sum_c first[c, y, x] * second[c, y + dy, x + dx] / C``.
    """
    if first.shape != second.shape or first.dim() != 4:
        raise ValueError(
            f"correlation expects two (B, C, H, W) tensors of one shape, instead got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    if _tracing():
        return _correlation_functional(first, second)
    if torch.is_grad_enabled() and (first.requires_grad or second.requires_grad):
        return _CorrelationFunction.apply(first, second)
    return _correlation_forward(first, second)


def cupy_available() -> bool:
    """True when the cupy CUDA kernel can be used (cupy importable and a CUDA device present)."""
    if not torch.cuda.is_available():
        return False
    try:
        import cupy  # noqa: F401
    except Exception:  # cupy missing or built for another CUDA: fall back silently
        return False
    return True


@functools.cache
def cupy_kernel_agrees(device_index: int) -> bool:
    """Once per device: does the cupy kernel give the PyTorch result, forward and backward, on a small input?

    ``auto`` uses the kernel only where this holds (a broken cupy or driver then costs speed, not correctness).
    """
    from cdvd.models.correlation_cupy import correlation_cupy  # lazily: cupy is optional

    return kernel_agrees(correlation_cupy, torch.device("cuda", device_index))


def kernel_agrees(kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device) -> bool:
    """Whether ``kernel`` gives :func:`correlation_torch`'s cost volume and gradients on a small input on ``device``.

    The check runs in float32 with autograd on, whatever the caller's context: the first cost volume of a run is
    usually computed under ``torch.inference_mode`` and ``torch.autocast``, where no gradient could be taken and
    PyTorch's reference would be computed in half precision, and a failed check is kept for the whole process.
    """
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        generator = torch.Generator(device=device).manual_seed(0)
        first, second = (
            torch.randn(2, 7, 11, 13, device=device, generator=generator).requires_grad_() for _ in range(2)
        )
        weight = torch.randn(2, NUM_DISPLACEMENTS, 11, 13, device=device, generator=generator)
        try:
            out = kernel(first, second)
            grads = torch.autograd.grad((out * weight).sum(), (first, second))
        except Exception as err:  # noqa: BLE001 - any failure means: do not use the kernel
            logger.warning("correlation kernel failed its self-check (%s); using PyTorch's", err)
            return False
        ref = correlation_torch(first, second)
        ref_grads = torch.autograd.grad((ref * weight).sum(), (first, second))
    ok = torch.allclose(out, ref, atol=1e-5, rtol=1e-4) and all(
        torch.allclose(g, r, atol=1e-5, rtol=1e-4) for g, r in zip(grads, ref_grads, strict=True)
    )
    if not ok:
        logger.warning("correlation kernel disagrees with PyTorch's on a self-check; using PyTorch's")
    return ok


def correlation(first: torch.Tensor, second: torch.Tensor, backend: CorrelationBackend = "auto") -> torch.Tensor:
    """Cost volume with the implementation chosen by ``backend``.

    ``auto`` takes the cupy kernel for CUDA tensors when cupy is installed and the kernel passed its one-off
    self-check on that device (:func:`cupy_kernel_agrees`), and PyTorch otherwise; ``cupy`` insists on the
    kernel (an error on CPU tensors or without cupy); ``torch`` always uses PyTorch.
    """
    if backend == "torch":
        return correlation_torch(first, second)
    use_kernel = (
        backend == "auto" and first.is_cuda and cupy_available() and cupy_kernel_agrees(first.device.index or 0)
    )
    if backend == "cupy" or use_kernel:
        if not first.is_cuda:
            raise ValueError("correlation backend 'cupy' needs CUDA tensors; use backend 'torch' or 'auto' on CPU")
        from cdvd.models.correlation_cupy import correlation_cupy

        return correlation_cupy(first, second)
    check_corr_backend(backend)  # a network built without CDVDTSP's check, or a direct call
    return correlation_torch(first, second)
