"""Process-wide settings for CPU runs: memory reuse in glibc's allocator, and where cached conversions live."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

MIB = 2**20
# <malloc.h> parameter numbers
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4

_reusing = False


def reuse_freed_memory(top_pad_mib: int = 64) -> bool:
    """Keep freed memory in the process for reuse instead of handing it back to the OS (glibc only).

    glibc serves every large allocation (above 32 MiB at most) with a fresh ``mmap`` and unmaps it on free, so each
    large activation of the network costs page faults on zeroed pages again: at 1280x720 a fifth of the CPU time
    goes to the kernel. With ``mmap`` off and no trimming, freed blocks are reused. The price: the process holds its
    peak memory until it exits, which suits a run that deblurs and ends. Call it once, early; it affects the
    whole process.

    Returns:
        True when applied (now or before), False where the C library is not glibc.
    """
    global _reusing
    if _reusing:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    _reusing = bool(
        mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) and mallopt(_M_TOP_PAD, top_pad_mib * MIB)
    )
    if _reusing:
        logger.debug("glibc malloc: freed memory kept for reuse")
    return _reusing


def reusing_freed_memory() -> bool:
    """Whether :func:`reuse_freed_memory` took effect in this process."""
    return _reusing


def default_cache_dir() -> Path:
    """``$CDVD_CACHE_DIR``, else ``$XDG_CACHE_HOME/cdvd``, else ``~/.cache/cdvd``."""
    if os.environ.get("CDVD_CACHE_DIR"):
        return Path(os.environ["CDVD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cdvd"


def resolve_cache_dir(value: str | os.PathLike | None) -> Path | None:
    """The ``cache_dir`` setting as a folder: ``auto`` -> :func:`default_cache_dir`, a path as given, ``None`` (or
    an empty string) -> no cache."""
    if value is None or str(value) == "":
        return None
    if str(value) == "auto":
        return default_cache_dir()
    return Path(value).expanduser()
