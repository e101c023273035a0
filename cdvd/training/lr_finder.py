"""The learning-rate range test (torch-lr-finder) on a composed training config (``cdvd-find-lr``'s core).

The test ramps every parameter group's learning rate by the same factor, so the flow net keeps its ratio to the
reconstruction net (torch-lr-finder's own schedule sends every group to the same end value), and stops once the
smoothed loss passes ``diverge_th`` times its minimum. From the smoothed loss curve it suggests:

- ``max_lr`` (OneCycle's peak, ``scheduler.scheduler.max_lr``): the later of the two usual readings of the curve,
  its steepest fall against log lr (torch-lr-finder's suggestion) and a decade before its minimum (fastai's
  "minimum / 10"). Both are lrs at which the loss still falls, before the minimum and so before the divergence; the
  steepest fall can lie far below the minimum on a long gentle curve, and minimum / 10 before the fall on a sharp
  one, so taking the later keeps the cycle's peak where training is fast;
- ``lr`` (``optimizer.lr``, where the cycle starts with ``div_factor: null``): ``max_lr / 4``, Smith's rule for
  cyclical rates (the lower bound 3 to 4 times below the upper; the 2021 fork's own test gave 6e-6 and 2.5e-5).

So lr < max_lr < the lr of the minimum < the lr at which the loss diverged. The plot (``lr_finder.png``) shows the
loss on a log lr axis with both suggestions marked; its y axis runs from the minimum to the highest loss before it,
so the divergence's spike (hundreds of times the minimum) runs off the top instead of flattening the curve.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from cdvd.atomic import atomic_destination
from cdvd.errors import ConfigError
from cdvd.hardware import resolve_device
from cdvd.settings import count, number, read_settings
from cdvd.training.module import build_param_groups
from cdvd.training.run import build_module, build_part, check_config

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

#: one reading of ``max_lr``: the lr at the loss minimum divided by this (fastai's "minimum / 10")
MIN_TO_MAX_LR = 10.0
#: ``lr`` is ``max_lr`` divided by this (Smith: the lower bound of a cycle 3 to 4 times below the upper)
MAX_TO_LR = 4.0


class ClipBatches(TrainDataLoaderIter):
    """Feeds ``(blur clip, sharp clip)`` pairs from our dict batches."""

    def inputs_labels_from_batch(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["blur"], batch["sharp"]


class RatioKeepingExponentialLR(torch.optim.lr_scheduler.LRScheduler):
    """Ramps every parameter group by the same factor, so the first group ends at ``end_lr`` and the others keep
    their ratio to it."""

    def __init__(self, optimizer: torch.optim.Optimizer, end_lr: float, num_iter: int, last_epoch: int = -1) -> None:
        self.end_lr = end_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        r = self.last_epoch / (self.num_iter - 1)
        factor = (self.end_lr / self.base_lrs[0]) ** r
        return [base_lr * factor for base_lr in self.base_lrs]


class RatioKeepingLRFinder(LRFinder):
    """torch-lr-finder's :class:`LRFinder` with :class:`RatioKeepingExponentialLR` as its exponential schedule."""

    def range_test(  # type: ignore[override]
        self,
        train_loader: TrainDataLoaderIter,
        *,
        end_lr: float,
        num_iter: int,
        smooth_f: float = 0.05,
        diverge_th: float = 5.0,
    ) -> None:
        """Train ``num_iter`` batches with the learning rate ramped up to ``end_lr``; fills ``self.history``."""
        self.history = {"lr": [], "loss": []}
        self.best_loss = None
        self.model.to(self.device)
        self._check_for_scheduler()
        schedule = RatioKeepingExponentialLR(self.optimizer, end_lr, num_iter)
        for iteration in range(num_iter):
            loss = self._train_batch(train_loader, 1)
            self.history["lr"].append(schedule.get_last_lr()[0])
            schedule.step()
            if iteration > 0 and smooth_f > 0:
                loss = smooth_f * loss + (1 - smooth_f) * self.history["loss"][-1]
            if self.best_loss is None or loss < self.best_loss:
                self.best_loss = loss
            self.history["loss"].append(loss)
            if loss > diverge_th * self.best_loss:
                logger.info("the loss diverged at lr %.3g: range test stopped", self.history["lr"][-1])
                break


def suggest(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float, float]:
    """``(lr, max_lr)`` from a range test's (smoothed) loss curve; see the module's docstring for the rule.

    Non-finite losses are left out. Logs a warning when the suggested lr lies below the range tested.

    Raises:
        ConfigError: fewer than 3 points, or fewer than 2 finite losses (naming the setting to change).
    """
    if len(lrs) < 3:
        raise ConfigError("the range test recorded fewer than 3 points; raise lr_finder.num_iter")
    finite = [(lr, loss) for lr, loss in zip(lrs, losses, strict=True) if math.isfinite(loss)]
    if len(finite) < 2:
        raise ConfigError("the range test recorded fewer than 2 finite losses; lower lr_finder.start_lr")
    lrs_f, losses_f = (list(column) for column in zip(*finite, strict=True))
    lowest = min(range(len(losses_f)), key=losses_f.__getitem__)
    # the steepest fall of loss against log lr, on the way down to the minimum (a fall after it is the divergence's)
    descent = range(max(lowest, 1))
    slopes = {i: (losses_f[i + 1] - losses_f[i]) / (math.log(lrs_f[i + 1]) - math.log(lrs_f[i])) for i in descent}
    steepest = lrs_f[min(slopes, key=slopes.__getitem__)]
    max_lr = max(steepest, lrs_f[lowest] / MIN_TO_MAX_LR)
    lr = max_lr / MAX_TO_LR
    if lr < lrs_f[0]:
        logger.warning(
            "the suggested lr %.3g lies below the first lr tried (%.3g): the loss fell from the start of the range "
            "or never fell; lower lr_finder.start_lr to see where it starts to fall",
            lr,
            lrs_f[0],
        )
    return lr, max_lr


