"""What the writer can write: containers by suffix, default encoders and quality, the destination check, the
identity of an input file, and the manifest a finished output carries in its container tag."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import av

from cdvd.atomic import probe_writable
from cdvd.errors import DataError

#: Containers :class:`SegmentedVideoWriter` writes, by suffix, with FFmpeg's muxer name.
OUTPUT_FORMATS: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}

#: Default crf per encoder (visually lossless-ish for the H.264 default; each encoder has its own scale).
DEFAULT_CRF: dict[str, int] = {"libx264": 18, "libx265": 20, "libvpx-vp9": 30, "libaom-av1": 30, "libsvtav1": 30}

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

#: x264's preset names mapped to libvpx's speed (``cpu-used``) for VP9, which has no presets.
VP9_SPEED = {"ultrafast": 5, "superfast": 5, "veryfast": 4, "faster": 4, "fast": 3, "medium": 2, "slow": 1}

#: Container tag holding the writer's manifest (fingerprint and encoder settings) in every finished file.
FINGERPRINT_TAG = "cdvd_fingerprint"


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
        probe_writable(path.parent)
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


def check_codec(container_format: str, codec: str, *, kind: str) -> str:
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
    except (av.FFmpegError, OSError):
        return None
    try:
        return json.loads(tags[FINGERPRINT_TAG])
    except (KeyError, ValueError):
        return None
