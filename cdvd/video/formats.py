"""What the writer can write: containers by suffix, default encoders and quality, the destination check, the
identity of an input file, and the manifest a finished output carries in its container tag."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from cdvd.atomic import probe_writable
from cdvd.errors import ConfigError, DataError
from cdvd.fingerprint import file_sha256

#: Containers :class:`SegmentedVideoWriter` writes, by suffix, with FFmpeg's muxer name.
OUTPUT_FORMATS: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}

#: Default crf per encoder (visually lossless-ish for the H.264 default; each encoder has its own scale).
DEFAULT_CRF: dict[str, int] = {"libx264": 18, "libx265": 20, "libvpx-vp9": 30, "libaom-av1": 30, "libsvtav1": 30}

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

#: x264's preset names mapped to libvpx's speed (``cpu-used``) for VP9, which has no presets.
VP9_SPEED = {"ultrafast": 5, "superfast": 5, "veryfast": 4, "faster": 4, "fast": 3, "medium": 2, "slow": 1}

#: 4:2:0 pixel formats and their 4:4:4 counterparts, which hold any frame size (H.264 needs even sizes in 4:2:0).
FULL_CHROMA: dict[str, str] = {"yuv420p": "yuv444p", "yuv420p10le": "yuv444p10le"}

#: The frame size of a check made before the size is known.
_PROBE_SIZE = (64, 48)

#: Container tag holding the writer's manifest (fingerprint and encoder settings) in every finished file.
FINGERPRINT_TAG = "cdvd_fingerprint"


def output_format(path: str | os.PathLike) -> str:
    """FFmpeg's muxer name for an output path's suffix.

    Raises:
        ConfigError: (a ValueError) a suffix :class:`SegmentedVideoWriter` does not write (names ``output``).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(
            f"output={path}: cannot write a {suffix or 'suffix-less'} video; use one of {sorted(OUTPUT_FORMATS)}"
        )
    return OUTPUT_FORMATS[suffix]


def writable_destination(path: str | os.PathLike) -> Path:
    """Check, before any frame is computed, that a video can be written at ``path`` (returned as a :class:`Path`):
    makes the parent folder if needed and creates and removes a small file in it.

    Raises:
        ValueError: the suffix is not a writable container (``output``).
        DataError: the path is a folder, or its folder cannot be made or written to.
    """
    path = Path(path)
    output_format(path)
    if path.is_dir():
        raise DataError(f"cannot write video {path}: it is a folder")
    try:
        probe_writable(path.parent)
    except OSError as err:
        raise DataError(f"cannot write video {path}: {err}") from err
    return path


def file_fingerprint(path: str | os.PathLike) -> dict[str, object]:
    """Identity of an input file for a writer's fingerprint: its name, size and the SHA-256 of all its bytes
    (:func:`cdvd.fingerprint.file_sha256`), so any edit, of any size anywhere in the file, changes it.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    return {"name": path.name, "size": path.stat().st_size, "sha256": file_sha256(path)}


def encoder_options(codec: str, preset: str, crf: int | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The FFmpeg encoder options of a video output: the preset (x264/x265; VP9's speed), the crf, then ``extra``."""
    opts: dict[str, str] = {}
    if codec in ("libx264", "libx265"):
        opts["preset"] = preset
    elif codec == "libvpx-vp9":
        opts.update({"deadline": "good", "cpu-used": str(VP9_SPEED.get(preset, 0)), "b": "0", "row-mt": "0"})
    if crf is not None:
        opts["crf"] = str(crf)
    opts.update({str(k): str(v) for k, v in (extra or {}).items()})
    return opts


@dataclass(frozen=True)
class Encoding:
    """Encoder settings of a video output, checked by :func:`check_encoder` (``crf`` is ``None`` for an encoder
    without a default one; ``options`` are FFmpeg's, as strings).

    Attributes:
        pad: odd frame sizes are padded to even ones (the encoder takes no odd size in any pixel format tried).
        note: one line for the user when the frame size decided the pixel format or the padding, else ``None``.
    """

    codec: str
    crf: int | None
    preset: str
    pix_fmt: str
    options: dict[str, str]
    pad: bool = False
    note: str | None = None


