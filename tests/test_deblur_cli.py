"""cdvd-deblur and cdvd-eval: errors, relative paths, resuming, scores against a direct computation."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import compose_config, console_script
from helpers.data import tiny_checkpoint
from skimage.metrics import structural_similarity

from cdvd.cli.deblur import run_deblur
from cdvd.cli.evaluate import run_eval
from cdvd.data.io import read_rgb, write_rgb
from cdvd.errors import ConfigError
from cdvd.hardware import resolve_precision
from cdvd.inference import TileSpec
from cdvd.inference.settings import build_deblurrer, deblur_settings


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def write_frames(folder: Path, n: int, h: int = 32, w: int = 32, seed: int = 0, ext: str = ".png") -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_rgb(folder / f"{i:05d}{ext}", rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


@pytest.mark.slow
def test_deblur_usage_errors(tmp_path: Path, checkpoint: Path) -> None:
    exe = console_script("cdvd-deblur")
    write_frames(tmp_path / "in", 2)
    cases = [
        (["input=in", "output=out"], "checkpoint="),
        (["input=in", "output=out", "checkpoint=missing.pt"], "checkpoint not found: missing.pt"),
        (["input=nothere", "output=out", f"checkpoint={checkpoint}"], "input not found: nothere"),
        ([f"checkpoint={checkpoint}", "output=out"], "input="),
        (["input=in", "output=out", f"checkpoint={checkpoint}", "precision=fp8"], "precision=fp8"),
    ]
    for args, expected in cases:
        result = run([exe, *args], tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written, no outputs/ folder


@pytest.mark.slow
def test_deblur_cli_relative_paths_and_resume(tmp_path: Path, checkpoint: Path) -> None:
    shutil.copy(checkpoint, tmp_path / "tiny.pt")
    write_frames(tmp_path / "data" / "clipA", 2, ext=".jpg")
    result = run(
        [
            console_script("cdvd-deblur"),
            "input=data",
            "output=results",
            "checkpoint=tiny.pt",
            "device=cpu",
            "progress=false",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "results", "tiny.pt"]  # no hydra litter
    assert sorted(p.name for p in (tmp_path / "results" / "clipA").glob("*.png")) == ["00000.png", "00001.png"]

    cfg = compose_config(
        "deblur",
        [
            f"input={tmp_path / 'data'}",
            f"output={tmp_path / 'results'}",
            f"checkpoint={checkpoint}",
            "device=cpu",
            "progress=false",
        ],
    )
    summary = run_deblur(cfg)
    assert summary["written"] == 0 and summary["skipped"] == 2


def test_deblur_config_keys(checkpoint: Path) -> None:
    cfg = compose_config("deblur", [f"checkpoint={checkpoint}", "device=cpu", "streaming=false"])
    engine = build_deblurrer(deblur_settings(cfg))
    # precision=auto: bf16 where the CPU has it natively, fp32 elsewhere
    assert engine.tile is None and not engine.streaming and engine.precision == resolve_precision("auto", "cpu")
    assert engine.model.n_feat == 4 and engine.device.type == "cpu"
    cfg = compose_config("deblur", [f"checkpoint={checkpoint}", "device=cpu", "tile.size=32", "tile.overlap=8"])
    engine = build_deblurrer(deblur_settings(cfg))
    assert engine.tile == TileSpec(32, 8) and engine.streaming
    cfg.tile = 64  # the short form: a size, a sixteenth of it as overlap
    assert deblur_settings(cfg).tile_spec() == TileSpec(64, 16)
    cfg.tile = None
    assert deblur_settings(cfg).tile_spec() is None
    cfg.tile = {"size": 30, "overlap": 8}
    with pytest.raises(ConfigError, match="tile"):
        deblur_settings(cfg)
    cfg.tile = {"size": 32, "overlap": 8}
    cfg.streaming = "maybe"
    with pytest.raises(ConfigError, match="streaming"):
        deblur_settings(cfg)


def numpy_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    x, y = pred[4:-4, 4:-4], gt[4:-4, 4:-4]
    mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)
    ssim = structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2
    )
    return 10 * math.log10(255**2 / mse), ssim


def make_results_tree(root: Path, lengths: dict[str, int]) -> None:
    rng = np.random.default_rng(1)
    for v, n in lengths.items():
        for i in range(n):
            gt = rng.integers(0, 256, size=(24, 28, 3), dtype=np.uint8)
            noise = rng.integers(-25, 26, size=gt.shape)
            write_rgb(root / "gt" / v / f"{i:04d}.jpg", gt)  # scores use what is read back
            write_rgb(root / "res" / v / f"{i:04d}.png", np.clip(gt + noise, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("frames", ["paper", "all"])
def test_eval_cli_matches_direct_scores(tmp_path: Path, frames: str) -> None:
    lengths = {"v1": 6, "v2": 5}
    make_results_tree(tmp_path, lengths)
    result = run([console_script("cdvd-eval"), "results=res", "gt=gt", "output=m.json", f"frames={frames}"], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "m.json").read_text())
    all_scores = []
    for v, n in lengths.items():
        ids = range(2, n - 2) if frames == "paper" else range(n)
        scores = [
            numpy_scores(
                read_rgb(tmp_path / "res" / v / f"{i:04d}.png"),
                read_rgb(tmp_path / "gt" / v / f"{i:04d}.jpg"),
            )
            for i in ids
        ]
        all_scores += scores
        assert report["videos"][v]["frames"] == len(scores)
        assert report["videos"][v]["psnr"] == pytest.approx(np.mean([s[0] for s in scores]), abs=1e-9)
        assert report["videos"][v]["ssim"] == pytest.approx(np.mean([s[1] for s in scores]), abs=1e-9)
    assert report["total"]["frames"] == len(all_scores) == (3 if frames == "paper" else 11)
    assert report["total"]["psnr"] == pytest.approx(np.mean([s[0] for s in all_scores]), abs=1e-9)
    assert report["total"]["ssim"] == pytest.approx(np.mean([s[1] for s in all_scores]), abs=1e-9)
    csv_lines = (tmp_path / "m.csv").read_text().splitlines()
    assert csv_lines[0] == "video,psnr,ssim,frames" and csv_lines[-1].startswith("total,")
    assert "total" in result.stdout and "v2" in result.stdout


@pytest.mark.slow
def test_eval_errors_name_the_file(tmp_path: Path) -> None:
    make_results_tree(tmp_path, {"v1": 5})
    (tmp_path / "res" / "v1" / "0002.png").unlink()
    result = run([console_script("cdvd-eval"), "results=res", "gt=gt"], tmp_path)
    assert result.returncode == 2 and "0002.png" in result.stderr and "missing" in result.stderr
    write_rgb(tmp_path / "res" / "v1" / "0002.png", np.zeros((20, 28, 3), dtype=np.uint8))
    result = run([console_script("cdvd-eval"), "results=res", "gt=gt"], tmp_path)
    assert result.returncode == 2 and "0002.png" in result.stderr and "differs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_eval_deblurs_and_scores_a_dataset(tmp_path: Path, checkpoint: Path) -> None:
    root = tmp_path / "dataset"
    write_frames(root / "test" / "blur" / "vid", 2, seed=3)
    write_frames(root / "test" / "gt" / "vid", 2, seed=4)
    cfg = compose_config(
        "eval",
        [
            f"input={root}",
            f"checkpoint={checkpoint}",
            f"output={tmp_path / 'metrics.json'}",
            "frames=all",
            "device=cpu",
            "progress=false",
        ],
    )
    report = run_eval(cfg)
    assert report["total"]["frames"] == 2
    out = tmp_path / "results" / "vid"
    expected = [
        numpy_scores(read_rgb(out / f"{i:05d}.png"), read_rgb(root / "test" / "gt" / "vid" / f"{i:05d}.png"))
        for i in range(2)
    ]
    assert report["total"]["psnr"] == pytest.approx(np.mean([e[0] for e in expected]), abs=1e-9)
    assert json.loads((tmp_path / "metrics.json").read_text())["videos"]["vid"]["frames"] == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_reuse_freed_memory_applies_once_per_process() -> None:
    code = (
        "from cdvd.runtime import reuse_freed_memory, reusing_freed_memory\n"
        "before = reusing_freed_memory()\n"
        "print(before, reuse_freed_memory(), reuse_freed_memory(), reusing_freed_memory())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True", "True"]
