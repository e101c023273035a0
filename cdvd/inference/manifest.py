"""What made a set of outputs, recorded beside them so that a rerun resumes only work made the same way.

The manifest holds a fingerprint of what a deblurred frame depends on: the weights, the input and the settings that
change pixels. A rerun whose fingerprint differs is refused (or with ``overwrite=true`` starts over) rather than mix
frames of two models or report an old model's numbers as new. The input is fingerprinted by content (the SHA-256 of
every frame file, in order, or of the video file: :func:`cdvd.fingerprint.file_sha256`): a frame edited in place, two
frames swapped or a video re-encoded to the same size each change it, whatever the names, sizes or times say.
The manifest also lists the files its run writes (``outputs``), so that a run replacing them removes exactly those
and nothing the project did not write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdvd.atomic import write_text_atomic
from cdvd.data.sources import VideoSource
from cdvd.errors import DataError
from cdvd.fingerprint import file_sha256
from cdvd.video import file_fingerprint

logger = logging.getLogger(__name__)

#: 2: content digests of the input (``sha256``) and the list of ``outputs``; 1 recorded names and a byte count.
MANIFEST_VERSION = 2

#: Frames named in a difference before "and N more".
_NAMED = 3


@dataclass(frozen=True)
class Manifest:
    """A manifest as read back: ``fingerprint`` (``{}`` when the file is not one this project wrote: unreadable,
    or of the wrong shape) and the ``outputs`` it lists (``None`` when it lists none, as version 1 did)."""

    fingerprint: dict[str, Any]
    outputs: list[str] | None = None


def source_fingerprint(source: VideoSource) -> dict[str, Any]:
    """The input of one video by content: every frame file's name and SHA-256, in order, or the video file's name,
    size and SHA-256 (:func:`cdvd.video.file_fingerprint`). Raises DataError naming an input file it cannot read."""
    path = source.path
    try:
        if source.frame_files is None:
            return file_fingerprint(path)
        digests = []
        for path in source.frame_files:
            digests.append(file_sha256(path))
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err
    return {"frames": [p.name for p in source.frame_files], "sha256": digests}


def _frame_digests(value: Any) -> dict[str, str] | None:
    """``{name: digest}`` of a frame folder's input fingerprint; ``None`` for anything else."""
    if not isinstance(value, Mapping):
        return None
    names, digests = value.get("frames"), value.get("sha256")
    if not isinstance(names, list) or not isinstance(digests, list) or len(names) != len(digests):
        return None
    return {str(name): str(digest) for name, digest in zip(names, digests, strict=True)}


def _named(names: Sequence[str], kind: str) -> str:
    """``a.png, b.png changed``; ``a.png, b.png, c.png and 7 more changed``."""
    shown = ", ".join(names[:_NAMED]) + (f" and {len(names) - _NAMED} more" if len(names) > _NAMED else "")
    return f"{shown} {kind}"


def input_change(recorded: Any, expected: Any) -> str:
    """In words, how the input changed between two input fingerprints: the frames changed, added or removed, or
    the video file changed; or that the record predates content digests (version 1 counted bytes)."""
    if not isinstance(recorded, Mapping) or "sha256" not in recorded:
        return "input: recorded by an earlier cdvd, which did not record the content of the input"
    old, new = _frame_digests(recorded), _frame_digests(expected)
    if old is None or new is None:
        name = expected.get("name") if isinstance(expected, Mapping) else None
        return f"input: the video file {name} changed" if name else "input"
    parts = [
        _named(names, kind)
        for kind, names in (
            ("changed", [n for n in new if n in old and old[n] != new[n]]),
            ("new", [n for n in new if n not in old]),
            ("removed", [n for n in old if n not in new]),
        )
        if names
    ]
    return f"input: {', '.join(parts) or 'frames in another order'}"


def differences(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two fingerprints (missing keys count); the input's in detail
    (:func:`input_change`)."""
    keys = sorted(k for k in set(recorded) | set(expected) if recorded.get(k) != expected.get(k))
    return [input_change(recorded.get(k), expected.get(k)) if k == "input" else k for k in keys]


def _parse(data: Any) -> Manifest | str:
    """The manifest in ``data`` (parsed JSON), or why it is not one."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    fingerprint, outputs = data.get("fingerprint"), data.get("outputs")
    if not isinstance(fingerprint, dict):
        return f"its fingerprint is a {type(fingerprint).__name__}, not an object"
    if outputs is not None and not (isinstance(outputs, list) and all(isinstance(n, str) for n in outputs)):
        return "its outputs are not a list of file names"
    return Manifest(fingerprint, outputs)


def read_manifest(path: Path) -> Manifest | None:
    """The manifest at ``path``: ``None`` when there is none; an empty fingerprint when it is not one this project
    wrote (unreadable, not JSON, or of the wrong shape: logged, naming the file). Raises DataError when something
    other than a file is there (a folder): it is not the project's to replace."""
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        raise DataError(
            f"{path} is not a file: cdvd keeps its record of the outputs there; move it away or choose another output"
        )
    try:
        parsed = _parse(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        parsed = str(getattr(err, "strerror", None) or err)
    if isinstance(parsed, str):
        logger.warning("%s is not a manifest cdvd wrote (%s): taken as no record", path, parsed)
        return Manifest({})
    return parsed


def write_manifest(path: Path, fingerprint: Mapping[str, Any], outputs: Sequence[str] = ()) -> None:
    """Record ``fingerprint`` and the ``outputs`` (file names beside it) at ``path``, atomically."""
    record = {"version": MANIFEST_VERSION, "fingerprint": dict(fingerprint), "outputs": sorted(outputs)}
    try:
        write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror or err}") from err
