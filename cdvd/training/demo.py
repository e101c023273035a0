"""``cdvd-demo``'s work: synthesize, train the ``demo`` experiment, deblur a held-out clip, score it, and picture it.

The held-out clip goes through the same pipeline as ``cdvd-deblur`` (:func:`cdvd.inference.pipeline.deblur_with`);
what the demo shows is described in :mod:`cdvd.cli.demo`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from cdvd.data.io import list_frames, read_rgb, write_rgb
from cdvd.data.synthetic import synthesize
from cdvd.errors import ConfigError
from cdvd.evaluation.metrics import psnr_uint8
from cdvd.evaluation.pictures import comparison_strip
from cdvd.evaluation.scoring import evaluate_pairs
from cdvd.hardware import cpu_flags, cpu_has_native_bf16
from cdvd.inference.pipeline import deblur_with, settings_from
from cdvd.settings import count, read_settings
from cdvd.training.run import check_config, train


def _score(results: Path, gt: Path) -> dict[str, float]:
    """Mean PSNR/SSIM over every frame (``frames=all``) of the one video in ``results`` against ``gt``."""
    accumulator = evaluate_pairs({"clip": (list_frames(results), list_frames(gt))}, frames="all")
    total = accumulator.total()
    return {"psnr": total.psnr, "ssim": total.ssim, "frames": total.frames}


def write_comparison(blurry: Path, deblurred: Path, gt: Path, path: Path) -> Path:
    """Write ``path``: the middle frame of a clip as blurry | deblurred | sharp, each labelled with its name and its
    PSNR against sharp (the protocol's, as in the table); ``blurry``, ``deblurred`` and ``gt`` are the clip's frame
    folders."""
    frames = {name: list_frames(folder) for name, folder in (("blurry", blurry), ("deblurred", deblurred), ("gt", gt))}
    middle = len(frames["gt"]) // 2
    images = {name: read_rgb(paths[middle]) for name, paths in frames.items()}
    sharp = images.pop("gt")
    scored = [(name, image, psnr_uint8(image, sharp)) for name, image in images.items()]
    write_rgb(path, comparison_strip(scored, sharp))  # the strip cdvd-eval pictures=true writes
    return path


@dataclass
class DemoSettings:
    """What the demo reads itself (``configs/demo.yaml``); the training it runs checks the rest."""

    steps: int = count(1)  # the demo trains with no epoch limit: steps must end it
    device: str = "auto"
    precision: str = "auto"


# Lightning's trainer.precision values that the demo passes on
TRAINING_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


def demo_precision(setting: str, accelerator: str, flags: frozenset[str]) -> str:
    """The demo's ``trainer.precision``: ``auto`` -> ``bf16-mixed`` when it trains on a CPU with native bf16
    (``flags`` has ``avx512_bf16`` or ``amx_bf16``), else ``32-true``; other values pass through.

    On a 16-thread Xeon with AMX a demo step took 0.315 s in bf16-mixed against 0.368 s in 32-true (1.17x; README,
    Speed). On an AVX2-only CPU bf16 is emulated, so ``auto`` keeps fp32 there. GPUs keep ``32-true``: the demo's
    small network was not measured there (``precision=bf16-mixed`` asks for it).

    Raises:
        ConfigError: a value that is neither ``auto`` nor one of :data:`TRAINING_PRECISIONS`.
    """
    if setting == "auto":
        return "bf16-mixed" if accelerator == "cpu" and cpu_has_native_bf16(flags) else "32-true"
    if setting not in TRAINING_PRECISIONS:
        raise ConfigError(f"precision={setting}: expected auto or one of {', '.join(TRAINING_PRECISIONS)}")
    return setting


def training_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The ``demo`` experiment, writing into ``run_dir``, reading the data made in ``run_dir/data``."""
    settings = read_settings(DemoSettings, cfg)
    device = settings.device
    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    precision = demo_precision(settings.precision, device, cpu_flags())
    overrides = [
        "experiment=demo",
        f"paths.output_dir={run_dir}",
        f"data.root={run_dir / 'data'}",
        f"trainer.accelerator={device}",
        f"trainer.precision={precision}",
        f"++trainer.max_steps={settings.steps}",
        "trainer.max_epochs=-1",
        f"seed={cfg.seed}",
        *cfg.train_overrides,
    ]
    return compose(config_name="train", overrides=overrides)


def run_demo(cfg: DictConfig) -> dict[str, Any]:
    """Synthesize, train, deblur the held-out clip and score it; returns the figures and the paths."""
    run_dir = Path(cfg.paths.output_dir)
    # train and val come from the data module's own synthesis (configs/data/synthetic.yaml); the held-out clip
    # is one more video from photos and a camera path the training never saw
    heldout = run_dir / "data" / "heldout"
    train_cfg = training_config(cfg, run_dir)  # the settings first: a bad one costs no synthesis
    check_config(train_cfg)
    synthesize(heldout, **cfg.heldout)

    started = time.perf_counter()
    (run_dir / "train_config.yaml").write_text(OmegaConf.to_yaml(train_cfg, resolve=True))
    metrics, objects = train(train_cfg)
    train_seconds = time.perf_counter() - started
    trainer = objects["trainer"]
    checkpoint = Path(trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path)

    # the one deblurring pipeline, at fp32 (the table compares the network, not a precision); the device the
    # training used: device=cpu keeps a GPU machine's deblurring on the CPU too
    deblurred = run_dir / "deblurred"
    device = {"gpu": "cuda"}.get(str(cfg.device), str(cfg.device))
    settings = settings_from(
        input=str(heldout / "blur"),
        output=str(deblurred),
        checkpoint=str(checkpoint),
        device=device,
        precision="fp32",
        progress=False,
    )
    video = deblur_with(settings).videos[0].name
    blurry, sharp = heldout / "blur" / video, heldout / "gt" / video
    before, after = _score(blurry, sharp), _score(deblurred / video, sharp)
    comparison = write_comparison(blurry, deblurred / video, sharp, run_dir / "comparison.png")

    summary = {
        "blurry": before,
        "deblurred": after,
        "gain_db": after["psnr"] - before["psnr"],
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "train_seconds": round(train_seconds, 1),
        "precision": str(train_cfg.trainer.precision),
        "val_psnr": metrics.get("val/psnr"),
        "frames": str(deblurred / video),
        "comparison": str(comparison),
        "checkpoint": str(checkpoint),
        "tensorboard": str(run_dir / "tensorboard"),
        "run_dir": str(run_dir),
    }
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summary_view(summary: dict[str, Any]) -> Any:
    """The demo's table and paths, as a ``rich`` renderable for the terminal."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title="cdvd demo: held-out synthetic clip, every frame")
    table.add_column("")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("SSIM", justify="right")
    for name in ("blurry", "deblurred"):
        table.add_row(name, f"{summary[name]['psnr']:.2f}", f"{summary[name]['ssim']:.4f}")
    return Group(
        table,
        f"gain {summary['gain_db']:+.2f} dB after {summary['steps']} steps ({summary['epochs']} epochs, "
        f"{summary['train_seconds']:.0f} s of training, precision {summary['precision']})\n"
        f"deblurred frames: {summary['frames']}\n"
        f"comparison:       {summary['comparison']} (middle frame: blurry | deblurred | sharp)\n"
        f"checkpoint:       {summary['checkpoint']}\n"
        f"TensorBoard:      tensorboard --logdir {summary['tensorboard']}\n"
        f"run folder:       {summary['run_dir']}",
    )
