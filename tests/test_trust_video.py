"""Video and frame cases a user meets with cdvd-deblur (issue 22, section 4), through the command line and the
documented Python API: a codec the container cannot hold, a variable-frame-rate input, odd frame sizes, JPEG EXIF
orientation, two runs writing one output, and frames too large for memory. Each ends cleanly: the work done as
asked, or one line naming the file or setting before the work.

Frames are tiny (32x48, 33x47 for odd sizes); the checkpoint is a tiny random CDVD-TSP.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from helpers.cli import console_script, one_line_error
from helpers.data import encoded_frame, make_tree, tiny_checkpoint
from PIL import Image

from cdvd.data import WindowDataset, discover_videos, image_size, read_rgb, write_rgb
from cdvd.errors import DataError
from cdvd.video import SegmentedVideoWriter, probe_video, read_video_frames, write_test_video

H, W = 32, 48
#: A screen recording's times (ms): 30 fps, a pause, then 5 fps; its nominal rate says 61 frames in its duration.
VFR_TIMES = [round(1000 * k / 30) for k in range(12)] + [400 + 200 * k for k in range(1, 9)]


def frames(n: int, size: tuple[int, int] = (H, W)) -> list[np.ndarray]:
    """Smooth moving waves, each frame unlike the next, uint8 RGB."""
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    return [
        np.stack([128 + 90 * np.sin((xx + 3 * t) / 6), 128 + 90 * np.cos((yy - 2 * t) / 5), 100 + 0 * xx], -1).astype(
            np.uint8
        )
        for t in range(n)
    ]


def write_vfr(path: Path, times_ms: list[int]) -> Path:
    """An H.264 video whose frames are shown at ``times_ms`` (a valid variable frame rate), nominally 30 fps."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for image, ms in zip(frames(len(times_ms)), times_ms, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def seconds(path: Path) -> list[float]:
    reader = read_video_frames(path)
    return [round(float(f.pts * reader.info.time_base), 3) for f in reader]


def write_turned_jpeg(path: Path, upright: np.ndarray) -> None:
    """A JPEG as a phone writes one held sideways: the pixels stored turned, with EXIF orientation 6 ("turn 90
    degrees clockwise to show")."""
    image = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes(), quality=100, subsampling=0)


def deblur(work: Path, cwd: Path, *args: str, limit: int | None = None) -> subprocess.CompletedProcess:
    """cdvd-deblur with the tiny checkpoint of ``work`` on the CPU, in ``cwd``; ``limit``: the address space it may
    use (as ``ulimit -v``)."""

    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    command = [console_script("cdvd-deblur"), f"checkpoint={work / 'tiny.pt'}", "device=cpu", "precision=fp32"]
    command.append("progress=false")
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limited
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trust_video")
    tiny_checkpoint(folder / "tiny.pt")
    write_test_video(folder / "clip.mp4", frames(4), 25, audio=False)
    return folder


# ------------------------------------------------------------------------------------------ codec and container


def test_a_codec_the_container_cannot_hold_is_refused_before_any_work(work: Path, tmp_path: Path) -> None:
    result = deblur(work, work, f"input={work / 'clip.mp4'}", f"output={tmp_path / 'x.mov'}", "codec=libvpx-vp9")
    line = one_line_error(result)
    assert "codec=libvpx-vp9" in line and ".mov" in line and ".mkv" in line, line  # and where it fits
    assert "deblurring" not in result.stdout + result.stderr  # refused before the checkpoint was even loaded
    assert list(tmp_path.iterdir()) == []


def test_the_writer_asks_ffmpeg_whether_the_container_takes_the_codec(tmp_path: Path) -> None:
    info = probe_video(write_test_video(tmp_path / "in.mp4", frames(2), 25, audio=False))
    with pytest.raises(ValueError, match="codec=libvpx-vp9: a .mov file cannot hold vp9"):
        SegmentedVideoWriter(tmp_path / "o.mov", info=info, codec="libvpx-vp9")
    writer = SegmentedVideoWriter(tmp_path / "o.mp4", info=info, codec="libvpx-vp9")  # MP4 holds VP9
    for image in frames(2):
        writer.write(image)
    assert probe_video(writer.finish()).codec == "vp9"


# ---------------------------------------------------------------------------------------- variable frame rate


def test_a_variable_frame_rate_file_reads_whole_with_its_timestamps(tmp_path: Path) -> None:
    path = write_vfr(tmp_path / "screen.mkv", VFR_TIMES)
    reader = read_video_frames(path)
    assert seconds(path) == [t / 1000 for t in VFR_TIMES]
    assert reader.info.frame_count is None and reader.info.expected_frames > 2 * len(VFR_TIMES)  # the nominal guess
    list(reader)
    assert reader.problems == [] and reader.decoded == len(VFR_TIMES)
    data = path.read_bytes()  # damage is still seen: the file cut short
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    cut = read_video_frames(tmp_path / "cut.mkv")
    list(cut)
    assert cut.problems and f"decoded {cut.decoded} frames" in cut.problems[0]


