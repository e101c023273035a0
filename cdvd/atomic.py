"""What the project writes and may delete: whole files and folders renamed into place, and proof of ownership.

- One way to make a file whole under its name: write a hidden temporary file beside it, fsync it, rename it onto the
  name, fsync the folder (:func:`commit`, :func:`atomic_destination`); folders the same way (:func:`atomic_folder`).
- Temporary names carry a mark no user picks (``.name.cdvd-tmp-<pid>-<random>.ext``); a folder the project made
  carries a marker file (:data:`OWNER_FILE`) that says so. What a killed writer left is removed only when all of
  this holds: the mark in the name, a writer that no longer runs, this user as its owner, and for a folder the
  marker file (:func:`remove_stale_temp_files`). Nothing else is ever deleted: a user's ``.holiday.tmp4242.jpg``
  or a folder without the marker stays.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cdvd.errors import ConfigError

logger = logging.getLogger(__name__)

#: the mark in every temporary name the project writes
TEMP_MARK = "cdvd-tmp"
# `.name.cdvd-tmp-1234-0a1b2c3d.suffix`: the temporary file (or folder) that process 1234 writes
_TMP_NAME = re.compile(rf"^\..*\.{TEMP_MARK}-(\d+)-[0-9a-f]{{8}}(\.[^.]*)?$")
#: the marker file in every folder the project makes (datasets, frame stores, temporary folders)
OWNER_FILE = ".cdvd-owner.json"
_MADE_BY = "cdvd"


class NotOwnedError(FileExistsError):
    """A folder is in the way that the project did not make (or that is of another kind): it is never replaced."""


def temp_path(path: str | os.PathLike, pid: int | None = None) -> Path:
    """A fresh hidden temporary name beside ``path`` (same suffix) for process ``pid`` (default: this one)."""
    path = Path(path)
    number = os.getpid() if pid is None else pid
    return path.with_name(f".{path.stem}.{TEMP_MARK}-{number}-{secrets.token_hex(4)}{path.suffix}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _ours(info: os.stat_result) -> bool:
    """Whether this user owns the file (everywhere ``os.geteuid`` exists)."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid is None or info.st_uid == geteuid()


# ---------------------------------------------------------------------------------------------- durable writes


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make the entries of ``folder`` (a rename into it) durable; a no-op where the file system cannot."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EROFS):
            raise
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make the finished file ``tmp`` whole under ``path``: fsync it, rename it onto ``path``, fsync the folder.

    Every atomic write of the project ends here (directly or through :func:`atomic_destination`).
    """
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_folder(Path(path).parent)


@contextlib.contextmanager
def atomic_destination(path: str | os.PathLike, *, clean_stale: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` (hidden, marked, same suffix) to write to.

    Made whole under ``path`` (:func:`commit`) when the block ends without an error; removed in every case
    otherwise. The parent folder is made if needed. ``clean_stale``: first remove the partial files that killed
    writers left in that folder (:func:`remove_stale_temp_files`; it lists the folder, so leave it off for folders
    of many files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        remove_stale_temp_files(path.parent)
    tmp = temp_path(path)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_destination(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------- folders of ours


def mark_owned(folder: str | os.PathLike, kind: str, entries: list[str] | None = None) -> None:
    """Write the marker file that says ``folder`` was made by the project (as ``kind``: ``synthetic-dataset``...);
    ``entries``: the names the project put in it (anything else found there later is not the project's)."""
    record: dict[str, Any] = {"made_by": _MADE_BY, "kind": kind}
    if entries is not None:
        record["entries"] = sorted(entries)
    write_text_atomic(Path(folder) / OWNER_FILE, json.dumps(record) + "\n")


def owned_folder(folder: str | os.PathLike, kind: str | None = None) -> bool:
    """Whether ``folder`` was made by the project (as ``kind``, when given) for this user and holds nothing else at
    its top (where its marker lists what the project put there): a real folder whose marker is a regular file of
    this user saying so. The one ownership rule of every command that replaces or removes a folder."""
    folder = Path(folder)
    marker = folder / OWNER_FILE
    try:
        info = marker.lstat()
        if not stat.S_ISDIR(folder.lstat().st_mode) or not stat.S_ISREG(info.st_mode) or not _ours(info):
            return False
        record = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("made_by") != _MADE_BY:
            return False
        if kind is not None and record.get("kind") != kind:
            return False
        entries = record.get("entries")
        return entries is None or (
            isinstance(entries, list) and set(os.listdir(folder)) <= {*map(str, entries), OWNER_FILE}
        )
    except (OSError, ValueError):
        return False


def replaceable_folder(folder: str | os.PathLike, kind: str) -> bool:
    """Whether ``folder`` may be replaced by a new one of ``kind``: absent, an empty folder, or one of ours of
    ``kind``."""
    folder = Path(folder)
    if not (folder.exists() or folder.is_symlink()):
        return True
    empty = folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())
    return empty or owned_folder(folder, kind)


