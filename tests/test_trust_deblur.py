"""Outputs reused only when made from the same content; a run leaves exactly the outputs its manifest lists; a plan
in which two inputs map to one file, a record that is not ours and an evaluation that scores nothing are refused in
one line before any work. Through the Python API (cdvd.inference.deblur_videos) with a cheap stage, and through
cdvd-deblur / cdvd-eval with a tiny checkpoint on a few 32x48 frames."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import console_script, one_line_error, run_command
from helpers.data import tiny_checkpoint

from cdvd.data.io import read_rgb, write_rgb
from cdvd.data.sources import discover_sources
from cdvd.errors import DataError
from cdvd.evaluation.scoring import evaluate_pairs
from cdvd.inference import VideoDeblurrer, deblur_videos
from cdvd.models import CDVDTSP
from cdvd.video import file_fingerprint, write_test_video

MANIFEST = ".cdvd-manifest.json"


class CheapNet(CDVDTSP):
    """CDVD-TSP's cascade around a cheap pixel-wise stage: the runner's rules, without the network's cost."""

    def __init__(self) -> None:
        super().__init__(n_feat=4, n_resblock=1)

    def restore_centres(self, frames: torch.Tensor) -> torch.Tensor:
        return 0.5 * frames[1:-1] + 0.25 * (frames[:-2] + frames[2:])


@pytest.fixture(scope="module")
def engine() -> VideoDeblurrer:
    return VideoDeblurrer(CheapNet(), device="cpu")


def write_frames(folder: Path, n: int, ext: str = ".bmp", seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = [folder / f"{i:05d}{ext}" for i in range(n)]
    for path in paths:
        write_rgb(path, rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8))
    return paths


def invert(path: Path) -> None:
    """The frame's pixels inverted: same size, same name (a BMP: the same number of bytes too)."""
    write_rgb(path, 255 - read_rgb(path))


def deblur(engine: VideoDeblurrer, input_path: Path, output: Path, **kwargs: object) -> list:
    return deblur_videos(engine, discover_sources(input_path), output, progress=False, **kwargs)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- content, not names and sizes


def test_a_frame_edited_in_place_or_two_frames_swapped_is_not_reused(tmp_path: Path, engine: VideoDeblurrer) -> None:
    frames = write_frames(tmp_path / "in", 4)
    deblur(engine, tmp_path / "in", tmp_path / "out")
    made = {p.name: p.read_bytes() for p in (tmp_path / "out" / "in").iterdir()}
    size = frames[1].stat().st_size
    invert(frames[1])
    assert frames[1].stat().st_size == size  # names and byte counts alike: only the content tells
    with pytest.raises(DataError, match=r"input: 00001\.bmp changed\b.*overwrite=true"):
        deblur(engine, tmp_path / "in", tmp_path / "out")
    invert(frames[1])  # back as it was: reused as it is
    (report,) = deblur(engine, tmp_path / "in", tmp_path / "out")
    assert report.written == 0 and report.skipped == 4
    first, third = frames[0].read_bytes(), frames[2].read_bytes()
    frames[0].write_bytes(third), frames[2].write_bytes(first)
    with pytest.raises(DataError, match=r"input: 00000\.bmp, 00002\.bmp changed"):
        deblur(engine, tmp_path / "in", tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "in").iterdir()} == made


