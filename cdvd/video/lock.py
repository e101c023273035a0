"""One run at a time per video output: an OS file lock on a hidden ``.<name>.lock`` file beside the output.

:class:`OutputLock` is taken before a run looks at (or clears) an output's earlier parts and held until the output is
whole or the run stops, so a second run writing the same file fails at once, with one line naming the file, instead
of both writing into one work folder. The lock is ``fcntl.flock`` (released by the OS when the process dies, so a
killed run never leaves a lock that blocks the next one); the file is removed on release, and a file left by a
killed run is simply reused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from pathlib import Path

from cdvd.errors import DataError

logger = logging.getLogger(__name__)

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock (the project is tested on Linux and macOS)
    fcntl = None  # type: ignore[assignment]


def _drop(path: Path, fd: int) -> None:
    """Remove the lock file (while still holding it, so no one can take the unlinked file) and release it."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


class OutputLock:
    """An exclusive lock on the video output ``target``, for one writer at a time (processes, or two writers in one
    process)."""

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target)
        self.path = self.target.with_name(f".{self.target.name}.lock")
        self._release: weakref.finalize | None = None

    @property
    def held(self) -> bool:
        return self._release is not None and self._release.alive

    def acquire(self) -> None:
        """Take the lock (no-op when held); never waits.

        Raises:
            DataError: another run holds it (names the output and the lock file), or the lock file cannot be made.
        """
        if self.held:
            return
        if fcntl is None:  # pragma: no cover - nothing to lock with: held in name only
            self._release = weakref.finalize(self, lambda: None)
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise DataError(f"cannot write video {self.target}: its lock file {self.path}: {err}") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                os.close(fd)
                raise DataError(
                    f"{self.target} is being written by another run (it holds {self.path.name}): wait for it to end, "
                    "or choose another output"
                ) from err
            except OSError as err:  # a file system without locks (some network mounts): go on, unguarded
                logger.warning("%s: cannot lock %s (%s): a second run on this output would not be stopped",
                               self.target, self.path.name, err.strerror or err)  # fmt: skip
                break
            with contextlib.suppress(FileNotFoundError):  # ours unless its last holder removed it since our open
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)
        self._release = weakref.finalize(self, _drop, self.path, fd)

    def release(self) -> None:
        """Give the lock back and remove its file (no-op when not held)."""
        if self._release is not None:
            self._release()
            self._release = None
