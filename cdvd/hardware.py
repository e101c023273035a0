"""Device and precision, in one place: which device a run uses, what it computes natively (CPU flags, native bf16),
the ``precision=auto`` choice, and the autocast context of a resolved precision.

bf16 pays off only where the processor has bf16 arithmetic (AVX-512 BF16 or AMX on x86 CPUs, tensor cores of
compute capability 8.0 and later on NVIDIA GPUs); elsewhere it is emulated: slower than fp32 and no more exact (an
Intel Xeon with AVX-512 but without AVX-512 BF16 ran OpenVINO bf16 at 0.6x the speed of torch fp32, its frames 28 dB
from fp32). So ``auto`` follows the hardware, and an explicit ``bf16`` on a device without it runs fp32 and says so
in one log line (:func:`resolve_precision`, the one place of that rule for every backend).
"""

from __future__ import annotations

import contextlib
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
    """``(model name or "", lower-case flags)`` of the first processor in a ``/proc/cpuinfo`` text (x86 ``flags``
    lines, or ARM ``Features`` lines)."""
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


def missing_bf16(device: torch.device | str) -> str | None:
    """None where ``device`` computes bf16 natively (so bf16 is faster than fp32, not emulated), else what it lacks,
    for a log line.

    CPU: the ``avx512_bf16`` or ``amx_bf16`` flag. CUDA: compute capability 8.0 or later (Ampere on). Any other
    device: never.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return (
            None if cpu_has_native_bf16(cpu_flags()) else f"this CPU has neither {' nor '.join(sorted(BF16_CPU_FLAGS))}"
        )
    if device.type == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(device)
        return None if major >= 8 else f"this GPU has compute capability {major}.{minor}, below 8.0"
    return f"{device.type} devices have no native bf16 here"


def native_bf16(device: torch.device | str) -> bool:
    """Does ``device`` compute bf16 natively (:func:`missing_bf16`)?"""
    return missing_bf16(device) is None


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision to run at: ``auto`` -> ``bf16`` where ``device`` has native bf16, else ``fp32``.

    An explicit ``bf16`` runs bf16 only where ``device`` has it natively; elsewhere it runs ``fp32`` and one warning
    says so (emulated bf16 is slower than fp32 and its frames are worse). ``fp32`` and ``fp16`` (CUDA only) pass
    through.

    Raises:
        ValueError: an unknown ``precision``, or ``fp16`` on a device other than CUDA.
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision=fp16 needs a CUDA device (got {device.type}); use bf16, fp32 or auto")
    if precision == "auto":
        chosen = "bf16" if native_bf16(device) else "fp32"
        logger.info("precision=auto on %s: %s", device, chosen)
        return chosen
    if precision == "bf16":
        lacking = missing_bf16(device)
        if lacking is not None:
            logger.warning(
                "precision=bf16 on %s: %s, so bf16 would be emulated (slower than fp32, and less exact): "
                "running fp32 instead",
                device,
                lacking,
            )
            return "fp32"
    return precision


#: The precisions a run can end up at, after :func:`resolve_precision`.
RESOLVED_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


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
    """The ``torch.autocast`` context of a precision :func:`resolve_precision` chose (``fp32``: none). The rules are
    :func:`resolve_precision`'s alone: this function takes its answer and is not a second place that decides.

    Raises:
        ValueError: a precision that was not resolved first (not in :data:`RESOLVED_PRECISIONS`).
    """
    if precision not in RESOLVED_PRECISIONS:
        raise ValueError(
            f"autocast_context takes a resolved precision ({', '.join(RESOLVED_PRECISIONS)}), got {precision}"
        )
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
