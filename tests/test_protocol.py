"""The evaluation protocol lives in one place: validation and cdvd-eval both follow it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import compose_config

from cdvd.cli.evaluate import run_eval
from cdvd.data.datasets import WindowDataset
from cdvd.data.io import list_frames, read_rgb, write_rgb
from cdvd.data.layouts import discover_videos
from cdvd.evaluation import protocol
from cdvd.models.padding import crop_to, pad_to_multiple
from cdvd.training.module import DeblurModule


def direct_psnr(pred: np.ndarray, target: np.ndarray, border: int) -> float:
    x = pred[border:-border, border:-border].astype(np.float64)
    y = target[border:-border, border:-border].astype(np.float64)
    return 10 * math.log10(255.0**2 / np.mean((x - y) ** 2))


def make_pair_folders(root: Path, n: int = 7, h: int = 40, w: int = 48) -> None:
    rng = np.random.default_rng(3)
    for i in range(n):
        sharp = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        noise = rng.integers(-30, 31, size=sharp.shape)
        # a noisier border: the score depends on how much of it is cropped
        noise[:8] *= 3
        blur = np.clip(sharp.astype(int) + noise, 0, 255).astype(np.uint8)
        write_rgb(root / "val" / "blur" / "clip" / f"{i:05d}.png", blur)
        write_rgb(root / "val" / "gt" / "clip" / f"{i:05d}.png", sharp)


def eval_psnr(root: Path, tmp_path: Path) -> dict:
    cfg = compose_config(
        "eval",
        [
            f"results={root / 'val' / 'blur'}",
            f"gt={root / 'val' / 'gt'}",
            f"output={tmp_path / 'metrics.json'}",
            "progress=false",
        ],
    )
    return run_eval(cfg)


def validation_psnr(root: Path) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """val/psnr of DeblurModule on the folder dataset, and each scored (output uint8, GT uint8) pair."""
    torch.manual_seed(0)
    module = DeblurModule(
        net={"_target_": "cdvd.models.CDVDTSP", "n_feat": 4, "n_resblock": 1, "residual": True},
        loss={"_target_": "cdvd.losses.L1HEMLoss"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4},
        log_images=False,
    ).eval()
    videos = discover_videos(root, "folder", "val")
    dataset = WindowDataset(videos, frames="paper")
    pairs = []
    module.on_validation_epoch_start()
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            batch = {"blur": item["blur"][None], "sharp": item["sharp"][None]}
            module.validation_step(batch, index)
            padded, size = pad_to_multiple(batch["blur"])
            out = crop_to(module.net(padded).out, size)[0]
            to_u8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # noqa: E731
            pairs.append((to_u8(out), to_u8(item["sharp"][2])))
    return float(module.val_means["psnr"].compute()), pairs


@pytest.mark.parametrize("border", [4, 9])
def test_a_border_set_in_the_protocol_reaches_validation_and_eval(
    border: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    make_pair_folders(root)
    monkeypatch.setattr(protocol, "CROP_BORDER", border)

    report = eval_psnr(root, tmp_path)
    assert report["crop_border"] == border
    gt_files = list_frames(root / "val" / "gt" / "clip")
    scored = [gt_files[i] for i in protocol.scored_frames(len(gt_files), "paper")]
    expected = np.mean(
        [direct_psnr(read_rgb(root / "val" / "blur" / "clip" / p.name), read_rgb(p), border) for p in scored]
    )
    assert report["total"]["frames"] == len(scored) == 3
    assert report["total"]["psnr"] == pytest.approx(expected, abs=1e-9)

    val_psnr, pairs = validation_psnr(root)
    assert len(pairs) == len(scored)
    assert val_psnr == pytest.approx(np.mean([direct_psnr(o, g, border) for o, g in pairs]), abs=1e-3)
    other = 4 if border != 4 else 9
    assert abs(val_psnr - np.mean([direct_psnr(o, g, other) for o, g in pairs])) > 1e-2


def test_scored_frames_rule() -> None:
    assert list(protocol.scored_frames(7, "paper")) == [2, 3, 4]
    assert list(protocol.scored_frames(7, "all")) == list(range(7))
    assert list(protocol.scored_frames(3, "paper")) == []
    assert list(protocol.scored_frames(7, "paper", clip_length=3)) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="frames=some"):
        protocol.scored_frames(7, "some")
