"""The blur synthesizer: determinism, real blur, sources, safe writes and the cdvd-synth CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import cdvd.data.synthetic as synth
from cdvd.data import detect_layout, discover_videos, read_rgb, write_rgb
from cdvd.errors import DataError
from cdvd.video import write_test_video

SMALL = {"n_videos": 2, "n_frames": 3, "size": 48, "sub_frames": 5}


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64), cv2.CV_64F).var())


def test_layout_and_meta(tmp_path):
    out = tmp_path / "syn"
    summary = synth.synthesize(out, **SMALL)
    assert detect_layout(out) == "folder"
    videos = discover_videos(out, "folder")
    assert len(videos) == 2 and all(len(v) == 3 and v.size == (48, 48) for v in videos)
    assert [v.name for v in videos] == [v["name"] for v in summary["videos"]]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["sub_frames"] == 5 and meta["size"] == [48, 48]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_deterministic_under_seed(tmp_path):
    first = files(Path(synth.synthesize(tmp_path / "a", **SMALL, seed=5)["output"]))
    again = files(Path(synth.synthesize(tmp_path / "b", **SMALL, seed=5)["output"]))
    other = files(Path(synth.synthesize(tmp_path / "c", **SMALL, seed=6)["output"]))
    assert first == again
    assert first.keys() != other.keys() or first != other


def test_blur_blurs(tmp_path):
    out = tmp_path / "syn"
    synth.synthesize(out, n_videos=3, n_frames=3, size=64, motion_min=6, motion_max=10, seed=1)
    for video in discover_videos(out, "folder"):
        assert video.gt is not None
        blurry = np.mean([sharpness(read_rgb(p)) for p in video.blur])
        sharp = np.mean([sharpness(read_rgb(p)) for p in video.gt])
        assert blurry < 0.8 * sharp, video.name


def test_noise_and_jpeg_touch_only_the_blurry_frames(tmp_path):
    clean = synth.synthesize(tmp_path / "clean", **SMALL)
    noisy = synth.synthesize(tmp_path / "noisy", **SMALL, noise_std=0.02, jpeg_quality=60)
    clean_files, noisy_files = files(Path(clean["output"])), files(Path(noisy["output"]))
    assert all(clean_files[k] == noisy_files[k] for k in clean_files if k.startswith("gt"))
    assert all(clean_files[k] != noisy_files[k] for k in clean_files if k.startswith("blur"))


def test_folder_source(tmp_path):
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for i in range(2):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        write_rgb(photos / f"p{i}.png", cv2.resize(small, (160, 120), interpolation=cv2.INTER_CUBIC))
    summary = synth.synthesize(tmp_path / "out", source="folder", source_path=photos, **SMALL)
    assert sorted(v["source"] for v in summary["videos"]) == ["p0", "p1"]


def high_fps_frames(n: int, size: tuple[int, int] = (40, 56)) -> list[np.ndarray]:
    """A bright square moving 2 pixels per frame over a grey gradient."""
    frames = []
    for k in range(n):
        frame = np.tile(np.linspace(40, 120, size[1], dtype=np.uint8)[None, :, None], (size[0], 1, 3))
        frame[10:20, 5 + 2 * k : 15 + 2 * k] = 250
        frames.append(frame)
    return frames


def test_video_source_from_frames(tmp_path):
    folder = tmp_path / "hfr"
    for k, frame in enumerate(high_fps_frames(16)):
        write_rgb(folder / f"{k:04d}.png", frame)
    summary = synth.synthesize(
        tmp_path / "out",
        source="video",
        source_path=folder,
        n_videos=3,
        n_frames=2,
        size=(32, 48),
        sub_frames=3,
    )
    assert len(summary["videos"]) == 2  # 16 frames hold two videos of 2 x 3 frames
    video = discover_videos(tmp_path / "out", "folder")[0]
    assert video.size == (32, 48)
    # the blurry frame averages 3 consecutive frames; the GT is the middle one
    assert sharpness(read_rgb(video.blur[0])) < sharpness(read_rgb(video.gt[0]))


def test_video_source_from_file(tmp_path):
    path = write_test_video(tmp_path / "clip.avi", high_fps_frames(9), 240, audio=False)
    summary = synth.synthesize(
        tmp_path / "out", source="video", source_path=path, n_videos=1, n_frames=3, size=32, sub_frames=3
    )
    assert len(summary["videos"]) == 1
    with pytest.raises(DataError, match="fewer than") as err:
        synth.synthesize(tmp_path / "out2", source="video", source_path=path, n_frames=4, sub_frames=3)
    assert str(path) in str(err.value)


def test_existing_output_and_overwrite(tmp_path):
    out = tmp_path / "syn"
    synth.synthesize(out, **SMALL)
    before = files(out)
    with pytest.raises(DataError, match="not empty") as err:
        synth.synthesize(out, **SMALL, seed=9)
    assert str(out) in str(err.value) and files(out) == before
    synth.synthesize(out, **SMALL, seed=9, overwrite=True)
    assert files(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, image):
        calls.append(path)
        if len(calls) > 3:
            raise OSError("disk full")
        write_rgb(path, image)

    monkeypatch.setattr(synth, "write_rgb", failing_write)
    with pytest.raises(DataError, match="cannot write the dataset .*syn: disk full"):  # one line naming it
        synth.synthesize(tmp_path / "syn", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "folder"}, "needs source_path"),
        ({"source": "folder", "source_path": "/nonexistent/photos"}, "source_path not found"),
        ({"source": "folder", "source_path": 2024}, "source_path not found: 2024"),  # source_path=2024 read as a number
        ({"source": "camera"}, "source must be one of"),
        ({"n_frames": 0}, "n_frames=0: must be >= 1"),
        ({"n_frames": "abc"}, "n_frames=abc: not a whole number"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"motion_min": 5, "motion_max": 2}, "motion_min"),
    ],
)
def test_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        synth.synthesize(tmp_path / "syn", **kwargs)
    assert not (tmp_path / "syn").exists()


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("cdvd-synth")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cdvd.cli.synth"]


def test_cli(tmp_path):
    out = tmp_path / "cli"
    args = [f"output={out}", "n_videos=1", "n_frames=2", "size=32", "sub_frames=3", "seed=4"]
    done = subprocess.run([*cli(), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list((out / "blur").rglob("*.png"))) == 2 and len(list((out / "gt").rglob("*.png"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]  # no Hydra run folder or log file
    done = subprocess.run([*cli(), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "not empty" in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
