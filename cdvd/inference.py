"""Deblurring whole videos with a CDVD-TSP network: frame sources, the engine, sinks.

Every frame of a video gets an output of the input's size. The 5-frame window of frame ``t`` reads its
neighbours by reflection (a video ``[1, 2, 3, 4, 5]`` is read as ``[3, 2, 1, 2, 3, 4, 5, 4, 3]``, as the 2021
fork does); frame sizes that are not multiples of 4 are padded (:func:`cdvd.models.padding.pad_to_multiple`)
and the output cropped back.

Two ways to run the cascade, giving the same frames:

- streaming (default): over the reflected sequence ``E``, every stage-1 result
  ``R_p = stage(E[p-1], E[p], E[p+1])`` is computed once and ``out_t = stage(R[t-1], R[t], R[t+1])``:
  4 flow estimates and 2 reconstruction passes per output frame instead of 8 and 4. The window ``t`` of the
  per-window path has ``R1 = R_{t-1}``, ``R2 = R_t``, ``R3 = R_{t+1}`` exactly, including at the borders
  (position -1 holds frame 1 between frames 2 and 0, so its ``R`` differs from that of position 1, and both
  are kept). Only three input frames and three ``R`` are held, whatever the video's length.
- per window (``streaming=False``): every 5-frame window through ``model(clip)``, as the original code did.

Tiling (for frames too large for memory) runs the whole cascade on overlapping spatial tiles, each tile with
its own stage-1 results, and blends the outputs with a linear ramp over the overlap. Flow is estimated per
tile, so tiled output differs slightly from untiled output (see ``tests/test_inference.py`` for the measured
figure).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from cdvd.data.clips import window_indices
from cdvd.data.io import VIDEO_EXTENSIONS, DataError, has_frames, list_frames, natural_key, write_rgb
from cdvd.data.layouts import detect_layout, discover_videos
from cdvd.metrics import quantize
from cdvd.models.cdvd_tsp import CDVDTSP
from cdvd.models.padding import crop_to, pad_to_multiple

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
WINDOW = 5
HALF = WINDOW // 2
DEFAULT_FPS = 25.0


# ------------------------------------------------------------------------------------------------------------
# devices and precision


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is a clear ``ValueError``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device} but no CUDA GPU is available; use device=cpu or device=auto")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda[:N]") from err


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The ``torch.autocast`` context of ``precision`` (``fp32``: none). fp16 needs CUDA.

    Raises:
        ValueError: an unknown precision, or fp16 on a device other than CUDA.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision=fp16 needs a CUDA device (got {device.type}); use bf16 or fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------------------------------------
# border reflection


def extended_positions(n_frames: int) -> list[int]:
    """Frame indices of the reflected sequence, positions -2 .. n_frames + 1.

    ``[0, 1, 2, 3, 4]`` gives ``[2, 1, 0, 1, 2, 3, 4, 3, 2]``.
    """
    start = window_indices(0, WINDOW, n_frames)[:HALF]
    end = window_indices(n_frames - 1, WINDOW, n_frames)[HALF + 1 :]
    return start + list(range(n_frames)) + end


# ------------------------------------------------------------------------------------------------------------
# tiling


@dataclass(frozen=True)
class TileSpec:
    """Overlapping spatial tiles: ``size`` pixels a side, ``overlap`` pixels shared by neighbours.

    Both multiples of 4 (the reconstruction net halves the size twice), ``0 <= overlap < size``.
    """

    size: int = 512
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 4:
            raise ValueError(f"tile size must be a multiple of 4 and at least 8, instead got {self.size}")
        if self.overlap < 0 or self.overlap % 4 or self.overlap >= self.size:
            raise ValueError(
                f"tile overlap must be a multiple of 4 in [0, size), instead got {self.overlap} (size {self.size})"
            )


def _tile_starts(length: int, size: int, overlap: int) -> list[int]:
    if length <= size:
        return [0]
    step = size - overlap
    starts = list(range(0, length - size, step))
    return [*starts, length - size]


def tile_regions(height: int, width: int, tile: TileSpec | None) -> list[tuple[slice, slice]]:
    """(rows, columns) slices of the tiles covering a (height, width) frame; one region without tiling."""
    if tile is None:
        return [(slice(0, height), slice(0, width))]
    rows = [slice(s, min(s + tile.size, height)) for s in _tile_starts(height, tile.size, tile.overlap)]
    cols = [slice(s, min(s + tile.size, width)) for s in _tile_starts(width, tile.size, tile.overlap)]
    return [(r, c) for r in rows for c in cols]


def _ramp(length: int, start: int, stop: int, total: int, overlap: int) -> torch.Tensor:
    """1-D blending weight of a tile spanning [start, stop) of ``total``: rises over ``overlap`` pixels at
    inner edges, flat at the frame's edges. Never zero, so every pixel is covered."""
    weight = torch.ones(length, dtype=torch.float64)
    if overlap > 0:
        ramp = (torch.arange(length, dtype=torch.float64) + 1.0) / (overlap + 1.0)
        if start > 0:
            weight = torch.minimum(weight, ramp)
        if stop < total:
            weight = torch.minimum(weight, ramp.flip(0))
    return weight


