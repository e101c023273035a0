"""Reading a video file one frame at a time, as uint8 (H, W, 3) RGB, upright, with integrity checks.

A decode error part-way, a number of decoded frames that disagrees with the count the container states, or (where
it states none, as Matroska) decoded frames that end before the container's duration, is reported in
:attr:`VideoReader.problems` (in words naming the file and both counts) and logged as one warning line. Frames are
compared with the duration by their timestamps, not by a count from the nominal rate, so a valid variable-frame-rate
file (a screen or phone recording with pauses) is not taken for a damaged one.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from cdvd.errors import DataError
from cdvd.video.probe import VideoInfo, open_input, probe_video, upright

logger = logging.getLogger(__name__)

#: Demuxers whose files store no presentation times (AVI times frames by their position; raw streams have none):
#: their frames are timed by index at the stated rate.
_INDEX_TIMED_FORMATS = frozenset({"avi", "h264", "hevc", "m4v", "mjpeg", "rawvideo"})


class DecodedFrame(NamedTuple):
    """One decoded frame.

    Attributes:
        index: 0-based position among the decoded frames.
        pts: presentation timestamp in the stream's ``time_base``, strictly increasing (where the file has none, or
            an out-of-order one, as AVI files with B-frames do, one frame period after the previous frame's).
        image: uint8 (H, W, 3) RGB, upright.
    """

    index: int
    pts: int
    image: np.ndarray


@dataclass
class VideoReader:
    """Decodes a video file one frame at a time; made by :func:`read_video_frames`.

    Iterating yields :class:`DecodedFrame`; each iteration decodes the file again from the start. No frame at all
    raises :class:`DataError`.

    Attributes:
        path: the file.
        info: what the container says (:func:`probe_video`).
        decoded: frames yielded by the last iteration.
        problems: integrity warnings of the last full iteration, naming the file (empty when it decoded cleanly).
        complete: whether the last iteration ran to the end of the file.
        warn: log the problems of a full iteration as one warning line (``False`` for a caller that reports them).
    """

    path: Path
    info: VideoInfo
    decoded: int = 0
    problems: list[str] = field(default_factory=list)
    complete: bool = False
    warn: bool = True

    def __iter__(self) -> Iterator[DecodedFrame]:
        self.decoded, self.problems, self.complete = 0, [], False
        errors: list[str] = []
        step = max(1, round(1 / (self.info.frame_rate * self.info.time_base)))
        last_pts: int | None = None
        span: tuple[int, int] | None = None  # first timestamp, end of the last frame
        concealed = 0
        with open_input(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            by_index = container.format.name.split(",")[0] in _INDEX_TIMED_FORMATS
            try:
                for packet in container.demux(stream):
                    try:
                        frames = packet.decode()
                    except av.FFmpegError as err:  # a corrupt packet: skip it, as players do
                        errors.append(f"packet at {packet.pts}: {err}")
                        continue
                    for frame in frames:
                        if frame.is_corrupt:  # decoded with errors, concealed by FFmpeg
                            concealed += 1
                        pts = frame.pts
                        if by_index or pts is None or (last_pts is not None and pts <= last_pts):
                            # no usable time: one frame period after the previous frame
                            pts = 0 if last_pts is None else last_pts + step
                        last_pts = pts
                        length = getattr(frame, "duration", None)
                        end = pts + (length if length and not by_index else step)
                        span = (span[0] if span else pts, end)
                        image = upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                        yield DecodedFrame(self.decoded, pts, image)
                        self.decoded += 1
            except av.FFmpegError as err:  # the container itself is broken (truncated): keep what decoded
                errors.append(f"read stopped: {err}")
        self.complete = True
        if concealed:
            errors.append(f"{concealed} frames decoded with concealed errors")
        self._check(errors, span)

    def _check(self, errors: list[str], span: tuple[int, int] | None) -> None:
        """Raise where no frame decoded, else note (and log) what went wrong."""
        if self.decoded == 0:
            detail = f" ({errors[0]})" if errors else ""
            raise DataError(f"no frame of {self.path} could be decoded{detail}")
        if errors:
            more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
            self.problems.append(
                f"{self.path}: decoding failed part-way ({errors[0]}{more}); kept {self.decoded} frames"
            )
        stated, duration = self.info.frame_count, self.info.duration
        if stated is not None and self.decoded != stated:
            self.problems.append(f"{self.path}: decoded {self.decoded} frames but the container states {stated}")
        elif stated is None and duration and span is not None:
            # the frames' own times (a variable rate is valid), with room for a start offset of a frame or two
            covered = float((span[1] - span[0]) * self.info.time_base)
            if duration - covered > max(2 / float(self.info.frame_rate), duration / 100):
                self.problems.append(
                    f"{self.path}: decoded {self.decoded} frames covering {covered:.2f} s but the container's "
                    f"duration is {duration:.2f} s (about {self.info.expected_frames} frames at its stated rate)"
                )
        if self.problems and self.warn:
            logger.warning("%s", "; ".join(self.problems))


def read_video_frames(path: str | os.PathLike) -> VideoReader:
    """A reader of the frames of a video file, one at a time (never the whole video in memory).

    Example::

        reader = read_video_frames("clip.mp4")
        for frame in reader:          # DecodedFrame(index, pts, image uint8 (H, W, 3) RGB)
            ...
        report["warnings"] = reader.problems

    Raises:
        DataError: the file cannot be opened or has no video stream (at once); no frame decodes (on iteration).
    """
    return VideoReader(Path(path), probe_video(path))


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> list[np.ndarray]:
    """The first ``max_frames`` frames (all with ``None``) of a video file, uint8 (H, W, 3) RGB, in memory.

    Raises:
        DataError: the file is missing, cannot be opened or holds no decodable frame.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames={max_frames}: must be at least 1")
    return list(itertools.islice((frame.image for frame in read_video_frames(path)), max_frames))
