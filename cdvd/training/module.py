"""The LightningModule: the cascaded network, its loss, the optimiser and scheduler, validation metrics."""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torchmetrics import MaxMetric, MeanMetric

from cdvd.checkpoints import (
    ARCH_KEY,
    CheckpointError,
    architecture,
    load_flow_weights,
    load_weights,
    safe_torch_load,
)
from cdvd.errors import UserError, innermost_cause
from cdvd.evaluation.metrics import psnr_protocol, ssim_protocol, to_uint8
from cdvd.evaluation.pictures import labelled_strip
from cdvd.models.cdvd_tsp import CDVDTSP
from cdvd.models.padding import crop_to, pad_to_multiple
from cdvd.settings import plain
from cdvd.targets import check_file_targets

logger = logging.getLogger(__name__)

#: ``scheduler.interval``: when the scheduler steps (the first: when the config does not say)
SCHEDULER_INTERVALS = ("epoch", "step")

VALIDATION_MEANS = ("psnr", "ssim", "psnr_stage1", "psnr_input", "ssim_input")


def build_param_groups(net: CDVDTSP, lr: float, flow_lr_scale: float) -> list[dict[str, Any]]:
    """Every parameter of the network, the flow net included; the flow net's lr is ``lr * flow_lr_scale``."""
    flow_params = list(net.flow.parameters())
    flow_ids = {id(p) for p in flow_params}
    other = [p for p in net.parameters() if id(p) not in flow_ids]
    return [
        {"params": other, "lr": lr, "name": "recons"},
        {"params": flow_params, "lr": lr * flow_lr_scale, "name": "flow"},
    ]


def onecycle_total_steps(trainer: pl.Trainer) -> int:
    """The optimizer steps of the whole run, as ``trainer.estimated_stepping_batches`` counts them.

    Reading that property inside ``configure_optimizers`` makes Lightning build the training loader early, and its
    later set-up then skips the loader state of a resumed checkpoint: a run killed mid-epoch would silently start
    the interrupted epoch over. Where the data module knows its epoch length (``train_batches_per_rank``), the count
    comes from it and the trainer's limits instead, and no loader is built here.
    """
    datamodule = getattr(trainer, "datamodule", None)
    per_epoch = getattr(datamodule, "train_batches_per_rank", None)
    if per_epoch is None:
        return int(trainer.estimated_stepping_batches)
    batches = per_epoch()
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif limit is not None:
        batches = int(batches * limit)
    max_steps = trainer.max_steps
    if trainer.max_epochs is None or trainer.max_epochs == -1:
        if max_steps == -1:
            raise ValueError("scheduler onecycle needs trainer.max_epochs or trainer.max_steps (a run of known length)")
        return int(max_steps)
    steps = math.ceil(batches / trainer.accumulate_grad_batches) * max(trainer.max_epochs, 1)
    return int(min(steps, max_steps) if max_steps != -1 else steps)


def base_lr(optimizer: Mapping[str, Any]) -> float:
    """The learning rate an optimiser config gives: its ``lr``, or the class's own default (``torch.optim.SGD``
    has one too) read from its signature; no optimiser is built to find it."""
    if optimizer.get("lr") is not None:
        return float(optimizer["lr"])
    from hydra.utils import get_class

    default = inspect.signature(get_class(optimizer["_target_"])).parameters.get("lr")
    if default is None or not isinstance(default.default, int | float):
        raise ValueError(f"optimizer {optimizer['_target_']} has no default lr: set optimizer.lr")
    return float(default.default)


def _build_from_checkpoint(cls: type[DeblurModule], hparams: dict[str, Any], source: str) -> DeblurModule:
    """``cls(**hparams)``; settings that its parts refuse (a wrong argument, a missing one) are one line naming
    ``source``."""
    unknown = sorted(set(hparams) - set(inspect.signature(cls.__init__).parameters))
    if unknown:
        raise CheckpointError(f"{source}: hyper_parameters {unknown[0]} is not a setting of cdvd's DeblurModule")
    try:
        return cls(**hparams)
    except UserError:
        raise
    except (InstantiationException, TypeError, ValueError, AttributeError) as err:
        cause = innermost_cause(err)
        raise CheckpointError(f"{source}: its hyper_parameters do not build cdvd's module ({cause})") from None


