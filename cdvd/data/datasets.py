"""Map-style datasets: random training clips and whole-frame validation windows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from cdvd.data.clips import (
    apply_augment,
    draw_augment,
    frames_to_tensor,
    random_crop_box,
    window_indices,
)
from cdvd.data.frame_store import FrameStore
from cdvd.data.io import read_rgb
from cdvd.data.layouts import VideoPair
from cdvd.errors import DataError
from cdvd.evaluation.protocol import CLIP_LENGTH, check_frame_set, scored_frames

logger = logging.getLogger(__name__)


class FrameReader:
    """Reads frames as uint8 RGB (H, W, 3), optionally keeping every decoded frame in memory.

    The cache lives in the process that reads: each DataLoader worker fills its own copy, so use it with
    ``persistent_workers`` (or ``num_workers=0``) and budget (workers + 1) x the decoded dataset size in RAM.

    With a ``store``, the frames come from that frame store instead of their files; the paths are then the store's
    (``store.path / key``, as :meth:`cdvd.data.frame_store.FrameStore.videos` gives them).
    """

    def __init__(self, cache: bool = False, store: FrameStore | None = None) -> None:
        self.cache = cache
        self.store = store
        self._frames: dict[Path, np.ndarray] = {}

    def _read(self, path: Path) -> np.ndarray:
        return read_rgb(path) if self.store is None else self.store.read(self.store.key(path))

    def __call__(self, path: Path) -> np.ndarray:
        if not self.cache:
            return self._read(path)
        frame = self._frames.get(path)
        if frame is None:
            frame = self._read(path)
            frame.setflags(write=False)
            self._frames[path] = frame
        return frame

    def clip(self, paths: Sequence[Path]) -> list[np.ndarray]:
        """Frames of one clip, each (H, W, 3); frames of different sizes are a DataError naming the path."""
        frames = [self(p) for p in paths]
        for path, frame in zip(paths[1:], frames[1:], strict=True):
            if frame.shape != frames[0].shape:
                raise DataError(
                    f"frame size {frame.shape[0]}x{frame.shape[1]} differs from the "
                    f"{frames[0].shape[0]}x{frames[0].shape[1]} of {paths[0]}: {path}"
                )
        return frames


class TrainClipDataset(Dataset):
    """Random ``clip_length``-frame training clips with a paired random crop and augmentation.

    Item ``i`` is clip ``i % n_clips`` (a clip: ``clip_length`` consecutive frames of one video), so with a
    shuffling sampler an epoch of ``length`` items visits the clips evenly, and Lightning can put a
    DistributedSampler in front of it. The crop and the flips/rotations are drawn from a generator seeded with
    the item index and a number drawn from the reading process's torch RNG (DataLoader workers are seeded per
    epoch by the DataLoader, ranks apart by Lightning's ``seed_everything(workers=True)``).

    Args:
        videos: the videos, with GT; videos shorter than ``clip_length`` must have been left out.
        clip_length: frames per clip (5 for CDVD-TSP).
        patch_size: side of the square crop; ``None``: whole frames (then no 90-degree rotation of non-square
            frames).
        augment: random horizontal/vertical flips and transposition (together: the 8 flips and 90-degree
            rotations), the same for every frame of the clip and its GT.
        length: items per epoch; ``None``: one per clip.
        cache_frames: keep decoded frames in memory (see :class:`FrameReader`).
        seed: seeds the item generator when items are read in the main process (``num_workers=0``).
        frame_store: read the frames from this store (the videos' paths must be the store's).

    Items:
        ``{"blur": float32 (T, 3, P, P), "sharp": float32 (T, 3, P, P)}``, RGB in [0, 1].
    """

    def __init__(
        self,
        videos: Sequence[VideoPair],
        *,
        clip_length: int = CLIP_LENGTH,
        patch_size: int | None = 256,
        augment: bool = True,
        length: int | None = None,
        cache_frames: bool = False,
        seed: int | None = None,
        frame_store: FrameStore | None = None,
    ) -> None:
        # the counts are the data module's to check (cdvd.data.datamodule.check_counts)
        for video in videos:
            if video.gt is None:
                raise DataError(f"training video {video.name} has no GT frames (from {video.blur[0].parent})")
        self.videos = list(videos)
        self.clip_length = clip_length
        self.patch_size = patch_size
        self.augment = augment
        self.clips = [
            (v, start) for v, video in enumerate(self.videos) for start in range(len(video) - clip_length + 1)
        ]
        if not self.clips:
            raise DataError("no training clips: every video is shorter than the clip length")
        self.length = length if length is not None else len(self.clips)
        self.reader = FrameReader(cache_frames, frame_store)
        self.seed = seed
        self._generator: torch.Generator | None = None

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:
        # workers started by spawn get a copy without the main process's generator (and its state)
        state = self.__dict__.copy()
        state["_generator"] = None
        return state

    def _rng(self, index: int) -> np.random.Generator:
        seeded = get_worker_info() is None and self.seed is not None  # else the process's RNG, seeded per worker
        if seeded and self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        draw = torch.randint(0, 2**62, (), generator=self._generator if seeded else None)
        return np.random.default_rng([int(draw), index])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        v, start = self.clips[index % len(self.clips)]
        video = self.videos[v]
        assert video.gt is not None
        blur_frames = self.reader.clip(video.blur[start : start + self.clip_length])
        sharp_frames = self.reader.clip(video.gt[start : start + self.clip_length])
        if blur_frames[0].shape != sharp_frames[0].shape:
            raise DataError(
                f"video {video.name}: blurry frames of {'x'.join(map(str, blur_frames[0].shape[:2]))} but GT "
                f"frames of {'x'.join(map(str, sharp_frames[0].shape[:2]))}: {video.gt[start]}"
            )
        rng = self._rng(index)
        height, width = blur_frames[0].shape[:2]
        window = np.s_[:, :]
        if self.patch_size is not None:
            try:
                top, left = random_crop_box(height, width, self.patch_size, rng)
            except ValueError as err:
                raise DataError(f"video {video.name}: {err} ({video.blur[start]})") from err
            window = np.s_[top : top + self.patch_size, left : left + self.patch_size]
        # crop before stacking: only the patches are copied
        blur = np.stack([frame[window] for frame in blur_frames])
        sharp = np.stack([frame[window] for frame in sharp_frames])
        if self.augment:
            flips = draw_augment(rng, allow_transpose=blur.shape[1] == blur.shape[2])
            blur, sharp = apply_augment(blur, *flips), apply_augment(sharp, *flips)
        return {"blur": frames_to_tensor(blur), "sharp": frames_to_tensor(sharp)}


class WindowDataset(Dataset):
    """One item per centre frame: the whole-frame window of ``clip_length`` frames around it.

    Args:
        videos: the videos; GT is returned where a video has it.
        clip_length: frames per window (5 for CDVD-TSP).
        frames: ``"paper"``: only centres with a full window inside the video (frames 2..n-3 for 5-frame
            windows, as the published tables); ``"all"``: every frame, the window reflected at the borders
            without repeating the edge frame (see :func:`cdvd.data.clips.window_indices`).
        cache_frames: keep decoded frames in memory (see :class:`FrameReader`).
        frame_store: read the frames from this store (the videos' paths must be the store's).

    Items:
        ``{"blur": float32 (T, 3, H, W), "sharp": float32 (T, 3, H, W) (only with GT), "video": str,
        "frame": str (file name of the centre frame), "index": int (centre frame index in the video)}``.
    """

    def __init__(
        self,
        videos: Sequence[VideoPair],
        *,
        clip_length: int = CLIP_LENGTH,
        frames: str = "paper",
        cache_frames: bool = False,
        frame_store: FrameStore | None = None,
    ) -> None:
        check_frame_set(frames)
        self.videos = list(videos)
        self.clip_length = clip_length
        self.frames = frames
        self.items: list[tuple[int, int]] = []
        for v, video in enumerate(self.videos):
            centres = scored_frames(len(video), frames, clip_length)
            if not centres:
                logger.warning(
                    "video %s has %d frames, fewer than the %d of a full window: it gives no frame "
                    "with frames=paper (%s)",
                    video.name,
                    len(video),
                    clip_length,
                    video.blur[0].parent,
                )
            self.items.extend((v, c) for c in centres)
        self.reader = FrameReader(cache_frames, frame_store)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        v, centre = self.items[index]
        video = self.videos[v]
        indices = window_indices(centre, self.clip_length, len(video))
        blur = np.stack(self.reader.clip([video.blur[i] for i in indices]))
        item: dict[str, Any] = {"blur": frames_to_tensor(blur)}
        if video.gt is not None:
            sharp = np.stack(self.reader.clip([video.gt[i] for i in indices]))
            if sharp.shape != blur.shape:
                raise DataError(
                    f"video {video.name}: GT frames of {sharp.shape[1]}x{sharp.shape[2]} but blurry "
                    f"frames of {blur.shape[1]}x{blur.shape[2]}: {video.gt[centre]}"
                )
            item["sharp"] = frames_to_tensor(sharp)
        item.update(video=video.name, frame=video.blur[centre].name, index=centre)
        return item
