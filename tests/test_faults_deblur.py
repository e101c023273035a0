"""Faults a user meets with cdvd-deblur and cdvd-eval, through the command lines: each ends in one line naming the
file or setting and a non-zero exit, never in stale numbers, a traceback, a half-written file or a write into the
user's input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import console_script, one_line_error, run_command
from helpers.data import tiny_checkpoint
from helpers.processes import run_as_nobody

from cdvd.atomic import TEMP_MARK, temp_path
from cdvd.data.io import list_frames, read_rgb, write_rgb
from cdvd.hardware import resolve_precision


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small checkpoints with different weights (A and B)."""
    folder = tmp_path_factory.mktemp("ckpt")
    return tiny_checkpoint(folder / "a.pt", seed=0), tiny_checkpoint(folder / "b.pt", seed=1)


def make_dataset(root: Path, n: int = 6, size: int = 32, ext: str = ".png") -> None:
    """A folder-layout dataset: root/val/blur/clip/*, root/val/gt/clip/*."""
    rng = np.random.default_rng(0)
    for i in range(n):
        gt = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        blur = np.clip(gt.astype(int) + rng.integers(-20, 21, size=gt.shape), 0, 255).astype(np.uint8)
        write_rgb(root / "val" / "blur" / "clip" / f"{i:05d}{ext}", blur)
        write_rgb(root / "val" / "gt" / "clip" / f"{i:05d}.png", gt)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def deblur(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_command([console_script("cdvd-deblur"), "device=cpu", "progress=false", *args], cwd, timeout)


def evaluate(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_command([console_script("cdvd-eval"), "device=cpu", "progress=false", *args], cwd)


@pytest.mark.slow
def test_eval_with_another_checkpoint_never_reports_the_old_numbers(
    tmp_path: Path, checkpoints: tuple[Path, Path]
) -> None:
    a, b = checkpoints
    make_dataset(tmp_path / "data")
    common = ["input=data", "split=val", "frames=all"]
    first = evaluate([*common, f"checkpoint={a}", "output=run/metrics.json"], tmp_path)
    assert first.returncode == 0, first.stderr
    score_a = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert score_a["checkpoint"]["sha256"] and score_a["checkpoint"]["path"] == str(a)
    assert score_a["protocol"] == {"clip_length": 5, "frames": "all", "crop_border": 4}
    assert score_a["versions"]["torch"] == torch.__version__ and score_a["input"].endswith("data")

    refused = evaluate([*common, f"checkpoint={b}", "output=run/metrics.json"], tmp_path)
    one_line_error(refused, "overwrite=true", "weights_sha256")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == score_a  # untouched

    again = evaluate([*common, f"checkpoint={b}", "output=run/metrics.json", "overwrite=true"], tmp_path)
    assert again.returncode == 0, again.stderr
    fresh = evaluate([*common, f"checkpoint={b}", "output=fresh/metrics.json"], tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    score_b = json.loads((tmp_path / "run" / "metrics.json").read_text())
    score_fresh = json.loads((tmp_path / "fresh" / "metrics.json").read_text())
    assert score_b["total"] == score_fresh["total"] != score_a["total"]
    assert score_b["checkpoint"]["sha256"] != score_a["checkpoint"]["sha256"]


@pytest.mark.slow
def test_deblur_resumes_only_what_was_made_the_same_way(tmp_path: Path, checkpoints: tuple[Path, Path]) -> None:
    a, b = checkpoints
    make_dataset(tmp_path / "data")
    args = ["input=data/val/blur/clip", "output=out"]
    assert deblur([*args, f"checkpoint={a}"], tmp_path).returncode == 0
    made = snapshot(tmp_path / "out")
    (tmp_path / "out" / "clip" / "00003.png").unlink()
    resumed = deblur([*args, f"checkpoint={a}"], tmp_path)
    assert resumed.returncode == 0 and "1 frames written, 5 skipped" in resumed.stdout + resumed.stderr
    assert snapshot(tmp_path / "out") == made
    others = [[f"checkpoint={b}"], [f"checkpoint={a}", "tile.size=16", "tile.overlap=4"]]
    # precision=auto runs bf16 where the CPU has it natively and fp32 elsewhere; where bf16 is not native an explicit
    # bf16 runs fp32 too (the same frames), so only a CPU with native bf16 has another precision to try
    if resolve_precision("auto", "cpu") == "bf16":
        others.append([f"checkpoint={a}", "precision=fp32"])
    for other in others:
        one_line_error(deblur([*args, *other], tmp_path), "out/clip", "overwrite=true")
        assert snapshot(tmp_path / "out") == made
    # the input changed: a frame replaced
    write_rgb(tmp_path / "data/val/blur/clip/00002.png", np.zeros((32, 32, 3), dtype=np.uint8))
    one_line_error(deblur([*args, f"checkpoint={a}"], tmp_path), "input", "overwrite=true")
    # outputs nobody recorded (made by another tool) are not taken as ours either
    write_rgb(tmp_path / "foreign" / "clip" / "00000.png", np.zeros((32, 32, 3), dtype=np.uint8))
    one_line_error(deblur(["input=data/val/blur/clip", "output=foreign", f"checkpoint={a}"], tmp_path), "no record")


@pytest.mark.slow
@pytest.mark.parametrize("output", ["data/val/blur/clip", "data/val/blur/clip/sub", "data/val/blur"])
def test_output_in_the_input_is_refused_before_any_work(
    tmp_path: Path, checkpoints: tuple[Path, Path], output: str
) -> None:
    make_dataset(tmp_path / "data", ext=".jpg")
    before = snapshot(tmp_path / "data")
    result = deblur(["input=data/val/blur/clip", f"output={output}", f"checkpoint={checkpoints[0]}"], tmp_path)
    one_line_error(result, "into the input")
    assert snapshot(tmp_path / "data") == before


@pytest.mark.slow
def test_settings_and_files_a_user_gets_wrong(tmp_path: Path, checkpoints: tuple[Path, Path]) -> None:
    make_dataset(tmp_path / "data")
    ck = f"checkpoint={checkpoints[0]}"
    cases = [
        (["input=data/val/blur/clip", "output=o1", ck, "corr_backend=foo"], ["corr_backend=foo"]),
        (["input=data/val/blur/clip", "output=o2", ck, "corr_backend=cupy"], ["corr_backend=cupy"]),
        (["input=data/val/blur/clip", "output=o3", ck, "streaming=maybe"], ["streaming"]),
        (["input=data/val/blur/clip", "output=o4", ck, "tile.size=30"], ["tile.size=30"]),
        (["input=data/val/blur/clip", "output=o5", ck, "fps=-3"], ["fps=-3"]),
        (["input=data/val/blur/clip", "output=o6", "checkpoint=data/val/gt/clip/00000.png"], ["00000.png"]),
    ]
    for args, needles in cases:
        one_line_error(deblur(args, tmp_path), *needles)
    one_line_error(evaluate(["results=data/val/blur", "gt=data/val/gt", "crop_border=40"], tmp_path), "crop_border=40")
    one_line_error(evaluate(["results=data/val/blur", "gt=data/val/gt", "frames=some"], tmp_path), "frames=some")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written anywhere


@pytest.mark.slow
def test_non_ascii_paths_need_no_quoting(tmp_path: Path, checkpoints: tuple[Path, Path]) -> None:
    make_dataset(tmp_path / "données")
    result = deblur(["input=données/val/blur/clip", "output=sortie_été", f"checkpoint={checkpoints[0]}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "sortie_été" / "clip").glob("*.png"))) == 6


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root in a machine that allows it): {done.stderr.decode()[:200]}")


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_is_an_error_naming_the_file_and_leaves_only_whole_frames(
    tmp_path: Path, checkpoints: tuple[Path, Path]
) -> None:
    rng = np.random.default_rng(1)
    for i in range(12):  # incompressible 64x64 frames: about 12 KB each as PNG
        write_rgb(tmp_path / "in" / f"{i:05d}.png", rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
    _mount_tmpfs(tmp_path / "small", "size=64k")
    try:
        result = deblur(["input=in", "output=small/out", f"checkpoint={checkpoints[0]}"], tmp_path)
        one_line_error(result, "small/out", "cannot write")
        written = sorted((tmp_path / "small" / "out" / "in").glob("*.png"))
        assert 0 < len(written) < 12
        for path in written:  # every frame there is whole
            assert read_rgb(path).shape == (64, 64, 3)
        leftovers = [p.name for p in (tmp_path / "small" / "out" / "in").iterdir() if TEMP_MARK in p.name]
        assert not leftovers
    finally:
        _umount(tmp_path / "small")


@pytest.mark.slow
def test_an_unwritable_output_is_refused_before_any_frame_is_computed(
    tmp_path: Path, checkpoints: tuple[Path, Path]
) -> None:
    make_dataset(tmp_path / "data")
    _mount_tmpfs(tmp_path / "ro", "ro,size=64k")
    try:
        start = time.monotonic()
        result = deblur(["input=data/val/blur/clip", "output=ro/out", f"checkpoint={checkpoints[0]}"], tmp_path)
        one_line_error(result, "ro/out")
        assert "frames written" not in result.stdout + result.stderr
        assert time.monotonic() - start < 120
    finally:
        _umount(tmp_path / "ro")
    # a file where a folder is needed
    (tmp_path / "afile").write_text("x")
    one_line_error(
        deblur(["input=data/val/blur/clip", "output=afile/out", f"checkpoint={checkpoints[0]}"], tmp_path), "afile"
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_frames(
    tmp_path: Path, checkpoints: tuple[Path, Path], sig: signal.Signals
) -> None:
    rng = np.random.default_rng(2)
    n_frames = 20  # the signal goes when the first frame is out: the 19 others (about 0.4 s each) outlast its way in
    for i in range(n_frames):
        write_rgb(tmp_path / "in" / f"{i:05d}.png", rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8))
    ck = f"checkpoint={checkpoints[0]}"
    assert deblur(["input=in", "output=whole", ck], tmp_path).returncode == 0
    args = [console_script("cdvd-deblur"), "device=cpu", "progress=false", "input=in", "output=cut", ck]
    process = subprocess.Popen(
        args,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C in a terminal: SIGINT at its default. A test run started in the background of a non-interactive
        # shell (`bash .ci/run &`) ignores SIGINT, and children inherit that: the run would finish, exit 0
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    out = tmp_path / "cut" / "in"

    def frames_written() -> int:  # whole frames only (list_frames leaves out the hidden partial files)
        return len(list_frames(out)) if out.is_dir() else 0

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and frames_written() < 1 and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "Traceback" not in stderr
        assert len([line for line in stderr.splitlines() if "error:" in line]) == 1
    partial = frames_written()
    assert 0 < partial < n_frames, partial
    # a kill can land inside a frame's write: its hidden partial file stays behind (planted here, so that the
    # case is tested on every run, not only when the signal happens to land there)
    temp_path(out / f"{partial:05d}.png", pid=process.pid).write_bytes(b"\x89PNG partial")
    rerun = deblur(["input=in", "output=cut", ck], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(tmp_path / "cut" / "in") == snapshot(tmp_path / "whole" / "in")
    assert not [p for p in out.iterdir() if TEMP_MARK in p.name]


def test_an_unwritable_folder_as_a_non_root_user(tmp_path: Path) -> None:
    """The permission check itself, as an ordinary user would meet it (a folder owned by someone else, mode 755)."""
    if os.geteuid() != 0:
        folder = Path("/")  # an ordinary user cannot write there
    else:
        folder = tmp_path / "not_yours"
        folder.mkdir()
        folder.chmod(0o755)
        tmp_path.chmod(0o755)
    from cdvd.inference.runner import check_writable

    report = run_as_nobody(lambda: check_writable(folder / "out"))
    assert report.startswith("DataError: cannot write into") and "out" in report and "Permission denied" in report
    assert not (folder / "out").exists()
