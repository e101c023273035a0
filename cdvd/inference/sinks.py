"""Where deblurred frames go: a folder of PNG frames, or a video file. Both behind one protocol."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from cdvd.data.io import DataError, write_rgb
from cdvd.data.sources import VideoSource


class FrameSink(Protocol):
    """The outputs of one video.

    A runner asks which frames are already there (:meth:`done`), writes the others in increasing order, then
    calls :meth:`close` when the video is finished or :meth:`abort` when it failed.
    """

    @property
    def target(self) -> Path:
        """The folder or file the outputs end up in."""

    @property
    def manifest_path(self) -> Path:
        """Where the fingerprint of what made the outputs is recorded (:mod:`cdvd.inference.manifest`)."""

    def done(self) -> set[int]:
        """Indices of the frames already written by an earlier run."""

    def clear(self) -> None:
        """Remove the outputs of an earlier run (and their manifest), for ``overwrite=true``."""

    def write(self, index: int, image: np.ndarray) -> None:
        """Store output frame ``index``: uint8 (H, W, 3) RGB."""

    def close(self) -> None:
        """The video is finished: make the outputs whole under their final names."""

    def abort(self) -> None:
        """The video failed: leave nothing half-written."""


class FrameFolderSink:
    """PNG frames in one folder, named like the inputs; each written atomically, so any PNG there is whole."""

    def __init__(self, folder: Path, source: VideoSource) -> None:
        self.folder = folder
        self.source = source

    @property
    def target(self) -> Path:
        return self.folder

    @property
    def manifest_path(self) -> Path:
        return self.folder / ".cdvd-manifest.json"

    def path(self, index: int) -> Path:
        return self.folder / self.source.output_name(index)

    def done(self) -> set[int]:
        count = self.source.frame_count() or 0
        return {i for i in range(count) if self.path(i).is_file()}

    def clear(self) -> None:
        for index in self.done():
            self.path(index).unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)

    def write(self, index: int, image: np.ndarray) -> None:
        write_rgb(self.path(index), image)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class VideoFileSink:
    """An mp4 (``mp4v``) file, written to a temporary file beside it and renamed when complete."""

    def __init__(self, path: Path, source: VideoSource, fps: float) -> None:
        self.path = path
        self.source = source
        self.fps = fps
        self._tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
        self._writer: cv2.VideoWriter | None = None

    @property
    def target(self) -> Path:
        return self.path

    @property
    def manifest_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.cdvd-manifest.json")

    def done(self) -> set[int]:
        """Every frame when the file exists (it only appears whole), else none."""
        return set(range(self.source.frame_count() or 0)) if self.path.is_file() else set()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)

    def write(self, index: int, image: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise DataError(f"cannot write video file {self._tmp} (mp4v codec unavailable?)")
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._tmp.unlink(missing_ok=True)
