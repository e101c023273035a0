"""Training from one composed Hydra config: checks, the objects it builds, and the run (``cdvd-train``'s core)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from cdvd.checkpoints import load_model, save_original
from cdvd.errors import ConfigError, innermost_cause, user_error_of
from cdvd.training.checks import check_training_config
from cdvd.training.resume import clean_checkpoint_folder
from cdvd.training.tracking import (
    check_logger_packages,
    check_logger_stores,
    log_best_checkpoint,
    log_final_hparams,
    log_start_hparams,
    register_resolvers,
)

logger = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> None:
    """Fail early, with the setting's name, on combinations that would only fail deep inside a library."""
    check_training_config(cfg)  # the schema, the loss's patch size, GPU, a whole ckpt_path (cdvd/training/checks.py)
    check_logger_packages(cfg.get("logger"))
    # before training: MLflow itself retries an unwritable store for minutes, refuses a bad tag once started
    check_logger_stores(cfg.get("logger"), cfg.get("tags"))
    for key in ("pretrained", "flow_pretrained"):
        path = cfg.model.get(key)
        if path and not Path(path).is_file():
            raise ConfigError(f"model.{key}={path}: file not found")


def build_part(key: str, node: Any, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` for the config at ``key`` (``trainer``, ``logger.mlflow``...); what its class
    refuses (``trainer.precision=bogus``) is one :class:`ConfigError` naming ``key`` and the innermost reason. The
    key is known here, where the part is built: no library message is parsed to find it."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        found = user_error_of(err)
        if found is not None:
            raise found from None
        raise ConfigError(f"bad setting {key}: {innermost_cause(err)}") from err


def instantiate_dict(cfg: DictConfig | None, group: str) -> list[Any]:
    """Instantiate every entry of a mapping of ``_target_`` configs (callbacks, loggers) of config group ``group``."""
    entries = (cfg or {}).items()
    return [build_part(f"{group}.{name}", node) for name, node in entries if node is not None and "_target_" in node]


def build_module(cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule of a composed config: network, loss, optimiser and scheduler factories."""
    # the parts as plain configs: the module builds them and keeps them in its checkpoints' hyper-parameters
    return build_part(
        "model",
        cfg.model,
        net=OmegaConf.to_container(cfg.model.net, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None,
        _recursive_=False,
    )


def _no_advert(record: logging.LogRecord) -> bool:
    """Drops Lightning's "💡 Tip: ... try installing litlogger" line: an advert on every run, not a fact about it."""
    return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def quiet_lightning_adverts() -> None:
    """Keep Lightning's start-up lines (devices, precision) but not its adverts."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        lightning_logger = logging.getLogger(name)
        if _no_advert not in lightning_logger.filters:
            lightning_logger.addFilter(_no_advert)


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """The data module, the LightningModule and the trainer of a composed config."""
    quiet_lightning_adverts()
    datamodule = build_part("data", cfg.data)
    model = build_module(cfg)
    loggers = instantiate_dict(cfg.get("logger"), "logger")
    callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
    if not loggers:  # nothing to log the learning rate to (logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = build_part("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, model, trainer


def baseline_verdict(metrics: dict[str, float], steps: int) -> tuple[int, str] | None:
    """The run's last val/psnr against the blurry input's (``val/psnr_input``), as ``(log level, line)``: a gain, or
    below the input and why (a run this short of a network trained from scratch has not learnt to deblur yet)."""
    psnr, baseline = metrics.get("val/psnr"), metrics.get("val/psnr_input")
    if psnr is None or baseline is None:
        return None
    gain = psnr - baseline
    line = f"val/psnr {psnr:.2f} dB against {baseline:.2f} dB of the blurry input ({gain:+.2f} dB) after {steps} steps"
    if gain >= 0:
        return logging.INFO, line
    return logging.WARNING, (
        f"{line}: below the input. {steps} steps are too few for a network trained from scratch to learn to deblur "
        "(the smoke experiment checks the wiring in seconds); cdvd-demo trains long enough to beat its input, "
        "and a real run needs many thousands of steps or pretrained= weights"
    )


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train (or resume, with ``ckpt_path``) and return the final metrics and the objects used."""
    register_resolvers()
    check_config(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    clean_checkpoint_folder(trainer)  # partial checkpoint files of killed runs (cdvd/training/resume.py)
    log_start_hparams(trainer.loggers, cfg)  # TensorBoard: the main settings; MLflow: also config.yaml
    trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    log_final_hparams(trainer.loggers, cfg, metrics)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")  # "" without a checkpoint callback
    log_best_checkpoint(trainer.loggers, best)  # an MLflow run keeps it as an artifact
    if best and cfg.get("export_original") and trainer.is_global_zero:
        exported = Path(best).with_suffix(".pt")
        save_original(load_model(best), exported)
        logger.info("best weights in the original CDVD-TSP format: %s", exported)
    if trainer.is_global_zero:
        verdict = baseline_verdict(metrics, int(trainer.global_step))
        if verdict is not None:
            logger.log(*verdict)
        logger.info("run folder: %s", cfg.paths.output_dir)
        if best:
            logger.info("best checkpoint: %s", best)
    return metrics, {"datamodule": datamodule, "model": model, "trainer": trainer}
