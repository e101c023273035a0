"""Writes that never leave a half-written file: write beside the target, then rename it into place."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

# `.name.tmp1234.suffix`: the temporary file of `atomic_destination`, written by process 1234
_TMP_NAME = re.compile(r"^\..+\.tmp(\d+)(\.[^.]*)?$")


def temp_path(path: str | os.PathLike, pid: int | None = None) -> Path:
    """The hidden temporary file beside ``path`` that process ``pid`` (default: this one) writes to."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{os.getpid() if pid is None else pid}{path.suffix}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (or folders) of :func:`atomic_destination` in ``folder`` whose writer is no
    longer running.

    A process killed while writing (``kill -9``, a power cut) leaves its hidden partial file behind; nothing ever
    reads it. Files of live processes are kept (another run may be writing into the same folder).

    Returns:
        the files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TMP_NAME.match(entry.name)
        if match is None or entry.is_symlink() or pid_alive(int(match[1])):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
            logger.info("removed %s, a partial file left by a process that no longer runs", entry)
    return removed


@contextlib.contextmanager
def atomic_destination(path: str | os.PathLike, *, clean_stale: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` (hidden, same suffix) to write to.

    Renamed onto ``path`` when the block ends without an error; removed in every case otherwise. The parent folder
    is made if needed. ``clean_stale``: first remove the partial files that killed writers left in that folder
    (:func:`remove_stale_temp_files`; it lists the folder, so leave it off for folders of many files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        remove_stale_temp_files(path.parent)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def probe_writable(folder: str | os.PathLike) -> None:
    """Make ``folder`` (and its parents) and create and remove a hidden file in it.

    Raises:
        OSError: the folder cannot be made or written to (the caller names the setting in its message).
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".cdvd-write-test-"):
        pass
