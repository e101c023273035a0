"""The settings of ``cdvd-train`` (and ``cdvd-find-lr``, ``cdvd-demo``), checked once before any work.

:class:`TrainingSettings` is the schema of what cdvd's own code and Lightning read by name (counts, learning rates,
network sizes, the trainer's device): :func:`cdvd.settings.read_settings` checks each value's type and range and names
the setting. The arguments of a ``_target_`` group beyond those are its class's to check: the optimiser is built on a
stand-in parameter (:func:`check_optimizer`), and a scheduler's or loss's numbers are checked as numbers
(:func:`check_numeric_arguments`). What no schema can know is checked here too: the GPUs of this machine and a whole
``ckpt_path``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from cdvd.checkpoints import CheckpointError
from cdvd.data.datamodule import DeblurDataModule, check_counts
from cdvd.errors import ConfigError, innermost_cause
from cdvd.losses import check_patch_size
from cdvd.models.cdvd_tsp import CDVDTSP, CLIP_LENGTH, check_architecture
from cdvd.settings import count, default_of, number, read_settings
from cdvd.training.module import SCHEDULER_INTERVALS, DeblurModule


@dataclass
class TrainerSettings:
    """The Trainer's whole-number settings that users override (-1: no limit; null: Lightning's default), and its
    device. A wrong type would fail deep inside Lightning (``assert isinstance(self.max_epochs, int)``)."""

    max_epochs: int | None = count(-1, None)
    min_epochs: int | None = count(0, None)
    max_steps: int | None = count(-1, None)
    min_steps: int | None = count(0, None)
    check_val_every_n_epoch: int | None = count(1, None)
    log_every_n_steps: int | None = count(0, None)
    num_sanity_val_steps: int | None = count(-1, None)
    accumulate_grad_batches: int | None = count(1, None)
    accelerator: str = "auto"
    devices: Any = "auto"


def _data_default(name: str) -> Any:
    return default_of(DeblurDataModule, name)


@dataclass
class DataSettings:
    """The data module's counts, checked by its own rule (:func:`cdvd.data.datamodule.check_counts`; absent: the
    module's default), and the clip length the network takes."""

    clip_length: Any = _data_default("clip_length")
    batch_size: Any = _data_default("batch_size")
    val_batch_size: Any = _data_default("val_batch_size")
    patch_size: Any = _data_default("patch_size")
    n_frames_per_video: Any = _data_default("n_frames_per_video")
    samples_per_epoch: Any = _data_default("samples_per_epoch")
    batches_per_epoch: Any = _data_default("batches_per_epoch")
    val_n_frames_per_video: Any = _data_default("val_n_frames_per_video")
    num_workers: Any = _data_default("num_workers")

    def __post_init__(self) -> None:
        check_counts(prefix="data.", **vars(self))
        if self.clip_length != CLIP_LENGTH:
            raise ConfigError(
                f"data.clip_length={self.clip_length}: CDVD-TSP restores the centre of {CLIP_LENGTH}-frame clips"
            )


@dataclass
class NetSettings:
    """``model.net``: checked by the network's own rules (:func:`cdvd.models.cdvd_tsp.check_architecture`; absent:
    the network's defaults)."""

    n_feat: Any = default_of(CDVDTSP, "n_feat")
    n_resblock: Any = default_of(CDVDTSP, "n_resblock")
    corr_backend: Any = default_of(CDVDTSP, "corr_backend")

    def __post_init__(self) -> None:
        check_architecture(prefix="model.net.", **vars(self))


@dataclass
class ModelSettings:
    net: NetSettings = field(default_factory=NetSettings)
    # 0 freezes the flow net
    flow_lr_scale: float = number(allow_zero=True, default=default_of(DeblurModule, "flow_lr_scale"))


@dataclass
class OptimizerSettings:
    lr: float | None = number(default=None)
    weight_decay: float | None = number(allow_zero=True, default=None)


@dataclass
class SchedulerArguments:
    max_lr: float | None = number(default=None)


@dataclass
class SchedulerSettings:
    interval: str = SCHEDULER_INTERVALS[0]  # absent: as DeblurModule reads it
    scheduler: SchedulerArguments | None = None

    def __post_init__(self) -> None:
        if self.interval not in SCHEDULER_INTERVALS:
            raise ConfigError(f"scheduler.interval={self.interval}: expected one of {', '.join(SCHEDULER_INTERVALS)}")


@dataclass
class TrainingSettings:
    """What a composed ``cdvd-train`` config must hold, checked once by :func:`check_training_config`."""

    seed: int | None = count(0, None)  # null: not seeded
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    scheduler: SchedulerSettings | None = None
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    ckpt_path: str | None = None


