"""What the hardware at hand computes natively: CPU flags, native bf16, and the ``precision=auto`` choice.

bf16 pays off only where the processor has bf16 arithmetic (AVX-512 BF16 or AMX on x86 CPUs, tensor cores of
compute capability 8.0 and later on NVIDIA GPUs); elsewhere it is emulated and slower than fp32, so ``auto``
follows the hardware, never a fixed choice.
"""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# the flags benchmark reports mention: vector width, bf16 dot products, AMX tiles
REPORTED_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The model name and flags of the first processor listed in a ``/proc/cpuinfo`` text.

    Args:
        text: contents of ``/proc/cpuinfo`` (x86 ``flags`` lines, or ARM ``Features`` lines).

    Returns:
        ``(model name or "", flags)``; flags are lower case.
    """
    model = ""
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.lower().split())
    return model, flags


@functools.cache
def _read_cpuinfo() -> tuple[str, frozenset[str]]:
    if platform.system() != "Linux":
        return platform.processor(), frozenset()
    try:
        return parse_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError as err:
        logger.debug("cannot read %s (%s); assuming no special CPU features", CPUINFO, err)
        return platform.processor(), frozenset()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` on Linux; empty elsewhere (then no native bf16 is assumed)."""
    return _read_cpuinfo()[1]


def cpu_description() -> dict[str, object]:
    """The CPU for benchmark reports: ``{"model": str, "cores": int, "flags": {flag: bool}}``."""
    model, flags = _read_cpuinfo()
    return {
        "model": model or platform.processor() or platform.machine(),
        "cores": torch.get_num_threads(),
        "flags": {flag: flag in flags for flag in REPORTED_FLAGS},
    }


def cpu_has_native_bf16(flags: frozenset[str]) -> bool:
    """True when the flags include bf16 arithmetic (``avx512_bf16`` or ``amx_bf16``)."""
    return bool(flags & BF16_CPU_FLAGS)


def native_bf16(device: torch.device | str) -> bool:
    """Does ``device`` compute bf16 natively (so bf16 is faster than fp32, not emulated)?

    CPU: the ``avx512_bf16`` or ``amx_bf16`` flag. CUDA: compute capability 8.0 or later (Ampere on). Any other
    device: False.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_has_native_bf16(cpu_flags())
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        major, _ = torch.cuda.get_device_capability(device)
        return major >= 8
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision to run at: ``auto`` -> ``bf16`` where ``device`` has native bf16, else ``fp32``.

    Explicit ``fp32``, ``bf16`` and ``fp16`` pass through (``fp16`` on CUDA only).

    Raises:
        ValueError: an unknown ``precision``, or ``fp16`` on a device other than CUDA.
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision=fp16 needs a CUDA device (got {device.type}); use bf16, fp32 or auto")
    if precision != "auto":
        return precision
    chosen = "bf16" if native_bf16(device) else "fp32"
    logger.info("precision=auto on %s: %s", device, chosen)
    return chosen
