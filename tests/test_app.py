"""cdvd-app: the rules of an upload (in-process, :mod:`cdvd.app.jobs`), its command line, and the page itself in a
real browser (Debian's headless Chromium driven by Playwright): upload a clip, run, download, compare with
cdvd-deblur's output for the same settings.

Clips are made in the test (6 frames of 32x48, H.264 with an AAC track); the checkpoint is a tiny random CDVD-TSP.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import compose_config, console_script, one_line_error, run_command
from helpers.data import tiny_checkpoint

import cdvd
from cdvd.app.jobs import AppSettings, FrameClock, app_settings, deblur_upload, frame_pair, make_workdir, progress_line
from cdvd.data.io import write_rgb
from cdvd.errors import DataError
from cdvd.video import read_video, write_test_video

N_FRAMES, H, W, FPS = 6, 32, 48, 25
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


def frames(size: tuple[int, int] = (H, W)) -> list[np.ndarray]:
    """Smooth moving waves (each frame unlike the next), uint8 RGB."""
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    return [
        np.stack(
            [128 + 90 * np.sin((xx + 3 * t) / 6), 128 + 90 * np.cos((yy - 2 * t) / 5), 100 + 0 * xx], axis=-1
        ).astype(np.uint8)
        for t in range(N_FRAMES)
    ]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("app")
    tiny_checkpoint(folder / "tiny.pt")
    write_test_video(folder / "clip.mp4", frames(), FPS)  # H.264 + AAC, as phones write them
    return folder


def settings_for(work: Path, workdir: Path) -> AppSettings:
    """cdvd-app's settings as its command line composes them (configs/app.yaml), on the CPU."""
    cfg = compose_config("app", [f"checkpoint={work / 'tiny.pt'}", f"workdir={workdir}", "device=cpu"])
    settings = app_settings(cfg)
    make_workdir(settings)
    return settings


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


# -- the rules of an upload --------------------------------------------------------------------------------------


