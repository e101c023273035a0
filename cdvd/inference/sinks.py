"""Where deblurred frames go: a folder of PNG frames, or a video file (PyAV, resumable). Both behind one protocol.

Every sink knows the fingerprint its outputs must record (:mod:`cdvd.inference.manifest`: weights, input, pixel
settings, and for a video file the encoder settings), what an earlier run recorded for the outputs already there,
and which frames those outputs hold, so that the runner resumes only work made the same way.

With ``compare``, each sink also writes the blurry input beside the deblurred frame (:func:`cdvd.video.side_by_side`):
a folder ``<video>_compare/`` of PNGs beside the video's folder, or ``<name>_compare.<ext>`` beside a video file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cdvd.atomic import remove_stale_temp_files
from cdvd.data.io import image_size, write_rgb
from cdvd.data.sources import DEFAULT_FPS, VideoSource
from cdvd.errors import ConfigError
from cdvd.inference.manifest import Manifest, read_manifest, write_manifest
from cdvd.video import DecodedFrame, SegmentedVideoWriter, VideoInfo, compare_path, side_by_side, written_with
from cdvd.video.compare import side_by_side_size
from cdvd.video.segments import MANIFEST

MANIFEST_NAME = ".cdvd-manifest.json"


class FrameSink(Protocol):
    """The outputs of one video.

    A runner checks :meth:`recorded` against :attr:`fingerprint` (refusing, or calling :meth:`clear`), asks which
    frames are already there (:meth:`done`, or :meth:`complete` for all of them), calls :meth:`start`, writes the
    other frames in increasing order, then calls :meth:`close` when the video is finished or :meth:`abort` when it
    failed.
    """

    #: The folder or file the outputs end up in.
    target: Path
    #: What the outputs of this run record: the runner's fingerprint and the sink's own settings.
    fingerprint: dict[str, Any]

    def outputs(self) -> list[tuple[Path, str]]:
        """Every file this sink will write, each with the input it is made from (in words), for the runner to
        refuse a plan in which two inputs map to one file."""

    def recorded(self) -> dict[str, Any] | None:
        """What made the outputs already there: ``None`` when there are none, ``{}`` when they have no record."""

    def done(self) -> set[int]:
        """Indices of the frames already written by an earlier run (made as :attr:`fingerprint` says)."""

    def complete(self) -> bool:
        """Whether every output is already there and whole (nothing to compute)."""

    def clear(self) -> None:
        """Remove the outputs of an earlier run (and their records), for ``overwrite=true``: every file its record
        lists and every file this run will write, nothing else."""

    def start(self) -> None:
        """Record :attr:`fingerprint` beside the outputs, before the first frame is written."""

    def write(self, index: int, image: np.ndarray, source: DecodedFrame) -> None:
        """Store output frame ``index``: uint8 (H, W, 3) RGB; ``source`` is the input frame (its timestamp, and its
        image for ``compare``)."""

    def close(self) -> None:
        """The video is finished: make the outputs whole under their final names."""

    def abort(self) -> None:
        """The video failed: leave nothing half-written under a final name."""


class FrameFolderSink:
    """PNG frames in one folder, named like the inputs; each written atomically, so any PNG there is whole.

    The folder's manifest records the fingerprint and the frames written (``outputs``); :meth:`close` brings the
    list up to date, and a run that replaces the outputs (:meth:`clear`) removes the frames an earlier run listed,
    so that after a run the folder holds the frames its manifest lists and no others of the project's.
    ``fingerprint`` (what the frames depend on) is recorded in ``folder/.cdvd-manifest.json``; ``compare`` also
    writes side-by-side (blurry | deblurred) PNGs into ``<folder>_compare/``.
    """

    def __init__(
        self, folder: Path, source: VideoSource, fingerprint: dict[str, Any] | None = None, *, compare: bool = False
    ) -> None:
        self.folder = self.target = folder
        self.source = source
        self.fingerprint = dict(fingerprint or {})
        self.compare = compare
        self.compare_folder = folder.with_name(f"{folder.name}_compare")
        self._records: dict[Path, Manifest | None] = {}
        self._written: set[int] = set()

    def folders(self) -> list[Path]:
        """The output folder, and the compare folder with ``compare``."""
        return [self.folder, self.compare_folder] if self.compare else [self.folder]

    def path(self, index: int, folder: Path | None = None) -> Path:
        return (folder or self.folder) / self.source.output_name(index)

    def _present(self, folder: Path) -> set[int]:
        count = self.source.frame_count() or 0
        return {i for i in range(count) if self.path(i, folder).is_file()}

    def outputs(self) -> list[tuple[Path, str]]:
        planned = []
        for folder in self.folders():
            side = " (its compare=true side-by-side frames)" if folder == self.compare_folder else ""
            files = self.source.frame_files
            for index in range(self.source.frame_count() or 0):
                origin = str(files[index]) if files is not None else f"frame {index} of {self.source.path}"
                planned.append((self.path(index, folder), origin + side))
            planned.append((folder / MANIFEST_NAME, f"{self.source.path}{side}"))
        return planned

    def _record(self, folder: Path) -> Manifest | None:
        """The manifest in ``folder`` (read once; DataError when something else than a file is there)."""
        if folder not in self._records:
            self._records[folder] = read_manifest(folder / MANIFEST_NAME)
        return self._records[folder]

    def recorded(self) -> dict[str, Any] | None:
        found = []
        for folder in self.folders():
            manifest = self._record(folder)
            record = None if manifest is None else manifest.fingerprint
            if record is None and self._present(folder):
                record = {}  # frames without a record of what made them
            if record is not None and record != self.fingerprint:
                return record
            found.append(record)
        return next((r for r in found if r is not None), None)

    def _listed(self, folder: Path) -> set[str]:
        """The frames an earlier run's manifest in ``folder`` says it wrote: its ``outputs``, or (a version 1
        manifest, which listed none) the names it made from the input frames it records. Plain PNG names in the
        folder only: a record is never a way to remove anything else."""
        manifest = self._record(folder)
        if manifest is None:
            return set()
        names = manifest.outputs
        if names is None:
            source = manifest.fingerprint.get("input")
            frames = source.get("frames") if isinstance(source, dict) else None
            names = [Path(str(n)).stem + ".png" for n in frames] if isinstance(frames, list) else []
        return {n for n in names if Path(n).name == n and n.endswith(".png") and not n.startswith(".")}

    def done(self) -> set[int]:
        done = self._present(self.folder)
        if self.compare:
            done &= self._present(self.compare_folder)
        return done

    def complete(self) -> bool:
        count = self.source.frame_count()
        return count is not None and len(self.done()) >= count

    def clear(self) -> None:
        for folder in self.folders():
            names = self._listed(folder) | {self.path(i, folder).name for i in self._present(folder)}
            for name in names:
                path = folder / name
                if path.is_file() or path.is_symlink():
                    path.unlink()
            (folder / MANIFEST_NAME).unlink(missing_ok=True)
            self._records[folder] = None

    def _names(self, folder: Path, *, present: bool) -> list[str]:
        """The frames of this run: all of them, or (``present``) those in ``folder`` now."""
        indices = set(range(self.source.frame_count() or 0)) | self._written
        return [self.path(i, folder).name for i in indices if not present or self.path(i, folder).is_file()]

    def start(self) -> None:
        for folder in self.folders():
            # a run killed inside a frame's write (kill -9, a power cut) left that frame's hidden partial file
            remove_stale_temp_files(folder)
            write_manifest(folder / MANIFEST_NAME, self.fingerprint, self._names(folder, present=False))

    def write(self, index: int, image: np.ndarray, source: DecodedFrame) -> None:
        path = self.path(index)
        self._written.add(index)
        if not path.is_file():  # written by an earlier run (only its compare frame was missing)
            write_rgb(path, image)
        if self.compare:
            side = self.path(index, self.compare_folder)
            if not side.is_file():
                write_rgb(side, side_by_side(source.image, image))

    def close(self) -> None:
        # the frames there now: a video file may decode to more or fewer frames than its container said
        for folder in self.folders():
            write_manifest(folder / MANIFEST_NAME, self.fingerprint, self._names(folder, present=True))

    def abort(self) -> None:
        pass


@dataclass(frozen=True)
class VideoOutputOptions:
    """How a video file output is encoded (the ``cdvd-deblur`` settings of the same names).

    Attributes:
        codec: the video encoder; ``None``: H.264 (``libx264``; VP9 for ``.webm``).
        crf: constant-quality level; ``None``: the encoder's default (18 for H.264).
        preset: x264/x265 speed preset (VP9: mapped to its speed).
        audio: copy the input's sound track (re-encoded where the container cannot hold it).
        segment_frames: frames per resumable segment.
        fps: output frame rate; ``None``: the input video's timestamps (25 fps for frame folders).
    """

    codec: str | None = None
    crf: int | None = None
    preset: str = "medium"
    audio: bool = True
    segment_frames: int = 250
    fps: float | None = None


def _flat(manifest: Any) -> dict[str, Any]:
    """A writer's manifest as one flat fingerprint (the caller's keys, ``encoder``, ``writer``)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("fingerprint"), dict):
        return {}
    return {**manifest["fingerprint"], "encoder": manifest.get("encoder"), "writer": manifest.get("version")}


