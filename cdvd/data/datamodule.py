"""``DeblurDataModule``: training clips and validation windows of a DVD, GOPRO, REDS or folder dataset."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cdvd.data.datasets import TrainClipDataset, WindowDataset
from cdvd.data.frame_store import FrameStore
from cdvd.data.layouts import VideoPair, check_layout, discover_videos
from cdvd.data.resumable import ResumableDataLoader
from cdvd.errors import ConfigError, DataError, check_count
from cdvd.evaluation.protocol import CLIP_LENGTH, check_frame_set
from cdvd.settings import plain

logger = logging.getLogger(__name__)


#: The data module's whole-number arguments and the least value each takes (None: not set).
COUNTS: dict[str, int] = {
    "clip_length": 1,
    "batch_size": 1,
    "val_batch_size": 1,
    "patch_size": 1,
    "n_frames_per_video": 1,
    "samples_per_epoch": 1,
    "batches_per_epoch": 1,
    "val_n_frames_per_video": 1,
    "num_workers": 0,
}


#: The counts that may be None (derived from the data, or no limit).
OPTIONAL_COUNTS = frozenset(
    {"patch_size", "n_frames_per_video", "samples_per_epoch", "batches_per_epoch", "val_n_frames_per_video"}
)


def check_counts(prefix: str = "", **counts: Any) -> None:
    """The data module's rule for its whole-number arguments, in one place: :class:`DeblurDataModule` applies it, and
    so does the training schema before any work (``prefix="data."`` names the setting).

    Raises:
        ConfigError: (a ValueError) the first count that is not a whole number >= its least value (None only where
            :data:`OPTIONAL_COUNTS` allows it).
    """
    for name, value in counts.items():
        if value is not None or name not in OPTIONAL_COUNTS:
            check_count(prefix + name, value, COUNTS[name])


class DeblurDataModule(pl.LightningDataModule):
    """Paired blurry/sharp videos for training (random 5-frame patches) and validation (whole frames).

    Args:
        layout: ``dvd``, ``gopro``, ``reds``, ``folder`` or ``auto`` (guessed from the folders).
        root: the dataset root holding both splits (named as the layout names them: :mod:`cdvd.data.layouts`).
        train_root: the training split's root, instead of ``root``.
        val_root: the validation split's root, instead of ``root``.
        train_split: name of the training split (``train``); ``None``: the root is the split.
        val_split: name of the validation split (``test`` for DVD/GOPRO, ``val`` for REDS); ``None``: the
            root is the split.
        blur_gamma: GOPRO: train and validate on ``blur_gamma/`` instead of ``blur/``.
        clip_length: frames per clip and per window (5 for CDVD-TSP).
        patch_size: side of the square training crop; ``None``: whole frames (all training frames must then
            share one size when ``batch_size > 1``).
        augment: random flips and 90-degree rotations, the same for every frame of a clip and its GT.
        n_frames_per_video: training uses at most the first this many frames of each video (200 in the paper);
            ``None``: all.
        samples_per_epoch: clips per epoch (over all ranks); ``None``: one per clip start, unless
            ``batches_per_epoch`` is set.
        batches_per_epoch: training batches per epoch and per rank, instead of ``samples_per_epoch``.
        batch_size: training clips per batch and per rank.
        val_batch_size: validation windows per batch (1: frames of different sizes cannot be batched).
        num_workers: DataLoader worker processes.
        persistent_workers: keep the workers (and their frame caches) between epochs.
        pin_memory: pin batches in page-locked memory (for GPU training).
        cache_frames: keep decoded frames in RAM, per process (see :class:`cdvd.data.datasets.FrameReader`).
        val_frames: ``paper``: only centre frames with a full window (the published protocol, without the
            first and last 2 frames of every video); ``all``: every frame, windows reflected at the borders.
        val_n_frames_per_video: validation uses at most the first this many frames of each video; ``None``:
            all.
        seed: seeds the order of the training clips and their crops; ``None``: from the global seed
            (``seed_everything``).
        synthesize: the built-in data: a mapping ``{"train": {...settings}, "val": {...settings}}`` of
            :func:`cdvd.data.synthetic.synthesize` (``folder`` layout only). A split's folder is made where missing;
            where it holds data made with other settings, the data asked for is made beside it and read from there
            (:func:`cdvd.data.synthetic.synthetic_split`); a folder without cdvd-synth's record is read as it is.
        check_sizes: read every frame's header at setup and fail early on frames of different sizes.
        frame_store: an LMDB frame store made by ``cdvd-pack`` (:mod:`cdvd.data.frame_store`): the videos of
            both splits (by the split names, with the layout and ``blur_gamma`` it was packed with) and their
            frames come from the store, which is all training needs; ``root`` is then not read (the PNG tree
            need not be present), ``train_root``/``val_root``/``synthesize`` cannot be set, and frame sizes come
            from its meta record. Pack again after changing the frames. ``None``: read the image files.

    Batches:
        training: ``{"blur": float32 (B, T, 3, P, P), "sharp": float32 (B, T, 3, P, P)}``, RGB in [0, 1];
        validation: ``{"blur": (B, T, 3, H, W), "sharp": (B, T, 3, H, W), "video": list[str],
        "frame": list[str], "index": int64 (B,)}``, the centre frame at ``T // 2``.
    """

    def __init__(
        self,
        *,
        layout: str = "folder",
        root: str | os.PathLike | None = None,
        train_root: str | os.PathLike | None = None,
        val_root: str | os.PathLike | None = None,
        train_split: str | None = "train",
        val_split: str | None = "val",
        blur_gamma: bool = False,
        clip_length: int = CLIP_LENGTH,
        patch_size: int | None = 256,
        augment: bool = True,
        n_frames_per_video: int | None = 200,
        samples_per_epoch: int | None = None,
        batches_per_epoch: int | None = None,
        batch_size: int = 8,
        val_batch_size: int = 1,
        num_workers: int = 0,
        persistent_workers: bool = False,
        pin_memory: bool = False,
        cache_frames: bool = False,
        val_frames: str = "paper",
        val_n_frames_per_video: int | None = None,
        seed: int | None = None,
        synthesize: Mapping[str, Mapping[str, Any] | None] | None = None,
        check_sizes: bool = True,
        frame_store: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        check_layout(layout)
        try:
            check_frame_set(val_frames)
        except ValueError as err:
            raise ConfigError(f"val_{err}") from err
        if samples_per_epoch is not None and batches_per_epoch is not None:
            raise ConfigError("set samples_per_epoch or batches_per_epoch, not both")
        if synthesize is not None and layout != "folder":
            raise ValueError(f"synthesize needs the folder layout, instead got layout={layout!r}")
        if frame_store is not None:
            for name, value in (("train_root", train_root), ("val_root", val_root), ("synthesize", synthesize)):
                if value is not None:
                    raise ValueError(f"frame_store holds both splits of one dataset: unset {name} (or frame_store)")
        # checkpoints hold plain data only (they are read back with weights_only=True): no DictConfig, no Path
        root, train_root, val_root = (str(r) if r is not None else None for r in (root, train_root, val_root))
        synthesize = plain(synthesize)
        self.save_hyperparameters(logger=False)  # every argument, by name
        check_counts(**{name: self.hparams[name] for name in COUNTS})
        self.layout = layout
        self.root = root
        self.train_root = train_root
        self.val_root = val_root
        self.train_split = train_split
        self.val_split = val_split
        self.blur_gamma = blur_gamma
        self.clip_length = clip_length
        self.patch_size = patch_size
        self.augment = augment
        self.n_frames_per_video = n_frames_per_video
        self.samples_per_epoch = samples_per_epoch
        self.batches_per_epoch = batches_per_epoch
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers
        self.pin_memory = pin_memory
        self.cache_frames = cache_frames
        self.val_frames = val_frames
        self.val_n_frames_per_video = val_n_frames_per_video
        self.seed = seed
        self.synthesize = synthesize
        self._synthetic: dict[str, Path] = {}  # kind -> the folder of the built-in data made with its settings
        self.check_sizes = check_sizes
        self.frame_store = FrameStore(frame_store) if frame_store is not None else None
        self.train_set: TrainClipDataset | None = None
        self.val_set: WindowDataset | None = None

    # ------------------------------------------------------------------------------------------------ folders

    def split_source(self, kind: str) -> tuple[Path, str | None]:
        """(root, split) of the ``train`` or ``val`` split; the root is the frame store's folder when reading one."""
        split = self.train_split if kind == "train" else self.val_split
        if self.frame_store is not None:
            return self.frame_store.path, split
        if kind in self._synthetic:
            return self._synthetic[kind], None
        own = self.train_root if kind == "train" else self.val_root
        base = own if own is not None else self.root
        if base is None:
            raise DataError(
                f"no dataset root for the {kind} split: set data.root, data.{kind}_root or data.frame_store"
            )
        return Path(base), split

    def split_folder(self, kind: str) -> Path:
        """The folder that holds one split in the ``folder`` layout (where ``synthesize`` writes it)."""
        base, split = self.split_source(kind)
        return base / split if split is not None else base

    def prepare_data(self) -> None:
        """Find (or make, once: a lock makes parallel jobs wait for one maker) the synthetic splits made with the
        settings asked for (on one process per node under DDP; the others find what it made)."""
        if not self.synthesize:
            return
        from cdvd.data.synthetic import synthetic_split

        for kind in ("train", "val"):
            settings = self.synthesize.get(kind)
            if settings is not None and kind not in self._synthetic:
                self._synthetic[kind] = synthetic_split(self.split_folder(kind), settings)

    def _videos(self, kind: str) -> list[VideoPair]:
        root, split = self.split_source(kind)
        if self.frame_store is not None:
            if self.root is not None:
                logger.info("reading the %s split from the frame store %s, not from %s", kind, root, self.root)
            return self.frame_store.videos(split, layout=self.layout, blur_gamma=self.blur_gamma)
        return discover_videos(
            root,
            self.layout,
            split,
            require_gt=True,
            blur_gamma=self.blur_gamma,
            check_sizes=self.check_sizes,
        )

    @staticmethod
    def _cap(videos: list[VideoPair], n_frames: int | None) -> list[VideoPair]:
        if n_frames is None:
            return videos
        return [replace(v, blur=v.blur[:n_frames], gt=v.gt[:n_frames] if v.gt is not None else None) for v in videos]

    # ------------------------------------------------------------------------------------------------- setup

    @property
    def world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    def epoch_length(self, n_clips: int) -> int:
        """Training items per epoch over all ranks."""
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch * self.batch_size * self.world_size
        return n_clips

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # the built-in data's folders first (found, or made where this process is the first)
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._train_set()
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._val_set()

    def _train_set(self) -> TrainClipDataset:
        root, split = self.split_source("train")
        videos = self._cap(self._videos("train"), self.n_frames_per_video)
        short = [v for v in videos if len(v) < self.clip_length]
        if short:
            logger.warning(
                "skipping %d training video(s) shorter than %d frames: %s",
                len(short),
                self.clip_length,
                ", ".join(f"{v.name} ({len(v)} frames, {v.blur[0].parent})" for v in short),
            )
        videos = [v for v in videos if len(v) >= self.clip_length]
        if not videos:
            raise DataError(f"no training video has {self.clip_length} frames in {root} (split {split})")
        if self.patch_size is not None:
            for video in videos:
                if video.size is not None and min(video.size) < self.patch_size:
                    raise DataError(
                        f"frames of {video.size[0]}x{video.size[1]} are smaller than patch_size "
                        f"{self.patch_size}: video {video.name} ({video.blur[0].parent})"
                    )
        n_clips = sum(len(v) - self.clip_length + 1 for v in videos)
        dataset = TrainClipDataset(
            videos,
            clip_length=self.clip_length,
            patch_size=self.patch_size,
            augment=self.augment,
            length=self.epoch_length(n_clips),
            cache_frames=self.cache_frames,
            seed=self.seed,
            frame_store=self.frame_store,
        )
        logger.info(
            "training: %d videos, %d frames, %d clips, %d clips per epoch (%s)",
            len(videos),
            sum(len(v) for v in videos),
            n_clips,
            len(dataset),
            root if split is None else root / split,
        )
        return dataset

    def _val_set(self) -> WindowDataset:
        root, split = self.split_source("val")
        videos = self._cap(self._videos("val"), self.val_n_frames_per_video)
        dataset = WindowDataset(
            videos,
            clip_length=self.clip_length,
            frames=self.val_frames,
            cache_frames=self.cache_frames,
            frame_store=self.frame_store,
        )
        if len(dataset) == 0:
            raise DataError(
                f"no validation frames in {root} (split {split}): every video is shorter than "
                f"{self.clip_length} frames; use val_frames=all"
            )
        logger.info("validation: %d videos, %d frames (val_frames=%s)", len(videos), len(dataset), self.val_frames)
        return dataset

    # ----------------------------------------------------------------------------------------------- loaders

    def _loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "persistent_workers": self.persistent_workers and self.num_workers > 0,
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
        }

    def train_dataloader(self) -> ResumableDataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        # resumable: a checkpoint taken mid-epoch resumes with the same batches (see ResumableDataLoader)
        return ResumableDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) >= self.batch_size * self.world_size,
            generator=generator,
            **self._loader_kwargs(),
        )

    def train_batches_per_rank(self) -> int:
        """The batches each rank's training loader gives per epoch, known without building the loader.

        What ``len(train_dataloader())`` is on one process, and under DDP with Lightning's distributed sampler (which
        pads the data to a multiple of the world size). :class:`cdvd.training.module.DeblurModule` counts OneCycle's
        steps with it, so that Lightning does not build the loaders early (see ``onecycle_total_steps``).
        """
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        items = len(self.train_set)
        per_rank = math.ceil(items / self.world_size)
        drop_last = items >= self.batch_size * self.world_size  # as train_dataloader
        return per_rank // self.batch_size if drop_last else math.ceil(per_rank / self.batch_size)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False, **self._loader_kwargs())