@pytest.mark.slow
def test_a_variable_frame_rate_video_deblurs_with_its_timestamps(work: Path, tmp_path: Path) -> None:
    source = write_vfr(tmp_path / "screen.mkv", VFR_TIMES)
    result = deblur(work, tmp_path, f"input={source}", "output=sharp.mkv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr  # not "damaged input"
    assert seconds(tmp_path / "sharp.mkv") == [t / 1000 for t in VFR_TIMES]


# --------------------------------------------------------------------------------------------- odd frame sizes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sharp.mp4", "sharp.webm"])
def test_odd_frame_sizes_keep_their_size_in_a_video_output(work: Path, tmp_path: Path, name: str) -> None:
    for k, image in enumerate(frames(3, size=(33, 47))):
        write_rgb(tmp_path / "odd" / f"{k:05d}.png", image)
    result = deblur(work, tmp_path, "input=odd", f"output={name}")
    assert result.returncode == 0, result.stderr[-3000:]
    info = probe_video(tmp_path / name)
    assert (info.width, info.height) == (47, 33)
    assert all(f.image.shape == (33, 47, 3) for f in read_video_frames(tmp_path / name))
    if name == "sharp.mp4":  # H.264 holds odd sizes in 4:4:4 only: said in one line before the work
        said = [line for line in (result.stdout + result.stderr).splitlines() if "47x33 frames" in line]
        assert len(said) == 1 and "4:4:4" in said[0], result.stdout + result.stderr


# ---------------------------------------------------------------------------------------- JPEG EXIF orientation


def test_exif_orientation_is_applied_to_the_pixels_and_the_size(tmp_path: Path) -> None:
    upright = encoded_frame(0, 3, (H, W))
    write_turned_jpeg(tmp_path / "phone.jpg", upright)
    with Image.open(tmp_path / "phone.jpg") as stored:
        assert stored.size == (H, W)  # stored sideways: W x H turned
    image = read_rgb(tmp_path / "phone.jpg")
    assert image.shape == (H, W, 3) and image_size(tmp_path / "phone.jpg") == (H, W)
    assert np.abs(image.astype(int) - upright).max() <= 4  # row and column codes where they belong


def test_exif_orientation_is_applied_to_training_frames(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", "folder", {"v": 5}, size=(H, W))  # blur and GT PNGs, upright
    for k, png in enumerate(sorted((root / "blur" / "v").iterdir())):
        write_turned_jpeg(png.with_suffix(".jpg"), encoded_frame(0, k, (H, W)))
        png.unlink()
    videos = discover_videos(root, "folder")  # frame sizes checked against the GT's: the same, upright
    assert videos[0].size == (H, W)
    item = WindowDataset(videos)[0]
    blur, sharp = item["blur"].numpy(), item["sharp"].numpy()
    assert blur.shape == sharp.shape == (5, 3, H, W)
    rows = np.rint(blur[:, 0] * 255)  # red = row in every frame
    assert np.abs(rows - np.arange(H)[None, :, None]).max() <= 4


def test_exif_orientation_is_applied_to_deblur_input(work: Path, tmp_path: Path) -> None:
    (tmp_path / "phone").mkdir()
    for k, image in enumerate(frames(3)):
        write_turned_jpeg(tmp_path / "phone" / f"{k:05d}.jpg", image)
    result = deblur(work, tmp_path, "input=phone", "output=out")
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = sorted((tmp_path / "out" / "phone").glob("*.png"))
    assert len(outputs) == 3 and all(read_rgb(p).shape == (H, W, 3) for p in outputs)


# ------------------------------------------------------------------------------------ two runs, one output


def test_a_second_writer_of_one_output_is_refused_until_the_first_ends(tmp_path: Path) -> None:
    info = probe_video(write_test_video(tmp_path / "in.mp4", frames(4), 25, audio=False))
    first = SegmentedVideoWriter(tmp_path / "o.mp4", info=info, segment_frames=2)
    first.write(frames(1)[0])
    with pytest.raises(DataError, match=r"o\.mp4 is being written by another run"):
        SegmentedVideoWriter(tmp_path / "o.mp4", info=info, segment_frames=2).frames_done()
    for image in frames(4)[1:]:
        first.write(image)
    first.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "o.mp4"]  # lock and parts gone
    second = SegmentedVideoWriter(tmp_path / "o.mp4", info=info, segment_frames=2)
    assert second.output_is_current() and second.frames_done() == 0


def test_a_second_run_on_an_output_being_written_fails_naming_it_and_touches_nothing(
    work: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sharp.mp4"
    info = probe_video(work / "clip.mp4")
    running = SegmentedVideoWriter(out, info=info, segment_frames=2, fingerprint={"run": "first"})
    for image in frames(3):
        running.write(image)  # one segment complete, one being written
    parts = tmp_path / ".sharp.mp4.parts"
    before = {p.name: p.read_bytes() for p in parts.iterdir() if p.is_file()}
    result = deblur(work, tmp_path, f"input={work / 'clip.mp4'}", f"output={out}", "overwrite=true")
    line = one_line_error(result)
    assert str(out) in line and "another run" in line, line
    assert {p.name: p.read_bytes() for p in parts.iterdir() if p.is_file()} == before
    running.write(frames(4)[3])
    assert len(list(read_video_frames(running.finish()))) == 4  # the first run ends whole


# --------------------------------------------------------------------------------------- frames too large


@pytest.mark.slow
def test_frames_too_large_for_memory_end_in_one_line_suggesting_tiles(work: Path, tmp_path: Path) -> None:
    """A 3000x3000 frame with the address space limited (``ulimit -v``) to what the command needs plus 1 GiB."""
    write_rgb(tmp_path / "big" / "00000.png", np.full((3000, 3000, 3), 120, np.uint8))
    probe = "import av, cv2, torch, cdvd.cli.deblur; print(open('/proc/self/status').read().split('VmSize:')[1])"
    base = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env={
        **os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"})  # fmt: skip
    limit = int(base.stdout.split()[0]) * 1024 + 2**30
    result = deblur(work, work, "input=" + str(tmp_path / "big"), "output=" + str(tmp_path / "out"), limit=limit)
    line = one_line_error(result)
    assert "not enough memory" in line and "3000x3000" in line and "tile.size=512 tile.overlap=64" in line, line