def _source_info(source: VideoSource, fps: float | None) -> tuple[VideoInfo, bool]:
    """The output's timing (and size) for ``source``; whether frames are retimed by index at ``fps``."""
    info = source.info()
    if info is not None and fps is None:
        return info, False
    rate = Fraction(fps or DEFAULT_FPS).limit_denominator(100000)
    if info is None:
        files = source.frame_files or []
        height, width = image_size(files[0]) if files else (0, 0)
        info = VideoInfo(source.path, width, height, rate, 1 / rate, len(files), len(files) / rate, "png")
    return dataclasses.replace(info, frame_rate=rate, time_base=1 / rate), True


class VideoFileSink:
    """A video file (any container of :data:`cdvd.video.OUTPUT_FORMATS`) through
    :class:`cdvd.video.SegmentedVideoWriter`: H.264 by default, the input's timestamps and sound track, written in
    resumable segments and joined atomically under the final name; with ``compare`` a side-by-side video too
    (``<name>_compare.<ext>``, blurry | deblurred). ``fingerprint`` (what the pixels depend on: weights, input,
    settings) is stored in the file with the encoder ``options``, so a rerun knows whether the file (or the segments
    of an interrupted run) can be kept.

    Raises:
        ConfigError: an encoder setting the container or FFmpeg cannot take (named).
    """

    def __init__(
        self,
        path: Path,
        source: VideoSource,
        fingerprint: dict[str, Any] | None = None,
        options: VideoOutputOptions | None = None,
        *,
        compare: bool = False,
    ) -> None:
        self.target = path
        self.source = source
        options = options or VideoOutputOptions()
        info, self._retime = _source_info(source, options.fps)
        audio = source.path if options.audio and source.is_video_file else None
        base = {**(fingerprint or {}), "audio": audio is not None}
        outputs = [(path, None), (compare_path(path), side_by_side_size(info.width, info.height))]
        try:
            self.writers = [
                SegmentedVideoWriter(
                    target,
                    info=info,
                    codec=options.codec,
                    crf=options.crf,
                    preset=options.preset,
                    segment_frames=options.segment_frames,
                    audio_source=audio,
                    fingerprint=base,
                    size=size,
                )
                for target, size in outputs[: 2 if compare else 1]
            ]
        except ValueError as err:
            raise ConfigError(str(err)) from err
        self.fingerprint = _flat(self.writers[0].manifest())
        self._starts: dict[int, int] | None = None  # writer position -> frames it already holds

    @staticmethod
    def _recorded_by(writer: SegmentedVideoWriter) -> dict[str, Any] | None:
        if writer.final_path.exists():
            return _flat(written_with(writer.final_path))
        manifest = writer.work_dir / MANIFEST
        if manifest.is_file():  # the segments of an interrupted run
            try:
                return _flat(json.loads(manifest.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                return {}
        return None

    def outputs(self) -> list[tuple[Path, str]]:
        sides = ["", " (its compare=true side-by-side video)"]
        return [(w.final_path, f"{self.source.path}{side}") for w, side in zip(self.writers, sides, strict=False)]

    def recorded(self) -> dict[str, Any] | None:
        for writer in self.writers:  # one run per output: locked before its earlier parts are read or removed
            writer.claim()
        found = [self._recorded_by(w) for w in self.writers]
        for record in found:
            if record is not None and record != self.fingerprint:
                return record
        return next((r for r in found if r is not None), None)

    def _needed(self) -> dict[int, int]:
        """Frames already held by each writer whose file is not there yet (its complete segments)."""
        if self._starts is None:
            self._starts = {k: w.frames_done() for k, w in enumerate(self.writers) if not w.output_is_current()}
        return self._starts

    def complete(self) -> bool:
        return all(w.output_is_current() for w in self.writers)

    def done(self) -> set[int]:
        needed = self._needed()
        return set(range(min(needed.values()) if needed else self.source.frame_count() or 0))

    def clear(self) -> None:
        for writer in self.writers:
            writer.final_path.unlink(missing_ok=True)
            shutil.rmtree(writer.work_dir, ignore_errors=True)
        self._starts = None

    def start(self) -> None:
        self._needed()

    def write(self, index: int, image: np.ndarray, source: DecodedFrame) -> None:
        pts = None if self._retime else source.pts
        for k, start in self._needed().items():
            if index >= start:
                self.writers[k].write(side_by_side(source.image, image) if k == 1 else image, pts)

    def close(self) -> None:
        for k in self._needed():
            self.writers[k].finish()

    def abort(self) -> None:
        for writer in self.writers:
            writer.abort()