def _make_upload(folder: Path, work: Path, spec: list[tuple[str, object]]) -> list[Path]:
    """Files named as uploaded: ``video`` a copy of the clip, a (H, W) size an image of it, bytes as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in spec:
        path = folder / name
        if content == "video":
            shutil.copyfile(work / "clip.mp4", path)
        elif isinstance(content, tuple):
            write_rgb(path, frames(content)[0])
        else:
            path.write_bytes(content)  # type: ignore[arg-type]
        paths.append(path)
    return paths


REFUSED = {
    "text": ([("notes.txt", b"just some notes")], "notes.txt: neither a video nor an image"),
    "no suffix": ([("README", b"# hello")], "README: neither a video nor an image"),
    "a video in name only": ([("clip.mp4", b"not really a video")], "clip.mp4: not a video that can be read"),
    "an image in name only": ([("frame.png", b"not really a PNG")], "frame.png: not an image that can be read"),
    "two videos": ([("a.mp4", "video"), ("b.mp4", "video")], "2 videos uploaded: one video at a time"),
    "a video and frames": ([("a.mp4", "video"), ("f.png", (H, W))], "videos and images uploaded together"),
    "frames of two sizes": ([("0.png", (H, W)), ("1.png", (24, 32))], "1.png is 32x24 but 0.png is 48x32"),
    "nothing": ([], "nothing uploaded"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_upload_that_is_not_a_video_or_its_frames_is_refused_in_one_line_and_writes_nothing(
    case: str, work: Path, tmp_path: Path
) -> None:
    spec, expected = REFUSED[case]
    settings = settings_for(work, tmp_path / "workdir")
    paths = _make_upload(tmp_path / "upload", work, spec)
    with pytest.raises(DataError) as refused:
        deblur_upload(paths, settings, {"device": "cpu"})
    message = str(refused.value)
    assert expected in message and "\n" not in message
    assert "upload a video file" in message or case in ("two videos", "frames of two sizes")
    assert not list((tmp_path / "workdir" / "jobs").iterdir())  # no job folder left behind


@pytest.mark.parametrize("kind", ["video", "frames"])
def test_a_run_gives_cdvd_deblurs_outputs_and_writes_only_in_its_workdir(kind: str, work: Path, tmp_path: Path) -> None:
    upload = tmp_path / "upload"
    if kind == "video":
        paths = _make_upload(upload, work, [("clip.mp4", "video")])
    else:
        paths = [upload / f"{k:03d}.png" for k in range(N_FRAMES)]
        for path, image in zip(paths, frames(), strict=True):
            write_rgb(path, image)
    reference = tmp_path / "reference" / "result.mp4"
    cdvd.deblur(paths[0] if kind == "video" else upload, reference, work / "tiny.pt", device="cpu", compare=True,
                progress=False)  # fmt: skip
    uploaded = {p: p.read_bytes() for p in paths}
    settings = settings_for(work, tmp_path / "workdir")
    before = files_under(tmp_path)
    calls: list[tuple[str, int, int | None]] = []

    result = deblur_upload(paths, settings, {"device": "cpu"}, on_frame=lambda *call: calls.append(call))

    assert result.frames == N_FRAMES and len(read_video(result.result)) == N_FRAMES
    assert result.result.read_bytes() == reference.read_bytes()  # the same pipeline: the same file, to the byte
    assert result.compare.read_bytes() == reference.with_name("result_compare.mp4").read_bytes()
    name = "clip" if kind == "video" else "frames"
    assert calls == [(name, done, N_FRAMES) for done in range(1, N_FRAMES + 1)]
    new = files_under(tmp_path) - before
    assert new and all(settings.workdir in p.parents for p in new), sorted(new)
    assert {p: p.read_bytes() for p in paths} == uploaded  # the upload itself untouched
    shown_before, shown_after = frame_pair(result, N_FRAMES - 1)  # the slider's last frame
    assert np.array_equal(shown_before, frames()[-1] if kind == "frames" else read_video(paths[0])[-1])
    assert np.array_equal(shown_after, read_video(result.result)[-1])
    with pytest.raises(DataError, match="frames 0..5"):
        frame_pair(result, N_FRAMES)


@pytest.mark.slow
def test_a_tile_size_chosen_on_the_page_runs_as_cdvd_deblurs_short_form(work: Path, tmp_path: Path) -> None:
    # app.yaml's tile.overlap is 64: with a page's tile size of 32 the overlap follows the size, as tile=32 does
    from cdvd.app.page import deblur_choices

    settings = settings_for(work, tmp_path / "workdir")
    result = deblur_upload(
        [work / "clip.mp4"], settings, deblur_choices("cpu", "auto", "torch", 32, settings.deblur["tile"])
    )
    reference = cdvd.deblur(work / "clip.mp4", tmp_path / "reference.mp4", work / "tiny.pt", device="cpu", tile=32,
                            compare=True, progress=False)  # fmt: skip
    assert result.result.read_bytes() == reference.output.read_bytes()


def test_the_progress_line_says_the_time_a_frame_and_what_is_left() -> None:
    assert progress_line("clip", 2, 6, 1.5) == "clip: frame 2 of 6, 1.50 s a frame, about 6 s left"
    assert progress_line("clip", 2, None, 1.5) == "clip: frame 2, 1.50 s a frame"
    clock = FrameClock()
    clock.started -= 10.0  # the checkpoint took 10 s to load before the first frame
    assert clock.per_frame(1) >= 10.0
    clock.first -= 4.0  # then 2 more frames in 4 s
    assert 2.0 <= clock.per_frame(3) < 2.5


# -- the command line --------------------------------------------------------------------------------------------


def test_cdvd_app_without_a_checkpoint_or_gradio_or_with_a_bad_setting_is_one_line_and_writes_nothing(
    work: Path, tmp_path: Path
) -> None:
    result = run_command([console_script("cdvd-app"), f"workdir={tmp_path / 'w'}"], tmp_path, timeout=120)
    one_line_error(result, "no checkpoint given", "checkpoint=", only_line=True)
    result = run_command([console_script("cdvd-app"), "checkpoint=missing.pt"], tmp_path, timeout=120)
    one_line_error(result, "checkpoint not found", "missing.pt", "checkpoint=PATH", only_line=True)
    # a setting every run would refuse: at start, before the page is served or the working folder made
    args = [console_script("cdvd-app"), f"checkpoint={work / 'tiny.pt'}", f"workdir={tmp_path / 'w'}", "backend=gpu"]
    one_line_error(run_command(args, tmp_path, timeout=120), "backend=gpu: expected one of torch, openvino")
    # where Gradio is not installed (an import of it fails): how to install it
    code = (
        "import sys; sys.modules['gradio'] = None; from cdvd.cli.app import main;"
        f"sys.argv = ['cdvd-app', 'checkpoint={work / 'tiny.pt'}', 'workdir={tmp_path / 'w'}']; main()"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    one_line_error(result, "cdvd-app needs Gradio", "pip install 'cdvd[app]'", only_line=True)
    assert not list(tmp_path.iterdir())


def test_the_tools_and_the_rules_do_not_import_gradio() -> None:
    code = "import sys, cdvd.app.jobs, cdvd.cli.app, cdvd.cli.deblur; print('gradio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- the page, in a browser --------------------------------------------------------------------------------------


def _missing_for_the_browser_test() -> str | None:
    if not CHROMIUM.exists():
        return f"no {CHROMIUM} (Debian's chromium package: apt-get install chromium)"
    for module, extra in (("playwright", "test"), ("gradio", "app")):
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed (pip install 'cdvd[{extra}]')"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def app(work: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``cdvd-app`` serving on a free port of 127.0.0.1 (its home, temporary folder and working directory empty
    folders of the test's): its URL and the test's folder."""
    for name in ("home", "tmp", "cwd"):
        (tmp_path / name).mkdir()
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"), "COLUMNS": "200",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    args = [console_script("cdvd-app"), f"checkpoint={work / 'tiny.pt'}", f"workdir={tmp_path / 'workdir'}",
            f"port={port}", "device=cpu"]  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    with open(tmp_path / "app.log", "w") as log:
        process = subprocess.Popen(args, cwd=tmp_path / "cwd", env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "app.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "app.log").read_text()
                time.sleep(0.5)
        yield url, tmp_path
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(_missing_for_the_browser_test() is not None, reason=str(_missing_for_the_browser_test()))
def test_in_a_browser_upload_run_and_download_give_cdvd_deblurs_video(app: tuple[str, Path], work: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, folder = app
    upload = folder / "upload"
    (clip,) = _make_upload(upload, work, [("clip.mp4", "video")])
    (notes,) = _make_upload(upload, work, [("notes.txt", b"just some notes")])
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url)
        # a file that is not a video: one line on the page, no traceback
        page.set_input_files("#upload input[type=file]", str(notes))
        page.locator("#upload a[download='notes.txt']").wait_for()  # uploaded: its link to the server's copy
        page.click("#run")
        page.get_by_text("notes.txt: neither a video nor an image").wait_for(timeout=60_000)
        assert "Traceback" not in page.content()
        page.locator("#upload button[aria-label='Clear']").click()
        # the clip: run, wait for the result, download it
        page.set_input_files("#upload input[type=file]", str(clip))
        page.locator("#upload a[download='clip.mp4']").wait_for()
        page.click("#run")
        page.locator("#result a[download]").wait_for(timeout=120_000)
        page.locator("#status").get_by_text(f"{N_FRAMES} frames deblurred").wait_for()
        # the before/after slider on another frame: a new pair of pictures
        shown = [image.get_attribute("src") for image in page.locator("#before-after img").all()]
        assert len(shown) == 2
        page.locator("#frame input[type=range]").fill(str(N_FRAMES - 1))
        page.wait_for_function(
            "old => [...document.querySelectorAll('#before-after img')].map(i => i.src).join() !== old",
            arg=",".join(str(src) for src in shown),
        )
        page.screenshot(path=str(folder / "page.png"), full_page=True)
        with page.expect_download() as download:
            page.locator("#result a[download]").click()
        downloaded = folder / "downloaded.mp4"
        download.value.save_as(downloaded)
        browser.close()

    reference = work / "reference" / "result.mp4"
    done = run_command([console_script("cdvd-deblur"), "input=clip.mp4", f"output={reference}",
                        f"checkpoint={work / 'tiny.pt'}", "device=cpu", "compare=true", "progress=false"],
                       work, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    elsewhere = [seen for seen in requests if not seen.startswith((url, "data:", "blob:"))]
    assert not elsewhere, elsewhere  # the page asks its own server only: it works offline
    got, expected = read_video(downloaded), read_video(reference)
    assert len(got) == N_FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert downloaded.read_bytes() == reference.read_bytes()  # the same pipeline, the same settings: the same file
    # the app wrote only in its working folder: not in its home, temporary folder or working directory
    outside = {name: sorted(os.listdir(folder / name)) for name in ("home", "tmp", "cwd")}
    assert not any(outside.values()), outside
    assert sorted(p.name for p in upload.iterdir()) == ["clip.mp4", "notes.txt"]
