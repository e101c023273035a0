"""Video files through PyAV (FFmpeg's libraries): probing, frame-by-frame reading with integrity checks, and a
resumable, atomic writer that joins independently encoded segments and carries the sound track over.

Reading: :func:`probe_video` states what a container says; :func:`read_video_frames` decodes one frame at a time
as uint8 (H, W, 3) RGB, upright (a phone's rotation flag is applied to the pixels), and afterwards knows how many
frames decoded and what went wrong (a decode error part-way, a count that disagrees with the container).

Writing: :class:`SegmentedVideoWriter` encodes frames into complete segment files in a hidden work folder beside
the output (``.<name>.parts/``); a run that is killed resumes after its last complete segment, and the final file
is made by remuxing the segments' packets (no re-encode) into a temporary file in the work folder that is renamed
onto the output only when whole. Every segment starts with a keyframe and is encoded with fixed settings (one
encoder thread by default), so a resumed write gives exactly the bitstream, and therefore the decoded frames, of an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np

from cdvd.data.io import DataError

logger = logging.getLogger(__name__)

#: Containers read as videos (anything else is treated as a still image or a folder by the callers).
VIDEO_SUFFIXES: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv", ".wmv",
     ".3gp", ".ogv"}
)  # fmt: skip

#: Containers :class:`SegmentedVideoWriter` writes, by suffix, with FFmpeg's muxer name.
OUTPUT_FORMATS: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}

#: Default crf per encoder (visually lossless-ish for the H.264 default; each encoder has its own scale).
DEFAULT_CRF: dict[str, int] = {"libx264": 18, "libx265": 20, "libvpx-vp9": 30, "libaom-av1": 30, "libsvtav1": 30}

_X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

#: x264's preset names mapped to libvpx's speed (``cpu-used``) for VP9, which has no presets.
_VP9_SPEED = {"ultrafast": 5, "superfast": 5, "veryfast": 4, "faster": 4, "fast": 3, "medium": 2, "slow": 1}

#: Demuxers whose files store no presentation times (AVI times frames by their position; raw streams have none):
#: their frames are timed by index at the stated rate.
_INDEX_TIMED_FORMATS = frozenset({"avi", "h264", "hevc", "m4v", "mjpeg", "rawvideo"})

MANIFEST = "manifest.json"
#: Container tag holding the writer's manifest (fingerprint and encoder settings) in every finished file.
FINGERPRINT_TAG = "cdvd_fingerprint"
_MANIFEST_VERSION = 1
_SEGMENT_RE = re.compile(r"^seg_(\d{6})\.json$")


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file by its suffix (case-insensitive); the file need not exist."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# ------------------------------------------------------------------------------------------------------------
# probing


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a file.

    Attributes:
        codec: FFmpeg's codec name (``aac``, ``opus``, ``pcm_s16le``...).
        sample_rate: samples per second.
        channels: number of channels.
    """

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


