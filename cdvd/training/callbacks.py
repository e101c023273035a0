"""Lightning plugins, callbacks and loggers of our own."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from lightning_fabric.utilities.seed import _collect_rng_states, _set_rng_states
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.plugins.io import TorchCheckpointIO

from cdvd.checkpoints import CheckpointError, atomic_torch_save, safe_torch_load
from cdvd.data.io import write_rgb
from cdvd.data.resumable import ResumableDataLoader
from cdvd.evaluation.metrics import to_uint8


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves checkpoints to a temporary file beside the target, then renames it into place; loads them safely.

    Loading (``ckpt_path=`` resume) always reads with ``weights_only=True`` (tensors and plain containers only),
    whatever the caller asks: a file that holds other objects is refused with a
    :class:`cdvd.checkpoints.CheckpointError` naming it, never unpickled.
    """

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Any | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        checkpoint = safe_torch_load(path, map_location=map_location)
        # Lightning reads pytorch-lightning_version first, with a KeyError where it is missing
        for key in ("state_dict", "pytorch-lightning_version"):
            if not isinstance(checkpoint, dict) or key not in checkpoint:
                raise CheckpointError(f"{path} is not a training checkpoint (no {key}): pass a last.ckpt to resume")
        return checkpoint

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, instead got {storage_options!r}")
        atomic_torch_save(checkpoint, Path(path))


class RNGStateCallback(pl.Callback):
    """Saves the global random states (torch, CUDA, numpy, Python) in checkpoints and restores them on resume, and
    lets a :class:`cdvd.data.resumable.ResumableDataLoader` count the batches training has taken (so that a checkpoint
    taken in the middle of an epoch resumes with the same batches).

    The states are put back twice: when the checkpoint is loaded, and again after the sanity-check validation (which
    draws from the global generator when its DataLoader starts), so that the first training epoch after the resume
    draws the same crops, flips and shuffles as the run that was never interrupted. Under DDP the states of rank 0
    are saved; other ranks resume correctly but not bit for bit.
    """

    key = "cdvd_rng_states"

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = _collect_rng_states()
        # numpy's state holds an ndarray, which checkpoints loaded with weights_only=True refuse: store a list
        name, keys, pos, has_gauss, cached = states["numpy"]
        states["numpy"] = (name, keys.tolist(), pos, has_gauss, cached)
        checkpoint[self.key] = states

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._pending = checkpoint.get(self.key)
        if self._pending is not None:
            name, keys, pos, has_gauss, cached = self._pending["numpy"]
            self._pending["numpy"] = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
            _set_rng_states(self._pending)

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            _set_rng_states(self._pending)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = None
        # a ResumableDataLoader counts the batches that training took, not the ones fetched ahead
        epoch_loop = trainer.fit_loop.epoch_loop
        loaders = trainer.train_dataloader
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            if isinstance(loader, ResumableDataLoader):
                loader.progress = lambda: epoch_loop.batch_progress.current.ready


class SaveValidationImages(pl.Callback):
    """Writes every validation output frame as a PNG (the original trainer's ``--save_images``).

    Frames go to ``dirpath/epoch_NNNN/<video>/<frame>.png``, rounded to uint8 as the evaluation protocol rounds them,
    so ``cdvd-eval results=dirpath/epoch_NNNN gt=...`` scores exactly what validation scored. Off by default
    (``callbacks.save_images.enabled=true``); the sanity check writes nothing.
    """

    def __init__(self, dirpath: str | os.PathLike, enabled: bool = False) -> None:
        self.dirpath = Path(dirpath)
        self.enabled = enabled

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.enabled or trainer.sanity_checking or not isinstance(outputs, dict) or "out" not in outputs:
            return
        folder = self.dirpath / f"epoch_{trainer.current_epoch:04d}"
        for frame, video, name in zip(outputs["out"], batch["video"], batch["frame"], strict=True):
            write_rgb(folder / video / f"{Path(name).stem}.png", to_uint8(frame))


class _KeepingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that rows already in ``metrics.csv`` stay (Lightning deletes the file when its
    folder is not empty): a resumed run's rows follow those of the run it continues, as in TensorBoard."""

    def _check_log_dir_exists(self) -> None:  # Lightning's hook, called before anything is written
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            header = next(csv.reader(file), [])
        # new rows are written with the columns in sorted order: earlier rows are rewritten to match if needed
        self.metrics_keys = sorted(header)
        if header and header != self.metrics_keys:
            self._rewrite_with_new_header(self.metrics_keys)


class KeepingCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to an existing ``metrics.csv`` instead of erasing it:
    a run resumed with ``ckpt_path=`` (same run folder) keeps the rows of the run before it (``logger=csv``)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
