"""CUDA runs: mixed-precision training, half-precision deblurring, DDP on GPUs.

Skipped without a CUDA GPU (their CPU counterparts run everywhere: test_train.py, test_inference.py). The cupy
kernel's own tests are in test_correlation.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import compose_train, run_command, smoke_cli_args

from cdvd.evaluation.metrics import to_uint8
from cdvd.inference import VideoDeblurrer
from cdvd.models import CDVDTSP
from cdvd.training.run import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

bf16_supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@pytest.mark.parametrize(
    "precision",
    [
        "16-mixed",
        pytest.param(
            "bf16-mixed", marks=pytest.mark.skipif(not bf16_supported, reason="needs a CUDA GPU with bfloat16")
        ),
    ],
)
def test_mixed_precision_training_on_gpu(smoke_overrides: list[str], tmp_path: Path, precision: str) -> None:
    cfg = compose_train([*smoke_overrides, "trainer=gpu", f"trainer.precision={precision}", "logger=csv"])
    metrics, objects = train(cfg)
    assert np.isfinite(metrics["val/psnr"]) and np.isfinite(metrics["train/loss_epoch"])
    assert next(objects["model"].net.parameters()).dtype == torch.float32  # master weights stay fp32
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    "precision",
    [
        "fp16",
        pytest.param("bf16", marks=pytest.mark.skipif(not bf16_supported, reason="needs a CUDA GPU with bfloat16")),
    ],
)
def test_half_precision_deblurring_is_close_to_fp32(precision: str) -> None:
    torch.manual_seed(0)
    model = CDVDTSP(n_feat=8, n_resblock=1, residual=True)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (36, 52, 3), dtype=np.uint8) for _ in range(6)]
    reference = [to_uint8(out) for _, out in VideoDeblurrer(model, device="cpu").run(frames)]
    half = [to_uint8(out) for _, out in VideoDeblurrer(model, device="cuda", precision=precision).run(frames)]
    assert len(half) == len(reference) == 6
    for ref, out in zip(reference, half, strict=True):
        assert out.shape == ref.shape
        diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
        assert diff.mean() < 2.0, f"{precision}: mean deviation {diff.mean():.2f} levels"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_ddp_on_two_gpus(tiny_dataset: Path, tmp_path: Path) -> None:
    result = run_command(
        [
            *smoke_cli_args(tiny_dataset),
            "trainer=ddp",
            "trainer.devices=2",
            "logger=csv",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