def tile_weights(height: int, width: int, regions: Sequence[tuple[slice, slice]], overlap: int) -> list[torch.Tensor]:
    """Per-region (h, w) blending weights, normalised so that they sum to 1 at every pixel."""
    weights = []
    total = torch.zeros(height, width, dtype=torch.float64)
    for rows, cols in regions:
        wy = _ramp(rows.stop - rows.start, rows.start, rows.stop, height, overlap)
        wx = _ramp(cols.stop - cols.start, cols.start, cols.stop, width, overlap)
        w = wy[:, None] * wx[None, :]
        weights.append(w)
        total[rows, cols] += w
    return [(w / total[rows, cols]).float() for w, (rows, cols) in zip(weights, regions, strict=True)]


# ------------------------------------------------------------------------------------------------------------
# the engine


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) float RGB in [0, 1] -> (H, W, 3) uint8 (clip, x255, round): the levels the metrics score."""
    return quantize(frame).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


FrameLike = np.ndarray | torch.Tensor


@dataclass
class _Entry:
    position: int
    real: bool
    regions: list[torch.Tensor] | None


class VideoDeblurrer:
    """Runs a CDVD-TSP network over whole videos, one output frame per input frame.

    Args:
        model: the network (moved to ``device`` and put in eval mode).
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        precision: ``fp32``, ``bf16`` (CPU or CUDA) or ``fp16`` (CUDA only), through ``torch.autocast``.
        streaming: share stage-1 results and flows between consecutive windows (see the module docstring);
            ``False`` runs every 5-frame window on its own through ``model(clip)``.
        tile: overlapping spatial tiles, or ``None`` for whole frames.
    """

    def __init__(
        self,
        model: CDVDTSP,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        streaming: bool = True,
        tile: TileSpec | None = None,
    ) -> None:
        self.device = resolve_device(device)
        autocast_context(self.device, precision)  # validates
        self.precision = precision
        self.streaming = streaming
        self.tile = tile
        self.model = model.to(self.device).eval()
        self._regions: list[tuple[slice, slice]] = []
        self._weights: list[torch.Tensor] = []
        self._size: tuple[int, int] | None = None
        self._padded: tuple[int, int] | None = None

    # -- frames in and out

    def _prepare(self, frame: FrameLike, index: int) -> torch.Tensor:
        """uint8 (H, W, 3) or float (3, H, W) in [0, 1] -> padded float (3, H', W') on the device."""
        if isinstance(frame, np.ndarray):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise DataError(f"frame {index}: expected uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
            tensor = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1).float() / 255.0
        else:
            if frame.dim() != 3 or frame.shape[0] != 3:
                raise DataError(f"frame {index}: expected a (3, H, W) tensor, got {tuple(frame.shape)}")
            tensor = frame.to(self.device, torch.float32)
        size = (int(tensor.shape[-2]), int(tensor.shape[-1]))
        if self._size is None:
            self._start_video(size)
        elif size != self._size:
            raise DataError(
                f"frame {index} is {size[1]}x{size[0]} but the video's first frame is {self._size[1]}x{self._size[0]}"
            )
        padded, _ = pad_to_multiple(tensor)
        return padded

    def _start_video(self, size: tuple[int, int]) -> None:
        self._size = size
        height, width = (s + (-s) % 4 for s in size)
        self._padded = (height, width)
        self._regions = tile_regions(height, width, self.tile)
        overlap = self.tile.overlap if self.tile is not None else 0
        weights = tile_weights(height, width, self._regions, overlap) if len(self._regions) > 1 else []
        self._weights = [weight.to(self.device) for weight in weights]
        if len(self._regions) > 1:
            logger.info("%dx%d frames in %d tiles of %s", size[1], size[0], len(self._regions), self.tile)

    def _crop_regions(self, frame: torch.Tensor) -> list[torch.Tensor]:
        return [frame[:, rows, cols] for rows, cols in self._regions]

    def _blend(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        assert self._size is not None and self._padded is not None
        if len(outputs) == 1:
            full = outputs[0]
        else:
            full = torch.zeros(3, *self._padded, device=self.device)
            for out, weight, (rows, cols) in zip(outputs, self._weights, self._regions, strict=True):
                full[:, rows, cols] += out * weight
        return crop_to(full, self._size).float().cpu()

    # -- the network

    def _stage(self, triple: Sequence[list[torch.Tensor]]) -> list[torch.Tensor]:
        """One cascade stage on three frames, region by region: [(3, h, w)] * 3 -> [(3, h, w)] per region."""
        results = []
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            for k in range(len(self._regions)):
                stacked = torch.stack([frames[k] for frames in triple])[:, None]  # (3, 1, 3, h, w)
                results.append(self.model.restore_centres(stacked)[0, 0].float())
        return results

    def _window(self, window: Sequence[list[torch.Tensor]]) -> list[torch.Tensor]:
        """The whole cascade on one 5-frame window through ``model(clip)``, region by region."""
        results = []
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            for k in range(len(self._regions)):
                clip = torch.stack([frames[k] for frames in window])[None]  # (1, 5, 3, h, w)
                results.append(self.model(clip).out[0].float())
        return results

    # -- the reflected sequence

    def _extended(self, frames: Iterable[FrameLike]) -> Iterator[tuple[int, bool, torch.Tensor]]:
        """(position, is_real, padded frame) for positions -2 .. n + 1 of the reflected sequence.

        Reads ``frames`` lazily, holding at most 5 of them: the first five (to know how short the video is)
        and then the last three (the end reflects onto frames n - 2 and n - 3).
        """
        iterator = iter(frames)
        head: list[torch.Tensor] = []
        for raw in iterator:
            head.append(self._prepare(raw, len(head)))
            if len(head) == WINDOW:
                break
        if not head:
            raise DataError("the video has no frames")
        if len(head) < WINDOW:  # the whole video is in memory: reflect with its known length
            n = len(head)
            for position, index in zip(range(-HALF, n + HALF), extended_positions(n), strict=True):
                yield position, 0 <= position < n, head[index]
            return
        # at least five frames: the start reflects onto frames 2 and 1 whatever the length
        for position, index in zip(range(-HALF, 0), window_indices(0, WINDOW, WINDOW)[:HALF], strict=True):
            yield position, False, head[index]
        recent: deque[tuple[int, torch.Tensor]] = deque(maxlen=HALF + 1)
        for index, frame in enumerate(head):
            recent.append((index, frame))
            yield index, True, frame
        del head
        n = WINDOW
        for raw in iterator:
            frame = self._prepare(raw, n)
            recent.append((n, frame))
            yield n, True, frame
            n += 1
        held = dict(recent)
        for position, index in zip(range(n, n + HALF), window_indices(n - 1, WINDOW, n)[HALF + 1 :], strict=True):
            if index not in held:  # pragma: no cover - the reflection rule reads at most 2 frames back
                raise AssertionError(f"reflection at the end of a {n}-frame video reads frame {index}")
            yield position, False, held[index]

    # -- public

    def run(
        self, frames: Iterable[FrameLike], *, skip: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Deblur one video.

        Args:
            frames: the video's frames in order, uint8 (H, W, 3) RGB arrays or float (3, H, W) tensors in
                [0, 1], read lazily (an iterator over a long video is never held in memory).
            skip: ``skip(t)`` true for frames whose output is not wanted (already written): their windows are
                not computed, except for what their neighbours need.

        Yields:
            ``(t, output)`` in increasing ``t``; ``output`` is a float32 CPU tensor (3, H, W), nominally in
            [0, 1] (not clipped; :func:`to_uint8` rounds it), of the input's size.
        """
        self._size = None
        skip = skip or (lambda t: False)
        extended = self._extended(frames)
        if self.streaming:
            yield from self._run_streaming(extended, skip)
        else:
            yield from self._run_windows(extended, skip)

    def _run_streaming(
        self, extended: Iterator[tuple[int, bool, torch.Tensor]], skip: Callable[[int], bool]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        inputs: deque[_Entry] = deque(maxlen=3)
        restored: deque[_Entry] = deque(maxlen=3)
        for position, real, frame in extended:
            inputs.append(_Entry(position, real, self._crop_regions(frame)))
            if len(inputs) < 3:
                continue
            # R at the middle position is needed when an output at it or a neighbour is wanted
            middle = inputs[1]
            needed = any(e.real and not skip(e.position) for e in inputs)
            regions = self._stage([e.regions for e in inputs]) if needed else None  # type: ignore[misc]
            restored.append(_Entry(middle.position, middle.real, regions))
            if len(restored) < 3:
                continue
            centre = restored[1]
            if centre.real and not skip(centre.position):
                yield centre.position, self._blend(self._stage([e.regions for e in restored]))  # type: ignore[misc]

    def _run_windows(
        self, extended: Iterator[tuple[int, bool, torch.Tensor]], skip: Callable[[int], bool]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        window: deque[_Entry] = deque(maxlen=WINDOW)
        for position, real, frame in extended:
            window.append(_Entry(position, real, self._crop_regions(frame)))
            if len(window) < WINDOW:
                continue
            centre = window[HALF]
            if centre.real and not skip(centre.position):
                yield centre.position, self._blend(self._window([e.regions for e in window]))  # type: ignore[misc]

    def deblur_tensor(self, frames: torch.Tensor) -> torch.Tensor:
        """Deblur a whole video held as a tensor (for tests and small clips).

        Args:
            frames: (T, 3, H, W) float RGB in [0, 1].

        Returns:
            (T, 3, H, W) float32 on the CPU, not clipped.
        """
        return torch.stack([out for _, out in self.run(list(frames))])


# ------------------------------------------------------------------------------------------------------------
# frame sources


@dataclass
class VideoSource:
    """One video to deblur: a folder of frames or a video file.

    Attributes:
        name: the video's name (the output folder's name).
        path: the frame folder or the video file.
        frame_files: the frames of a folder in natural order; ``None`` for a video file.
    """

    name: str
    path: Path
    frame_files: list[Path] | None = None

    @property
    def is_video_file(self) -> bool:
        return self.frame_files is None

    def _container_property(self, prop: int) -> float:
        """A property the video file's container states (0 when it cannot be opened or does not say)."""
        capture = cv2.VideoCapture(str(self.path))
        try:
            return float(capture.get(prop)) if capture.isOpened() else 0.0
        finally:
            capture.release()

    def frame_count(self) -> int | None:
        """Exact for a folder; the container's count for a video file (``None`` when it does not say)."""
        if self.frame_files is not None:
            return len(self.frame_files)
        count = int(self._container_property(cv2.CAP_PROP_FRAME_COUNT))
        return count if count > 0 else None

    def fps(self) -> float:
        """Frame rate of a video file (25 when unknown, and for frame folders)."""
        if self.frame_files is not None:
            return DEFAULT_FPS
        fps = self._container_property(cv2.CAP_PROP_FPS)
        return fps if fps > 0 else DEFAULT_FPS

    def output_name(self, index: int) -> str:
        """PNG name of output frame ``index``: the input's name, or ``00000.png`` ... for a video file."""
        if self.frame_files is not None:
            return self.frame_files[index].stem + ".png"
        return f"{index:05d}.png"

    def __iter__(self) -> Iterator[np.ndarray]:
        """The frames as uint8 (H, W, 3) RGB, read one at a time."""
        if self.frame_files is not None:
            from cdvd.data.io import read_rgb

            for path in self.frame_files:
                yield read_rgb(path)
            return
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise DataError(f"cannot open video file (unreadable or unsupported codec): {self.path}")
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()


def _frame_source(folder: Path, name: str | None = None) -> VideoSource:
    files = list_frames(folder)
    if not files:
        raise DataError(f"no image frames in {folder}")
    return VideoSource(name or folder.name, folder, files)


def layout_videos(root: Path, split: str | None, *, require_gt: bool) -> list | None:
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


def _from_layout(root: Path, split: str | None) -> list[VideoSource] | None:
    pairs = layout_videos(root, split, require_gt=False)
    if pairs is None:
        return None
    return [VideoSource(pair.name, pair.blur_dir, list(pair.blur)) for pair in pairs]


def discover_sources(path: str | os.PathLike, split: str = "test") -> list[VideoSource]:
    """The videos to deblur at ``path``.

    ``path`` may be a video file (mp4/avi/mov/...), a folder of frames, a dataset root in a layout of
    :mod:`cdvd.data.layouts` (its ``split``, blurry frames only), or a folder of videos (subfolders of frames
    and/or video files).

    Raises:
        DataError: ``path`` is missing or holds nothing to deblur; two videos would share a name.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(
                f"input {path} is neither a video file ({', '.join(VIDEO_EXTENSIONS)}) nor a folder of frames"
            )
        return [VideoSource(path.stem, path)]
    if has_frames(path):
        return [_frame_source(path)]
    from_layout = _from_layout(path, split)
    if from_layout:
        return from_layout
    sources: list[VideoSource] = []
    for entry in sorted(path.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and has_frames(entry):
            sources.append(_frame_source(entry))
        elif entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS:
            sources.append(VideoSource(entry.stem, entry))
    if not sources:
        raise DataError(
            f"nothing to deblur in {path}: expected image frames, video files, subfolders of frames or a dataset root"
        )
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: several videos named {', '.join(duplicates)} (a folder and a video file?)")
    return sources


# ------------------------------------------------------------------------------------------------------------
# sinks


class FrameFolderSink:
    """PNG frames in one folder, named like the inputs; written atomically."""

    def __init__(self, folder: Path, source: VideoSource) -> None:
        self.folder = folder
        self.source = source

    def path(self, index: int) -> Path:
        return self.folder / self.source.output_name(index)

    def exists(self, index: int) -> bool:
        return self.path(index).is_file()

    def write(self, index: int, image: np.ndarray) -> None:
        write_rgb(self.path(index), image)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class VideoFileSink:
    """An mp4 (``mp4v``) file, written to a temporary file beside it and renamed when complete."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
        self._writer: cv2.VideoWriter | None = None

    def exists(self, index: int) -> bool:
        return False

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


# ------------------------------------------------------------------------------------------------------------
# whole runs


@dataclass
class VideoReport:
    """What happened to one video."""

    name: str
    output: str
    written: int = 0
    skipped: int = 0
    seconds: float = 0.0
    frame_seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        per_frame = self.frame_seconds
        return {
            "name": self.name,
            "output": self.output,
            "written": self.written,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "seconds_per_frame": round(sum(per_frame) / len(per_frame), 4) if per_frame else None,
        }


def _progress(enabled: bool):  # noqa: ANN202 - rich.progress.Progress or a no-op stand-in
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """frames/s, or s/frame below one frame a second."""

        def render(self, task) -> Text:  # noqa: ANN001
            speed = task.finished_speed or task.speed
            if not speed and task.completed and task.elapsed:
                speed = task.completed / task.elapsed
            if not speed:
                return Text("-- frames/s")
            return Text(f"{speed:.2f} frames/s" if speed >= 1 else f"{1 / speed:.1f} s/frame")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        # seconds-long frames on a CPU: average over minutes, not rich's default 30 s
        speed_estimate_period=600.0,
    )


def deblur_videos(
    deblurrer: VideoDeblurrer,
    sources: Sequence[VideoSource],
    output: str | os.PathLike,
    *,
    progress: bool = True,
    fps: float | None = None,
) -> list[VideoReport]:
    """Deblur every video of ``sources`` into ``output``.

    ``output`` is a folder that gets one subfolder of PNG frames per video (named like the inputs;
    ``00000.png`` ... for video files), or, when it ends in ``.mp4`` and there is one video, a video file
    (``mp4v``). Rerunning skips what is already written: a video whose outputs all exist is not read, one with
    some outputs is resumed (existing files are never rewritten); an existing ``.mp4`` output is left as it
    is.

    Args:
        deblurrer: the engine.
        sources: from :func:`discover_sources`.
        output: folder, or ``.mp4`` file.
        progress: show a rich progress bar (frames/s and ETA).
        fps: frame rate of a video output (default: the input video's, or 25).

    Returns:
        One :class:`VideoReport` per video.
    """
    output = Path(output)
    to_video = output.suffix.lower() == ".mp4"
    if to_video and len(sources) != 1:
        raise ValueError(f"output={output} is a video file but the input holds {len(sources)} videos; pass a folder")

    plans = []
    for source in sources:
        if to_video:
            sink: FrameFolderSink | VideoFileSink = VideoFileSink(output, fps or source.fps())
            count = source.frame_count()
            done: set[int] = set()
            complete = output.is_file()
        else:
            sink = FrameFolderSink(output / source.name, source)
            count = source.frame_count()
            done = {i for i in range(count or 0) if sink.exists(i)}
            complete = count is not None and len(done) == count
        plans.append((source, sink, count, done, complete))

    reports: list[VideoReport] = []
    todo = [p for p in plans if not p[4]]
    total = sum((p[2] or 0) - len(p[3]) for p in todo) if all(p[2] is not None for p in todo) else None
    bar = _progress(progress)
    task = bar.add_task("deblurring", total=total) if bar is not None else None
    with bar if bar is not None else contextlib.nullcontext():
        for source, sink, count, done, complete in plans:
            target = str(sink.path if isinstance(sink, VideoFileSink) else sink.folder)
            report = VideoReport(source.name, target)
            reports.append(report)
            if complete:
                report.skipped = count or 0
                logger.info("%s: all outputs exist in %s, skipped", source.name, target)
                continue
            report.skipped = len(done)
            if done:
                logger.info("%s: %d of %d frames already written, resuming", source.name, len(done), count)
            if bar is not None:
                bar.update(task, description=source.name)
            start = last = time.perf_counter()
            try:
                for index, frame in deblurrer.run(source, skip=sink.exists):
                    sink.write(index, to_uint8(frame))
                    now = time.perf_counter()
                    report.frame_seconds.append(now - last)
                    logger.info("%s/%s: %.3f s", source.name, source.output_name(index), now - last)
                    last = now
                    report.written += 1
                    if bar is not None:
                        bar.advance(task)
            except DataError as err:
                sink.abort()
                raise DataError(f"{source.name}: {err}") from err
            except BaseException:
                sink.abort()
                raise
            sink.close()
            report.seconds = time.perf_counter() - start
            per_frame = report.seconds / report.written if report.written else 0.0
            logger.info(
                "%s: %d frames written to %s in %.1f s (%.3f s/frame)",
                source.name,
                report.written,
                target,
                report.seconds,
                per_frame,
            )
    return reports