def _reason(err: BaseException, logs: list[tuple[int, str, str]]) -> str:
    """FFmpeg's own words for a failure: its last error message (``vp9 only supported in MP4.``), else the error."""
    said = [text.strip().rstrip(".") for level, _, text in logs if level <= av.logging.ERROR and text.strip()]
    if said:
        return said[-1]
    if isinstance(err, av.FFmpegError):
        return getattr(err, "strerror", None) or str(err)
    return str(err) if type(err) is ValueError else f"{type(err).__name__}: {err}"  # UnknownCodecError: a bare name


@contextlib.contextmanager
def _ffmpeg_errors() -> Any:
    """FFmpeg's error messages while in the block (its log is otherwise off), as (level, source, text)."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs:
            yield logs
    finally:
        av.logging.set_level(level)


@functools.lru_cache(maxsize=64)
def _trial(
    container_format: str, codec: str, pix_fmt: str, size: tuple[int, int], options: tuple[tuple[str, str], ...]
) -> tuple[str, str] | None:
    """Encode one frame of ``size`` as the writer does (a Matroska segment, here in memory) and remux it into
    ``container_format`` as :mod:`cdvd.video.join` does; ``None`` when both work, else the step that failed
    (``"encoder"`` or ``"container"``) and FFmpeg's reason."""
    width, height = size
    segment = io.BytesIO()
    try:
        with _ffmpeg_errors() as logs, _closing(av.open(segment, "w", format="matroska")) as out:
            stream = out.add_stream(codec, rate=25, options=dict(options))
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            stream.codec_context.thread_count = 1
            grey = av.VideoFrame.from_ndarray(np.full((height, width, 3), 128, np.uint8), format="rgb24")
            out.mux([*stream.encode(grey.reformat(format=pix_fmt)), *stream.encode(None)])
    except (av.FFmpegError, ValueError, OSError) as err:
        return "encoder", _reason(err, logs)
    try:
        with (
            _ffmpeg_errors() as logs,
            _closing(av.open(io.BytesIO(segment.getvalue()))) as part,
            _closing(av.open(io.BytesIO(), "w", format=container_format)) as out,
        ):
            video = out.add_stream_from_template(part.streams.video[0])
            for packet in part.demux(part.streams.video[0]):
                if packet.size:
                    packet.stream = video
                    out.mux(packet)
            out.close()  # writes the trailer: where some muxers refuse
    except (av.FFmpegError, ValueError, OSError) as err:
        return "container", _reason(err, logs)
    return None


@contextlib.contextmanager
def _closing(container: Any) -> Any:
    """``container``, closed on the way out; a failure to close after another failure does not hide it."""
    try:
        yield container
    except BaseException:
        with contextlib.suppress(Exception):
            container.close()
        raise
    container.close()


