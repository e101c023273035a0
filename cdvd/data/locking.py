"""Make a folder once when several processes (sweep jobs, DDP nodes) may ask for it at the same time."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file guarding ``target``: a hidden file beside it (``data/.train.lock`` for ``data/train``)."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def make_once(target: str | os.PathLike, make: Callable[[], Any]) -> bool:
    """Call ``make()`` to create ``target`` unless it exists, holding a file lock so one process makes it.

    A process that finds the lock held waits until the holder is done, then finds ``target`` in place and returns
    without making it. ``make`` must create ``target`` whole or not at all (:func:`cdvd.data.synthetic.synthesize`
    writes into a staging folder and renames it), so a crash never leaves a half-made folder behind. The lock is an OS
    file lock (``fcntl`` on Linux): it guards processes on one machine and on shared file systems that support such
    locks.

    Returns:
        True when this call made ``target``, False when it existed (or another process made it meanwhile).
    """
    target = Path(target)
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path(target))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process to make %s (lock %s)", target, lock.lock_file)
        lock.acquire()
    try:
        if target.exists():
            return False
        make()
        return True
    finally:
        lock.release()
