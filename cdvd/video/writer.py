"""A resumable, atomic video writer (:class:`SegmentedVideoWriter`): independently encoded segments in a work folder
beside the output (:mod:`cdvd.video.segments`), remuxed with the sound track into the output at the end
(:mod:`cdvd.video.join`), which is renamed into place only when whole.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from cdvd.atomic import OWNER_FILE, commit, mark_owned
from cdvd.errors import DataError
from cdvd.video.formats import check_encoder, output_format, written_with
from cdvd.video.join import mux_segments
from cdvd.video.lock import OutputLock
from cdvd.video.probe import VideoInfo
from cdvd.video.segments import (
    MANIFEST,
    PARTS_KIND,
    Segment,
    complete_segments,
    even,
    parts_owned,
    segment_name,
    write_json,
)

logger = logging.getLogger(__name__)

_MANIFEST_VERSION = 1


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
    writes all this to a temporary file in the work folder, renames it onto the output and removes the folder.

    Determinism: every segment starts with a keyframe in a fresh encoder, and the encoder runs with ``threads``
    threads (1 by default; x264 and libvpx give the same bitstream for the same frames, settings and thread count),
    so a resumed write is bit-identical to an uninterrupted one. ``threads`` is part of the manifest.

    Colour: frames are converted to the encoder's YUV format with the BT.709 matrix (limited range) and tagged so.

    Args:
        final_path: the output file; its suffix picks the container (:data:`OUTPUT_FORMATS`).
        info: the source video (frame rate and time base of the output timestamps).
        codec, crf, preset, pix_fmt, codec_options: the encoder settings, as
            :func:`cdvd.video.formats.check_encoder` takes and completes them (its odd-size fallback logged once).
        segment_frames: frames per segment (the resume granularity; each adds a keyframe).
        threads: encoder threads (0: FFmpeg's choice; then resuming on another machine may differ in bits).
        audio_source: file whose first audio track goes into the output; ``None`` for none.
        fingerprint: JSON-serialisable identity of what makes the pixels (input, checkpoint hash, settings).
        size: (width, height) of the frames; ``None``: the size ``info`` states.

    Raises:
        ValueError: a setting the container or FFmpeg cannot take (the message names it), checked by
            :func:`cdvd.video.formats.check_encoder` before any frame.
    """

    def __init__(
        self,
        final_path: str | os.PathLike,
        *,
        info: VideoInfo,
        codec: str | None = None,
        crf: int | None = None,
        preset: str = "medium",
        pix_fmt: str | None = None,
        segment_frames: int = 250,
        threads: int = 1,
        audio_source: str | os.PathLike | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        codec_options: Mapping[str, str] | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.final_path = Path(final_path)
        self.format = output_format(self.final_path)
        self.size = size or ((info.width, info.height) if info.width > 0 and info.height > 0 else None)
        encoding = check_encoder(self.format, codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
                                 segment_frames=segment_frames, threads=threads, size=self.size,
                                 codec_options=codec_options)  # fmt: skip
        if encoding.note:
            (logger.warning if encoding.pad else logger.info)("%s: %s", self.final_path, encoding.note)
        self.codec, self.crf, self.preset, self.pix_fmt = encoding.codec, encoding.crf, preset, encoding.pix_fmt
        self.options, self._pad = encoding.options, encoding.pad or self.size is None
        self.segment_frames, self.threads = segment_frames, threads
        self.info = info
        self.audio_source = Path(audio_source) if audio_source is not None else None
        self.fingerprint = json.loads(json.dumps(dict(fingerprint or {}), sort_keys=True))
        self.work_dir = self.final_path.with_name(f".{self.final_path.name}.parts")
        # frame timestamps of the segment encoder: the source's nominal rate (it goes into the bitstream's timing
        # info) where millisecond timestamps of the Matroska segments keep frames apart, else 25
        self._segment_rate = Fraction(info.frame_rate) if 0 < info.frame_rate <= 500 else Fraction(25)
        self._step = max(1, round(1 / (info.frame_rate * info.time_base))) if info.frame_rate > 0 else 1
        self._segments: list[Segment] = []
        self._open: dict[str, Any] | None = None  # the segment being written
        self._size: tuple[int, int] | None = None
        self._last_pts: int | None = None
        self._finished = False
        self._loaded = False  # the work folder is looked at on first use, so that output_is_current() touches nothing
        self._lock = OutputLock(self.final_path)

    def claim(self) -> None:
        """Take the output's lock (:class:`cdvd.video.lock.OutputLock`) until :meth:`finish` or :meth:`abort`, as the
        first :meth:`frames_done` or :meth:`write` does: a second writer of the output is refused with a DataError.
        """
        self._lock.acquire()

    def _ensure_loaded(self) -> None:
        self.claim()
        if not self._loaded:
            self._guard(self._load)
            self._loaded = True

    # -- settings and work folder

    def manifest(self) -> dict[str, Any]:
        """What this writer's outputs depend on: the caller's fingerprint and the encoder settings (JSON types)."""
        encoder = {
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "threads": self.threads,
            "options": self.options,
            "segment_frames": self.segment_frames,
            "frame_rate": str(self.info.frame_rate),
            "time_base": str(self.info.time_base),
        }
        return {"version": _MANIFEST_VERSION, "fingerprint": self.fingerprint, "encoder": encoder}

    def output_is_current(self) -> bool:
        """Whether the output file exists, whole, and was written with this writer's :meth:`manifest` (then a
        runner can skip the video)."""
        return self.final_path.is_file() and written_with(self.final_path) == self.manifest()

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run ``fn``, turning OS and FFmpeg write errors into a DataError that names the output."""
        try:
            return fn(*args)
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
            if not parts_owned(self.work_dir, old):  # never clear a folder the project did not make
                raise DataError(f"cannot write video {self.final_path}: {self.work_dir} exists, not made by cdvd")
            if old != self.manifest():
                if old is not None:
                    logger.info("%s: parts of an earlier run with other inputs or settings removed", self.final_path)
                shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        mark_owned(self.work_dir, PARTS_KIND)
        if not manifest_path.exists():
            write_json(manifest_path, self.manifest())
        self._segments = complete_segments(self.work_dir, self.segment_frames)
        keep = {MANIFEST, OWNER_FILE, *(segment_name(s.index, e) for s in self._segments for e in (".json", ".mkv"))}
        for entry in self.work_dir.iterdir():
            if entry.name not in keep:  # partial segments, temp files, segments after a gap
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if self._segments:
            self._size = (self._segments[0].width, self._segments[0].height)
            self._last_pts = self._segments[-1].pts[-1]
            logger.info("%s: resuming after %d frames", self.final_path, sum(s.frames for s in self._segments))

    # -- writing frames

    def frames_done(self) -> int:
        """Frames already in complete segments (from an earlier, interrupted run with the same manifest).

        The first call (or the first :meth:`write`) opens the work folder: adopts matching parts, removes others.
        """
        self._ensure_loaded()
        return sum(s.frames for s in self._segments)

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode the next frame.

        Args:
            image: uint8 (H, W, 3) RGB of the writer's ``size`` (padded to even where the encoder needs it).
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
        image = even(image) if self._pad else image
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
        seg = self._open or self._start_segment()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = frame.reformat(format=self.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
        frame.pts = len(seg["pts"])
        frame.time_base = 1 / self._segment_rate
        seg["pts"].append(pts)
        self._mux_segment_packets(seg, seg["stream"].encode(frame))
        if len(seg["pts"]) == self.segment_frames:
            self._close_segment()

    def _start_segment(self) -> dict[str, Any]:
        assert self._size is not None
        index = len(self._segments)
        tmp = self.work_dir / segment_name(index, ".mkv.tmp")
        container = av.open(str(tmp), "w", format="matroska")
        stream = container.add_stream(self.codec, rate=self._segment_rate, options=dict(self.options))
        stream.width, stream.height = self._size
        stream.pix_fmt = self.pix_fmt
        ctx = stream.codec_context
        ctx.time_base = 1 / self._segment_rate
        ctx.thread_count = self.threads
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 1, 1, 1, 1  # BT.709, limited range
        self._open = {"index": index, "tmp": tmp, "container": container, "stream": stream, "pts": [], "packets": []}
        return self._open

    def _mux_segment_packets(self, seg: dict[str, Any], packets: Sequence[av.Packet]) -> None:
        for packet in packets:
            # the encoder's timestamps in segment frame units, taken before muxing rounds them to milliseconds
            unit = packet.time_base * self._segment_rate
            pts = round(packet.pts * unit)
            dts = pts if packet.dts is None else round(packet.dts * unit)
            seg["packets"].append((pts, dts))
            seg["container"].mux(packet)

    def _close_segment(self) -> None:
        seg, self._open = self._open, None
        assert seg is not None and self._size is not None
        tmp: Path = seg["tmp"]
        media = tmp.with_suffix("")  # seg_000000.mkv
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
            commit(tmp, media)
            record = {
                "pts": seg["pts"],
                "packets": seg["packets"],
                "width": self._size[0],
                "height": self._size[1],
                "bytes": media.stat().st_size,
            }
            write_json(media.with_suffix(".json"), record)  # the segment counts as complete from here on
        except BaseException:
            for path in (tmp, media):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        self._segments.append(Segment(seg["index"], seg["pts"], seg["packets"], *self._size))
        logger.debug("%s: segment %d complete (%d frames)", self.final_path, seg["index"], len(seg["pts"]))

    # -- finishing

    def finish(self) -> Path:
        """Join the segments and the audio into the output, atomically, and remove the work folder; returns the output.

        Raises:
            DataError: no frame was written, or the output cannot be written (nothing is left under its name, and
                the complete segments stay for a later run).
        """
        if self._finished:
            return self.final_path
        self._ensure_loaded()
        try:
            if self._open is not None:
                self._guard(self._close_segment)
            total = self.frames_done()
            if total == 0:
                raise DataError(f"cannot write video {self.final_path}: no frames were written")
            self._guard(self._join, total)
            self._finished = True
            shutil.rmtree(self.work_dir, ignore_errors=True)
        finally:
            self._lock.release()
        logger.debug("%s: %d frames written", self.final_path, total)
        return self.final_path

    def abort(self) -> None:
        """Stop without an output: drop the segment being written; keep the complete ones for a later run. A work
        folder left without a complete segment (nothing decoded, or the first segment failed) holds nothing useful:
        removed. Gives the output's lock back (and touches nothing where another run holds it). Never raises for a
        missing file."""
        seg, self._open = self._open, None
        if seg is not None:
            with contextlib.suppress(Exception):
                seg["container"].close()
            with contextlib.suppress(OSError):
                seg["tmp"].unlink()
        try:
            self.claim()
        except DataError:
            return  # another run writes the output now: its parts are not ours to remove
        try:
            if self._loaded and not self._segments:
                shutil.rmtree(self.work_dir, ignore_errors=True)
        finally:
            self._lock.release()

    def _join(self, total: int) -> None:
        pts_all, step = [p for s in self._segments for p in s.pts], self._step

        def at(index: int) -> int:  # output time of frame ``index``; one step a frame before the first, after the last
            inside = min(max(index, 0), len(pts_all) - 1)
            return pts_all[inside] + (index - inside) * step

        # the joined file is made inside the work folder (a kill leaves nothing beside the output; the next run
        # removes it with the other leftovers) and renamed onto the output, on the same file system, when whole
        tmp = self.work_dir / f"output.tmp{self.final_path.suffix}"
        try:
            mux_segments(
                tmp,
                final_path=self.final_path,
                container_format=self.format,
                manifest=self.manifest(),
                work_dir=self.work_dir,
                segments=self._segments,
                time_base=self.info.time_base,
                at=at,
                total=total,
                audio_source=self.audio_source,
            )
            commit(tmp, self.final_path)
        finally:
            tmp.unlink(missing_ok=True)
