"""Experiment tracking: the metric a sweep optimises, run names from the overrides that matter, the settings
TensorBoard's HParams tab compares, and what an MLflow run keeps (the config's tags, the composed config and the
best checkpoint as artifacts)."""

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
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cdvd.atomic import unwritable_reason
from cdvd.errors import ConfigError
from cdvd.training.resume import config_subdir, run_dir

if TYPE_CHECKING:  # Hydra's parser and Lightning load on first use: every command line reads the resolvers here
    from hydra.core.override_parser.types import Override

logger = logging.getLogger(__name__)

#: overrides of these config groups never name a run nor count among its hyper-parameters: Hydra's own settings,
#: the loggers (how the run is watched, not what it computes) and the output paths
OUTSIDE_THE_RUN = ("hydra", "logger", "paths")

# the longest run name (folder names stay under the 255 bytes file systems allow; longer names are cut and hashed)
MAX_RUN_NAME = 200

#: the optional package each logger class needs (the extra of ours that installs it has the same name)
LOGGER_PACKAGES = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb"}


def metric_value(metrics: Mapping[str, float], name: str | None) -> float | None:
    """The value of the metric a sweeper optimises (``optimized_metric``, e.g. ``val/psnr_best``) among a run's final
    metrics; ``None`` when ``name`` is empty (nothing is optimised).

    Raises:
        ConfigError: ``name`` is not among the metrics (the message names ``optimized_metric`` and lists them).
    """
    if not name:
        return None
    if name not in metrics:
        known = ", ".join(sorted(metrics)) or "none (did validation run?)"
        raise ConfigError(f"optimized_metric={name}: the run logged no such metric; it logged {known}")
    return float(metrics[name])