def test_a_video_file_edited_in_the_middle_changes_its_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    data = bytearray(np.random.default_rng(0).integers(0, 256, size=5 << 20, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    before = file_fingerprint(path)
    data[len(data) // 2] ^= 1  # one bit, far from both ends
    path.write_bytes(bytes(data))
    assert file_fingerprint(path) != before


def test_a_record_of_the_earlier_form_is_refused_and_replaced_with_overwrite(
    tmp_path: Path, engine: VideoDeblurrer
) -> None:
    frames = write_frames(tmp_path / "in", 4)
    deblur(engine, tmp_path / "in", tmp_path / "out")
    out = tmp_path / "out" / "in"
    record = json.loads((out / MANIFEST).read_text())
    names = [p.name for p in frames]
    record["fingerprint"]["input"] = {"frames": names, "bytes": sum(p.stat().st_size for p in frames)}
    # the form written before content digests: names and a byte count, no list of outputs
    (out / MANIFEST).write_text(json.dumps({"version": 1, "fingerprint": record["fingerprint"]}))
    with pytest.raises(DataError, match="earlier cdvd.*overwrite=true"):
        deblur(engine, tmp_path / "in", tmp_path / "out")
    frames[3].unlink()
    (report,) = deblur(engine, tmp_path / "in", tmp_path / "out", overwrite=True)
    assert report.written == 3
    # the frame of the removed input, named in the old record, went with the rest
    assert files(out) == [MANIFEST, "00000.png", "00001.png", "00002.png"]


# -- after a run, the output holds what its manifest lists


def test_overwrite_leaves_exactly_the_frames_of_the_new_plan(tmp_path: Path, engine: VideoDeblurrer) -> None:
    frames = write_frames(tmp_path / "in", 5)
    deblur(engine, tmp_path / "in", tmp_path / "out", compare=True)
    out, side = tmp_path / "out" / "in", tmp_path / "out" / "in_compare"
    (out / "notes.txt").write_text("mine")  # a user's files, never listed by the project: kept
    write_rgb(out / "zz_mine.png", np.zeros((8, 8, 3), np.uint8))
    frames[4].unlink()
    invert(frames[0])
    (report,) = deblur(engine, tmp_path / "in", tmp_path / "out", compare=True, overwrite=True)
    assert report.written == 4
    planned = ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert files(out) == [MANIFEST, *planned, "notes.txt", "zz_mine.png"]
    assert files(side) == [MANIFEST, *planned]
    for folder in (out, side):
        assert json.loads((folder / MANIFEST).read_text())["outputs"] == planned
    # the result is the one a fresh run gives
    deblur(engine, tmp_path / "in", tmp_path / "fresh")
    for name in planned:
        assert (out / name).read_bytes() == (tmp_path / "fresh" / "in" / name).read_bytes()


@pytest.mark.parametrize(
    "text",
    ['{"version": 1, "fingerprint": [1, 2]}', '{"version": 1, "fingerprint": "abc"}', '{"fingerprint": 42}'],
)
def test_a_record_that_is_not_ours_is_refused_in_one_line_or_replaced(
    tmp_path: Path, engine: VideoDeblurrer, text: str
) -> None:
    write_frames(tmp_path / "in", 3)
    deblur(engine, tmp_path / "in", tmp_path / "out")
    out = tmp_path / "out" / "in"
    (out / MANIFEST).write_text(text)
    with pytest.raises(DataError, match="no record of what made them.*overwrite=true"):
        deblur(engine, tmp_path / "in", tmp_path / "out")
    (report,) = deblur(engine, tmp_path / "in", tmp_path / "out", overwrite=True)
    assert report.written == 3 and "input" in json.loads((out / MANIFEST).read_text())["fingerprint"]


def test_a_record_removes_the_frames_it_lists_and_nothing_else(tmp_path: Path, engine: VideoDeblurrer) -> None:
    frames = write_frames(tmp_path / "in", 4)
    deblur(engine, tmp_path / "in", tmp_path / "out")
    out = tmp_path / "out" / "in"
    frames[3].unlink()
    (out / "notes.txt").write_text("mine")
    (out / "sub.png").mkdir()
    record = json.loads((out / MANIFEST).read_text())
    # a record handed over with the folder lists more than frames: only plain PNG files beside it may go
    written = [f"{i:05d}.png" for i in range(4)]
    record["outputs"] = [*written, f"../../in/{frames[0].name}", "notes.txt", "sub.png", "/etc/hostname"]
    (out / MANIFEST).write_text(json.dumps(record))
    deblur(engine, tmp_path / "in", tmp_path / "out", overwrite=True)
    assert files(out) == [MANIFEST, "00000.png", "00001.png", "00002.png", "notes.txt", "sub.png"]
    assert frames[0].is_file() and Path("/etc/hostname").is_file()


@pytest.mark.parametrize("where", ["in", "in_compare"])
def test_a_folder_where_the_record_belongs_is_refused_before_anything_is_removed(
    tmp_path: Path, engine: VideoDeblurrer, where: str
) -> None:
    write_frames(tmp_path / "in", 3)
    deblur(engine, tmp_path / "in", tmp_path / "out", compare=True)
    folder = tmp_path / "out" / where
    (folder / MANIFEST).unlink()
    (folder / MANIFEST).mkdir()
    (folder / MANIFEST / "keep.txt").write_text("x")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*"))
    with pytest.raises(DataError, match=rf"out/{where}/\.cdvd-manifest\.json is not a file"):
        deblur(engine, tmp_path / "in", tmp_path / "out", compare=True, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*")) == before


# -- two inputs, one output


def test_frames_sharing_a_stem_are_refused_naming_both(tmp_path: Path, engine: VideoDeblurrer) -> None:
    write_frames(tmp_path / "in", 2, ext=".png")
    write_frames(tmp_path / "in", 1, ext=".jpg", seed=1)
    with pytest.raises(DataError, match=r"in/00000\.jpg and .*in/00000\.png would both be written to .*00000\.png"):
        deblur(engine, tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_compare_frames_and_a_video_named_like_them_are_refused_naming_both(
    tmp_path: Path, engine: VideoDeblurrer
) -> None:
    write_frames(tmp_path / "vids" / "clip", 2)
    write_frames(tmp_path / "vids" / "clip_compare", 2, seed=1)
    with pytest.raises(DataError, match=r"vids/clip/00000\.bmp \(its compare=true.*vids/clip_compare/00000\.bmp"):
        deblur(engine, tmp_path / "vids", tmp_path / "out", compare=True)
    assert not (tmp_path / "out").exists()
    reports = deblur(engine, tmp_path / "vids", tmp_path / "out")  # without compare=true: no clash
    assert [r.written for r in reports] == [2, 2]


def test_a_compare_video_that_is_the_input_is_refused_with_overwrite(tmp_path: Path, engine: VideoDeblurrer) -> None:
    rng = np.random.default_rng(0)
    clip = write_test_video(tmp_path / "b_compare.mp4", [rng.integers(0, 256, (32, 48, 3), np.uint8)] * 2)
    before = clip.read_bytes()
    with pytest.raises(DataError, match=r"compare=true side-by-side video\) would be written over the input"):
        deblur(engine, clip, tmp_path / "b.mp4", compare=True, overwrite=True)
    assert clip.read_bytes() == before


# -- an evaluation that scores nothing


def test_an_evaluation_that_would_score_no_frame_is_an_error(tmp_path: Path) -> None:
    gt = write_frames(tmp_path / "gt" / "clip", 4, ext=".png")
    results = write_frames(tmp_path / "res" / "clip", 4, ext=".png")
    expected = r"no frame to score with frames=paper.*clip: 4 frames in .*gt/clip.*frames=all"
    with pytest.raises(DataError, match=expected):
        evaluate_pairs({"clip": (results, gt)}, frames="paper")
    assert evaluate_pairs({"clip": (results, gt)}, frames="all").total().frames == 4


# -- through the command lines


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def command(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_command([console_script(name), "device=cpu", "progress=false", "precision=fp32", *args], cwd, 300)


@pytest.mark.slow
def test_cdvd_deblur_reuses_only_the_same_content_and_overwrite_leaves_no_stale_frame(
    tmp_path: Path, checkpoint: Path
) -> None:
    frames = write_frames(tmp_path / "in", 2)
    args = ["input=in", "output=out", f"checkpoint={checkpoint}"]
    assert command("cdvd-deblur", args, tmp_path).returncode == 0
    invert(frames[0])  # same name, same size
    one_line_error(command("cdvd-deblur", args, tmp_path), "out/in", "00000.bmp changed", "overwrite=true")
    frames[1].unlink()
    again = command("cdvd-deblur", [*args, "overwrite=true"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert files(tmp_path / "out" / "in") == [MANIFEST, "00000.png"]  # the removed frame's output went too


def test_cdvd_deblur_refuses_before_any_work(tmp_path: Path, checkpoint: Path) -> None:
    ck = f"checkpoint={checkpoint}"
    write_frames(tmp_path / "stems", 1, ext=".png")
    write_frames(tmp_path / "stems", 1, ext=".jpg", seed=1)
    one_line_error(command("cdvd-deblur", ["input=stems", "output=o1", ck], tmp_path), "00000.jpg and", "00000.png")
    assert not (tmp_path / "o1").exists()
    # a folder where the record belongs, with overwrite=true: the frames there stay
    write_frames(tmp_path / "in", 2)
    write_frames(tmp_path / "o2" / "in", 2, ext=".png", seed=2)
    (tmp_path / "o2" / "in" / MANIFEST).mkdir()
    one_line_error(command("cdvd-deblur", ["input=in", "output=o2", ck, "overwrite=true"], tmp_path), "not a file")
    assert files(tmp_path / "o2" / "in") == [MANIFEST, "00000.png", "00001.png"]


def test_cdvd_eval_scoring_no_frame_is_one_line(tmp_path: Path) -> None:
    write_frames(tmp_path / "res" / "clip", 3, ext=".png")
    write_frames(tmp_path / "gt" / "clip", 3, ext=".png")
    result = command("cdvd-eval", ["results=res", "gt=gt", "output=m.json"], tmp_path)
    one_line_error(result, "no frame to score", "gt/clip", "frames=all")
    assert files(tmp_path) == ["gt", "res"]
