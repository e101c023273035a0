"""Which videos and frames are under a path: for deblurring, for scoring, and for the ground truth.

A path may be a video file, a folder of frames (one video), a dataset root in a layout of
:mod:`cdvd.data.layouts` (one split, blurry or sharp frames), or a folder of videos (subfolders of frames and/or
video files).
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cdvd.data.io import has_frames, list_frames, natural_key, read_rgb, video_frames
from cdvd.data.layouts import VideoPair, detect_layout, discover_videos
from cdvd.errors import ConfigError, DataError
from cdvd.video import VIDEO_SUFFIXES, DecodedFrame, VideoInfo, VideoReader, is_video_path, read_video_frames

logger = logging.getLogger(__name__)

DEFAULT_FPS = 25.0


@dataclass
class VideoSource:
    """One video to deblur: a folder of frames or a video file (read with PyAV, :mod:`cdvd.video`).

    Attributes:
        name: the video's name (the output folder's name).
        path: the frame folder or the video file.
        frame_files: the frames of a folder in natural order; ``None`` for a video file.
        problems: what went wrong reading a video file in the last full pass over it (a decode error part-way,
            fewer frames than the container states), in words naming the file and the counts; empty otherwise.
    """

    name: str
    path: Path
    frame_files: list[Path] | None = None
    problems: list[str] = field(default_factory=list)
    _reader: VideoReader | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_video_file(self) -> bool:
        return self.frame_files is None

    def reader(self) -> VideoReader:
        """The PyAV reader of a video file (made once; probes the container).

        Raises:
            DataError: not a video file, or one that cannot be opened.
        """
        if self.frame_files is not None:
            raise DataError(f"{self.path} is a folder of frames, not a video file")
        if self._reader is None:
            # the runner reports the problems in its summary line of the video: not logged a second time here
            self._reader = read_video_frames(self.path)
            self._reader.warn = False
        return self._reader

    def info(self) -> VideoInfo | None:
        """What a video file's container says (:func:`cdvd.video.probe_video`); ``None`` for a frame folder."""
        return None if self.frame_files is not None else self.reader().info

    def frame_count(self) -> int | None:
        """Exact for a folder; for a video file the container's count, else one from its duration and rate
        (``None`` when it says neither)."""
        return len(self.frame_files) if self.frame_files is not None else self.reader().info.expected_frames

    def fps(self) -> float:
        """Frame rate of a video file (25 for frame folders)."""
        return DEFAULT_FPS if self.frame_files is not None else float(self.reader().info.frame_rate)

    def output_name(self, index: int) -> str:
        """PNG name of output frame ``index``: the input's name, or ``00000.png`` ... for a video file."""
        return self.frame_files[index].stem + ".png" if self.frame_files is not None else f"{index:05d}.png"

    def frames(self) -> Iterator[DecodedFrame]:
        """The frames with their index and timestamp (a folder's frames are timed by their index), read one at a
        time. After a full pass over a video file, :attr:`problems` says what went wrong reading it."""
        if self.frame_files is not None:
            for index, path in enumerate(self.frame_files):
                yield DecodedFrame(index, index, read_rgb(path))
            return
        reader = self.reader()
        self.problems = []
        yield from reader
        self.problems = list(reader.problems)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The frames as uint8 (H, W, 3) RGB, read one at a time."""
        for frame in self.frames():
            yield frame.image


#: What a path that is neither a regular file nor a folder is, by its ``stat`` type.
_SPECIAL_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def special_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (``"a FIFO (named pipe)"``, a device, a
    socket), after symlinks; ``None`` for a file, a folder or a missing path. Such a path would block a reader
    (a FIFO with no writer) or never end (``/dev/zero``)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return _SPECIAL_KINDS.get(stat.S_IFMT(mode))


def check_not_special(path: str | os.PathLike, setting: str) -> None:
    """Refuse a path to read that is a FIFO, a device or a socket (:func:`special_kind`), naming the setting.

    Raises:
        DataError: ``setting=path`` is such a path.
    """
    kind = special_kind(path)
    if kind is not None:
        raise DataError(f"{setting}={path} is {kind}, not a file or a folder: pass {setting}= a file or folder")


def check_apart(outputs: Mapping[str, str | os.PathLike], inputs: Mapping[str, str | os.PathLike]) -> None:
    """Refuse any output at, inside or over any input, whatever either is (a video file, a folder of frames, a
    folder of videos, a dataset root): a run never writes into what it reads, and its outputs never hold it.

    Real paths are compared (symlinks resolved: a link to the input is the input), before anything is written.

    Args:
        outputs: the paths a run writes, by the setting that names them (``output``, ``results``).
        inputs: the paths it reads, by setting (``input``, ``gt``, ``results``).

    Raises:
        ConfigError: naming both settings and paths.
    """
    for out_key, out in outputs.items():
        out_real = Path(out).resolve()
        for in_key, inp in inputs.items():
            in_real = Path(inp).resolve()
            if out_real == in_real:
                relation = "is the same place as"
            elif in_real in out_real.parents:
                relation = "is inside"
            elif out_real in in_real.parents:
                relation = "holds"
            else:
                continue
            raise ConfigError(
                f"{out_key}={out} {relation} {in_key}={inp}: a run never writes into the input or around it; "
                f"pass another {out_key}="
            )


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
    """The videos to deblur at ``path``: any path of the module's docstring (a video file: any suffix of
    :data:`cdvd.video.VIDEO_SUFFIXES`; a dataset root: its ``split``, blurry frames only).

    Raises:
        DataError: ``path`` is missing or holds nothing to deblur; two videos would share a name.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    check_not_special(path, "input")
    if path.is_file():
        if not is_video_path(path):
            raise DataError(
                f"input {path} is neither a video file ({', '.join(sorted(VIDEO_SUFFIXES))}) nor a folder of frames"
            )
        return [VideoSource(path.stem, path)]
    if has_frames(path):
        return [VideoSource(path.name, path, video_frames(path))]
    pairs = layout_videos(path, split, require_gt=False)
    if pairs:
        return [VideoSource(pair.name, pair.blur_dir, list(pair.blur)) for pair in pairs]
    sources: list[VideoSource] = []
    for entry in sorted(path.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and has_frames(entry):
            sources.append(VideoSource(entry.name, entry, video_frames(entry)))
        elif entry.is_file() and is_video_path(entry):
            sources.append(VideoSource(entry.stem, entry))
    if not sources:
        raise DataError(
            f"nothing to deblur in {path}: expected image frames, video files, subfolders of frames or a dataset root"
        )
    duplicates = sorted(name for name, count in Counter(s.name for s in sources).items() if count > 1)
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
        kind = special_kind(root) or ("a file" if root.exists() else None)
        raise DataError(f"{root} is {kind}, not a folder of frames" if kind else f"folder not found: {root}")
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
