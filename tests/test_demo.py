"""The main job, shortened: cdvd-demo synthesizes, trains, deblurs and scores; every entry point answers --help."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import console_script

from cdvd.data.io import list_frames, read_rgb
from cdvd.errors import ConfigError
from cdvd.evaluation.pictures import label_band_height, labelled_strip
from cdvd.hardware import cpu_flags
from cdvd.training.demo import demo_precision

# a tiny dataset and two batches: the demo's wiring, not its result
SHORT_TRAINING = (
    "data.synthesize.train.n_videos=2",
    "data.synthesize.train.n_frames=6",
    "data.synthesize.train.size=64",
    "data.synthesize.val.n_videos=1",
    "data.synthesize.val.n_frames=6",
    "data.synthesize.val.size=64",
    "data.patch_size=32",
    "data.batches_per_epoch=2",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
)
ENTRY_POINTS = (
    "cdvd-train",
    "cdvd-find-lr",
    "cdvd-deblur",
    "cdvd-eval",
    "cdvd-synth",
    "cdvd-pack",
    "cdvd-export",
    "cdvd-demo",
)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_composes_its_config(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [console_script(name), "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), "the composed config is printed"
    assert not list(tmp_path.iterdir()), "printing the config writes nothing"


@pytest.mark.slow
def test_short_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            console_script("cdvd-demo"),
            "steps=3",
            "heldout.n_frames=5",
            "heldout.size=64",
            "train_overrides=[" + ",".join(f"'{o}'" for o in SHORT_TRAINING) + "]",
            "hydra.run.dir=demo_run",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    run = tmp_path / "demo_run"
    summary = json.loads((run / "demo_summary.json").read_text())
    assert summary["blurry"]["frames"] == summary["deblurred"]["frames"] == 5
    assert summary["steps"] == 3  # a fixed amount of work, whatever the machine's speed
    # precision=auto follows this machine's CPU: bf16-mixed with AVX-512 BF16/AMX, 32-true on AVX2 only
    assert summary["precision"] == demo_precision("auto", "cpu", cpu_flags())
    assert f"precision {summary['precision']}" in result.stdout
    assert summary["deblurred"]["psnr"] == pytest.approx(summary["blurry"]["psnr"] + summary["gain_db"])
    assert len(list(Path(summary["frames"]).glob("*.png"))) == 5
    assert Path(summary["checkpoint"]).is_file()
    assert list(Path(summary["tensorboard"]).glob("events.out.tfevents.*"))
    assert (run / ".hydra" / "config.yaml").is_file()
    for word in ("blurry", "deblurred", "PSNR", "checkpoint", "TensorBoard"):
        assert word in result.stdout
    # the picture: the middle frame, blurry | deblurred | sharp under a caption band, 4-pixel separators
    assert summary["comparison"] == str(run / "comparison.png")
    assert f"comparison:{run / 'comparison.png'}" in "".join(result.stdout.split())  # rich wraps long lines
    picture = read_rgb(run / "comparison.png")
    assert picture.shape[1] == 3 * 64 + 2 * 4 and picture.shape[0] > 64
    heldout, video = run / "data" / "heldout", Path(summary["frames"]).name
    folders = (heldout / "blur" / video, Path(summary["frames"]), heldout / "gt" / video)
    for index, folder in enumerate(folders):
        middle = list_frames(folder)[2]  # heldout.n_frames=5
        assert np.array_equal(picture[-64:, index * 68 : index * 68 + 64], read_rgb(middle)), folder


def test_labelled_strip_keeps_each_frame_under_its_caption() -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(3)]
    labels = ["blurry\n24.10 dB", "deblurred\n25.33 dB", "sharp"]
    strip = labelled_strip(list(zip(labels, frames, strict=True)))
    band = label_band_height(labels, 48)
    assert band >= 20  # two lines of text
    assert strip.shape == (band + 32, 3 * 48, 3) and strip.dtype == np.uint8
    for index, frame in enumerate(frames):
        assert np.array_equal(strip[band:, index * 48 : (index + 1) * 48], frame)
        assert strip[:band, index * 48 : (index + 1) * 48].max() > 200, f"{labels[index]!r} is not written"
    with_bars = labelled_strip(list(zip(labels, frames, strict=True)), separator=4)
    assert with_bars.shape == (band + 32, 3 * 48 + 2 * 4, 3)
    assert np.array_equal(with_bars[band:, 52:100], frames[1])
    with pytest.raises(ValueError, match="'sharp' is uint8 \\(16, 48, 3\\)"):
        labelled_strip([("blurry", frames[0]), ("sharp", frames[1][:16])])


def test_demo_precision_follows_the_hardware() -> None:
    avx2, amx = frozenset({"avx2", "fma"}), frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    assert demo_precision("auto", "cpu", amx) == "bf16-mixed"
    assert demo_precision("auto", "cpu", frozenset({"avx512_bf16"})) == "bf16-mixed"
    assert demo_precision("auto", "cpu", avx2) == "32-true"  # emulated bf16 would be slower
    assert demo_precision("auto", "gpu", amx) == "32-true"  # the host CPU's flags say nothing about the GPU
    assert demo_precision("32-true", "cpu", amx) == "32-true"
    assert demo_precision("bf16-mixed", "cpu", avx2) == "bf16-mixed"  # asked for: passed on
    with pytest.raises(ConfigError, match="precision=bf17"):
        demo_precision("bf17", "cpu", amx)


@pytest.mark.parametrize(
    ("setting", "named"),
    [  # the rules are tested in-process (demo_precision above, check_count): one case in the quick tier
        pytest.param("precision=fp64", "precision=fp64", marks=pytest.mark.slow),
        ("steps=-1", "steps=-1: must be >= 1"),
        pytest.param("steps=abc", "steps=abc", marks=pytest.mark.slow),
        pytest.param("seed=abc", "seed=abc: not a whole number", marks=pytest.mark.slow),
    ],
    ids=[
        "precision",
        "steps-negative",
        "steps-abc",
        "seed-abc",
    ],  # steps=-1 would train without end: no epoch limit either
)
def test_a_bad_demo_setting_stops_before_any_work(tmp_path: Path, setting: str, named: str) -> None:
    result = subprocess.run(
        [console_script("cdvd-demo"), setting, "hydra.run.dir=demo_run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert named in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "demo_run" / "data").exists()  # nothing synthesized