def overrides_that_matter(overrides: Iterable[str], left_out: Iterable[str] = ()) -> list[Override]:
    """The command line's overrides that change what a run computes, sorted as Hydra's ``override_dirname`` sorts.

    Left out: overrides of :data:`OUTSIDE_THE_RUN` (Hydra's own settings, the loggers, the output paths) and of the
    keys in ``left_out`` (``hydra.job.config.override_dirname.exclude_keys``: the data's and the checkpoints' paths).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    skip = {str(key) for key in left_out}
    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    kept = [
        o for o in parsed if o.key_or_group not in skip and re.split(r"[./]", o.key_or_group)[0] not in OUTSIDE_THE_RUN
    ]
    return sorted(kept, key=lambda o: o.input_line or "")


def run_name(num: Any, overrides: Iterable[str], left_out: Iterable[str] = ()) -> str | None:
    """A folder-safe run name from the job number and the overrides that matter (:func:`overrides_that_matter`).

    Job ``3`` of a sweep with ``optimizer.lr=0.0003 seed=1 logger=mlflow`` is ``3_optimizer.lr=0.0003,seed=1``; a
    single run (no job number) is ``optimizer.lr=0.0003,seed=1``, and one without such overrides gets no name
    (None: the tracker names it). Characters a folder name should not hold become ``_``; a name longer than
    :data:`MAX_RUN_NAME` is cut and ends with a hash of the whole, so two runs never share a name. Registered as the
    OmegaConf resolver ``cdvd_run_name`` (``hydra.sweep.subdir``, the MLflow and W&B run names).
    """
    text = ",".join(o.input_line or "" for o in overrides_that_matter(overrides, left_out))
    name = "_".join(part for part in ("" if num is None else str(num), text) if part)
    if not name:
        return None
    name = re.sub(r"[^A-Za-z0-9._=,+\-~@]", "_", name)
    if len(name) > MAX_RUN_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_RUN_NAME - 9]}-{digest}"
    return name


def mlflow_tags(tags: Any) -> dict[str, str]:
    """The config's ``tags`` (a list of labels, as W&B takes them) as MLflow run tags: each label a tag with an empty
    value (MLflow's tags are name-value pairs)."""
    if not tags:
        return {}
    labels = [tags] if isinstance(tags, str) else list(tags)
    return {str(label): "" for label in labels}


def register_resolvers() -> None:
    """Register the configs' resolvers with OmegaConf (idempotent; every console script and
    :func:`cdvd.training.run.train` call it): ``${cdvd_run_name:num,overrides,left_out}``, and ``cdvd_run_dir``,
    ``cdvd_config_subdir`` (:mod:`cdvd.training.resume`: a resumed run writes into its own folder)."""
    resolvers = {"cdvd_run_name": run_name, "cdvd_run_dir": run_dir, "cdvd_config_subdir": config_subdir}
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


def _logger_class(entry: Any) -> str:
    """The name of the class a logger's config builds (``MLFlowLogger``); empty for an entry that builds none."""
    target = entry.get("_target_") if isinstance(entry, Mapping) else None
    return str(target).rsplit(".", 1)[-1] if target else ""


def check_logger_packages(logger_cfg: Mapping[str, Any] | None) -> None:
    """A :class:`ConfigError` naming the extra to install when a configured logger's package is missing
    (``logger.mlflow (...) needs the mlflow package: pip install 'cdvd[mlflow]'``)."""
    for key, entry in (logger_cfg or {}).items():
        package = LOGGER_PACKAGES.get(_logger_class(entry))
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"logger.{key} ({entry['_target_']}) needs the {package} package: pip install 'cdvd[{package}]'"
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


def _check_mlflow_tags(key: str, tags: Mapping[str, Any]) -> None:
    """MLflow's own check of tag names (the config's ``tags``), as one :class:`ConfigError`."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.utils.validation import _validate_tag_name
    except ImportError:  # MLflow's own check moved: MLflow still refuses a bad name when the run starts
        return
    for name in tags or {}:
        try:
            _validate_tag_name(str(name))
        except MlflowException as err:
            raise ConfigError(f"tags: {name!r} is not a tag name MLflow takes (logger.{key}): {err.message}") from None


def check_logger_stores(logger_cfg: Mapping[str, Any] | None, tags: Any = None) -> None:
    """Refuse, before training, an MLflow tracking store that cannot be written (MLflow itself retries for minutes).

    A ``sqlite:///`` store must be a writable file or one that can be made in an existing writable folder; a local
    file store (a path or ``file:`` URI) must be in a writable place. Servers (``http://``...) are not checked.
    The config's ``tags`` must be names MLflow takes (it would refuse them only once the run has started).

    Raises:
        ConfigError: naming ``logger.<name>.tracking_uri`` and the place, or the tag.
    """
    for key, entry in (logger_cfg or {}).items():
        if _logger_class(entry) != "MLFlowLogger":
            continue
        _check_mlflow_tags(key, mlflow_tags(tags))
        uri = str(entry.get("tracking_uri") or "")
        if not uri:
            continue
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


#: the settings TensorBoard's HParams tab compares for every run, beside the run's own overrides (absent or null
#: ones are left out): the model's size, the optimisation, the batch, the precision and the seed
MAIN_SETTINGS = (
    "seed",
    "model.net.n_feat",
    "model.net.n_resblock",
    "model.flow_lr_scale",
    "optimizer.lr",
    "optimizer.weight_decay",
    "scheduler.scheduler.max_lr",
    "data.batch_size",
    "data.patch_size",
    "data.clip_length",
    "trainer.precision",
    "trainer.max_epochs",
    "trainer.accumulate_grad_batches",
)
#: config groups named in the HParams table by their choice (``optimizer: adamw``); without Hydra, by the class
#: they build (``optimizer: AdamW``), where they build one
NAMED_GROUPS = {
    "experiment": None,
    "data": None,
    "model": None,
    "loss": "loss._target_",
    "optimizer": "optimizer._target_",
    "scheduler": "scheduler.scheduler._target_",
}


def _hydra_run() -> tuple[list[str], list[str], dict[str, Any]]:
    """This job's command-line overrides, Hydra's ``exclude_keys`` and its group choices (empty without Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], [], {}
    hydra_cfg = HydraConfig.get()
    left_out = list(hydra_cfg.job.config.override_dirname.exclude_keys or [])
    return list(hydra_cfg.overrides.task), left_out, dict(hydra_cfg.runtime.choices)


def _plain(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) else str(value)


def main_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The few settings a run is compared by: :data:`MAIN_SETTINGS`, the :data:`NAMED_GROUPS` and every override
    that matters (:func:`overrides_that_matter`), flat, with ``/`` between levels (``optimizer/lr``) as MLflow's
    parameters; no ``_target_`` entries, no paths."""
    overrides, left_out, choices = _hydra_run()
    params: dict[str, Any] = {}
    for group, target in NAMED_GROUPS.items():
        choice = choices.get(group)
        if choice is None and target is not None:
            built = OmegaConf.select(cfg, target)
            choice = str(built).rsplit(".", 1)[-1] if built else "none"
        if choice is not None:
            params[group] = str(choice)
    for key in MAIN_SETTINGS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            params[key.replace(".", "/")] = _plain(value)
    for override in overrides_that_matter(overrides, left_out):
        if override.is_delete():
            continue
        key = override.key_or_group
        value = OmegaConf.select(cfg, key)
        if value is None or isinstance(value, DictConfig | ListConfig):  # a group's choice, a list, a null
            value = choices.get(key, override.get_value_element_as_str())
        params[key.replace(".", "/")] = _plain(value)
    return params


def log_start_hparams(loggers: Iterable[Any], config: DictConfig) -> None:
    """The run's hyper-parameters when it starts: TensorBoard gets :func:`main_hparams` (its HParams table compares
    runs by them), the other loggers the whole resolved config; an MLflow run also gets the config's ``tags``
    (:func:`mlflow_tags`) and keeps the composed config as its artifact ``config.yaml`` (as ``.hydra/config.yaml``)."""
    from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger

    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(main_hparams(config))
        else:
            lg.log_hyperparams(OmegaConf.to_container(config, resolve=True))  # a job's config has no hydra node
        if isinstance(lg, MLFlowLogger) and lg.run_id is not None:  # None on the other ranks of a DDP run
            for name, value in mlflow_tags(config.get("tags")).items():
                lg.experiment.set_tag(lg.run_id, name, value)
            lg.experiment.log_text(lg.run_id, OmegaConf.to_yaml(config), "config.yaml")


def log_best_checkpoint(loggers: Iterable[Any], best: str | os.PathLike | None) -> None:
    """At the end of fit, the best checkpoint as an artifact of every MLflow run (``checkpoints/<file>.ckpt``).

    Left to Lightning where the logger's ``log_model`` is on (it then logs its checkpoints itself)."""
    from pytorch_lightning.loggers import MLFlowLogger

    if not best:
        return
    for lg in loggers:
        if isinstance(lg, MLFlowLogger) and not getattr(lg, "_log_model", False) and lg.run_id is not None:
            lg.experiment.log_artifact(lg.run_id, str(best), "checkpoints")
            logger.info("best checkpoint logged to MLflow run %s", lg.run_id)


def log_final_hparams(loggers: Iterable[Any], config: DictConfig, metrics: Mapping[str, float]) -> None:
    """Every TensorBoard logger's HParams summary (:func:`main_hparams`) with the run's final ``val/`` metrics under
    ``hp/<name>`` (``hp/val/psnr_best`` ...), so runs compare in one table; NaN or infinite values are left out. The
    other loggers recorded the hyper-parameters when the run started."""
    from pytorch_lightning.loggers import TensorBoardLogger

    final = {f"hp/{k}": float(v) for k, v in metrics.items() if k.startswith("val/") and math.isfinite(float(v))}
    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(main_hparams(config), metrics=final)