def loss_axis_limits(losses: Sequence[float]) -> tuple[float, float]:
    """The y range of the plot: from the lowest loss to the highest one recorded before it, with a margin.

    The diverged tail (losses after the minimum that climb above everything before it) is left above the top, so
    the fall the suggestions are read from fills the plot instead of a flat line under the divergence's spike.
    """
    finite = [loss for loss in losses if math.isfinite(loss)]
    if not finite:
        return 0.0, 1.0
    lowest = min(range(len(finite)), key=finite.__getitem__)
    bottom, top = finite[lowest], max(finite[: lowest + 1])
    margin = 0.05 * (top - bottom) or 0.05 * abs(bottom) or 0.05
    return bottom - margin, top + margin


def leaves_chart_after(lrs: Sequence[float], losses: Sequence[float], top: float) -> float | None:
    """The lr of the last point before the curve, past its minimum, climbs above ``top`` or stops being finite (None:
    it stays on the chart)."""
    finite = [loss if math.isfinite(loss) else math.inf for loss in losses]
    lowest = min(range(len(finite)), key=finite.__getitem__)
    above = next((i for i in range(lowest, len(finite)) if finite[i] > top), None)
    return None if above is None else lrs[above - 1]


def plot_range_test(lrs: Sequence[float], losses: Sequence[float], lr: float, max_lr: float) -> Figure:
    """Loss against lr (log scale) with the two suggestions marked; the diverged tail runs off the top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(lrs, losses, marker=".", markersize=3)
    ax.set_xscale("log")
    bottom, top = loss_axis_limits(losses)
    ax.set_ylim(bottom, top)
    ax.set_xlabel("learning rate (recons net; the flow net keeps its ratio)")
    ax.set_ylabel("training loss (smoothed)")
    ax.axvline(lr, color="tab:green", linestyle="--", label=f"lr {lr:.2e} (optimizer.lr)")
    ax.axvline(max_lr, color="tab:red", linestyle="--", label=f"max_lr {max_lr:.2e} (OneCycle)")
    last_on_chart = leaves_chart_after(lrs, losses, top)
    if last_on_chart is not None:  # the divergence, shaded
        label = f"off the chart after {last_on_chart:.2e}"
        ax.axvspan(last_on_chart, max(lrs), color="tab:gray", alpha=0.15, label=label)
    ax.legend()
    fig.tight_layout()
    return fig


@dataclass
class LrFinderSettings:
    """``lr_finder``: the range test's settings (``configs/find_lr.yaml``)."""

    start_lr: float = number()
    end_lr: float = number()
    num_iter: int = count(3)  # suggest() reads at least 3 points (the schedule divides by num_iter - 1)
    diverge_th: float = number()
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.end_lr <= self.start_lr:
            raise ConfigError(f"lr_finder.end_lr={self.end_lr}: must be above lr_finder.start_lr={self.start_lr}")


def find_lr(cfg: DictConfig) -> dict[str, Any]:
    """Run the range test of ``cfg.lr_finder`` and write the plot and the overrides into the run folder."""
    check_config(cfg)
    settings = read_settings(LrFinderSettings, cfg.lr_finder, "lr_finder.")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        device = resolve_device(str(settings.device))
    except ValueError as err:
        raise ConfigError(f"lr_finder.device={settings.device}: {err}") from err

    datamodule = build_part("data", cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg)
    groups = build_param_groups(module.net, settings.start_lr, float(cfg.model.flow_lr_scale))
    optimizer = module.optimizer_factory(params=groups)

    def scalar_loss(outputs: Any, sharp: torch.Tensor) -> torch.Tensor:  # our losses return a dict
        return module.loss(outputs, sharp)["loss"]

    finder = RatioKeepingLRFinder(module.net, optimizer, scalar_loss, device=device)
    finder.range_test(
        ClipBatches(datamodule.train_dataloader()),
        end_lr=settings.end_lr,
        num_iter=settings.num_iter,
        diverge_th=settings.diverge_th,
    )
    lrs, losses = finder.history["lr"], finder.history["loss"]
    lr, max_lr = suggest(lrs, losses)
    finder.reset()

    plot_path = out_dir / "lr_finder.png"
    with atomic_destination(plot_path) as tmp:  # no GUI backend: plot_range_test draws on Agg
        plot_range_test(lrs, losses, lr, max_lr).savefig(tmp, dpi=100)
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