def _open_input(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DataError(f"video file not found: {path}")
    try:
        return av.open(str(path), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot open video file {path} (unreadable or not a video): {err}") from err


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska's per-stream tag
    if tag:
        match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", tag.strip())
        if match:
            hours, minutes, seconds = match.groups()
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _rotation_steps(degrees: float) -> int:
    """Quarter turns (counter-clockwise) for a display rotation; 0 for angles that are not a multiple of 90."""
    steps = round(degrees / 90)
    if abs(degrees - steps * 90) > 1:
        return 0
    return steps % 4


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn decoded pixels as a player shows them.

    Args:
        image: (H, W, C) array.
        rotation: the display rotation in counter-clockwise degrees (``VideoFrame.rotation``), a multiple of 90.

    Returns:
        The turned array ((W, H, C) for 90 and 270), contiguous.
    """
    steps = _rotation_steps(rotation)
    return np.ascontiguousarray(np.rot90(image, k=steps)) if steps else image


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read what the container of a video file says (and decode its first frame for the rotation flag).

    Raises:
        DataError: the file is missing, unreadable, or has no video stream.
    """
    path = Path(path)
    with _open_input(path) as container:
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


# ------------------------------------------------------------------------------------------------------------
# reading


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

    Iterating yields :class:`DecodedFrame`; each iteration decodes the file again from the start. After a full
    iteration, ``decoded`` is the number of frames that decoded and ``problems`` lists, in words naming the file,
    what went wrong (also logged as warnings). No frame at all raises :class:`DataError`.

    Attributes:
        path: the file.
        info: what the container says (:func:`probe_video`).
        decoded: frames yielded by the last iteration.
        problems: integrity warnings of the last full iteration (empty when the file decoded cleanly).
        complete: whether the last iteration ran to the end of the file.
    """

    path: Path
    info: VideoInfo
    decoded: int = 0
    problems: list[str] = field(default_factory=list)
    complete: bool = False

    def __iter__(self) -> Iterator[DecodedFrame]:
        self.decoded, self.problems, self.complete = 0, [], False
        errors: list[str] = []
        step = max(1, round(1 / (self.info.frame_rate * self.info.time_base)))
        last_pts: int | None = None
        concealed = 0
        with _open_input(self.path) as container:
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
                        image = upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                        yield DecodedFrame(self.decoded, pts, image)
                        self.decoded += 1
            except av.FFmpegError as err:  # the container itself is broken (truncated): keep what decoded
                errors.append(f"read stopped: {err}")
        self.complete = True
        if concealed:
            errors.append(f"{concealed} frames decoded with concealed errors")
        self._check(errors)

    def images(self) -> Iterator[np.ndarray]:
        """The frames alone, uint8 (H, W, 3) RGB."""
        for frame in self:
            yield frame.image

    def _check(self, errors: list[str]) -> None:
        if self.decoded == 0:
            detail = f" ({errors[0]})" if errors else ""
            raise DataError(f"no frame of {self.path} could be decoded{detail}")
        if errors:
            more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
            self._problem(f"{self.path}: decoding failed part-way ({errors[0]}{more}); kept {self.decoded} frames")
        stated, expected = self.info.frame_count, self.info.expected_frames
        if stated is not None and self.decoded != stated:
            self._problem(f"{self.path}: decoded {self.decoded} frames but the container states {stated}")
        elif stated is None and expected is not None and abs(self.decoded - expected) > max(1, expected // 100):
            self._problem(f"{self.path}: decoded {self.decoded} frames but the container's duration implies {expected}")

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        logger.warning("%s", message)


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
    info = probe_video(path)
    return VideoReader(Path(path), info)


# ------------------------------------------------------------------------------------------------------------
# writing: settings and destination


def output_format(path: str | os.PathLike) -> str:
    """FFmpeg's muxer name for an output path's suffix.

    Raises:
        ValueError: a suffix :class:`SegmentedVideoWriter` does not write (names the ``output`` setting).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(
            f"output={path}: cannot write a {suffix or 'suffix-less'} video; use one of {sorted(OUTPUT_FORMATS)}"
        )
    return OUTPUT_FORMATS[suffix]


def default_video_codec(path: str | os.PathLike) -> str:
    """H.264 (``libx264``), except VP9 (``libvpx-vp9``) for WebM, which cannot hold H.264."""
    return "libvpx-vp9" if output_format(path) == "webm" else "libx264"


def writable_destination(path: str | os.PathLike) -> Path:
    """Check, before any frame is computed, that a video can be written at ``path``.

    Makes the parent folder if needed and creates and removes a small file in it.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        ValueError: the suffix is not a writable container (``output``).
        DataError: the path is a folder, or its folder cannot be made or written to.
    """
    path = Path(path)
    output_format(path)
    if path.is_dir():
        raise DataError(f"cannot write video {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.check"):
            pass
    except OSError as err:
        raise DataError(f"cannot write video {path}: {err}") from err
    return path


def file_fingerprint(path: str | os.PathLike) -> dict[str, object]:
    """Identity of an input file for a writer's fingerprint: name, size, and a hash of its first and last MiB.

    Cheap for any size; changes when the file is replaced or edited (an equal-sized edit in the middle is missed).
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            digest.update(f.read())
    return {"name": path.name, "size": size, "sha256_ends": digest.hexdigest()}


def _check_codec(container_format: str, codec: str, *, kind: str) -> str:
    """The codec's descriptor name (``h264``); ValueError naming the setting when missing or not allowed."""
    try:
        name = av.codec.Codec(codec, "w").name
    except (av.FFmpegError, ValueError) as err:  # UnknownCodecError is a ValueError
        raise ValueError(f"{kind}={codec}: no such encoder in this FFmpeg build") from err
    probe = av.open(io.BytesIO(), "w", format=container_format)
    try:
        if av.codec.Codec(codec, "w").type != ("video" if kind == "codec" else "audio"):
            raise ValueError(f"{kind}={codec}: not a {'video' if kind == 'codec' else 'audio'} encoder")
        try:
            probe.add_stream(codec)
        except ValueError as err:
            raise ValueError(f"{kind}={codec}: the {container_format} container cannot hold {name}") from err
    finally:
        probe.close()
    return name


def _can_copy(container_format: str, stream: av.AudioStream) -> bool:
    """Whether a container takes ``stream``'s packets as they are (its muxer writes a header with them)."""
    name = stream.codec_context.codec.canonical_name
    if container_format == "mp4" and name.startswith("pcm_"):
        return False  # FFmpeg writes it, but few players read PCM in MP4: AAC instead
    probe = av.open(io.BytesIO(), "w", format=container_format)
    try:
        if name not in probe.supported_codecs:
            return False
        probe.add_stream_from_template(stream)
        probe.start_encoding()
        return True
    except (ValueError, av.FFmpegError):
        return False
    finally:
        with contextlib.suppress(Exception):
            probe.close()


def written_with(path: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest (``fingerprint`` and ``encoder`` settings) a finished output was written with, from its
    container tag; ``None`` for a file without one (or unreadable). Compare with
    :meth:`SegmentedVideoWriter.manifest` to decide whether an existing output can be kept."""
    try:
        with av.open(str(path)) as container:
            tags = {k.lower(): v for k, v in container.metadata.items()}
    except (av.FFmpegError, OSError):
        return None
    try:
        return json.loads(tags[FINGERPRINT_TAG])
    except (KeyError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------------------
# writing: segments


@dataclass(frozen=True)
class _Segment:
    """A complete segment: its frames' output timestamps and its packets' (pts, dts) in segment frame units."""

    index: int
    pts: list[int]
    packets: list[tuple[int, int]]
    width: int
    height: int

    @property
    def frames(self) -> int:
        return len(self.pts)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    _fsync(tmp)
    os.replace(tmp, path)


def _even(image: np.ndarray) -> np.ndarray:
    """Pad an odd width or height by repeating the last column/row (4:2:0 encoders need even sizes)."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class SegmentedVideoWriter:
    """A video file written in resumable segments and made whole, atomically, by :meth:`finish`.

    Frames go to segment files of ``segment_frames`` frames each in ``.<name>.parts/`` beside the output (each
    written to a temporary name and renamed when complete, with a small JSON record of its timestamps). A
    ``manifest.json`` there records ``fingerprint`` and the encoder settings; a later writer with the same ones
    resumes after the complete segments (:meth:`frames_done`), a writer with other ones removes them. Partial
    segments of a crashed run are removed.

    :meth:`finish` joins the segments by remuxing their packets (no re-encode) with the timestamps given to
    :meth:`write` (the source's, so the output has its rate and frame count), adds the first audio track of
    ``audio_source`` (copied where the container accepts its codec, else re-encoded: AAC, or Opus for WebM),
    writes all this to a temporary file beside the output and renames it into place, then removes the work folder.

    Determinism: every segment starts with a keyframe in a fresh encoder, and the encoder runs with ``threads``
    threads (1 by default; x264 and libvpx give the same bitstream for the same frames, settings and thread count),
    so a resumed write is bit-identical to an uninterrupted one. ``threads`` is part of the manifest.

    Colour: frames are converted to the encoder's YUV format with the BT.709 matrix (limited range) and tagged so.

    Args:
        final_path: the output file; its suffix picks the container (:data:`OUTPUT_FORMATS`).
        info: the source video (frame rate and time base of the output timestamps).
        codec: video encoder; ``None``: ``libx264`` (``libvpx-vp9`` for ``.webm``).
        crf: constant-quality level; ``None``: the encoder's entry in :data:`DEFAULT_CRF`.
        preset: x264/x265 speed preset (for VP9 mapped to ``cpu-used``; other encoders ignore it).
        pix_fmt: the encoded pixel format.
        segment_frames: frames per segment (the resume granularity; each adds a keyframe).
        threads: encoder threads (0: FFmpeg's choice; then resuming on another machine may differ in bits).
        audio_source: file whose first audio track goes into the output; ``None`` for none.
        fingerprint: JSON-serialisable identity of what makes the pixels (input, checkpoint hash, settings).
        codec_options: extra FFmpeg encoder options (strings), part of the manifest.

    Raises:
        ValueError: a setting the container or FFmpeg cannot take (the message names it).
    """

    def __init__(
        self,
        final_path: str | os.PathLike,
        *,
        info: VideoInfo,
        codec: str | None = None,
        crf: int | None = None,
        preset: str = "medium",
        pix_fmt: str = "yuv420p",
        segment_frames: int = 250,
        threads: int = 1,
        audio_source: str | os.PathLike | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        codec_options: Mapping[str, str] | None = None,
    ) -> None:
        self.final_path = Path(final_path)
        self.format = output_format(self.final_path)
        self.codec = codec or default_video_codec(self.final_path)
        _check_codec(self.format, self.codec, kind="codec")
        if pix_fmt not in [f.name for f in av.codec.Codec(self.codec, "w").video_formats or []]:
            raise ValueError(f"pix_fmt={pix_fmt}: {self.codec} cannot encode it")
        self.crf = DEFAULT_CRF.get(self.codec) if crf is None else int(crf)
        top = 51 if self.codec in ("libx264", "libx265") else 63
        if self.crf is not None and not 0 <= self.crf <= top:
            raise ValueError(f"crf={crf}: must be in [0, {top}] for {self.codec} (lower is better; 0 is lossless)")
        if self.codec in ("libx264", "libx265") and preset not in _X264_PRESETS:
            raise ValueError(f"preset={preset}: not one of {', '.join(_X264_PRESETS)}")
        if segment_frames < 1:
            raise ValueError(f"segment_frames={segment_frames}: must be at least 1")
        if threads < 0:
            raise ValueError(f"threads={threads}: must be 0 (automatic) or more")
        self.preset, self.pix_fmt, self.segment_frames, self.threads = preset, pix_fmt, segment_frames, threads
        self.info = info
        self.audio_source = Path(audio_source) if audio_source is not None else None
        self.fingerprint = json.loads(json.dumps(dict(fingerprint or {}), sort_keys=True))
        self.codec_options = {str(k): str(v) for k, v in (codec_options or {}).items()}
        self.options = self._encoder_options()
        self.work_dir = self.final_path.with_name(f".{self.final_path.name}.parts")
        # frame timestamps of the segment encoder: the source's nominal rate (it goes into the bitstream's timing
        # info) where millisecond timestamps of the Matroska segments keep frames apart, else 25
        rate = info.frame_rate
        self._segment_rate = Fraction(rate) if 0 < rate <= 500 else Fraction(25)
        self._step = max(1, round(1 / (info.frame_rate * info.time_base))) if info.frame_rate > 0 else 1
        self._segments: list[_Segment] = []
        self._open: dict[str, Any] | None = None  # the segment being written
        self._size: tuple[int, int] | None = None
        self._last_pts: int | None = None
        self._finished = False
        self._loaded = False  # the work folder is looked at on first use, so that output_is_current() touches nothing

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._guard(self._load)
            self._loaded = True

    # -- settings and work folder

    def _encoder_options(self) -> dict[str, str]:
        opts: dict[str, str] = {}
        if self.codec in ("libx264", "libx265"):
            opts["preset"] = self.preset
        elif self.codec == "libvpx-vp9":
            if self.preset not in _X264_PRESETS:
                raise ValueError(f"preset={self.preset}: not one of {', '.join(_X264_PRESETS)}")
            opts.update({"deadline": "good", "cpu-used": str(_VP9_SPEED.get(self.preset, 0)), "b": "0"})
            opts["row-mt"] = "0"
        if self.crf is not None:
            opts["crf"] = str(self.crf)
        opts.update(self.codec_options)
        return opts

    def _settings(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "threads": self.threads,
            "options": self.options,
            "segment_frames": self.segment_frames,
            "frame_rate": str(self.info.frame_rate),
            "time_base": str(self.info.time_base),
        }

    def manifest(self) -> dict[str, Any]:
        """What this writer's outputs depend on: the caller's fingerprint and the encoder settings (JSON types)."""
        return {"version": _MANIFEST_VERSION, "fingerprint": self.fingerprint, "encoder": self._settings()}

    def output_is_current(self) -> bool:
        """Whether the output file exists, whole, and was written with this writer's :meth:`manifest` (then a
        runner can skip the video)."""
        return self.final_path.is_file() and written_with(self.final_path) == self.manifest()

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run ``fn``, turning OS and FFmpeg write errors into a DataError that names the output."""
        try:
            return fn(*args)
        except DataError:
            raise
        except (OSError, av.FFmpegError) as err:
            raise DataError(f"cannot write video {self.final_path}: {err}") from err

    def _load(self) -> None:
        """Adopt the complete segments of an earlier run with the same manifest; remove everything else."""
        manifest_path = self.work_dir / MANIFEST
        if self.work_dir.is_dir():
            try:
                old = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                old = None
            if old != self.manifest():
                if old is not None:
                    logger.info("%s: parts of an earlier run with other inputs or settings removed", self.final_path)
                shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not manifest_path.exists():
            _write_json(manifest_path, self.manifest())
        self._segments = self._complete_segments()
        keep = {MANIFEST} | {f"seg_{s.index:06d}{ext}" for s in self._segments for ext in (".json", ".mkv")}
        for entry in self.work_dir.iterdir():
            if entry.name not in keep:  # partial segments, temp files, segments after a gap
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if self._segments:
            self._size = (self._segments[0].width, self._segments[0].height)
            self._last_pts = self._segments[-1].pts[-1]
            logger.info("%s: resuming after %d frames", self.final_path, sum(s.frames for s in self._segments))

    def _complete_segments(self) -> list[_Segment]:
        found: dict[int, Path] = {}
        for entry in self.work_dir.iterdir():
            match = _SEGMENT_RE.match(entry.name)
            if match:
                found[int(match.group(1))] = entry
        segments: list[_Segment] = []
        while len(segments) in found:
            index = len(segments)
            try:
                record = json.loads(found[index].read_text())
                media = self.work_dir / f"seg_{index:06d}.mkv"
                if media.stat().st_size != record["bytes"] or len(record["pts"]) != self.segment_frames:
                    break
                segments.append(
                    _Segment(
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

    # -- writing frames

    def frames_done(self) -> int:
        """Frames already in complete segments (from an earlier, interrupted run with the same manifest).

        The first call (or the first :meth:`write`) opens the work folder: adopts matching parts, removes others.
        """
        self._ensure_loaded()
        return sum(s.frames for s in self._segments)

    @property
    def frames_written(self) -> int:
        """Frames in complete segments plus the segment being written."""
        return self.frames_done() + (len(self._open["pts"]) if self._open else 0)

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode the next frame.

        Args:
            image: uint8 (H, W, 3) RGB; every frame has the same size (odd sizes are padded to even for 4:2:0).
            pts: its timestamp in ``info.time_base`` (the reader's ``DecodedFrame.pts``); ``None``, or one not after
                the previous frame's, gives the previous one plus one frame period.

        Raises:
            ValueError: not uint8 (H, W, 3), or a size other than the earlier frames'.
            DataError: the segment cannot be written (full disk...); the writer is aborted (complete segments stay).
        """
        if self._finished:
            raise RuntimeError("write() after finish()")
        self._ensure_loaded()
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB frame, instead got {image.dtype} {image.shape}")
        image = _even(image)
        size = (image.shape[1], image.shape[0])
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(f"frame size {size} differs from the video's {self._size} ({self.final_path})")
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        self._last_pts = pts
        try:
            self._guard(self._encode, image, pts)
        except DataError:
            self.abort()  # the segment being written is lost; complete ones stay for a rerun
            raise

    def _encode(self, image: np.ndarray, pts: int) -> None:
        if self._open is None:
            self._start_segment()
        seg = self._open
        assert seg is not None
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = frame.reformat(format=self.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
        frame.pts = len(seg["pts"])
        frame.time_base = 1 / self._segment_rate
        seg["pts"].append(pts)
        self._mux_segment_packets(seg, seg["stream"].encode(frame))
        if len(seg["pts"]) == self.segment_frames:
            self._close_segment()

    def _start_segment(self) -> None:
        assert self._size is not None
        index = len(self._segments)
        tmp = self.work_dir / f"seg_{index:06d}.mkv.tmp"
        container = av.open(str(tmp), "w", format="matroska")
        stream = container.add_stream(self.codec, rate=self._segment_rate, options=dict(self.options))
        stream.width, stream.height = self._size
        stream.pix_fmt = self.pix_fmt
        ctx = stream.codec_context
        ctx.time_base = 1 / self._segment_rate
        ctx.thread_count = self.threads
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 1, 1, 1, 1  # BT.709, limited range
        self._open = {"index": index, "tmp": tmp, "container": container, "stream": stream, "pts": [], "packets": []}

    def _mux_segment_packets(self, seg: dict[str, Any], packets: Sequence[av.Packet]) -> None:
        for packet in packets:
            # the encoder's timestamps in segment frame units, taken before muxing rounds them to milliseconds
            unit = packet.time_base * self._segment_rate
            pts = round(packet.pts * unit)
            dts = pts if packet.dts is None else round(packet.dts * unit)
            seg["packets"].append((pts, dts))
            seg["container"].mux(packet)

    def _close_segment(self) -> None:
        seg = self._open
        assert seg is not None and self._size is not None
        tmp: Path = seg["tmp"]
        media = tmp.with_suffix("")  # seg_000000.mkv
        record_path = media.with_suffix(".json")
        try:
            try:
                self._mux_segment_packets(seg, seg["stream"].encode(None))
            finally:
                seg["container"].close()
            if len(seg["packets"]) != len(seg["pts"]):
                raise DataError(
                    f"cannot write video {self.final_path}: the encoder gave {len(seg['packets'])} packets for "
                    f"{len(seg['pts'])} frames (codec={self.codec} is not supported for segmented writing)"
                )
            _fsync(tmp)
            os.replace(tmp, media)
            record = {
                "pts": seg["pts"],
                "packets": seg["packets"],
                "width": self._size[0],
                "height": self._size[1],
                "bytes": media.stat().st_size,
            }
            _write_json(record_path, record)  # the segment counts as complete from here on
        except BaseException:
            self._open = None
            for path in (tmp, media, record_path.with_name(record_path.name + ".tmp")):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        self._open = None
        self._segments.append(_Segment(seg["index"], seg["pts"], seg["packets"], *self._size))
        logger.debug("%s: segment %d complete (%d frames)", self.final_path, seg["index"], len(seg["pts"]))

    # -- finishing

    def finish(self) -> Path:
        """Join the segments and the audio into the output, atomically, and remove the work folder.

        Returns:
            The output path.

        Raises:
            DataError: no frame was written, or the output cannot be written (nothing is left under its name, and
                the complete segments stay for a later run).
        """
        if self._finished:
            return self.final_path
        self._ensure_loaded()
        if self._open is not None:
            self._guard(self._close_segment)
        total = self.frames_done()
        if total == 0:
            raise DataError(f"cannot write video {self.final_path}: no frames were written")
        self._guard(self._join, total)
        self._finished = True
        shutil.rmtree(self.work_dir, ignore_errors=True)
        logger.debug("%s: %d frames written", self.final_path, total)
        return self.final_path

    def abort(self, *, keep_parts: bool = True) -> None:
        """Stop without an output: drop the segment being written; keep the complete ones for a later run unless
        ``keep_parts`` is false. Never raises for a missing file."""
        seg, self._open = self._open, None
        if seg is not None:
            with contextlib.suppress(Exception):
                seg["container"].close()
            with contextlib.suppress(OSError):
                seg["tmp"].unlink()
        if not keep_parts:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self._segments = []

    def _join(self, total: int) -> None:
        pts_all, step = [p for s in self._segments for p in s.pts], self._step

        def at(index: int) -> int:  # output time of frame ``index``; extrapolated before the first and after the last
            if index < 0:
                return pts_all[0] + index * step
            if index >= len(pts_all):
                return pts_all[-1] + (index - len(pts_all) + 1) * step
            return pts_all[index]

        # the joined file is made inside the work folder (a kill leaves nothing beside the output; the next run
        # removes it with the other leftovers) and renamed onto the output, on the same file system, when whole
        tmp = self.work_dir / f"output.tmp{self.final_path.suffix}"
        try:
            self._mux(tmp, total, at)
            os.replace(tmp, self.final_path)
        finally:
            tmp.unlink(missing_ok=True)

    def _mux(self, tmp: Path, total: int, at: Callable[[int], int]) -> None:
        options = {"movflags": "+faststart+use_metadata_tags"} if self.format in ("mp4", "mov") else {}
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(av.open(str(tmp), "w", format=self.format, options=options))
            out.metadata[FINGERPRINT_TAG] = json.dumps(self.manifest(), sort_keys=True)
            first = stack.enter_context(av.open(str(self.work_dir / "seg_000000.mkv")))
            template = first.streams.video[0]
            extradata = template.codec_context.extradata
            video = out.add_stream_from_template(template)
            video.time_base = self.info.time_base
            audio_packets = self._audio(out, stack)
            muxed = 0

            # decode order is the encoder's; decode timestamps are one frame apart, ``delay`` frames before the
            # packet's position (the largest reordering depth of any segment, so every dts <= its pts)
            delay = max(max(i - min(p, d) for i, (p, d) in enumerate(s.packets)) for s in self._segments)

            def video_packets() -> Iterator[tuple[Fraction, av.Packet]]:
                start = 0
                for seg in self._segments:
                    with av.open(str(self.work_dir / f"seg_{seg.index:06d}.mkv")) as part:
                        stream = part.streams.video[0]
                        if stream.codec_context.extradata != extradata:
                            raise DataError(f"{self.work_dir}: segment {seg.index} has other codec headers")
                        packets = (p for p in part.demux(stream) if p.size)  # lazily: segments can be large
                        try:
                            for i, (packet, (p, _)) in enumerate(zip(packets, seg.packets, strict=True)):
                                packet.time_base = self.info.time_base
                                packet.pts, packet.dts = at(start + p), at(start + i - delay)
                                packet.duration = at(start + p + 1) - at(start + p)
                                packet.stream = video
                                yield packet.dts * self.info.time_base, packet
                        except ValueError as err:  # zip(strict=True): another packet count than recorded
                            raise DataError(f"{self.work_dir}: segment {seg.index} lost packets") from err
                    start += seg.frames

            for _, packet in heapq.merge(video_packets(), audio_packets, key=lambda item: item[0]):
                out.mux(packet)
                muxed += packet.stream is video
            out.close()
            if muxed != total:
                raise DataError(f"cannot write video {self.final_path}: {muxed} of {total} frames muxed")
            with av.open(str(tmp)) as check:  # the container must state what we wrote, where it states a count
                stated = check.streams.video[0].frames
                if stated and stated != total:
                    raise DataError(f"cannot write video {self.final_path}: it holds {stated} of {total} frames")

    def _audio(self, out: Any, stack: contextlib.ExitStack) -> Iterator[tuple[Fraction, av.Packet]]:
        """Add the audio track of ``audio_source`` to ``out``; the packets to mux, with their times."""
        if self.audio_source is None:
            return iter(())
        try:
            source = stack.enter_context(av.open(str(self.audio_source)))
        except (av.FFmpegError, OSError) as err:
            raise DataError(f"cannot read the sound track of {self.audio_source}: {err}") from err
        if not source.streams.audio:
            return iter(())
        stream = source.streams.audio[0]
        name = stream.codec_context.codec.canonical_name
        if _can_copy(self.format, stream):
            track = out.add_stream_from_template(stream)
            logger.debug("%s: sound track (%s) copied", self.final_path, name)
            return self._copied_audio(source, stream, track)
        target = "libopus" if self.format == "webm" else "aac"
        logger.info("%s: the %s container cannot hold %s sound; re-encoding it to %s", self.final_path,
                    self.format, name, target)  # fmt: skip
        return self._encoded_audio(source, stream, out, target)

    @staticmethod
    def _copied_audio(source: Any, stream: Any, track: Any) -> Iterator[tuple[Fraction, av.Packet]]:
        for packet in source.demux(stream):
            if not packet.size or packet.pts is None:
                continue
            time = (packet.dts if packet.dts is not None else packet.pts) * packet.time_base
            packet.stream = track
            yield time, packet

    @staticmethod
    def _encoded_audio(source: Any, stream: Any, out: Any, codec: str) -> Iterator[tuple[Fraction, av.Packet]]:
        rate = stream.sample_rate or 48000
        if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
            rate = 48000
        layout = "mono" if (stream.channels or 2) == 1 else "stereo"
        track = out.add_stream(codec, rate=rate, layout=layout)
        fmt = av.codec.Codec(codec, "w").audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)

        def timed(packets: Sequence[av.Packet]) -> Iterator[tuple[Fraction, av.Packet]]:
            for packet in packets:
                yield (packet.dts if packet.dts is not None else packet.pts) * packet.time_base, packet

        for packet in source.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                continue
            for frame in frames:
                for resampled in resampler.resample(frame):
                    yield from timed(track.encode(resampled))
        for resampled in resampler.resample(None):
            yield from timed(track.encode(resampled))
        yield from timed(track.encode(None))


# ------------------------------------------------------------------------------------------------------------
# helpers


class FrameTap:
    """Hands a reader's images to a consumer (the deblurring engine) while remembering the latest frames.

    The engine takes plain images and yields ``(index, output)`` a few frames behind what it has read; the writer
    needs each output's timestamp, and ``compare`` its blurry input. The tap keeps both for the last ``keep`` frames
    read.

    Args:
        frames: the reader (or any iterable of :class:`DecodedFrame`).
        keep: how many of the latest frames to remember (more than the engine reads ahead).
        images: also remember the images (for ``compare``); otherwise only timestamps.
    """

    def __init__(self, frames: Iterable[DecodedFrame], *, keep: int = 16, images: bool = False) -> None:
        if keep < 1:
            raise ValueError(f"keep={keep}: must be at least 1")
        self._frames, self._keep, self._images = frames, keep, images
        self._recent: OrderedDict[int, DecodedFrame] = OrderedDict()

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self._frames:
            self._recent[frame.index] = frame if self._images else frame._replace(image=_NO_IMAGE)
            while len(self._recent) > self._keep:
                self._recent.popitem(last=False)
            yield frame.image

    def frame(self, index: int) -> DecodedFrame:
        """The frame read at ``index`` (its ``image`` is empty unless ``images`` was set).

        Raises:
            KeyError: ``index`` not read yet, or more than ``keep`` frames ago.
        """
        try:
            return self._recent[index]
        except KeyError:
            raise KeyError(f"frame {index} is not among the last {self._keep} frames read") from None

    def pts(self, index: int) -> int:
        """Timestamp of the frame read at ``index``."""
        return self.frame(index).pts


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)


def compare_path(output: str | os.PathLike) -> Path:
    """Where ``compare=true`` puts the side-by-side video of ``output``: ``sharp.mp4`` -> ``sharp_compare.mp4``."""
    output = Path(output)
    return output.with_name(f"{output.stem}_compare{output.suffix}")


def side_by_side(left: np.ndarray, right: np.ndarray, *, separator: int = 4, value: int = 255) -> np.ndarray:
    """Two frames next to each other (for ``compare=true``: blurry | deblurred).

    Args:
        left: uint8 (H, W1, 3) RGB.
        right: uint8 (H, W2, 3) RGB, the same height.
        separator: width in pixels of the bar between them (0 for none).
        value: grey level of the bar, 0..255.

    Returns:
        uint8 (H, W1 + separator + W2, 3) RGB.
    """
    if left.ndim != 3 or right.ndim != 3 or left.shape[0] != right.shape[0] or left.shape[2] != right.shape[2]:
        raise ValueError(f"side_by_side needs (H, W, C) frames of one height, instead got {left.shape} {right.shape}")
    if separator < 0:
        raise ValueError(f"separator={separator}: must be 0 or more")
    bar = np.full((left.shape[0], separator, left.shape[2]), value, dtype=left.dtype)
    return np.concatenate([left, bar, right.astype(left.dtype, copy=False)], axis=1)


def write_test_video(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    fps: Fraction | int = 25,
    *,
    audio: bool = True,
    codec: str = "libx264",
    audio_codec: str = "aac",
    rotation: int = 0,
) -> Path:
    """Write a small clip (H.264 with a 440 Hz AAC tone by default) in one pass, e.g. for tests and bug reports.

    MP4 and MOV files get their index at the front (``faststart``), as streaming-ready files have it.

    Args:
        path: the file; the container follows the suffix (``.mp4``, ``.mkv``, ``.mov``, ``.avi``...).
        frames: uint8 (H, W, 3) RGB frames of one, even, size.
        fps: frame rate.
        audio: add a sine tone as long as the video.
        codec: video encoder.
        audio_codec: audio encoder.
        rotation: a display rotation flag (counter-clockwise degrees) to store, as phones do.

    Returns:
        ``path`` as a :class:`Path`.
    """
    path = Path(path)
    rate = Fraction(fps)
    faststart = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
    with av.open(str(path), "w", options=faststart) as out:
        video = out.add_stream(codec, rate=rate, options={"preset": "veryfast"} if codec == "libx264" else {})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio_codec, rate=44100, layout="mono") if audio else None
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            fmt = av.codec.Codec(audio_codec, "w").audio_formats[0].name
            samples = math.ceil(len(frames) / rate * 44100)
            t = np.arange(samples) / 44100
            tone = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
            resampler = av.AudioResampler(format=fmt, layout="mono", rate=44100)
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, start
                for resampled in resampler.resample(chunk):
                    out.mux(sound.encode(resampled))
            out.mux(sound.encode(None))
    return path
