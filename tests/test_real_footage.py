"""cdvd-deblur end to end on real blurry footage (crops shipped in tests/fixtures/real, see its README).

Real clips have no ground truth, so these tests check what must hold whatever the weights: a network whose
residual head is still zero (``out = centre frame``) gives back every input frame unchanged, in order and at the
input's odd size, through the command line, for a frame folder and for a video file; and streaming equals
per-window on a clip shorter than one window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import console_script, run_command

from cdvd.checkpoints import ARCH_KEY, architecture
from cdvd.data.io import list_frames, read_rgb
from cdvd.evaluation.metrics import to_uint8
from cdvd.inference import VideoDeblurrer
from cdvd.models import CDVDTSP
from cdvd.video import probe_video, read_video, write_test_video

REAL = Path(__file__).parent / "fixtures" / "real"
PHONE = REAL / "smartphone_shake" / "VID_20150409_162802"  # 8 frames of hand-held camera shake, 126x90
ADOBE = REAL / "adobe240_blur"  # 3 frames averaged from 240 fps footage, 126x90


def _save_ours(model: CDVDTSP, path: Path) -> Path:
    """The network as our training writes it: Lightning's ``state_dict`` under ``net.`` and the architecture."""
    state = {f"net.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, ARCH_KEY: architecture(model)}, path)
    return path


@pytest.fixture(scope="module")
def identity_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return _save_ours(CDVDTSP(n_feat=4, n_resblock=1, residual=True), tmp_path_factory.mktemp("ckpt") / "id.ckpt")


def test_fixtures_are_real_clips_of_an_odd_size() -> None:
    frames = [read_rgb(p) for p in list_frames(PHONE)]
    assert len(frames) == 8 and len(list_frames(ADOBE)) == 3
    assert all(f.shape == (90, 126, 3) for f in frames)  # neither side a multiple of 4
    # consecutive frames differ, so an output out of order or from the wrong window would show
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() > 1.0 for a, b in zip(frames, frames[1:], strict=False))


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [True, False])
def test_identity_network_gives_back_every_real_frame(
    identity_checkpoint: Path, tmp_path: Path, streaming: bool
) -> None:
    result = run_command(
        [
            console_script("cdvd-deblur"),
            f"input={PHONE}",
            "output=out",
            f"checkpoint={identity_checkpoint}",
            "device=cpu",
            f"streaming={str(streaming).lower()}",
            "progress=false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted((tmp_path / "out").rglob("*.png"))
    assert [p.name for p in written] == [p.name for p in list_frames(PHONE)]
    for path in written:
        assert np.array_equal(read_rgb(path), read_rgb(PHONE / path.name)), path.name


@pytest.mark.slow
def test_real_clip_as_a_video_file(identity_checkpoint: Path, tmp_path: Path) -> None:
    frames = [read_rgb(p) for p in list_frames(PHONE)]
    write_test_video(tmp_path / "shaky.mp4", frames, 15)  # H.264 with an AAC track, as a phone writes
    decoded = read_video(tmp_path / "shaky.mp4")
    assert len(decoded) == 8

    result = run_command(
        [
            console_script("cdvd-deblur"),
            "input=shaky.mp4",
            "output=sharp.mp4",
            f"checkpoint={identity_checkpoint}",
            "device=cpu",
            "progress=false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = read_video(tmp_path / "sharp.mp4")
    assert len(out) == 8 and all(f.shape == (90, 126, 3) for f in out)
    info = probe_video(tmp_path / "sharp.mp4")
    assert info.codec == "h264" and info.frame_rate == 15 and info.audio is not None and info.audio.codec == "aac"
    # the identity network's frames, encoded once more: close to what went in, frame for frame
    errors = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(out, decoded, strict=True)]
    assert max(errors) < 4.0, errors
    shifted = np.abs(out[4].astype(int) - decoded[3].astype(int)).mean()
    assert shifted > max(errors), "frames out of order"


def test_streaming_equals_per_window_on_a_real_clip_shorter_than_a_window() -> None:
    torch.manual_seed(1)
    model = CDVDTSP(n_feat=4, n_resblock=1)
    frames = [read_rgb(p) for p in list_frames(ADOBE)]
    runs = {}
    for streaming in (True, False):
        engine = VideoDeblurrer(model, device="cpu", streaming=streaming)
        runs[streaming] = [to_uint8(out) for _, out in engine.run(frames)]
    assert len(runs[True]) == len(runs[False]) == 3
    for a, b, frame in zip(runs[True], runs[False], frames, strict=True):
        assert a.shape == frame.shape
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
