"""Which videos and frames are under a path: for deblurring, for scoring, and for the ground truth.

A path may be a video file, a folder of frames (one video), a dataset root in a layout of
:mod:`cdvd.data.layouts` (one split, blurry or sharp frames), or a folder of videos (subfolders of frames and/or
video files).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cdvd.data.io import VIDEO_EXTENSIONS, DataError, has_frames, list_frames, natural_key, read_rgb
from cdvd.data.layouts import VideoPair, detect_layout, discover_videos

logger = logging.getLogger(__name__)

DEFAULT_FPS = 25.0


@dataclass
class VideoSource:
    """One video to deblur: a folder of frames or a video file.

    Attributes:
        name: the video's name (the output folder's name).
        path: the frame folder or the video file.
        frame_files: the frames of a folder in natural order; ``None`` for a video file.
    """

    name: str
    path: Path
    frame_files: list[Path] | None = None

    def _container_property(self, prop: int) -> float:
        """A property the video file's container states (0 when it cannot be opened or does not say)."""
        capture = cv2.VideoCapture(str(self.path))
        try:
            return float(capture.get(prop)) if capture.isOpened() else 0.0
        finally:
            capture.release()

    def frame_count(self) -> int | None:
        """Exact for a folder; the container's count for a video file (``None`` when it does not say)."""
        if self.frame_files is not None:
            return len(self.frame_files)
        count = int(self._container_property(cv2.CAP_PROP_FRAME_COUNT))
        return count if count > 0 else None

    def fps(self) -> float:
        """Frame rate of a video file (25 when unknown, and for frame folders)."""
        if self.frame_files is not None:
            return DEFAULT_FPS
        fps = self._container_property(cv2.CAP_PROP_FPS)
        return fps if fps > 0 else DEFAULT_FPS

    def output_name(self, index: int) -> str:
        """PNG name of output frame ``index``: the input's name, or ``00000.png`` ... for a video file."""
        if self.frame_files is not None:
            return self.frame_files[index].stem + ".png"
        return f"{index:05d}.png"

    def __iter__(self) -> Iterator[np.ndarray]:
        """The frames as uint8 (H, W, 3) RGB, read one at a time."""
        if self.frame_files is not None:
            for path in self.frame_files:
                yield read_rgb(path)
            return
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise DataError(f"cannot open video file (unreadable or unsupported codec): {self.path}")
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()


def _frame_source(folder: Path, name: str | None = None) -> VideoSource:
    files = list_frames(folder)
    if not files:
        raise DataError(f"no image frames in {folder}")
    return VideoSource(name or folder.name, folder, files)


def layout_videos(root: Path, split: str | None, *, require_gt: bool) -> list[VideoPair] | None:
    """The :class:`cdvd.data.layouts.VideoPair` list of a dataset root, or ``None`` when it is not one.

    ``split`` is used when ``root/split`` exists; otherwise ``root`` is taken as the split itself.
    """
    try:
        layout = detect_layout(root)
    except DataError:
        return None
    subset = split if split and (root / split).is_dir() else None
    pairs = discover_videos(root, layout, subset, require_gt=require_gt)
    logger.info("%s: %s layout, split %s, %d videos", root, layout, subset or "(root)", len(pairs))
    return pairs


def discover_sources(path: str | os.PathLike, split: str = "test") -> list[VideoSource]:
    """The videos to deblur at ``path``.

    ``path`` may be a video file (mp4/avi/mov/...), a folder of frames, a dataset root in a layout of
    :mod:`cdvd.data.layouts` (its ``split``, blurry frames only), or a folder of videos (subfolders of frames
    and/or video files).

    Raises:
        DataError: ``path`` is missing or holds nothing to deblur; two videos would share a name.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(
                f"input {path} is neither a video file ({', '.join(VIDEO_EXTENSIONS)}) nor a folder of frames"
            )
        return [VideoSource(path.stem, path)]
    if has_frames(path):
        return [_frame_source(path)]
    pairs = layout_videos(path, split, require_gt=False)
    if pairs:
        return [VideoSource(pair.name, pair.blur_dir, list(pair.blur)) for pair in pairs]
    sources: list[VideoSource] = []
    for entry in sorted(path.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and has_frames(entry):
            sources.append(_frame_source(entry))
        elif entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS:
            sources.append(VideoSource(entry.stem, entry))
    if not sources:
        raise DataError(
            f"nothing to deblur in {path}: expected image frames, video files, subfolders of frames or a dataset root"
        )
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: several videos named {', '.join(duplicates)} (a folder and a video file?)")
    return sources


def shard_sources(sources: list[VideoSource], num_shards: int, shard: int) -> list[VideoSource]:
    """The videos of shard ``shard`` out of ``num_shards``: every ``num_shards``-th video by name, starting at
    ``shard``. Deterministic (the same input gives the same split on every machine) and disjoint; the shards
    together hold every video once.

    Raises:
        ValueError: ``num_shards < 1`` or ``shard`` outside ``[0, num_shards)``.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards}: must be at least 1")
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard={shard}: must be in [0, num_shards={num_shards})")
    ordered = sorted(sources, key=lambda s: natural_key(s.name))
    return ordered[shard::num_shards]


def frame_folders(root: str | os.PathLike, split: str | None = "test", *, gt: bool = False) -> dict[str, list[Path]]:
    """The frames of every video under ``root``, by video name, in natural order.

    Args:
        root: one folder of frames (a single video, named after the folder), a folder of per-video frame
            folders, or (with ``gt=True``) a dataset root in a layout of :mod:`cdvd.data.layouts`.
        split: the split read from a dataset root.
        gt: read a dataset root's sharp frames.

    Raises:
        DataError: ``root`` is missing or holds no frames.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder not found: {root}")
    if has_frames(root):
        return {root.name: list_frames(root)}
    if gt:
        pairs = layout_videos(root, split, require_gt=True)
        if pairs:
            return {pair.name: list(pair.gt) for pair in pairs}
    videos = {
        sub.name: list_frames(sub)
        for sub in sorted(root.iterdir())
        if sub.is_dir() and not sub.name.startswith(".") and has_frames(sub)
    }
    if not videos:
        raise DataError(f"no frames in {root}: expected frames, or one folder of frames per video")
    return videos


def pair_videos(
    results: Mapping[str, list[Path]], gt: Mapping[str, list[Path]]
) -> dict[str, tuple[list[Path], list[Path]]]:
    """Match result videos to GT videos by name; a lone video on each side is matched whatever the names.

    Raises:
        DataError: a GT video without results, naming the folder expected.
    """
    if len(results) == 1 and len(gt) == 1:
        (result_frames,), (name, gt_frames) = results.values(), next(iter(gt.items()))
        return {name: (result_frames, gt_frames)}
    pairs = {}
    for name, gt_frames in gt.items():
        if name not in results:
            raise DataError(
                f"no results for video {name} (GT in {gt_frames[0].parent}); found: {', '.join(results) or 'none'}"
            )
        pairs[name] = (results[name], gt_frames)
    extra = sorted(set(results) - set(gt))
    if extra:
        logger.warning("results without GT, not scored: %s", ", ".join(extra))
    return pairs
