"""Experiment tracking: the metric a sweep optimises, run names from overrides, and TensorBoard's HParams summary."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cdvd.atomic import unwritable_reason
from cdvd.errors import ConfigError
from cdvd.training.resume import register_resolvers as register_resume_resolvers

logger = logging.getLogger(__name__)

# the longest run name (folder names stay under the 255 bytes file systems allow; longer names are cut and hashed)
MAX_RUN_NAME = 200

# the optional package each logger needs, and the extra of ours that installs it
LOGGER_EXTRAS = {
    "pytorch_lightning.loggers.MLFlowLogger": ("mlflow", "mlflow"),
    "pytorch_lightning.loggers.mlflow.MLFlowLogger": ("mlflow", "mlflow"),
    "pytorch_lightning.loggers.WandbLogger": ("wandb", "wandb"),
    "pytorch_lightning.loggers.wandb.WandbLogger": ("wandb", "wandb"),
}


def metric_value(metrics: Mapping[str, float], name: str | None) -> float | None:
    """The value of the metric a sweeper optimises (``optimized_metric``), from a run's final metrics.

    Args:
        metrics: the run's final metrics (``trainer.callback_metrics`` as floats).
        name: the metric's name, e.g. ``val/psnr_best``; ``None`` or empty: nothing is optimised.

    Returns:
        The value, or ``None`` when ``name`` is empty.

    Raises:
        ConfigError: ``name`` is not among the metrics (the message names ``optimized_metric`` and lists them).
    """
    if not name:
        return None
    if name not in metrics:
        known = ", ".join(sorted(metrics)) or "none (did validation run?)"
        raise ConfigError(f"optimized_metric={name}: the run logged no such metric; it logged {known}")
    return float(metrics[name])


def run_name(num: Any, overrides: str) -> str:
    """A folder-safe run name from the job number and Hydra's ``override_dirname``.

    ``3`` and ``optimizer.lr=0.0003,seed=1`` give ``3_optimizer.lr=0.0003,seed=1``. Path separators and other
    characters a folder name should not hold become ``_``; a name longer than :data:`MAX_RUN_NAME` is cut and ends
    with a hash of the whole, so two runs never share a name. Registered as the OmegaConf resolver
    ``cdvd_run_name`` (``hydra.sweep.subdir``, the MLflow and W&B run names).
    """
    name = f"{num}_{overrides}" if overrides else str(num)
    name = re.sub(r"[^A-Za-z0-9._=,+\-~@]", "_", name)
    if len(name) > MAX_RUN_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_RUN_NAME - 9]}-{digest}"
    return name


def register_resolvers() -> None:
    """Register ``${cdvd_run_name:num,overrides}`` with OmegaConf (idempotent; every console script and
    :func:`cdvd.training.run.train` call it)."""
    if not OmegaConf.has_resolver("cdvd_run_name"):
        OmegaConf.register_new_resolver("cdvd_run_name", run_name)
    register_resume_resolvers()  # ${cdvd_run_dir:...}: a resumed run writes into its own folder


def check_logger_packages(logger_cfg: Mapping[str, Any] | None) -> None:
    """Fail with the extra to install when a configured logger's package is missing.

    Raises:
        ValueError: e.g. ``logger=mlflow needs the mlflow package: pip install 'cdvd[mlflow]'``.
    """
    for key, entry in (logger_cfg or {}).items():
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            continue
        needed = LOGGER_EXTRAS.get(str(entry["_target_"]))
        if needed and importlib.util.find_spec(needed[0]) is None:
            raise ConfigError(
                f"logger.{key} ({entry['_target_']}) needs the {needed[0]} package: pip install 'cdvd[{needed[1]}]'"
            )


#: tracking URIs that MLflow reads as a service's name, not as a folder
_MLFLOW_NAMED_STORES = ("databricks", "databricks-uc", "uc")


def _store_problem(path: Path, *, database: bool) -> str | None:
    """Why MLflow could not write its store at ``path`` (a SQLite file, or a folder store), or None. MLflow makes
    the missing folders of either; SQLite writes its journal beside the database."""
    folder = path
    if database:
        if path.is_dir():
            return f"{path} is a folder, not a database file"
        if path.exists():
            try:
                os.close(os.open(path, os.O_RDWR))  # opened for writing, nothing written
            except OSError as err:
                return f"cannot write {path} ({err.strerror or err})"
        folder = path.parent
    return unwritable_reason(folder)


def check_logger_stores(logger_cfg: Mapping[str, Any] | None) -> None:
    """Refuse, before training, an MLflow tracking store that cannot be written (MLflow itself retries for minutes).

    A ``sqlite:///`` store must be a writable file or one that can be made in an existing writable folder; a local
    file store (a path or ``file:`` URI) must be in a writable place. Servers (``http://``...) are not checked.

    Raises:
        ConfigError: naming ``logger.<name>.tracking_uri`` and the place.
    """
    for key, entry in (logger_cfg or {}).items():
        if not isinstance(entry, Mapping) or "MLFlowLogger" not in str(entry.get("_target_", "")):
            continue
        uri = entry.get("tracking_uri")
        if not uri:
            continue
        uri = str(uri)
        scheme, _, rest = uri.partition(":")
        if scheme == "sqlite":
            location = rest.removeprefix("///") if rest.startswith("///") else ""
            if location in ("", ":memory:"):
                continue
            problem = _store_problem(Path(location.split("?", 1)[0]), database=True)
        elif scheme == "file" or (":" not in uri and uri not in _MLFLOW_NAMED_STORES):
            location = urllib.parse.urlparse(uri).path if scheme == "file" else uri
            problem = _store_problem(Path(location), database=False)
        else:
            continue
        if problem:
            raise ConfigError(f"logger.{key}.tracking_uri={uri}: {problem}; choose a writable place")


def _hparams_of(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, DictConfig):
        # the hydra node is absent from a job's config; everything else resolves
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    return dict(config)


def log_final_hparams(
    loggers: Iterable[Any], config: DictConfig | Mapping[str, Any], metrics: Mapping[str, float]
) -> None:
    """Write the run's hyper-parameters with its final metrics for TensorBoard's HParams tab.

    Every TensorBoard logger gets an HParams summary (the flattened config) whose metrics are the final values under
    ``hp/<name>`` (``hp/val/psnr_best`` ...), so runs compare in one table; NaN or infinite values are left out.
    Other loggers are not touched (they record the hyper-parameters when the run starts).

    Args:
        loggers: the trainer's loggers.
        config: the run's composed config.
        metrics: the run's final scalar metrics.
    """
    from pytorch_lightning.loggers import TensorBoardLogger

    tensorboards = [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]
    if not tensorboards:
        return
    final = {f"hp/{k}": float(v) for k, v in metrics.items() if k.startswith("val/") and math.isfinite(float(v))}
    params = _hparams_of(config)
    for lg in tensorboards:
        lg.log_hyperparams(params, metrics=final)
