"""``cdvd-find-lr``: the learning-rate range test (torch-lr-finder) on the composed training config.

    cdvd-find-lr experiment=fork2021_dvd data.root=/data/DVD lr_finder.num_iter=200

Writes ``lr_finder.png`` (loss against lr), ``lr_overrides.yaml`` (``optimizer.lr`` and
``scheduler.scheduler.max_lr`` for OneCycle) into the run folder and logs the suggested values.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
import matplotlib
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch_lr_finder import LRFinder, TrainDataLoaderIter
from torch_lr_finder import lr_finder as lr_finder_module

from cdvd.atomic import atomic_destination
from cdvd.inference import resolve_device
from cdvd.lit_module import build_param_groups
from cdvd.train import CONFIG_PATH, ConfigError, build_module, check_config, run_cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend

logger = logging.getLogger(__name__)


class _ClipBatches(TrainDataLoaderIter):
    """Feeds ``(blur clip, sharp clip)`` pairs from our dict batches."""

    def inputs_labels_from_batch(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["blur"], batch["sharp"]


class _RatioKeepingExponentialLR(torch.optim.lr_scheduler.LRScheduler):
    """Ramps every parameter group by the same factor, so the first group ends at ``end_lr`` and the others keep
    their ratio to it (torch-lr-finder's own schedule sends every group to the same end value)."""

    def __init__(self, optimizer: torch.optim.Optimizer, end_lr: float, num_iter: int, last_epoch: int = -1) -> None:
        if num_iter <= 1:
            raise ValueError("lr_finder.num_iter must be larger than 1")
        self.end_lr = end_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        r = self.last_epoch / (self.num_iter - 1)
        factor = (self.end_lr / self.base_lrs[0]) ** r
        return [base_lr * factor for base_lr in self.base_lrs]


class _LossOnly(nn.Module):
    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: Any, sharp: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs, sharp)["loss"]


def suggest(lrs: list[float], losses: list[float]) -> tuple[float, float]:
    """``(lr, max_lr)`` from a range test: lr at the steepest fall of the (smoothed) loss, and max_lr one tenth of
    the lr at its minimum (never below lr)."""
    if len(lrs) < 3:
        raise ValueError("the range test recorded fewer than 3 points; raise lr_finder.num_iter")
    finite = [(lr, loss) for lr, loss in zip(lrs, losses, strict=True) if math.isfinite(loss)]
    lrs_f = [p[0] for p in finite]
    losses_f = [p[1] for p in finite]
    slopes = [
        (losses_f[i + 1] - losses_f[i]) / (math.log(lrs_f[i + 1]) - math.log(lrs_f[i])) for i in range(len(lrs_f) - 1)
    ]
    steepest = min(range(len(slopes)), key=slopes.__getitem__)
    lr = lrs_f[steepest]
    at_min = lrs_f[min(range(len(losses_f)), key=losses_f.__getitem__)]
    return lr, max(lr, at_min / 10.0)


@contextlib.contextmanager
def _ratio_keeping_schedule() -> Iterator[None]:
    original = lr_finder_module.ExponentialLR
    lr_finder_module.ExponentialLR = _RatioKeepingExponentialLR
    try:
        yield
    finally:
        lr_finder_module.ExponentialLR = original


def find_lr(cfg: DictConfig) -> dict[str, Any]:
    """Run the range test of ``cfg.lr_finder`` and write the plot and the overrides into the run folder."""
    check_config(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    settings = cfg.lr_finder
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        device = resolve_device(str(settings.device))
    except ValueError as err:
        raise ConfigError(f"lr_finder.device={settings.device}: {err}") from err

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg)
    groups = build_param_groups(module.net, float(settings.start_lr), float(cfg.model.flow_lr_scale))
    optimizer = module.optimizer_factory(params=groups)

    finder = LRFinder(module.net, optimizer, _LossOnly(module.loss), device=device)
    with _ratio_keeping_schedule():
        finder.range_test(
            _ClipBatches(datamodule.train_dataloader()),
            end_lr=float(settings.end_lr),
            num_iter=int(settings.num_iter),
            step_mode="exp",
            diverge_th=float(settings.diverge_th),
        )
    lrs, losses = finder.history["lr"], finder.history["loss"]
    lr, max_lr = suggest(lrs, losses)
    finder.reset()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (recons net; the flow net keeps its ratio)")
    ax.set_ylabel("training loss (smoothed)")
    ax.axvline(lr, color="tab:green", linestyle="--", label=f"lr {lr:.2e}")
    ax.axvline(max_lr, color="tab:red", linestyle="--", label=f"max_lr {max_lr:.2e}")
    ax.legend()
    fig.tight_layout()
    plot_path = out_dir / "lr_finder.png"
    with atomic_destination(plot_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)

    overrides = {
        "optimizer": {"lr": float(f"{lr:.3g}")},
        "scheduler": {"scheduler": {"max_lr": float(f"{max_lr:.3g}")}},
    }
    yaml_path = out_dir / "lr_overrides.yaml"
    with atomic_destination(yaml_path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    logger.info("suggested lr %.3g, max_lr for OneCycle %.3g", lr, max_lr)
    logger.info("plot: %s, overrides: %s", plot_path, yaml_path)
    logger.info(
        "train with: cdvd-train <same overrides> scheduler=onecycle optimizer.lr=%.3g scheduler.scheduler.max_lr=%.3g",
        lr,
        max_lr,
    )
    return {"lr": lr, "max_lr": max_lr, "plot": plot_path, "overrides": yaml_path, "history": finder.history}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="find_lr")
def main(cfg: DictConfig) -> None:
    run_cli(find_lr, cfg)


if __name__ == "__main__":
    main()
