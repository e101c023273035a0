"""The deblurring engine: a CDVD-TSP network run over whole videos, one output frame per input frame.

Every frame of a video gets an output of the input's size. The window of frame ``t`` reads its neighbours by
reflection (a video ``[1, 2, 3, 4, 5]`` is read as ``[3, 2, 1, 2, 3, 4, 5, 4, 3]``, as the 2021 fork does);
frame sizes that are not multiples of 4 are padded (:func:`cdvd.models.padding.pad_to_multiple`) and the output
cropped back.

Two ways to run the cascade, giving the same frames:

- streaming (default): over the reflected sequence ``E``, every stage-1 result
  ``R_p = stage(E[p-1], E[p], E[p+1])`` is computed once and ``out_t = stage(R[t-1], R[t], R[t+1])``:
  4 flow estimates and 2 reconstruction passes per output frame instead of 8 and 4. The window ``t`` of the
  per-window path has ``R1 = R_{t-1}``, ``R2 = R_t``, ``R3 = R_{t+1}`` exactly, including at the borders
  (position -1 holds frame 1 between frames 2 and 0, so its ``R`` differs from that of position 1, and both
  are kept). Only three input frames and three ``R`` are held, whatever the video's length.
- per window (``streaming=False``): every 5-frame window through ``model(clip)``, as the original code did.

Tiling (:mod:`cdvd.inference.tiling`) runs the whole cascade on overlapping spatial tiles, each tile with its own
stage-1 results, and blends the outputs. Flow is estimated per tile, so tiled output differs slightly from
untiled output (see ``tests/test_inference.py`` for the measured figure).

The engine holds only the model and its settings; everything about one video (its size, its tiles) lives in a
:class:`_VideoRun` made by each :meth:`VideoDeblurrer.run`, so runs on one engine never see each other's state.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cdvd.backends import check_backend
from cdvd.data.clips import window_indices
from cdvd.errors import DataError
from cdvd.evaluation.protocol import CLIP_LENGTH
from cdvd.fingerprint import weights_sha256
from cdvd.hardware import autocast_context, resolve_device, resolve_precision
from cdvd.inference.tiling import TileSpec, tile_regions, tile_weights
from cdvd.models.cdvd_tsp import CDVDTSP
from cdvd.models.padding import crop_to, pad_to_multiple

logger = logging.getLogger(__name__)

HALF = CLIP_LENGTH // 2

FrameLike = np.ndarray | torch.Tensor


def extended_positions(n_frames: int) -> list[int]:
    """Frame indices of the reflected sequence, positions -2 .. n_frames + 1.

    ``[0, 1, 2, 3, 4]`` gives ``[2, 1, 0, 1, 2, 3, 4, 3, 2]``.
    """
    start = window_indices(0, CLIP_LENGTH, n_frames)[:HALF]
    end = window_indices(n_frames - 1, CLIP_LENGTH, n_frames)[HALF + 1 :]
    return start + list(range(n_frames)) + end


@dataclass
class _Entry:
    position: int
    real: bool
    regions: list[torch.Tensor] | None


@dataclass
class _VideoRun:
    """The state of one video: its frame size (set by the first frame), tiles and blending weights."""

    device: torch.device
    tile: TileSpec | None
    size: tuple[int, int] | None = None
    padded: tuple[int, int] | None = None
    regions: list[tuple[slice, slice]] = field(default_factory=list)
    weights: list[torch.Tensor] = field(default_factory=list)

    def prepare(self, frame: FrameLike, index: int) -> torch.Tensor:
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
        if self.size is None:
            self._start(size)
        elif size != self.size:
            raise DataError(
                f"frame {index} is {size[1]}x{size[0]} but the video's first frame is {self.size[1]}x{self.size[0]}"
            )
        padded, _ = pad_to_multiple(tensor)
        return padded

    def _start(self, size: tuple[int, int]) -> None:
        self.size = size
        height, width = (s + (-s) % 4 for s in size)
        self.padded = (height, width)
        self.regions = tile_regions(height, width, self.tile)
        if len(self.regions) > 1:
            overlap = self.tile.overlap if self.tile is not None else 0
            self.weights = [w.to(self.device) for w in tile_weights(height, width, self.regions, overlap)]
            logger.info("%dx%d frames in %d tiles of %s", size[1], size[0], len(self.regions), self.tile)

    def crop_regions(self, frame: torch.Tensor) -> list[torch.Tensor]:
        return [frame[:, rows, cols] for rows, cols in self.regions]

    def blend(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Per-region outputs -> the (3, H, W) float32 CPU frame of the input's size."""
        assert self.size is not None and self.padded is not None
        if len(outputs) == 1:
            full = outputs[0]
        else:
            full = torch.zeros(3, *self.padded, device=self.device)
            for out, weight, (rows, cols) in zip(outputs, self.weights, self.regions, strict=True):
                full[:, rows, cols] += out * weight
        return crop_to(full, self.size).float().cpu()


