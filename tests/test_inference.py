"""The deblurring engine: border reflection, streaming = per window, tiling, sources, sinks, resuming."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.processes import dead_pid

from cdvd.atomic import temp_path
from cdvd.data.clips import reflect_index, window_indices
from cdvd.data.io import read_rgb, write_rgb
from cdvd.data.sources import VideoSource, discover_sources
from cdvd.errors import ConfigError, DataError
from cdvd.evaluation.metrics import to_uint8
from cdvd.hardware import autocast_context
from cdvd.inference import (
    TileSpec,
    VideoDeblurrer,
    deblur_videos,
    extended_positions,
    tile_regions,
    tile_weights,
)
from cdvd.models import CDVDTSP
from cdvd.video import read_video, write_test_video

logger = logging.getLogger(__name__)


class StubNet(CDVDTSP):
    """CDVDTSP's cascade (its forward) around a cheap, order-sensitive, pixel-wise stage; counts calls."""

    def __init__(self) -> None:
        super().__init__(n_feat=4, n_resblock=1)
        self.calls = 0

    def restore_centres(self, frames: torch.Tensor) -> torch.Tensor:
        assert frames.shape[-1] % 4 == 0 and frames.shape[-2] % 4 == 0
        self.calls += 1
        prev, centre, nxt = frames[:-2], frames[1:-1], frames[2:]
        return 0.6 * centre + 0.3 * prev + 0.1 * nxt + 0.05 * torch.tanh(3 * prev * nxt + centre)


@pytest.fixture(scope="module")
def tiny_model() -> CDVDTSP:
    torch.manual_seed(0)
    return CDVDTSP(n_feat=4, n_resblock=1).eval()


