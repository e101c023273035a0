"""Writes that never leave a half-written file: write beside the target, then rename it into place."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_destination(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (hidden, same suffix) to write to.

    Renamed onto ``path`` when the block ends without an error; removed in every case otherwise. The parent folder
    is made if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