def _fsync_tree(folder: Path) -> None:
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent, name)
            if path.is_file() and not path.is_symlink():
                fsync_file(path)
        fsync_folder(parent)


def _move_into_place(tmp: Path, path: Path, kind: str | None, replace: bool) -> None:
    """Rename the finished folder ``tmp`` onto ``path``; an existing one (``replace``: empty, or ours of ``kind``)
    is moved aside first and removed only afterwards."""
    old = None
    if replace and (path.exists() or path.is_symlink()):
        if kind is None or not replaceable_folder(path, kind):
            raise NotOwnedError(errno.EEXIST, "not made by cdvd: not replaced", str(path))
        if any(path.iterdir()):
            old = temp_path(path)  # it carries our marker: a kill from here on leaves a folder the next run removes
            os.replace(path, old)
        else:
            path.rmdir()
    try:
        os.replace(tmp, path)
    except OSError:
        if old is not None:
            os.replace(old, path)
        raise
    fsync_folder(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(
    path: str | os.PathLike, *, kind: str | None = None, replace: bool = False, clean_stale: bool = True
) -> Iterator[Path]:
    """A new hidden temporary folder beside ``path`` (marked as ours) to fill; renamed onto ``path`` when the block
    ends without an error (every file in it fsynced first), removed in every case otherwise.

    Args:
        path: the folder to make.
        kind: what the folder is (``synthetic-dataset``, ``frame-store``): its marker file stays in it, so that a
            later run may replace it (:func:`owned_folder`); ``None``: the marker is removed once in place.
        replace: replace an existing ``path`` when it is empty or ours of ``kind`` (else :class:`NotOwnedError`).
            Without it, an existing ``path`` other than an empty folder makes the rename fail (``OSError``).
        clean_stale: first remove what killed writers left beside ``path`` (:func:`remove_stale_temp_files`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        remove_stale_temp_files(path.parent)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        mark_owned(tmp, kind or "temporary")
        yield tmp
        if kind is not None:  # what it holds now is all the project's: a file added later makes it not ours
            mark_owned(tmp, kind, [name for name in os.listdir(tmp) if name != OWNER_FILE])
        _fsync_tree(tmp)
        _move_into_place(tmp, path, kind, replace)
        if kind is None:
            (path / OWNER_FILE).unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete what killed writers of the project left in ``folder`` (its temporary files and folders); returns the
    entries removed.

    An entry goes only when it is provably the project's and dead: its name carries the project's mark
    (:func:`temp_path`), the process named there no longer runs (one of another user, which cannot be signalled,
    counts as running), this user owns it, and a folder holds the project's marker file (:func:`owned_folder`).
    Everything else stays (a user's ``.holiday.tmp4242.jpg``, another run's files that are still being written).
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TMP_NAME.match(entry.name)
        if match is None:
            continue
        try:
            info = entry.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode) or not _ours(info) or pid_alive(int(match[1])):
            continue
        is_dir = stat.S_ISDIR(info.st_mode)
        if is_dir and not owned_folder(entry):
            continue
        with contextlib.suppress(FileNotFoundError):
            if is_dir:
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
            logger.info("removed %s, a partial file left by a process that no longer runs", entry)
    return removed


def probe_writable(folder: str | os.PathLike) -> None:
    """Make ``folder`` (and its parents) and create and remove a hidden file in it.

    Raises:
        OSError: the folder cannot be made or written to (the caller names the setting in its message).
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".cdvd-write-test-"):
        pass


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why no file could be written into ``folder`` (``"/x is not a folder"``, ``"cannot write in /proc (...)"``),
    or ``None`` when one can; nothing is made.

    The nearest folder of it that exists (itself, or the one its missing folders would be made in) must take a new
    file: tried with a hidden file removed at once, not guessed from permission bits (root passes every permission
    check, yet cannot write in ``/proc`` or on a read-only mount).
    """
    place = Path(folder)
    while not place.exists() and not place.is_symlink() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        return f"{place} is not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=place, prefix=".cdvd-write-test-"):
            pass
    except OSError as err:
        return f"cannot write in {place} ({err.strerror or err})"
    return None


def check_writable_place(folder: str | os.PathLike, setting: str, value: str | os.PathLike | None = None) -> None:
    """Refuse, before any work, a ``folder`` that files cannot be written into (:func:`unwritable_reason`). Nothing is
    made, so a refused or failed run leaves no empty folder. ``value``: the setting's value named in the message
    (default: ``folder``).

    Raises:
        ConfigError: a file (or a FIFO, a device) in the way, or no permission, naming ``setting``.
    """
    reason = unwritable_reason(folder)
    if reason is not None:
        named = f"{setting}={folder if value is None else value}"
        raise ConfigError(f"cannot write {named}: {reason} (pass a writable {setting}=)")
