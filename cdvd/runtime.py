"""Process-wide state for CPU runs: memory reuse in glibc's allocator, the signal stack a library may leave behind, and
where cached conversions live."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

MIB = 2**20
# <malloc.h> parameter numbers
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4

_reusing = False


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once (``find_library`` runs ``ldconfig`` in a child process); None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def reuse_freed_memory(top_pad_mib: int = 64) -> bool:
    """Keep freed memory in the process for reuse instead of handing it back to the OS (glibc only).

    glibc serves every large allocation (above 32 MiB at most) with a fresh ``mmap`` and unmaps it on free, so each
    large activation of the network costs page faults on zeroed pages again: at 1280x720 a fifth of the CPU time
    goes to the kernel. With ``mmap`` off and no trimming, freed blocks are reused. The price: the process holds its
    peak memory until it exits, which suits a run that deblurs and ends. Call it once, early; it affects the
    whole process. Returns True when applied (now or before), False where the C library is not glibc.
    """
    global _reusing
    if _reusing:
        return True
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
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


class _SignalStack(ctypes.Structure):  # <signal.h> stack_t
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextmanager
def signal_stack_kept() -> Iterator[None]:
    """Give this thread back the alternate signal stack it had before the block (Linux; elsewhere nothing).

    OpenVINO's CPU plugin points the calling thread's signal stack at a buffer of its own when it compiles a model
    (measured with 2026.4) and frees that buffer later, with the stack still pointing there. Python installs its
    signal handlers to run on that stack (``SA_ONSTACK``), so the next signal with a Python handler (Ctrl-C under a
    ``faulthandler``, a ``SIGCHLD`` once a DataLoader has run workers) was delivered onto freed memory: the kernel
    kills the process with a SIGSEGV that no handler sees (it happened in the tests' worker processes).
    """
    sigaltstack = getattr(_libc(), "sigaltstack", None)
    before = _SignalStack()
    if sigaltstack is None or sigaltstack(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        # SS_ONSTACK (1): the block ran in a signal handler, on that stack; it cannot be changed then
        if not before.ss_flags & 1 and sigaltstack(ctypes.byref(before), None) != 0:
            logger.debug("could not restore the signal stack (errno %d)", ctypes.get_errno())


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
