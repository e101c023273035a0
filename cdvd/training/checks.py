"""Checks of a composed training config that turn deep library failures into one line naming the setting or file.

Each check is a small function of plain values (so that it can be tested alone and called from any entry point);
:func:`check_training_config` runs them all on a composed ``cdvd-train`` config.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from cdvd.checkpoints import CheckpointError
from cdvd.errors import ConfigError, check_count, check_positive_number
from cdvd.models.cdvd_tsp import CLIP_LENGTH
from cdvd.models.correlation import check_corr_backend

#: Whole-number settings of Lightning's Trainer that users override, with the least value each takes (-1: no
#: limit). A wrong type fails deep inside Lightning (``assert isinstance(self.max_epochs, int)``) otherwise.
TRAINER_COUNTS: dict[str, int] = {
    "max_epochs": -1,
    "min_epochs": 0,
    "max_steps": -1,
    "min_steps": 0,
    "check_val_every_n_epoch": 1,
    "log_every_n_steps": 0,
    "num_sanity_val_steps": -1,
    "accumulate_grad_batches": 1,
}


def check_trainer_counts(trainer: Mapping[str, Any]) -> None:
    """The :data:`TRAINER_COUNTS` settings of a ``trainer`` config, where set (None: Lightning's default)."""
    for key, least in TRAINER_COUNTS.items():
        if trainer.get(key) is not None:
            check_count(f"trainer.{key}", trainer[key], least)


def check_learning_rates(optimizer: Mapping[str, Any], scheduler: Mapping[str, Any] | None, flow_lr_scale: Any) -> None:
    """The optimiser's ``lr`` (and ``weight_decay``), a scheduler's ``max_lr`` and the flow net's lr scale.

    Args:
        optimizer: the ``optimizer`` config (``lr``, ``weight_decay`` where present).
        scheduler: the ``scheduler`` config (``{"scheduler": {... "max_lr": ...} | None, ...}``) or None.
        flow_lr_scale: ``model.flow_lr_scale`` (0 freezes the flow net).
    """
    if "lr" in optimizer:
        check_positive_number("optimizer.lr", optimizer["lr"])
    if optimizer.get("weight_decay") is not None:
        check_positive_number("optimizer.weight_decay", optimizer["weight_decay"], allow_zero=True)
    inner = (scheduler or {}).get("scheduler") or {}
    if isinstance(inner, Mapping) and inner.get("max_lr") is not None:
        check_positive_number("scheduler.scheduler.max_lr", inner["max_lr"])
    check_positive_number("model.flow_lr_scale", flow_lr_scale, allow_zero=True)


def check_accelerator(accelerator: Any, devices: Any, *, cuda_devices: int | None = None) -> None:
    """A GPU run on a machine with fewer GPUs than it asks for (Lightning's MisconfigurationException, early).

    Args:
        accelerator: ``trainer.accelerator`` (``gpu``/``cuda`` are checked; ``auto`` and ``cpu`` always work).
        devices: ``trainer.devices`` (a count, a list of indices, ``-1`` or ``auto``).
        cuda_devices: the number of CUDA GPUs (default: what torch sees on this machine).
    """
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


#: Whole-number settings of the data module, with the least value each takes.
DATA_COUNTS: dict[str, int] = {
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


def check_data_counts(data: Mapping[str, Any]) -> None:
    """The :data:`DATA_COUNTS` settings of a ``data`` config, where set."""
    for key, least in DATA_COUNTS.items():
        if data.get(key) is not None:
            check_count(f"data.{key}", data[key], least)


def check_network(net: Mapping[str, Any], clip_length: Any = CLIP_LENGTH) -> None:
    """``model.net``'s sizes and correlation backend, and the data's ``clip_length`` the network takes."""
    check_count("model.net.n_feat", net.get("n_feat", 32), 1)
    check_count("model.net.n_resblock", net.get("n_resblock", 3), 0)
    try:
        check_corr_backend(net.get("corr_backend", "auto"), "model.net.corr_backend")  # the model's own rule
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if clip_length != CLIP_LENGTH:
        raise ConfigError(f"data.clip_length={clip_length}: CDVD-TSP restores the centre of {CLIP_LENGTH}-frame clips")


#: Arguments of optimisers and schedulers that take a string (torch's OneCycleLR, CyclicLR, ReduceLROnPlateau);
#: every other argument is a number, a flag, a list of numbers or null.
STRING_ARGUMENTS = frozenset({"anneal_strategy", "mode", "scale_mode", "threshold_mode"})

SCHEDULER_INTERVALS = ("epoch", "step")


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
        raise ConfigError(f"optimizer ({optimizer.get('_target_')}): {_innermost(err)}") from None


def check_scheduler(scheduler: Mapping[str, Any] | None) -> None:
    """``scheduler.interval`` and the scheduler's numeric arguments."""
    if not scheduler:
        return
    interval = scheduler.get("interval", "epoch")
    if interval not in SCHEDULER_INTERVALS:
        raise ConfigError(f"scheduler.interval={interval}: expected one of {', '.join(SCHEDULER_INTERVALS)}")
    inner = scheduler.get("scheduler")
    if isinstance(inner, Mapping):
        check_numeric_arguments("scheduler.scheduler", inner)


def check_training_config(cfg: Mapping[str, Any]) -> None:
    """Every check above on a composed ``cdvd-train`` config (a DictConfig or a plain mapping)."""
    if cfg.get("seed") is not None:
        check_count("seed", cfg["seed"], 0)
    data = cfg.get("data") or {}
    check_data_counts(data)
    check_network(cfg["model"].get("net") or {}, data.get("clip_length", CLIP_LENGTH))
    check_numeric_arguments("loss", cfg.get("loss"))
    check_learning_rates(cfg["optimizer"], cfg.get("scheduler"), cfg["model"].get("flow_lr_scale", 1.0))
    check_optimizer(cfg["optimizer"])
    check_scheduler(cfg.get("scheduler"))
    trainer = cfg.get("trainer") or {}
    check_trainer_counts(trainer)
    check_accelerator(trainer.get("accelerator", "auto"), trainer.get("devices", "auto"))
    if cfg.get("ckpt_path"):
        check_resume_checkpoint(cfg["ckpt_path"])


def user_error_of(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The user's error (one of ``types``) that ``err`` wraps, if any.

    ``hydra.utils.instantiate`` wraps whatever a constructor raises in an ``InstantiationException`` (a traceback
    for the user): a :class:`CheckpointError` of ``model.pretrained``, say, is found again here through the
    ``__cause__`` chain.
    """
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, types):
            return seen
        seen = seen.__cause__
    return None


def _shown(value: Any) -> str:
    """A config value as the user typed it: ``[2, 3]``, not ``ListConfig([2, 3])``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _innermost(err: BaseException) -> str:
    """The message of the innermost cause of ``err`` (Hydra wraps a constructor's error in its own)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err).splitlines()[-1] if str(err) else type(err).__name__
