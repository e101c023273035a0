"""What ``compare=true`` needs: the blurry input beside the deblurred output, and the input frames' timestamps
kept while the engine runs a few frames behind the reader."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cdvd.video.reader import DecodedFrame


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


def side_by_side_size(width: int, height: int, *, separator: int = 4) -> tuple[int, int] | None:
    """(width, height) of :func:`side_by_side` of two frames of ``width`` x ``height``; ``None`` for an unknown
    (zero) size."""
    return (2 * width + separator, height) if width > 0 and height > 0 else None


def side_by_side(left: np.ndarray, right: np.ndarray, *, separator: int = 4, value: int = 255) -> np.ndarray:
    """Two uint8 (H, W, 3) RGB frames of one height next to each other (for ``compare=true``: blurry | deblurred),
    with a bar ``separator`` pixels wide (0 for none) of grey level ``value`` between them."""
    if left.ndim != 3 or right.ndim != 3 or left.shape[0] != right.shape[0] or left.shape[2] != right.shape[2]:
        raise ValueError(f"side_by_side needs (H, W, C) frames of one height, instead got {left.shape} {right.shape}")
    if separator < 0:
        raise ValueError(f"separator={separator}: must be 0 or more")
    bar = np.full((left.shape[0], separator, left.shape[2]), value, dtype=left.dtype)
    return np.concatenate([left, bar, right.astype(left.dtype, copy=False)], axis=1)
