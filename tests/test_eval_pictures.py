"""``cdvd-eval pictures=true``: the worst and the best scored frame of a run, pictured beside the report."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.cli import compose_config, console_script, one_line_error, run_command
from helpers.data import tiny_checkpoint

from cdvd.cli.evaluate import run_eval
from cdvd.data.io import list_frames, read_rgb, write_rgb
from cdvd.errors import ConfigError
from cdvd.evaluation.metrics import psnr_uint8

HEIGHT, WIDTH = 32, 48
N_FRAMES = 7  # frames=paper scores frames 2, 3 and 4
# noise (standard deviation) of each result frame against its GT frame, per video: the worst scored frame is b/00004,
# the best a/00003; frames 0 and 6 are not scored with frames=paper (frame 0 worse, frame 6 better than any scored)
NOISE = {"a": [40, 3, 6, 2, 10, 3, 0], "b": [40, 3, 8, 4, 20, 3, 0]}
SEPARATOR = 4  # the strip's bar between panels, as in the demo's comparison.png


def _noisy(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).round().astype(np.uint8)


def make_results_and_gt(root: Path) -> tuple[Path, Path]:
    """GT videos of textured frames, and results = GT plus noise of the strength :data:`NOISE` says."""
    rng = np.random.default_rng(7)
    for video, sigmas in NOISE.items():
        for index, sigma in enumerate(sigmas):
            sharp = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            write_rgb(root / "gt" / video / f"{index:05d}.png", sharp)
            write_rgb(root / "results" / video / f"{index:05d}.png", _noisy(sharp, sigma, rng))
    return root / "results", root / "gt"


def eval_config(output: Path, *overrides: str):  # noqa: ANN201 - DictConfig
    return compose_config("eval", [f"output={output}", "progress=false", "pictures=true", *overrides])


def panels(path: Path, count: int) -> list[np.ndarray]:
    """The ``count`` frames of a comparison strip, below its band of labels."""
    strip = read_rgb(path)
    assert strip.shape[1] == count * WIDTH + (count - 1) * SEPARATOR, strip.shape
    band = strip.shape[0] - HEIGHT  # the labels above the frames
    assert band > 0
    return [strip[band:, i * (WIDTH + SEPARATOR) : i * (WIDTH + SEPARATOR) + WIDTH] for i in range(count)]


def test_worst_and_best_frames_pictured_without_input(tmp_path: Path) -> None:
    results, gt = make_results_and_gt(tmp_path)
    output = tmp_path / "report" / "scores.json"
    report = run_eval(eval_config(output, f"results={results}", f"gt={gt}"))

    picked = {which: (entry["video"], entry["frame"]) for which, entry in report["pictures"].items()}
    assert picked == {"worst": ("b", "00004"), "best": ("a", "00003")}
    for which, (video, frame) in picked.items():
        path = output.parent / f"scores_{which}.png"
        entry = report["pictures"][which]
        assert Path(entry["path"]) == path.resolve() and path.is_file()
        result, sharp = read_rgb(results / video / f"{frame}.png"), read_rgb(gt / video / f"{frame}.png")
        assert entry["psnr"] == pytest.approx(psnr_uint8(result, sharp))
        deblurred_panel, sharp_panel = panels(path, 2)  # no input=: deblurred | sharp
        np.testing.assert_array_equal(deblurred_panel, result)
        np.testing.assert_array_equal(sharp_panel, sharp)
    assert json.loads(output.read_text())["pictures"] == report["pictures"]


def test_blurry_panel_from_the_input_when_deblurred_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    for video in ("a", "b"):
        for index in range(N_FRAMES):
            sharp = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            write_rgb(tmp_path / "gt" / video / f"{index:05d}.png", sharp)
            write_rgb(tmp_path / "blur" / video / f"{index:05d}.png", _noisy(sharp, 5 + 5 * index, rng))
    output = tmp_path / "out" / "metrics.json"
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    overrides = [f"input={tmp_path / 'blur'}", f"gt={tmp_path / 'gt'}", f"checkpoint={checkpoint}", "device=cpu"]
    report = run_eval(eval_config(output, *overrides))

    # which frames are worst and best, scored here from the frames the run wrote
    scores = {
        (video, path.stem): psnr_uint8(read_rgb(path), read_rgb(tmp_path / "gt" / video / path.name))
        for video in ("a", "b")
        for path in list_frames(output.parent / "results" / video)[2:5]
    }
    expected = {"worst": min(scores, key=scores.__getitem__), "best": max(scores, key=scores.__getitem__)}
    for which, (video, frame) in expected.items():
        entry = report["pictures"][which]
        assert (entry["video"], entry["frame"]) == (video, frame)
        assert entry["psnr"] == pytest.approx(scores[video, frame])
        blurry, deblurred, sharp = panels(Path(entry["path"]), 3)
        np.testing.assert_array_equal(blurry, read_rgb(tmp_path / "blur" / video / f"{frame}.png"))
        np.testing.assert_array_equal(deblurred, read_rgb(output.parent / "results" / video / f"{frame}.png"))
        np.testing.assert_array_equal(sharp, read_rgb(tmp_path / "gt" / video / f"{frame}.png"))


def test_pictures_replace_only_their_own_files(tmp_path: Path) -> None:
    results, gt = make_results_and_gt(tmp_path)
    output = tmp_path / "metrics.json"
    worst = tmp_path / "metrics_worst.png"
    write_rgb(worst, np.zeros((4, 4, 3), np.uint8))  # a user's picture under that name
    mine = worst.read_bytes()
    with pytest.raises(ConfigError, match="metrics_worst.png exists and is not a cdvd-eval picture"):
        run_eval(eval_config(output, f"results={results}", f"gt={gt}"))
    assert worst.read_bytes() == mine and not output.exists()  # refused before the work

    run_eval(eval_config(output, f"results={results}", f"gt={gt}", "overwrite=true"))
    assert cv2.imread(str(worst)).shape[1] == 2 * WIDTH + SEPARATOR
    before = worst.stat().st_mtime_ns
    run_eval(eval_config(output, f"results={results}", f"gt={gt}"))  # its own picture: replaced on a rerun
    assert worst.stat().st_mtime_ns != before

    report = run_eval(compose_config("eval", [f"output={output}", "progress=false", f"results={results}", f"gt={gt}"]))
    assert "pictures" not in report  # off by default


def test_picture_over_an_input_is_refused(tmp_path: Path) -> None:
    results, gt = make_results_and_gt(tmp_path)
    gt.rename(tmp_path / "x_best.png")  # a GT folder under the name of a picture
    with pytest.raises(ConfigError, match=r"x_best.png is the same place as gt="):
        run_eval(eval_config(tmp_path / "x.json", f"results={results}", f"gt={tmp_path / 'x_best.png'}"))
    assert not (tmp_path / "x.json").exists()


def test_command_line_writes_and_names_the_pictures(tmp_path: Path) -> None:
    results, gt = make_results_and_gt(tmp_path)
    args = [console_script("cdvd-eval"), f"results={results}", f"gt={gt}", "output=m.json", "pictures=true"]
    done = run_command([*args, "progress=false"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    log = " ".join((done.stdout + done.stderr).split())  # the lines as logged, whatever the terminal's width
    assert "worst frame: b/00004" in log and "m_worst.png" in log and "best frame: a/00003" in log
    report = json.loads((tmp_path / "m.json").read_text())
    for which in ("worst", "best"):
        assert Path(report["pictures"][which]["path"]) == (tmp_path / f"m_{which}.png").resolve()
        assert cv2.imread(str(tmp_path / f"m_{which}.png")).shape[1] == 2 * WIDTH + SEPARATOR

    (tmp_path / "m_best.png").write_text("notes\n")  # not a picture of cdvd-eval: refused, in one line
    one_line_error(run_command(args, cwd=tmp_path), "m_best.png", "overwrite=true")