def check_encoder(
    container_format: str | None,
    codec: str | None = None,
    *,
    crf: int | None = None,
    preset: str = "medium",
    pix_fmt: str | None = None,
    segment_frames: int = 1,
    threads: int = 1,
    size: tuple[int, int] | None = None,
    codec_options: Mapping[str, str] | None = None,
) -> Encoding:
    """Check the encoder settings of a video output, before any frame is computed (the one place they are checked:
    the settings of ``cdvd-deblur`` and :class:`SegmentedVideoWriter` both ask it).

    With a container, one frame of ``size`` is encoded with these settings and remuxed into it, in memory, as
    :class:`SegmentedVideoWriter` does it, so what FFmpeg would refuse after the work (``codec=libvpx-vp9`` in
    ``.mov``) is refused now. Without ``pix_fmt``, frames are encoded in 4:2:0 (``yuv420p``); an odd size 4:2:0
    cannot hold in this encoder (H.264) gets 4:4:4, which keeps it, and where no format keeps it, frames are padded
    to even sizes; :attr:`Encoding.note` says so.

    Args:
        container_format: FFmpeg's muxer name (:func:`output_format`); ``None``: check the settings alone.
        codec: the encoder; ``None``: ``libx264`` (``libvpx-vp9`` for WebM).
        crf: ``None``: the encoder's entry in :data:`DEFAULT_CRF`.
        preset: one of :data:`X264_PRESETS` (mapped to VP9's speed).
        pix_fmt: ``None``: chosen as above.
        threads: encoder threads (0: FFmpeg's choice).
        size: (width, height) of the frames; ``None`` when not known yet.

    Raises:
        ValueError: a setting the encoder or the container cannot take; the message names the setting.
    """
    if segment_frames < 1:
        raise ValueError(f"segment_frames={segment_frames}: must be at least 1")
    if threads < 0:
        raise ValueError(f"threads={threads}: must be 0 (automatic) or more")
    codec = codec or ("libvpx-vp9" if container_format == "webm" else "libx264")
    try:
        encoder = av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError) as err:  # UnknownCodecError is a ValueError
        raise ValueError(f"codec={codec}: no such encoder in this FFmpeg build (null: H.264)") from err
    if encoder.type != "video":
        raise ValueError(f"codec={codec}: not a video encoder (e.g. libx264, libx265, libvpx-vp9)")
    if preset not in X264_PRESETS:
        raise ValueError(f"preset={preset}: expected one of {', '.join(X264_PRESETS)}")
    crf = DEFAULT_CRF.get(codec) if crf is None else int(crf)
    top = 51 if codec in ("libx264", "libx265") else 63
    if crf is not None and not 0 <= crf <= top:
        raise ValueError(f"crf={crf}: must be in [0, {top}] for {codec} (lower is better; 0 is lossless)")
    formats = [f.name for f in encoder.video_formats or []]
    if pix_fmt is not None and pix_fmt not in formats:
        raise ValueError(f"pix_fmt={pix_fmt}: {codec} cannot encode it")
    first = pix_fmt or ("yuv420p" if "yuv420p" in formats or not formats else formats[0])
    options = encoder_options(codec, preset, crf, codec_options)
    settings = Encoding(codec, crf, preset, first, options)
    if container_format is None:
        return settings
    width, height = size or _PROBE_SIZE
    odd = width % 2 or height % 2
    candidates = [first] + ([FULL_CHROMA[first]] if pix_fmt is None and odd and first in FULL_CHROMA else [])
    key = tuple(sorted(options.items()))
    failed = None
    for fmt in candidates:
        failed = _trial(container_format, codec, fmt, (width, height), key)
        if failed is None:
            note = _size_note(codec, width, height, first, fmt) if fmt != first else None
            return dataclasses.replace(settings, pix_fmt=fmt, note=note)
        if failed[0] == "container":
            raise ValueError(_container_refusal(container_format, codec, encoder.canonical_name, failed[1]))
    if odd and _trial(container_format, codec, first, (width + width % 2, height + height % 2), key) is None:
        return dataclasses.replace(settings, pad=True, note=_size_note(codec, width, height, first, None))
    assert failed is not None
    raise ValueError(
        f"codec={codec}: cannot encode {width}x{height} {first} frames with crf={crf} preset={preset} ({failed[1]})"
    )


def _size_note(codec: str, width: int, height: int, asked: str, used: str | None) -> str:
    """The line that says what an odd frame size made of the video: another pixel format, or padding."""
    if used is not None:
        return (
            f"{width}x{height} frames: {codec} needs even sizes in {asked}, so they are encoded in {used} (4:4:4), "
            "which keeps their size; some players (web browsers, QuickTime) cannot play it "
            "(codec=libvpx-vp9 keeps odd sizes in 4:2:0)"
        )
    return (
        f"{width}x{height} frames: {codec} cannot encode odd sizes in {asked}, so the video will be "
        f"{width + width % 2}x{height + height % 2} (last column/row repeated); codec=libvpx-vp9 keeps the size"
    )


def _container_refusal(container_format: str, codec: str, name: str, reason: str) -> str:
    suffixes = "/".join(s for s, f in OUTPUT_FORMATS.items() if f == container_format)
    others = {s: f for s, f in OUTPUT_FORMATS.items() if f != container_format}
    takers = "/".join(s for s, f in others.items() if _trial(f, codec, "yuv420p", _PROBE_SIZE, ()) is None)
    if takers:
        return f"codec={codec}: a {suffixes} file cannot hold {name} video ({reason}); write {takers}, or another codec"
    return (
        f"codec={codec}: cannot write {name} video into a {suffixes} file, nor any other ({reason}); pass another codec"
    )


def can_copy(container_format: str, stream: av.AudioStream) -> bool:
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
        return json.loads(tags[FINGERPRINT_TAG])
    except (av.FFmpegError, OSError, KeyError, ValueError):
        return None