class DeblurModule(pl.LightningModule):
    """Trains and validates :class:`CDVDTSP`.

    One constructor form: every part is its Hydra ``_target_`` config (plain mappings, as ``cdvd-train`` composes
    them), built here with :func:`hydra.utils.instantiate`. The configs are what the checkpoint's hyper-parameters
    keep (plain data, readable with ``weights_only=True``), so ``DeblurModule.load_from_checkpoint(path)`` rebuilds
    the module without any argument.

    Args:
        net: the network's config (``{"_target_": "cdvd.models.CDVDTSP", "n_feat": ..., ...}``).
        loss: the loss's config (see :mod:`cdvd.losses`): a module mapping ``(CascadeOutput, sharp clip
            (B, 5, 3, H, W))`` to a dict with ``loss`` and its components; ``None``: evaluation only.
        optimizer: the optimiser's config (``_partial_: true``), called with the parameter groups; its ``lr`` is the
            base learning rate (the class's default where not set); ``None``: evaluation only.
        scheduler: ``{"scheduler": its config (``_partial_: true``), "interval": "epoch"|"step"}`` or None. A
            ``OneCycleLR`` gets its ``total_steps`` from the data module's epoch length, per-group ``max_lr`` in the
            groups' lr ratio and, unless given, ``div_factor = max_lr / lr`` so that it starts at the optimiser's lr
            (the 2021 fork's "lr to max_lr").
        flow_lr_scale: learning rate of the flow net relative to the rest.
        pretrained: initialise from an original CDVD-TSP ``.pt`` or a checkpoint of ours.
        flow_pretrained: initialise the flow net from PWC-Net's ``network-default.pytorch``.
        seed: seeds the random part of the HEM mask per step, so runs (and resumed runs) repeat exactly.
        log_images: log a blurry | stage 1 | output | sharp strip of the first validation sample, each panel
            captioned with its name and PSNR.

    Validation logs ``val/psnr``, ``val/ssim``, ``val/psnr_stage1`` of the output, and as a baseline the blurry
    input's centre frame scored the same way (``val/psnr_input``, ``val/ssim_input``) with
    ``val/psnr_gain = val/psnr - val/psnr_input``.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        loss: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        *,
        flow_lr_scale: float = 1.0,
        pretrained: str | None = None,
        flow_pretrained: str | None = None,
        seed: int = 0,
        log_images: bool = True,
    ) -> None:
        super().__init__()
        for name, part in (("net", net), ("loss", loss), ("optimizer", optimizer)):
            if part is not None and not (isinstance(part, Mapping) and "_target_" in part):
                raise TypeError(f"DeblurModule takes {name} as its _target_ config (a mapping), not {type(part)}")
        net, loss, optimizer, scheduler = (plain(part) for part in (net, loss, optimizer, scheduler))
        pretrained = str(pretrained) if pretrained else None
        flow_pretrained = str(flow_pretrained) if flow_pretrained else None
        self.save_hyperparameters(logger=False)  # the configs: plain data load_from_checkpoint rebuilds this from
        self.net: CDVDTSP = instantiate(net)
        self.loss = instantiate(loss) if loss is not None else None
        self.optimizer_factory = instantiate(optimizer) if optimizer is not None else None
        self.lr = base_lr(optimizer) if optimizer is not None else None
        factory = (scheduler or {}).get("scheduler")
        self.scheduler_factory = instantiate(factory) if factory is not None else None
        self.scheduler_interval = (scheduler or {}).get("interval", SCHEDULER_INTERVALS[0])
        if flow_pretrained:
            load_flow_weights(self.net, flow_pretrained)
        if pretrained:
            load_weights(self.net, pretrained)
        if flow_lr_scale == 0:
            # a frozen flow net: no gradients for its weights (they would not move anyway)
            self.net.flow.requires_grad_(False)
            logger.info("flow_lr_scale=0: the flow net is frozen")
        self.val_means = torch.nn.ModuleDict({name: MeanMetric() for name in VALIDATION_MEANS})
        self.val_psnr_best = MaxMetric()
        self._step_generator: torch.Generator | None = None

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | os.PathLike, map_location: Any = "cpu", strict: bool | None = None, **kwargs: Any
    ) -> DeblurModule:
        """Rebuild a module from one of our ``.ckpt`` files, read with ``weights_only=True`` (plain data only).

        ``kwargs`` replace stored hyper-parameters (e.g. ``loss=...``). The weights the module was initialised from
        (``pretrained``, ``flow_pretrained``) are in the checkpoint already and are not read again.

        The stored configs build only cdvd's own classes (:mod:`cdvd.targets`): a ``_target_`` of anything else is
        refused before anything is built; pass a config of your own (``loss={"_target_": "my.Loss"}``) instead.

        Raises:
            CheckpointError: the file is missing, holds more than plain data, is not a checkpoint of this module, or
                its hyper-parameters name a class that is not cdvd's.
        """
        checkpoint = safe_torch_load(checkpoint_path, map_location=map_location)
        if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
            raise CheckpointError(f"{checkpoint_path} is not a training checkpoint of cdvd (no state_dict)")
        stored = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {}
        if not isinstance(stored, Mapping):
            raise CheckpointError(f"{checkpoint_path}: hyper_parameters is not a mapping (not a checkpoint of cdvd)")
        hparams = {k: v for k, v in stored.items() if k not in kwargs}
        if "net" not in hparams and "net" not in kwargs:
            stored_arch = checkpoint.get(ARCH_KEY) or {}
            if not isinstance(stored_arch, Mapping):
                raise CheckpointError(f"{checkpoint_path}: {ARCH_KEY} is not a mapping (not a checkpoint of cdvd)")
            hparams["net"] = {"_target_": "cdvd.models.CDVDTSP", **stored_arch}
        hparams.update(pretrained=None, flow_pretrained=None)
        check_file_targets(hparams, f"checkpoint {checkpoint_path}", advice="pass a part of your own (loss=...)")
        model = _build_from_checkpoint(cls, {**hparams, **kwargs}, str(checkpoint_path))
        if strict is not False:
            model.check_checkpoint_matches(checkpoint, str(checkpoint_path))
        model.load_state_dict(checkpoint["state_dict"], strict=strict is not False)
        return model

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
        if self.loss is None:
            raise ValueError("this module has no loss: pass loss= (e.g. to load_from_checkpoint) to train it")
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
        for metric in self.val_means.values():  # sanity checks and real epochs each start from an empty state
            metric.reset()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        blur = batch["blur"]
        centre = blur.shape[1] // 2
        blur_centre, sharp_centre = blur[:, centre], batch["sharp"][:, centre]
        padded, size = pad_to_multiple(blur)
        outputs = self.net(padded)
        out = crop_to(outputs.out, size)
        stage1 = crop_to(outputs.recons_2, size)
        scores = {
            "psnr": psnr_protocol(out, sharp_centre),
            "ssim": ssim_protocol(out, sharp_centre),
            "psnr_stage1": psnr_protocol(stage1, sharp_centre),
            "psnr_input": psnr_protocol(blur_centre, sharp_centre),
            "ssim_input": ssim_protocol(blur_centre, sharp_centre),
        }
        for name, value in scores.items():
            self.val_means[name].update(value)
        if batch_idx == 0 and self.hparams.log_images:
            self._log_strip(
                (f"blurry\n{scores['psnr_input'][0]:.2f} dB", blur_centre[0]),
                (f"stage 1\n{scores['psnr_stage1'][0]:.2f} dB", stage1[0]),
                (f"output\n{scores['psnr'][0]:.2f} dB", out[0]),
                ("sharp", sharp_centre[0]),
            )
        return {"out": out.detach()}

    def on_validation_epoch_end(self) -> None:
        means = {name: metric.compute() for name, metric in self.val_means.items()}
        for name, value in means.items():
            self.log(f"val/{name}", value, prog_bar=name == "psnr", sync_dist=False)
        self.log("val/psnr_gain", means["psnr"] - means["psnr_input"], sync_dist=False)
        if not self.trainer.sanity_checking:
            self.val_psnr_best.update(means["psnr"])
            self.log("val/psnr_best", self.val_psnr_best.compute(), prog_bar=True, sync_dist=False)

    def _log_strip(self, *panels: tuple[str, torch.Tensor]) -> None:
        """``(caption, (3, H, W) image)`` panels side by side under their captions, to every TensorBoard logger."""
        loggers = [lg.experiment for lg in self.loggers if hasattr(getattr(lg, "experiment", None), "add_image")]
        if not loggers:
            return
        strip = labelled_strip([(caption, to_uint8(image)) for caption, image in panels], separator=2)
        for experiment in loggers:
            experiment.add_image("val/blurry_stage1_output_sharp", strip, self.global_step, dataformats="HWC")

    # ------------------------------------------------------------------------------------- optimiser, scheduler

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("this module has no optimizer: pass optimizer= (e.g. to load_from_checkpoint) to train it")
        lr = self.lr
        groups = build_param_groups(self.net, lr, self.hparams.flow_lr_scale)
        optimizer = self.optimizer_factory(params=groups)
        factory = self.scheduler_factory
        if factory is None:
            return optimizer
        interval = self.scheduler_interval
        kwargs: dict[str, Any] = {}
        target = getattr(factory, "func", factory)
        if target is torch.optim.lr_scheduler.OneCycleLR:
            max_lr = factory.keywords.get("max_lr")
            if max_lr is None:
                raise ValueError("scheduler onecycle needs scheduler.scheduler.max_lr (run cdvd-find-lr for one)")
            kwargs["max_lr"] = [max_lr * g["lr"] / lr for g in groups]
            kwargs["total_steps"] = onecycle_total_steps(self.trainer)
            if factory.keywords.get("div_factor") is None:
                kwargs["div_factor"] = max_lr / lr
            interval = "step"
        scheduler = factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # ------------------------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[ARCH_KEY] = architecture(self.net)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, in one line, a checkpoint of another network before Lightning's strict load fails with a trace,
        and one whose hyper-parameters name classes that are neither cdvd's nor this run's (:mod:`cdvd.targets`)."""
        source = str(getattr(self._trainer, "ckpt_path", None) or "the checkpoint")
        stored = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY) or {}
        if not isinstance(stored, Mapping):
            raise CheckpointError(f"{source}: hyper_parameters is not a mapping (not a checkpoint of cdvd)")
        advice = "resume with the settings of the run that wrote it"
        check_file_targets(stored, f"checkpoint {source}", also=self.hparams, advice=advice)
        self.check_checkpoint_matches(checkpoint, source)

    def check_checkpoint_matches(self, checkpoint: Mapping[str, Any], source: str) -> None:
        """Raise a one-line :class:`CheckpointError` naming ``source`` unless ``checkpoint`` fits this network."""
        stored = checkpoint.get(ARCH_KEY)
        ours = architecture(self.net)
        if isinstance(stored, Mapping):
            differs = [f"{k} {stored[k]} (this run: {ours[k]})" for k in ours if k in stored and stored[k] != ours[k]]
            if differs:
                raise CheckpointError(
                    f"{source} was written by another network: {', '.join(differs)}; resume with the run's settings"
                )
        state = checkpoint.get("state_dict") or {}
        expected = self.state_dict()
        wrong = [k for k, v in expected.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
        wrong += [k for k in state if k not in expected]
        if wrong:
            raise CheckpointError(
                f"{source} does not match this run's network ({len(wrong)} missing, unexpected or mis-shaped "
                f"weights, e.g. {wrong[0]}); resume with the run's settings"
            )