class VideoDeblurrer:
    """Runs a CDVD-TSP network over whole videos, one output frame per input frame.

    Args:
        model: the network (moved to ``device`` and put in eval mode).
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        precision: ``fp32``, ``bf16`` (CPU or CUDA), ``fp16`` (CUDA only) or ``auto`` (bf16 where the device has
            native bf16, else fp32); through ``torch.autocast`` for the torch backend.
        streaming: share stage-1 results and flows between consecutive windows (see the module docstring);
            ``False`` runs every 5-frame window on its own through ``model(clip)``.
        tile: overlapping spatial tiles, or ``None`` for whole frames.
        backend: ``torch``, or ``openvino`` (CPU; the optional extra ``cdvd[openvino]``): one cascade stage
            converted once and compiled once per frame size (:class:`cdvd.backends.openvino.OpenVINOStage`).
        channels_last: torch backend: NHWC convolution weights (:func:`cdvd.backends.torch.prepare_torch_model`).
        compile: torch backend: ``torch.compile`` the reconstruction net and the flow pyramid.
        cache_dir: openvino backend: keep the converted and compiled stage here for later processes
            (:func:`cdvd.backends.openvino.cached_stage`); ``None`` converts in memory every time.
    """

    def __init__(
        self,
        model: CDVDTSP,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        streaming: bool = True,
        tile: TileSpec | None = None,
        backend: str = "torch",
        channels_last: bool = False,
        compile: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.streaming = streaming
        self.tile = tile
        self.backend = backend
        self.channels_last = channels_last
        self.compile = compile
        self.cache_dir = cache_dir
        self.model = model.to(self.device).eval()
        check_backend(backend, channels_last=channels_last, compile=compile)
        if backend == "openvino" and self.device.type != "cpu":
            raise ValueError(f"backend=openvino runs on the CPU (got device={self.device.type}): pass device=cpu")
        if backend == "openvino" and importlib.util.find_spec("openvino") is None:
            raise ValueError("backend=openvino needs the optional extra: pip install 'cdvd[openvino]'")

    @functools.cached_property
    def _restore(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """One cascade stage through the backend, prepared on first use (an OpenVINO conversion takes a while, so
        a run refused before its first frame never pays for it)."""
        return self._stage_function()

    def _stage_function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``restore_centres`` of the chosen backend: (T, B, 3, H, W) -> (T - 2, B, 3, H, W)."""
        if self.backend == "torch":
            from cdvd.backends.torch import prepare_torch_model

            return prepare_torch_model(self.model, channels_last=self.channels_last, compile=self.compile)
        from cdvd.backends.openvino import OpenVINOStage

        try:
            return OpenVINOStage(self.model, precision=self.precision, cache_dir=self.cache_dir).restore_centres
        except ImportError as err:
            raise DataError(str(err)) from err

    def _autocast(self) -> contextlib.AbstractContextManager:
        # OpenVINO takes its precision when it compiles; torch's autocast would only touch the glue
        return autocast_context(self.device, self.precision) if self.backend == "torch" else contextlib.nullcontext()

    def fingerprint(self) -> dict[str, object]:
        """What decides this engine's output pixels: the weights (their SHA-256) and the settings that change them."""
        return {
            "weights_sha256": weights_sha256(self.model),
            "precision": self.precision,
            "streaming": self.streaming,
            "tile": None if self.tile is None else [self.tile.size, self.tile.overlap],
            "device": self.device.type,
            "backend": self.backend,
            "channels_last": self.channels_last,
            "compile": self.compile,
        }

    # -- the network

    def _per_region(
        self, entries: Sequence[_Entry], network: Callable[[torch.Tensor], torch.Tensor]
    ) -> list[torch.Tensor]:
        """``network`` ((T, 1, 3, h, w) -> (1, 1, 3, h, w)) on the entries' frames: one (3, h, w) per region."""
        results = []
        with torch.inference_mode(), self._autocast():
            for k in range(len(entries[0].regions)):  # type: ignore[arg-type]
                stacked = torch.stack([e.regions[k] for e in entries])[:, None]  # type: ignore[index]
                results.append(network(stacked)[0, 0].float())
        return results

    def _window(self, clip: torch.Tensor) -> torch.Tensor:
        """The whole cascade on one (5, 1, 3, h, w) window: ``model(clip)`` for the torch backend, else as two
        stages (the 5 frames give 3 stage-1 results, and those the output)."""
        if self.backend == "torch":
            return self.model(clip.transpose(0, 1)).out[None]
        return self._restore(self._restore(clip))

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
            [0, 1] (not clipped; :func:`cdvd.evaluation.metrics.to_uint8` rounds it), of the input's size.

        Raises:
            DataError: frames of different sizes, or frames too large for the device's memory (the message gives
                the size and the ``tile.size`` that deblurs them in tiles).
        """
        state = _VideoRun(self.device, self.tile)
        skip = skip or (lambda t: False)
        extended = _extended(state, frames)
        try:
            if self.streaming:
                yield from self._run_streaming(state, extended, skip)
            else:
                yield from self._run_windows(state, extended, skip)
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
            raise DataError(memory_advice(state.size, self.device, self.tile)) from err

    def _run_streaming(
        self, state: _VideoRun, extended: Iterator[tuple[int, bool, torch.Tensor]], skip: Callable[[int], bool]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        inputs: deque[_Entry] = deque(maxlen=3)
        restored: deque[_Entry] = deque(maxlen=3)
        for position, real, frame in extended:
            inputs.append(_Entry(position, real, state.crop_regions(frame)))
            if len(inputs) < 3:
                continue
            # R at the middle position is needed when an output at it or a neighbour is wanted
            middle = inputs[1]
            needed = any(e.real and not skip(e.position) for e in inputs)
            regions = self._per_region(inputs, self._restore) if needed else None
            restored.append(_Entry(middle.position, middle.real, regions))
            if len(restored) < 3:
                continue
            centre = restored[1]
            if centre.real and not skip(centre.position):
                yield centre.position, state.blend(self._per_region(restored, self._restore))

    def _run_windows(
        self, state: _VideoRun, extended: Iterator[tuple[int, bool, torch.Tensor]], skip: Callable[[int], bool]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        window: deque[_Entry] = deque(maxlen=CLIP_LENGTH)
        for position, real, frame in extended:
            window.append(_Entry(position, real, state.crop_regions(frame)))
            if len(window) < CLIP_LENGTH:
                continue
            centre = window[HALF]
            if centre.real and not skip(centre.position):
                yield centre.position, state.blend(self._per_region(window, self._window))

    def deblur_tensor(self, frames: torch.Tensor) -> torch.Tensor:
        """A whole video held as a tensor (tests, small clips): (T, 3, H, W) float RGB in [0, 1] -> (T, 3, H, W)
        float32 on the CPU, not clipped."""
        return torch.stack([out for _, out in self.run(list(frames))])


#: How PyTorch (CPU allocator, CUDA, MPS), oneDNN and OpenVINO word a failed allocation.
_OUT_OF_MEMORY = ("can't allocate memory", "cannot allocate memory", "out of memory", "std::bad_alloc")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a failed memory allocation (CPU or GPU), not another failure."""
    if isinstance(err, MemoryError | getattr(torch, "OutOfMemoryError", MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err).lower() for text in _OUT_OF_MEMORY)


def memory_advice(size: tuple[int, int] | None, device: torch.device, tile: TileSpec | None) -> str:
    """One line for frames too large for memory: their size and the tiling that fits them."""
    frames = f"{size[1]}x{size[0]} frames" if size else "these frames"
    if tile is None:
        hint = "pass tile.size=512 tile.overlap=64 to deblur each frame in overlapping tiles"
    else:
        smaller = max(8, tile.size // 8 * 4)
        hint = (
            f"pass smaller tiles than tile.size={tile.size}, e.g. tile.size={smaller} tile.overlap={smaller // 32 * 4}"
        )
    return f"not enough memory on {device.type} to deblur {frames}: {hint}"


def _extended(state: _VideoRun, frames: Iterable[FrameLike]) -> Iterator[tuple[int, bool, torch.Tensor]]:
    """(position, is_real, padded frame) for positions -2 .. n + 1 of the reflected sequence.

    Reads ``frames`` lazily, holding at most 5 of them: the first five (to know how short the video is) and then
    the last three (the end reflects onto frames n - 2 and n - 3).
    """
    iterator = iter(frames)
    head = [state.prepare(raw, index) for index, raw in enumerate(itertools.islice(iterator, CLIP_LENGTH))]
    if not head:
        raise DataError("the video has no frames")
    if len(head) < CLIP_LENGTH:  # the whole video is in memory: reflect with its known length
        n = len(head)
        for position, index in zip(range(-HALF, n + HALF), extended_positions(n), strict=True):
            yield position, 0 <= position < n, head[index]
        return
    # at least five frames: the start reflects onto frames 2 and 1 whatever the length
    for position, index in zip(range(-HALF, 0), window_indices(0, CLIP_LENGTH, CLIP_LENGTH)[:HALF], strict=True):
        yield position, False, head[index]
    recent: deque[tuple[int, torch.Tensor]] = deque(maxlen=HALF + 1)
    for index, frame in enumerate(head):
        recent.append((index, frame))
        yield index, True, frame
    del head
    n = CLIP_LENGTH
    for raw in iterator:
        frame = state.prepare(raw, n)
        recent.append((n, frame))
        yield n, True, frame
        n += 1
    held = dict(recent)  # the reflection rule reads at most 2 frames back
    for position, index in zip(range(n, n + HALF), window_indices(n - 1, CLIP_LENGTH, n)[HALF + 1 :], strict=True):
        yield position, False, held[index]
