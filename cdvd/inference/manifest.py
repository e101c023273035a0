"""What made a set of outputs: recorded beside them, so that a rerun resumes only work made the same way.

A deblurred frame depends on the weights, the input frames and the settings that change pixels. The manifest
holds a fingerprint of the three; a rerun whose fingerprint differs is refused (or, with ``overwrite=true``,
starts over) instead of mixing frames of two models or reporting an old model's numbers as new.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from cdvd import fingerprint
from cdvd.atomic import atomic_destination
from cdvd.data.io import DataError
from cdvd.data.sources import VideoSource
from cdvd.video import file_fingerprint

MANIFEST_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (cached per path, size and modification time within a process)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return fingerprint.file_sha256(path)


def source_fingerprint(source: VideoSource) -> dict[str, Any]:
    """The input of one video: its frame files' names and sizes, or the video file's name, size and a hash of its
    ends (:func:`cdvd.video.file_fingerprint`)."""
    if source.frame_files is not None:
        return {
            "frames": [p.name for p in source.frame_files],
            "bytes": sum(p.stat().st_size for p in source.frame_files),
        }
    return file_fingerprint(source.path)


def differences(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two fingerprints (missing keys count)."""
    return sorted(k for k in set(recorded) | set(expected) if recorded.get(k) != expected.get(k))


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The fingerprint recorded at ``path``; ``None`` when there is none; ``{}`` when it is unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("fingerprint", {}) if isinstance(data, dict) else {}


def write_manifest(path: Path, fingerprint: Mapping[str, Any]) -> None:
    """Record ``fingerprint`` at ``path``, atomically."""
    text = json.dumps({"version": MANIFEST_VERSION, "fingerprint": dict(fingerprint)}, indent=2) + "\n"
    try:
        with atomic_destination(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror or err}") from err
