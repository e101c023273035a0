"""Video files through PyAV (FFmpeg's libraries): probing, frame-by-frame reading with integrity checks, and a
resumable, atomic writer that joins independently encoded segments and carries the sound track over.

Modules: :mod:`~cdvd.video.probe` (what a container says), :mod:`~cdvd.video.reader` (upright RGB frames, with
integrity warnings), :mod:`~cdvd.video.formats` (what can be written where: :func:`check_encoder`, asked of FFmpeg;
the destination check; input identity), :mod:`~cdvd.video.lock` (one run at a time per output),
:mod:`~cdvd.video.writer` (:class:`SegmentedVideoWriter`, with :mod:`~cdvd.video.segments` and
:mod:`~cdvd.video.join`), :mod:`~cdvd.video.compare` (``compare=true``), :mod:`~cdvd.video.testclip`.

Nothing here imports :mod:`cdvd.data`, :mod:`cdvd.inference` or :mod:`cdvd.cli`.
"""

from cdvd.video.compare import FrameTap, compare_path, side_by_side
from cdvd.video.formats import (
    DEFAULT_CRF,
    FINGERPRINT_TAG,
    OUTPUT_FORMATS,
    file_fingerprint,
    output_format,
    writable_destination,
    written_with,
)
from cdvd.video.probe import VIDEO_SUFFIXES, AudioInfo, VideoInfo, is_video_path, probe_video, upright
from cdvd.video.reader import DecodedFrame, VideoReader, read_video, read_video_frames
from cdvd.video.testclip import write_test_video
from cdvd.video.writer import SegmentedVideoWriter

__all__ = [
    "DEFAULT_CRF",
    "FINGERPRINT_TAG",
    "OUTPUT_FORMATS",
    "VIDEO_SUFFIXES",
    "AudioInfo",
    "DecodedFrame",
    "FrameTap",
    "SegmentedVideoWriter",
    "VideoInfo",
    "VideoReader",
    "compare_path",
    "file_fingerprint",
    "is_video_path",
    "output_format",
    "probe_video",
    "read_video",
    "read_video_frames",
    "side_by_side",
    "upright",
    "writable_destination",
    "write_test_video",
    "written_with",
]
