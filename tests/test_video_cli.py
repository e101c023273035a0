"""cdvd-deblur on video files, through the command line: containers, sound, resume after a kill, damaged input,
a full disk, outputs made with other weights, and compare=true.

Clips are made in the test (H.264 with an AAC track, as phones write them); the checkpoint is a tiny random
CDVD-TSP. Rich's log lines are not wrapped (``COLUMNS``), so each message is one line of the output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers.cli import compose_config, console_script

from cdvd.checkpoints import save_original
from cdvd.cli.deblur import run_deblur
from cdvd.data.io import list_frames, read_rgb
from cdvd.errors import ConfigError
from cdvd.inference.settings import deblur_settings
from cdvd.models import CDVDTSP
from cdvd.video import probe_video, read_video, write_test_video

N_FRAMES, H, W, FPS = 8, 32, 48, 25
SEGMENT = 3  # segments of 3, 3 and 2 frames


def deblur(cwd: Path, *args: str, checkpoint: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command(checkpoint, *args), cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)


def command(checkpoint: Path, *args: str) -> list[str]:
    return [console_script("cdvd-deblur"), f"checkpoint={checkpoint}", "device=cpu", "progress=false", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", "OMP_NUM_THREADS": "1"}


def frames(seed: int = 0) -> list[np.ndarray]:
    """Smooth moving waves (each frame unlike the next), uint8 RGB."""
    yy, xx = np.mgrid[0:H, 0:W]
    return [
        np.stack(
            [128 + 90 * np.sin((xx + 3 * t + seed) / 6), 128 + 90 * np.cos((yy - 2 * t) / 5), 100 + 0 * xx], axis=-1
        ).astype(np.uint8)
        for t in range(N_FRAMES)
    ]


def packets(path: Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(getattr(container.streams, kind)[0]) if p.size]


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("video_cli")
    torch.manual_seed(0)
    save_original(CDVDTSP(n_feat=4, n_resblock=1), folder / "tiny.pt")
    write_test_video(folder / "clip.mp4", frames(), FPS)  # H.264 + AAC
    return folder


@pytest.fixture(scope="module")
def mp4_run(work: Path) -> Path:
    """An uninterrupted run into an .mp4 (the reference of the resume test)."""
    result = deblur(work, "input=clip.mp4", "output=out_mp4/sharp.mp4", f"segment_frames={SEGMENT}",
                    checkpoint=work / "tiny.pt")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return work / "out_mp4" / "sharp.mp4"


@pytest.fixture(scope="module")
def mkv_run(work: Path) -> Path:
    """A run into an .mkv with compare=true."""
    result = deblur(work, "input=clip.mp4", "output=out_mkv/sharp.mkv", f"segment_frames={SEGMENT}", "compare=true",
                    checkpoint=work / "tiny.pt")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return work / "out_mkv" / "sharp.mkv"


@pytest.mark.slow
@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_h264_with_aac_in_gives_h264_with_the_same_aac_out(
    work: Path, container: str, request: pytest.FixtureRequest
) -> None:
    out: Path = request.getfixturevalue(f"{container}_run")
    source, info = probe_video(work / "clip.mp4"), probe_video(out)
    assert info.codec == "h264" and info.frame_rate == source.frame_rate == FPS and (info.width, info.height) == (W, H)
    assert info.audio is not None and info.audio.codec == "aac"
    assert packets(out, "audio") == packets(work / "clip.mp4", "audio")  # the sound copied, not re-encoded
    assert len(read_video(out)) == N_FRAMES
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no parts or temp files left


@pytest.mark.slow
def test_kill_part_way_and_rerun_equal_an_uninterrupted_run(work: Path, mp4_run: Path) -> None:
    out = work / "killed" / "sharp.mp4"
    args = command(work / "tiny.pt", "input=clip.mp4", f"output={out}", f"segment_frames={SEGMENT}")
    process = subprocess.Popen(args, cwd=work, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_segment = out.parent / ".sharp.mp4.parts" / "seg_000000.json"
    deadline = time.monotonic() + 240
    while not first_segment.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()

    result = deblur(work, "input=clip.mp4", f"output={out}", f"segment_frames={SEGMENT}", checkpoint=work / "tiny.pt")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout + result.stderr
    got, reference = read_video(out), read_video(mp4_run)
    assert len(got) == N_FRAMES and all(np.array_equal(a, b) for a, b in zip(got, reference, strict=True))
    assert packets(out, "video") == packets(mp4_run, "video")
    assert sorted(p.name for p in out.parent.iterdir()) == ["sharp.mp4"]


def test_truncated_input_warns_naming_the_file_and_counts(work: Path, tmp_path: Path) -> None:
    data = (work / "clip.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    result = deblur(tmp_path, "input=cut.mp4", "output=sharp.mp4", checkpoint=work / "tiny.pt")
    assert result.returncode == 0, result.stderr
    decoded = len(read_video(tmp_path / "sharp.mp4"))
    assert 0 < decoded < N_FRAMES
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "WARNING" in line]
    assert len(warnings) == 1, warnings
    assert "cut.mp4" in warnings[0] and f"decoded {decoded} frames" in warnings[0] and str(N_FRAMES) in warnings[0]
    assert f"{decoded} frames written" in warnings[0]  # the video's summary line carries it


def test_full_disk_is_an_error_and_leaves_no_output(work: Path, tmp_path: Path) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        result = deblur(work, "input=clip.mp4", f"output={mount / 'sharp.mp4'}", "crf=0", "segment_frames=2",
                        checkpoint=work / "tiny.pt")  # fmt: skip
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "sharp.mp4" in lines[0] and "cannot write" in lines[0], result.stderr
        assert not (mount / "sharp.mp4").exists()
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow  # three runs, ~25 s
def test_output_made_with_another_checkpoint_is_refused(work: Path, mp4_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sharp.mp4"
    out.write_bytes(mp4_run.read_bytes())
    torch.manual_seed(1)
    save_original(CDVDTSP(n_feat=4, n_resblock=1), tmp_path / "other.pt")
    before = out.read_bytes()
    same = deblur(work, "input=clip.mp4", f"output={out}", f"segment_frames={SEGMENT}", checkpoint=work / "tiny.pt")
    assert same.returncode == 0 and "skipped" in same.stdout + same.stderr and out.read_bytes() == before

    other = deblur(
        work, "input=clip.mp4", f"output={out}", f"segment_frames={SEGMENT}", checkpoint=tmp_path / "other.pt"
    )
    lines = other.stderr.strip().splitlines()
    assert other.returncode == 2 and len(lines) == 1, other.stderr
    assert "overwrite=true" in lines[0] and "weights_sha256" in lines[0] and out.read_bytes() == before

    replaced = deblur(work, "input=clip.mp4", f"output={out}", f"segment_frames={SEGMENT}", "overwrite=true",
                      checkpoint=tmp_path / "other.pt")  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    assert out.read_bytes() != before and len(read_video(out)) == N_FRAMES


def test_compare_video_is_blurry_beside_deblurred(work: Path, mkv_run: Path) -> None:
    side = mkv_run.with_name("sharp_compare.mkv")
    info = probe_video(side)
    assert (info.width, info.height, info.frame_rate) == (2 * W + 4, H, FPS) and info.audio is not None
    pairs, blurry, sharp = read_video(side), read_video(work / "clip.mp4"), read_video(mkv_run)
    assert len(pairs) == len(blurry) == len(sharp) == N_FRAMES
    for pair, left, right in zip(pairs, blurry, sharp, strict=True):
        assert mean_error(pair[:, :W], left) < 6 and mean_error(pair[:, W + 4 :], right) < 6
        assert mean_error(left, right) > 12  # the halves really are two different pictures


def test_compare_frame_folders(work: Path, tmp_path: Path) -> None:
    result = deblur(work, "input=clip.mp4", f"output={tmp_path / 'out'}", "compare=true", checkpoint=work / "tiny.pt")
    assert result.returncode == 0, result.stderr
    outputs, sides = list_frames(tmp_path / "out" / "clip"), list_frames(tmp_path / "out" / "clip_compare")
    assert [p.name for p in outputs] == [p.name for p in sides] == [f"{i:05d}.png" for i in range(N_FRAMES)]
    for blurry, output, side in zip(read_video(work / "clip.mp4"), outputs, sides, strict=True):
        pair = read_rgb(side)
        assert np.array_equal(pair[:, :W], blurry) and np.array_equal(pair[:, W + 4 :], read_rgb(output))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("codec=no-such-encoder", "codec=no-such-encoder"),
        ("codec=aac", "codec=aac: not a video encoder"),
        ("crf=70", "crf=70"),
        ("preset=fastest", "preset=fastest"),
        ("segment_frames=0", "segment_frames=0"),
    ],
)
def test_encoder_settings_are_checked_naming_the_setting(override: str, message: str) -> None:
    cfg = compose_config("deblur", [override])
    with pytest.raises(ConfigError, match=message):
        deblur_settings(cfg)


def test_a_video_output_the_writer_cannot_make_names_the_setting(work: Path, tmp_path: Path) -> None:
    for args, message in [
        (["output=sharp.avi"], "output=.*sharp.avi: cannot write a .avi"),
        (["output=o.webm", "codec=libx264"], "codec="),
    ]:
        cfg = compose_config("deblur", [f"input={work / 'clip.mp4'}", f"checkpoint={work / 'tiny.pt'}", "device=cpu",
                                        *[a.replace("=", f"={tmp_path}/", 1) if a.startswith("output") else a
                                          for a in args]])  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            run_deblur(cfg)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
