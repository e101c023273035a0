"""The work folder of :class:`cdvd.video.writer.SegmentedVideoWriter`: complete segments and their records.

A segment ``seg_NNNNNN.mkv`` counts as complete once its record ``seg_NNNNNN.json`` (its frames' output
timestamps, its packets' timestamps, its size in bytes) is there and matches it; records are written with a
temporary name, fsynced and renamed (:mod:`cdvd.atomic`), so a kill never leaves a record of a half-written
segment. The work folder carries the project's marker file: only such a folder is ever cleared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdvd.atomic import owned_folder, write_text_atomic

MANIFEST = "manifest.json"
PARTS_KIND = "video-parts"  # the kind in the work folder's marker file (cdvd.atomic.OWNER_FILE)


@dataclass(frozen=True)
class Segment:
    """A complete segment: its frames' output timestamps and its packets' (pts, dts) in segment frame units."""

    index: int
    pts: list[int]
    packets: list[tuple[int, int]]
    width: int
    height: int

    @property
    def frames(self) -> int:
        return len(self.pts)


def segment_name(index: int, suffix: str) -> str:
    """The file name of segment ``index``: ``seg_000003.mkv`` (its media), ``seg_000003.json`` (its record)."""
    return f"seg_{index:06d}{suffix}"


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, sort_keys=True))


def parts_owned(work_dir: Path, manifest: Any) -> bool:
    """Whether the work folder ``work_dir`` is ours to clear: empty, marked as the project's
    (:func:`cdvd.atomic.owned_folder`), or holding a manifest of this writer (a folder of an earlier version)."""
    if not any(work_dir.iterdir()) or owned_folder(work_dir, PARTS_KIND):
        return True
    return isinstance(manifest, dict) and {"version", "fingerprint", "encoder"} <= manifest.keys()


def even(image: np.ndarray) -> np.ndarray:
    """Pad an odd width or height by repeating the last column/row (4:2:0 encoders need even sizes)."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def complete_segments(work_dir: Path, segment_frames: int) -> list[Segment]:
    """The complete segments of ``work_dir`` from the first on, up to the first missing or incomplete one (every
    complete segment holds ``segment_frames`` frames)."""
    segments: list[Segment] = []
    while True:
        index = len(segments)
        try:
            record = json.loads((work_dir / segment_name(index, ".json")).read_text())
            media = work_dir / segment_name(index, ".mkv")
            if media.stat().st_size != record["bytes"] or len(record["pts"]) != segment_frames:
                break
            segments.append(
                Segment(
                    index=index,
                    pts=[int(p) for p in record["pts"]],
                    packets=[(int(p), int(d)) for p, d in record["packets"]],
                    width=int(record["width"]),
                    height=int(record["height"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            break
    return segments
