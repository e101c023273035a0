"""The LightningModule: the cascaded network, its loss, the optimiser and scheduler, validation metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric

from cdvd.checkpoints import ARCH_KEY, architecture, load_flow_weights, load_weights
from cdvd.metrics import psnr_protocol, ssim_protocol
from cdvd.models.cdvd_tsp import CDVDTSP
from cdvd.models.padding import crop_to, pad_to_multiple

logger = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def build_param_groups(net: CDVDTSP, lr: float, flow_lr_scale: float) -> list[dict[str, Any]]:
    """Every parameter of the network, the flow net included; the flow net's lr is ``lr * flow_lr_scale``."""
    flow_params = list(net.flow.parameters())
    flow_ids = {id(p) for p in flow_params}
    other = [p for p in net.parameters() if id(p) not in flow_ids]
    return [
        {"params": other, "lr": lr, "name": "recons"},
        {"params": flow_params, "lr": lr * flow_lr_scale, "name": "flow"},
    ]


class DeblurModule(pl.LightningModule):
    """Trains and validates :class:`CDVDTSP`.

    Args:
        net: the network.
        loss: a module mapping ``(CascadeOutput, sharp clip (B, 5, 3, H, W))`` to a dict with ``loss`` and its
            components (see :mod:`cdvd.losses`).
        optimizer: a partial optimiser (Hydra ``_partial_: true``) called with the parameter groups.
        scheduler: ``{"scheduler": partial, "interval": "epoch"|"step"}`` or None. A ``OneCycleLR`` gets its
            ``total_steps`` from the trainer, per-group ``max_lr`` in the groups' lr ratio and, unless given,
            ``div_factor = max_lr / lr`` so that it starts at the optimiser's lr (the 2021 fork's "lr to max_lr").
        flow_lr_scale: learning rate of the flow net relative to the rest.
        pretrained: initialise from an original CDVD-TSP ``.pt`` or a checkpoint of ours.
        flow_pretrained: initialise the flow net from PWC-Net's ``network-default.pytorch``.
        seed: seeds the random part of the HEM mask per step, so runs (and resumed runs) repeat exactly.
        log_images: log a blurry | stage 1 | output | sharp strip of the first validation sample.
    """

    def __init__(
        self,
        net: CDVDTSP,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: Mapping[str, Any] | None = None,
        *,
        flow_lr_scale: float = 1.0,
        pretrained: str | None = None,
        flow_pretrained: str | None = None,
        seed: int = 0,
        log_images: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net", "loss", "optimizer", "scheduler"])
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_cfg = scheduler
        if flow_pretrained:
            load_flow_weights(self.net, flow_pretrained)
        if pretrained:
            load_weights(self.net, pretrained)
        if flow_lr_scale == 0:
            # a frozen flow net: no gradients for its weights (they would not move anyway)
            self.net.flow.requires_grad_(False)
            logger.info("flow_lr_scale=0: the flow net is frozen")
        self.val_psnr = MeanMetric()
        self.val_ssim = MeanMetric()
        self.val_psnr_stage1 = MeanMetric()
        self.val_psnr_best = MaxMetric()
        self._step_generator: torch.Generator | None = None

    def forward(self, clip: torch.Tensor):  # noqa: ANN201 - CascadeOutput
        return self.net(clip)

    # ------------------------------------------------------------------------------------------------ training

    def _generator(self) -> torch.Generator:
        """A generator on the module's device, seeded from (seed, global step): reproducible across resumes."""
        device = self.device
        if self._step_generator is None or self._step_generator.device != device:
            self._step_generator = torch.Generator(device=device)
        self._step_generator.manual_seed(self.hparams.seed * 1_000_003 + self.global_step * 7919 + self.global_rank)
        return self._step_generator

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = self.net(batch["blur"])
        return self.loss(outputs, batch["sharp"], generator=self._generator())

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.compute_loss(batch)
        batch_size = batch["blur"].shape[0]
        for name, value in losses.items():
            self.log(
                f"train/{name}",
                value.detach(),
                on_step=True,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=batch_size,
                sync_dist=True,
            )
        return losses["loss"]

    # ---------------------------------------------------------------------------------------------- validation

    def on_validation_epoch_start(self) -> None:
        # sanity checks and real epochs each start from an empty state
        for metric in (self.val_psnr, self.val_ssim, self.val_psnr_stage1):
            metric.reset()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        blur = batch["blur"]
        sharp_centre = batch["sharp"][:, blur.shape[1] // 2]
        padded, size = pad_to_multiple(blur)
        outputs = self.net(padded)
        out = crop_to(outputs.out, size)
        stage1 = crop_to(outputs.recons_2, size)
        psnr = psnr_protocol(out, sharp_centre)
        self.val_psnr.update(psnr)
        self.val_ssim.update(ssim_protocol(out, sharp_centre))
        self.val_psnr_stage1.update(psnr_protocol(stage1, sharp_centre))
        if batch_idx == 0 and self.hparams.log_images:
            self._log_strip(blur[0, blur.shape[1] // 2], stage1[0], out[0], sharp_centre[0])
        return {"out": out.detach()}

    def on_validation_epoch_end(self) -> None:
        psnr = self.val_psnr.compute()
        self.log("val/psnr", psnr, prog_bar=True, sync_dist=False)
        self.log("val/ssim", self.val_ssim.compute(), sync_dist=False)
        self.log("val/psnr_stage1", self.val_psnr_stage1.compute(), sync_dist=False)
        if not self.trainer.sanity_checking:
            self.val_psnr_best.update(psnr)
            self.log("val/psnr_best", self.val_psnr_best.compute(), prog_bar=True, sync_dist=False)

    def _log_strip(self, *images: torch.Tensor) -> None:
        """blurry | stage 1 | output | sharp, side by side, to every TensorBoard logger."""
        strip = torch.cat([img.detach().float().clamp(0, 1).cpu() for img in images], dim=-1)
        for lg in self.loggers:
            experiment = getattr(lg, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("val/blurry_stage1_output_sharp", strip, self.global_step)

    # ------------------------------------------------------------------------------------- optimiser, scheduler

    def configure_optimizers(self) -> Any:
        probe = self.optimizer_factory(params=[nn.Parameter(torch.zeros(1))])
        lr = probe.param_groups[0]["lr"]
        groups = build_param_groups(self.net, lr, self.hparams.flow_lr_scale)
        optimizer = self.optimizer_factory(params=groups)
        if not self.scheduler_cfg or self.scheduler_cfg.get("scheduler") is None:
            return optimizer
        factory = self.scheduler_cfg["scheduler"]
        interval = self.scheduler_cfg.get("interval", "epoch")
        kwargs: dict[str, Any] = {}
        target = getattr(factory, "func", factory)
        if target is torch.optim.lr_scheduler.OneCycleLR:
            max_lr = factory.keywords.get("max_lr")
            if max_lr is None:
                raise ValueError("scheduler onecycle needs scheduler.scheduler.max_lr (run cdvd-find-lr for one)")
            kwargs["max_lr"] = [max_lr * g["lr"] / lr for g in groups]
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
            if factory.keywords.get("div_factor") is None:
                kwargs["div_factor"] = max_lr / lr
            interval = "step"
        scheduler = factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # ------------------------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[ARCH_KEY] = architecture(self.net)