def check_accelerator(accelerator: Any, devices: Any, *, cuda_devices: int | None = None) -> None:
    """A GPU run (``trainer.accelerator`` gpu/cuda) on a machine with fewer GPUs than ``trainer.devices`` asks for
    (Lightning's MisconfigurationException, early); ``cuda_devices``: default, what torch sees on this machine."""
    if str(accelerator).lower() not in ("gpu", "cuda"):
        return
    available = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    hint = "run on a machine with a GPU, or choose trainer=cpu (slow: for trying the settings)"
    if available == 0:
        raise ConfigError(f"trainer.accelerator={accelerator}: this machine has no CUDA GPU; {hint}")
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > available:
        raise ConfigError(f"trainer.devices={devices}: this machine has {available} CUDA GPU(s); {hint}")


def check_resume_checkpoint(path: str | os.PathLike) -> Path:
    """``ckpt_path``: a whole checkpoint file in PyTorch's zip format (a truncated copy fails here, in one line).

    What it holds is checked when it is read (with ``weights_only=True``, by
    :class:`cdvd.training.callbacks.AtomicCheckpointIO`).

    Raises:
        ConfigError: no such file.
        CheckpointError: the file is empty, truncated or not a PyTorch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such checkpoint (pass the last.ckpt of the run to resume)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(
            f"{path} is not a whole checkpoint (truncated or not a PyTorch file: {err}); resume from another one"
        ) from err
    if bad is not None:
        raise CheckpointError(f"{path} is damaged (entry {bad} fails its checksum); resume from another one")
    return path


#: Arguments of optimisers and schedulers that take a string (torch's OneCycleLR, CyclicLR, ReduceLROnPlateau);
#: every other argument is a number, a flag, a list of numbers or null.
STRING_ARGUMENTS = frozenset({"anneal_strategy", "mode", "scale_mode", "threshold_mode"})


def check_numeric_arguments(group: str, arguments: Mapping[str, Any] | None) -> None:
    """The arguments of a ``_target_`` config (``optimizer``, ``scheduler.scheduler``, ``loss``) that must be
    numbers: ``scheduler.scheduler.gamma=abc`` is named now, not when the scheduler first steps (epoch 200)."""
    for key, value in (arguments or {}).items():
        key = str(key)
        if key.startswith("_") or key in STRING_ARGUMENTS or value is None or isinstance(value, bool | Mapping):
            continue
        values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        for item in values:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ConfigError(f"{group}.{key}={_shown(value)}: not a number")


def check_optimizer(optimizer: Mapping[str, Any]) -> None:
    """Build the optimiser on one stand-in parameter: its own checks (``betas`` in [0, 1), ...) run now."""
    check_numeric_arguments("optimizer", optimizer)
    try:
        factory = instantiate(optimizer)
        factory(params=[torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError, InstantiationException) as err:
        raise ConfigError(f"optimizer ({optimizer.get('_target_')}): {innermost_cause(err)}") from None


def training_settings(cfg: Mapping[str, Any]) -> TrainingSettings:
    """The settings of a composed ``cdvd-train`` config (a DictConfig or a plain mapping), checked: the schema, the
    loss's patch size and numeric arguments, the optimiser built on a stand-in parameter, the scheduler's numbers."""
    settings = read_settings(TrainingSettings, cfg)
    loss = cfg.get("loss") or {}
    check_numeric_arguments("loss", loss)
    if settings.data.patch_size is not None:
        try:
            check_patch_size(str(loss.get("_target_", "")), settings.data.patch_size)
        except ValueError as err:
            raise ConfigError(f"data.patch_size={settings.data.patch_size}: {err}") from err
    check_optimizer(cfg["optimizer"])
    inner = (cfg.get("scheduler") or {}).get("scheduler")
    if isinstance(inner, Mapping):
        check_numeric_arguments("scheduler.scheduler", inner)
    return settings


def check_training_config(cfg: Mapping[str, Any]) -> TrainingSettings:
    """:func:`training_settings`, and what only this machine can say: its GPUs, and a whole ``ckpt_path``."""
    settings = training_settings(cfg)
    check_accelerator(settings.trainer.accelerator, settings.trainer.devices)
    if settings.ckpt_path:
        check_resume_checkpoint(settings.ckpt_path)
    return settings


def _shown(value: Any) -> str:
    """A config value as the user typed it: ``[2, 3]``, not ``ListConfig([2, 3])``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
