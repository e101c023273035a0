"""What a video file's container says: size, rate, time base, stated frame count, sound track, rotation.

Also the suffixes read as videos, and :func:`upright`, which turns decoded pixels as a player shows them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cdvd.errors import DataError

logger = logging.getLogger(__name__)

#: Containers read as videos (anything else is treated as a still image or a folder by the callers).
VIDEO_SUFFIXES: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv", ".wmv",
     ".3gp", ".ogv"}
)  # fmt: skip


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file by its suffix (case-insensitive); the file need not exist."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a file: FFmpeg's codec name (``aac``, ``opus``, ``pcm_s16le``...), samples per
    second, channels."""

    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's container says about its first video stream.

    Attributes:
        path: the file.
        width: displayed width in pixels (after the rotation flag, as :func:`read_video_frames` yields frames).
        height: displayed height in pixels.
        frame_rate: frames per second (the stream's average rate, else its guessed rate).
        time_base: seconds per timestamp tick of the stream.
        frame_count: the number of frames the container states, ``None`` where it does not say (Matroska, WebM).
        duration: seconds, ``None`` when unknown.
        codec: the video codec's name (``h264``, ``hevc``, ``vp9``...).
        audio: the first audio stream, ``None`` when there is none.
        rotation: counter-clockwise degrees (a multiple of 90) the reader turns the decoded pixels by.
    """

    path: Path
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    frame_count: int | None
    duration: float | None
    codec: str
    audio: AudioInfo | None = None
    rotation: int = 0

    @property
    def expected_frames(self) -> int | None:
        """The stated frame count, else one estimated from the duration and rate; ``None`` when neither is known."""
        if self.frame_count is not None:
            return self.frame_count
        if self.duration is not None and self.duration > 0:
            return round(self.duration * self.frame_rate)
        return None


def open_input(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DataError(f"video file not found: {path}")
    try:
        return av.open(str(path), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot open video file {path} (unreadable or not a video): {err}") from err


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration") or ""  # Matroska's per-stream tag
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", tag.strip())
    if match:
        return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _rotation_steps(degrees: float) -> int:
    """Quarter turns (counter-clockwise) for a display rotation; 0 for angles that are not a multiple of 90."""
    steps = round(degrees / 90)
    return steps % 4 if abs(degrees - steps * 90) <= 1 else 0


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn decoded (H, W, C) pixels as a player shows them, by ``rotation`` counter-clockwise degrees
    (``VideoFrame.rotation``, a multiple of 90): (W, H, C) for 90 and 270, contiguous."""
    steps = _rotation_steps(rotation)
    return np.ascontiguousarray(np.rot90(image, k=steps)) if steps else image


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read what the container of a video file says (and decode its first frame for the rotation flag).

    Raises:
        DataError: the file is missing, unreadable, or has no video stream.
    """
    path = Path(path)
    with open_input(path) as container:
        if not container.streams.video:
            raise DataError(f"no video stream in {path}")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            logger.warning("%s states no frame rate; assuming 25 fps", path)
            rate = Fraction(25)
        audio = None
        if container.streams.audio:
            a = container.streams.audio[0]
            audio = AudioInfo(
                codec=a.codec_context.codec.canonical_name, sample_rate=a.sample_rate or 0, channels=a.channels or 0
            )
        rotation = 0
        with contextlib.suppress(av.FFmpegError, StopIteration):
            rotation = _rotation_steps(next(container.decode(stream)).rotation) * 90
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            frame_rate=Fraction(rate),
            time_base=Fraction(stream.time_base or Fraction(1, 90000)),
            frame_count=stream.frames or None,
            duration=_stream_duration(container, stream),
            codec=stream.codec_context.codec.canonical_name,
            audio=audio,
            rotation=rotation,
        )