def video(n: int, h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


def smooth_video(n: int, h: int, w: int) -> torch.Tensor:
    """A smooth pattern moving by a pixel a frame (something flow can follow)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    frames = []
    for t in range(n):
        x = xx - t
        frames.append(
            torch.stack(
                [
                    0.5 + 0.4 * torch.sin(x / 9.0) * torch.cos(yy / 11.0),
                    0.5 + 0.3 * torch.cos((x + yy) / 13.0),
                    0.5 + 0.2 * torch.sin(yy / 7.0),
                ]
            )
        )
    return torch.stack(frames)


def reference_outputs(model: CDVDTSP, frames: torch.Tensor) -> torch.Tensor:
    """The definition: frame t is the `out` of model(clip) on its reflected 5-frame window."""
    n = frames.shape[0]
    outs = []
    with torch.no_grad():
        for t in range(n):
            clip = frames[window_indices(t, 5, n)][None]
            outs.append(model(clip).out[0])
    return torch.stack(outs)


def test_reflection() -> None:
    assert window_indices(0, 5, 5) == [2, 1, 0, 1, 2]
    assert extended_positions(5) == [2, 1, 0, 1, 2, 3, 4, 3, 2]  # [1..5] read as [3,2,1,2,3,4,5,4,3]
    assert extended_positions(1) == [0] * 5
    assert extended_positions(2) == [0, 1, 0, 1, 0, 1]
    for n in range(1, 9):
        for p in range(-2, n + 2):
            assert 0 <= reflect_index(p, n) < n
        for t in range(n):
            assert window_indices(t, 5, n) == [reflect_index(t + d, n) for d in range(-2, 3)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 9])
def test_every_frame_gets_the_window_output(n: int) -> None:
    model = StubNet()
    frames = video(n, 32, 48, seed=n)
    expected = reference_outputs(model, frames)
    streamed = VideoDeblurrer(model, device="cpu").deblur_tensor(frames)
    windowed = VideoDeblurrer(model, device="cpu", streaming=False).deblur_tensor(frames)
    assert streamed.shape == windowed.shape == (n, 3, 32, 48)
    torch.testing.assert_close(streamed, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(windowed, expected, rtol=0, atol=1e-6)


def test_streaming_halves_the_stage_calls() -> None:
    model = StubNet()
    VideoDeblurrer(model, device="cpu").deblur_tensor(video(10))
    assert model.calls == 12 + 10  # R at positions -1 .. 10, then one stage-2 call per frame
    model.calls = 0
    VideoDeblurrer(model, device="cpu", streaming=False).deblur_tensor(video(10))
    assert model.calls == 2 * 10  # each restores 3 + 1 centres


def test_odd_sizes_are_preserved() -> None:
    model = StubNet()
    frames = video(4, 30, 45)
    out = VideoDeblurrer(model, device="cpu").deblur_tensor(frames)
    assert out.shape == (4, 3, 30, 45)
    # the stub is pixel-wise: padding then cropping changes nothing
    padded = torch.nn.functional.pad(frames, (0, 3, 0, 2), mode="reflect")
    torch.testing.assert_close(out, reference_outputs(model, padded)[..., :30, :45], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("h", "w"), [(33, 48), (32, 45), (31, 43)], ids=["odd-x-even", "even-x-odd", "odd-x-odd"])
def test_sizes_off_the_multiple_of_4_are_padded_at_the_bottom_right_by_reflection(h: int, w: int) -> None:
    """A real (tiny) network sees across pixels, so only the exact padding (reflected, bottom and right, each side by
    its own amount) gives what the network computes on the frames padded by hand."""
    torch.manual_seed(0)
    model = CDVDTSP(n_feat=4, n_resblock=1).eval()
    frames = video(5, h, w, seed=3)
    out = VideoDeblurrer(model, device="cpu").deblur_tensor(frames)
    assert out.shape == (5, 3, h, w)
    padded = torch.nn.functional.pad(frames, (0, (-w) % 4, 0, (-h) % 4), mode="reflect")
    by_hand = VideoDeblurrer(model, device="cpu").deblur_tensor(padded)[..., :h, :w]
    torch.testing.assert_close(out, by_hand, rtol=0, atol=1e-6)


def test_reads_lazily_with_bounded_memory() -> None:
    model = StubNet()
    pulled = 0

    def frames():  # noqa: ANN202
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield (np.full((16, 16, 3), i * 5, dtype=np.uint8))

    engine = VideoDeblurrer(model, device="cpu")
    for t, _ in engine.run(frames()):
        assert pulled <= max(t + 3, 5)  # never more than a few frames ahead of the output
    assert pulled == 40


def test_real_model_streaming_equals_per_window(tiny_model: CDVDTSP) -> None:
    frames = video(8, 32, 48)
    start = time.perf_counter()
    streamed = VideoDeblurrer(tiny_model, device="cpu").deblur_tensor(frames)
    mid = time.perf_counter()
    windowed = VideoDeblurrer(tiny_model, device="cpu", streaming=False).deblur_tensor(frames)
    end = time.perf_counter()
    diff = (streamed - windowed).abs().max().item()
    logger.info("streaming vs per window: max abs diff %.2e; %.1f s vs %.1f s", diff, mid - start, end - mid)
    assert diff < 1e-5
    assert np.abs(to_uint8(streamed[3]).astype(int) - to_uint8(windowed[3]).astype(int)).max() <= 1


def test_tile_regions_cover_and_weights_sum_to_one() -> None:
    tile = TileSpec(size=48, overlap=16)
    regions = tile_regions(64, 112, tile)
    assert len(regions) == 2 * 3
    weights = tile_weights(64, 112, regions, tile.overlap)
    total = torch.zeros(64, 112)
    for w, (rows, cols) in zip(weights, regions, strict=True):
        assert w.min() > 0
        total[rows, cols] += w
    torch.testing.assert_close(total, torch.ones(64, 112))
    assert tile_regions(40, 40, tile) == [(slice(0, 40), slice(0, 40))]
    with pytest.raises(ValueError, match="multiple of 4"):
        TileSpec(size=50)
    with pytest.raises(ValueError, match="overlap"):
        TileSpec(size=48, overlap=48)


def test_tiling_is_exact_for_a_pixelwise_stage() -> None:
    model = StubNet()
    frames = video(3, 64, 112)
    whole = VideoDeblurrer(model, device="cpu").deblur_tensor(frames)
    tiled = VideoDeblurrer(model, device="cpu", tile=TileSpec(48, 16)).deblur_tensor(frames)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_tiled_deviation_is_small(tiny_model: CDVDTSP) -> None:
    frames = smooth_video(2, 48, 112)
    whole = VideoDeblurrer(tiny_model, device="cpu").deblur_tensor(frames)
    tile = TileSpec(size=48, overlap=16)
    tiled = VideoDeblurrer(tiny_model, device="cpu", tile=tile).deblur_tensor(frames)
    windowed = VideoDeblurrer(tiny_model, device="cpu", streaming=False, tile=tile).deblur_tensor(frames)
    torch.testing.assert_close(tiled, windowed, rtol=0, atol=1e-5)  # tiles run the whole cascade
    diff = (tiled - whole).abs()
    spread = whole.std().item()
    logger.info(
        "tiled (48, overlap 16) vs whole 48x112: mean abs %.2e, max abs %.2e (output std %.2e)",
        diff.mean().item(),
        diff.max().item(),
        spread,
    )
    print(f"tiled vs untiled: mean {diff.mean().item():.2e} max {diff.max().item():.2e} (std {spread:.2e})")
    assert diff.mean().item() < 0.05 * spread + 1e-3
    assert diff.max().item() < 0.5 * spread + 1e-2


def test_precision_and_device_checks() -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        VideoDeblurrer(StubNet(), device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="takes a resolved precision"):
        autocast_context(torch.device("cpu"), "auto")  # the rules are resolve_precision's, applied once
    with pytest.raises(ValueError, match="precision=fp8: expected one of"):
        VideoDeblurrer(StubNet(), device="cpu", precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            VideoDeblurrer(StubNet(), device="cuda")


@pytest.mark.slow
def test_bf16_on_cpu(tiny_model: CDVDTSP) -> None:
    frames = video(1, 32, 32)
    fp32 = VideoDeblurrer(tiny_model, device="cpu").deblur_tensor(frames)
    bf16 = VideoDeblurrer(tiny_model, device="cpu", precision="bf16").deblur_tensor(frames)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert (bf16 - fp32).abs().mean() < 0.05


def write_frames(folder: Path, n: int, h: int = 32, w: int = 48, ext: str = ".png", seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"frame_{i + 1:03d}{ext}"
        write_rgb(path, rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def write_video(path: Path, n: int, h: int = 32, w: int = 48) -> None:
    frames = []
    for i in range(n):
        frame = np.zeros((h, w, 3), dtype=np.uint8)
        frame[..., 1] = 40 * i
        frame[:, 8 + i : 16 + i, 0] = 255  # a red stripe
        frames.append(frame)
    write_test_video(path, frames, 10)


def test_sources(tmp_path: Path) -> None:
    write_frames(tmp_path / "frames", 3, ext=".jpg")
    (src,) = discover_sources(tmp_path / "frames")
    assert src.name == "frames" and src.frame_count() == 3 and src.output_name(0) == "frame_001.png"

    videos = tmp_path / "videos"
    write_frames(videos / "a", 2)
    write_video(videos / "b.mp4", 3)
    sources = discover_sources(videos)
    assert [s.name for s in sources] == ["a", "b"]
    frames = list(sources[1])
    assert len(frames) == 3 and frames[0].shape == (32, 48, 3) and frames[0].dtype == np.uint8
    # RGB order: the red stripe reads as channel 0
    assert frames[0][..., 0].mean() > 20 > frames[0][..., 2].mean()
    assert sources[1].fps() == 10 and sources[1].frame_count() == 3
    assert sources[1].output_name(2) == "00002.png"

    dataset = tmp_path / "dataset"
    write_frames(dataset / "test" / "blur" / "v1", 2)
    write_frames(dataset / "test" / "gt" / "v1", 2)
    write_frames(dataset / "test" / "blur" / "v2", 2)
    write_frames(dataset / "test" / "gt" / "v2", 2)
    assert [s.name for s in discover_sources(dataset, split="test")] == ["v1", "v2"]

    with pytest.raises(DataError, match="input not found"):
        discover_sources(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="nothing to deblur"):
        discover_sources(tmp_path / "empty")


def test_video_file_in_and_out(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.mp4", 4)
    model = StubNet()
    engine = VideoDeblurrer(model, device="cpu")
    sources = discover_sources(tmp_path / "clip.mp4")
    reports = deblur_videos(engine, sources, tmp_path / "out", progress=False)
    written = sorted(p.name for p in (tmp_path / "out" / "clip").glob("*.png"))
    assert written == [f"{i:05d}.png" for i in range(4)] and reports[0].written == 4
    assert read_rgb(tmp_path / "out" / "clip" / "00003.png").shape == (32, 48, 3)

    deblur_videos(engine, sources, tmp_path / "sharp.mp4", progress=False)
    assert len(read_video(tmp_path / "sharp.mp4")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "out", "sharp.mp4"]  # no temp files or parts
    calls = model.calls
    deblur_videos(engine, sources, tmp_path / "sharp.mp4", progress=False)  # exists: left as it is
    assert model.calls == calls


def test_a_video_file_output_of_several_videos_is_a_setting_refused_before_any_frame(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_frames(tmp_path / "in" / name, 3)
    model = StubNet()
    sources = discover_sources(tmp_path / "in")
    with pytest.raises(ConfigError, match=r"output=\S*sharp\.mp4 is a video file but the input holds 2 videos"):
        deblur_videos(VideoDeblurrer(model, device="cpu"), sources, tmp_path / "sharp.mp4", progress=False)
    assert model.calls == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_resume_skips_written_frames(tmp_path: Path) -> None:
    write_frames(tmp_path / "in" / "vid", 6)
    model = StubNet()
    engine = VideoDeblurrer(model, device="cpu")
    sources = discover_sources(tmp_path / "in")
    deblur_videos(engine, sources, tmp_path / "out", progress=False)
    out = tmp_path / "out" / "vid"
    first = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert len(first) == 6 and model.calls == 8 + 6

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (out / "frame_004.png").unlink()
    model.calls = 0
    time.sleep(0.01)
    (report,) = deblur_videos(engine, sources, tmp_path / "out", progress=False)
    assert report.written == 1 and report.skipped == 5
    assert model.calls == 3 + 1  # R of frames 2, 3, 4 and one stage-2 call
    assert (out / "frame_004.png").read_bytes() == first["frame_004.png"]
    for name, mtime in mtimes.items():
        if name != "frame_004.png":
            assert (out / name).stat().st_mtime_ns == mtime

    model.calls = 0
    (report,) = deblur_videos(engine, sources, tmp_path / "out", progress=False)
    assert model.calls == 0 and report.written == 0 and report.skipped == 6


def test_a_resumed_run_removes_the_partial_frames_of_killed_writers(tmp_path: Path) -> None:
    write_frames(tmp_path / "in" / "vid", 6)
    engine = VideoDeblurrer(StubNet(), device="cpu")
    sources = discover_sources(tmp_path / "in")
    deblur_videos(engine, sources, tmp_path / "out", progress=False)
    out = tmp_path / "out" / "vid"
    (out / "frame_004.png").unlink()  # the frame a killed run was writing
    stale = temp_path(out / "frame_004.png", pid=dead_pid())
    live = temp_path(out / "frame_005.png")  # a writer that still runs (this process) keeps its file
    for path in (stale, live):
        path.write_bytes(b"\x89PNG partial")
    (report,) = deblur_videos(engine, sources, tmp_path / "out", progress=False)
    assert report.written == 1 and (out / "frame_004.png").is_file()
    assert not stale.exists() and live.exists()


def test_mismatched_frame_sizes_name_the_video(tmp_path: Path) -> None:
    folder = tmp_path / "in" / "vid"
    write_frames(folder, 3)
    write_rgb(folder / "frame_004.png", np.zeros((16, 16, 3), dtype=np.uint8))
    source = VideoSource("vid", folder, sorted(folder.iterdir()))
    with pytest.raises(DataError, match="vid: frame 3 is 16x16"):
        deblur_videos(VideoDeblurrer(StubNet(), device="cpu"), [source], tmp_path / "out", progress=False)


@pytest.mark.parametrize("output", ["blocked/out.mp4", "out.avi"])
def test_a_video_output_that_cannot_be_written_is_refused_before_the_input_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    from cdvd.inference import runner

    write_frames(tmp_path / "frames", 3)
    (tmp_path / "blocked").write_text("a file where the output's folder would be")
    sources = discover_sources(tmp_path / "frames")

    def read_input(source: VideoSource) -> None:
        raise AssertionError("the input was read (hashed) before its output was checked")

    monkeypatch.setattr(runner, "source_fingerprint", read_input)
    with pytest.raises((ConfigError, DataError), match="out"):
        runner.plan_videos(sources, tmp_path / output)
