"""Which device and which numeric precision a run uses."""

from __future__ import annotations

import contextlib

import torch

from cdvd.hardware import PRECISIONS, resolve_precision

__all__ = ["PRECISIONS", "autocast_context", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is a clear ``ValueError``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device} but no CUDA GPU is available; use device=cpu or device=auto")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda[:N]") from err


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The ``torch.autocast`` context of ``precision`` (``fp32``: none). fp16 needs CUDA.

    Raises:
        ValueError: an unknown precision, or fp16 on a device other than CUDA.
    """
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
