"""Outputs never touch what is not ours, and the paths a user gets wrong end in one line before any work:
an output at, in or over any input (cdvd-deblur, cdvd-eval), a cdvd-eval report over a file it did not write, a
folder or an unwritable place, a cdvd-export output that is a file or unwritable, an input that is a FIFO or a
device, and a file name that Hydra's override grammar needs quoted."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import compose_config, console_script, one_line_error, run_command
from helpers.data import tiny_checkpoint
from helpers.processes import run_as_nobody

from cdvd.data.io import write_rgb
from cdvd.errors import ConfigError, UserError
from cdvd.video.testclip import write_test_video

SIZE = (32, 48)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "a.pt")


def frames(n: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(n)]


def write_frames(folder: Path, n: int = 5, seed: int = 0) -> Path:
    for i, image in enumerate(frames(n, seed)):
        write_rgb(folder / f"{i:05d}.png", image)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """tmp_path with: frames/ (a folder of frames), in2/ (a folder of two videos), ds/ (a dataset root, folder
    layout, split test), gt/frames/ (the GT of frames/), link -> frames."""
    write_frames(tmp_path / "frames")
    write_frames(tmp_path / "gt" / "frames")
    (tmp_path / "in2").mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        write_test_video(tmp_path / "in2" / f"{name}.mp4", frames(5, seed), audio=False)
    write_frames(tmp_path / "ds" / "test" / "blur" / "v1", seed=3)
    write_frames(tmp_path / "ds" / "test" / "gt" / "v1", seed=4)
    (tmp_path / "link").symlink_to(tmp_path / "frames")
    return tmp_path


# ---------------------------------------------------------------------------------------------------------------
# an output at, in or over any input, whatever the input's kind


@pytest.mark.parametrize(
    ("input_", "output", "relation"),
    [
        ("in2", "in2", "is the same place as input="),  # a folder of videos, as its own output
        ("in2", "in2/res", "is inside input="),
        ("ds", "ds", "is the same place as input="),  # a dataset root as both
        ("ds", "ds/out", "is inside input="),
        ("ds/test/blur/v1", "ds/test", "holds input="),  # over the input
        ("in2/a.mp4", "in2", "holds input="),  # a video file's own folder
        ("frames", "link/res", "is inside input="),  # through a symlink: real paths are compared
    ],
)
def test_deblur_refuses_an_output_at_in_or_over_the_input(
    inputs: Path, checkpoint: Path, input_: str, output: str, relation: str
) -> None:
    from cdvd.cli.deblur import run_deblur

    before = snapshot(inputs)
    cfg = compose_config(
        "deblur",
        [f"input={inputs / input_}", f"output={inputs / output}", f"checkpoint={checkpoint}", "progress=false"],
    )
    with pytest.raises(ConfigError, match="into the input") as caught:
        run_deblur(cfg)
    assert relation in str(caught.value) and f"output={inputs / output}" in str(caught.value)
    assert snapshot(inputs) == before


def test_deblur_of_a_folder_of_videos_into_itself_is_one_line_through_the_command_line(
    inputs: Path, checkpoint: Path
) -> None:
    before = snapshot(inputs)
    result = run_command(
        [console_script("cdvd-deblur"), "input=in2", "output=in2", f"checkpoint={checkpoint}", "progress=false"],
        inputs,
    )
    one_line_error(result, "output=in2 is the same place as input=in2", "into the input")
    assert snapshot(inputs) == before


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["input=ds", "results=ds/res"], "results=ds/res is inside input=ds"),
        (["input=ds", "results=ds"], "results=ds is the same place as input=ds"),
        (["input=ds", "output=ds/m.json"], "output=ds/m.json is inside input=ds"),
        (["input=frames", "gt=gt/frames", "results=gt/frames/r"], "results=gt/frames/r is inside gt=gt/frames"),
        (["results=frames", "gt=gt/frames", "output=frames/00000.png"], "output=frames/00000.png is inside results"),
        (["results=frames", "gt=gt/frames", "output=gt/frames/m.json", "overwrite=true"], "inside gt=gt/frames"),
    ],
)
def test_eval_refuses_an_output_at_in_or_over_what_it_reads(
    inputs: Path, checkpoint: Path, overrides: list[str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdvd.cli.evaluate import run_eval

    monkeypatch.chdir(inputs)
    before = snapshot(inputs)
    cfg = compose_config("eval", [*overrides, f"checkpoint={checkpoint}", "progress=false", "frames=all"])
    with pytest.raises(ConfigError, match="into the input") as caught:
        run_eval(cfg)
    assert named in str(caught.value)
    assert snapshot(inputs) == before


# ---------------------------------------------------------------------------------------------------------------
# cdvd-eval's report: replaces only an earlier report, checked before the scoring


def eval_cfg(tmp_path: Path, output: str, *extra: str):  # noqa: ANN201 - DictConfig
    return compose_config(
        "eval",
        [f"results={tmp_path / 'frames'}", f"gt={tmp_path / 'gt' / 'frames'}", f"output={tmp_path / output}",
         "frames=all", "progress=false", *extra],
    )  # fmt: skip


def test_eval_replaces_its_own_report_but_no_other_file_unless_asked(inputs: Path) -> None:
    from cdvd.cli.evaluate import run_eval

    run_eval(eval_cfg(inputs, "m.json"))
    first = json.loads((inputs / "m.json").read_text())
    (inputs / "m.json").write_text(json.dumps({**first, "total": {"psnr": 0.0}}))  # an earlier report, changed
    run_eval(eval_cfg(inputs, "m.json"))  # rerun: an earlier report of ours is replaced without asking
    assert json.loads((inputs / "m.json").read_text())["total"] == first["total"]

    (inputs / "notes.json").write_text('{"mine": 1}\n')
    with pytest.raises(ConfigError, match=r"notes.json exists and is not a cdvd-eval report.*overwrite=true"):
        run_eval(eval_cfg(inputs, "notes.json"))
    assert (inputs / "notes.json").read_text() == '{"mine": 1}\n'

    (inputs / "table.csv").write_text("my,own,data\n")  # the CSV that would go beside table.json
    with pytest.raises(ConfigError, match=r"table.csv exists and is not a cdvd-eval report"):
        run_eval(eval_cfg(inputs, "table.json"))
    assert (inputs / "table.csv").read_text() == "my,own,data\n" and not (inputs / "table.json").exists()

    run_eval(eval_cfg(inputs, "notes.json", "overwrite=true"))  # asked: replaced
    assert json.loads((inputs / "notes.json").read_text())["total"] == first["total"]


@pytest.mark.parametrize(
    ("setup", "output", "named"),
    [
        ("folder", "adir", "adir is a folder"),
        ("csv folder", "m.json", "m.csv is a folder"),
        ("fifo", "m.json", "m.json is a FIFO"),
        ("under a file", "afile/m.json", "afile is not a folder"),
        (None, "x.csv", "the report is JSON"),  # the CSV beside it would replace the JSON
    ],
)
def test_eval_refuses_a_report_place_that_cannot_take_it_before_scoring(
    inputs: Path, setup: str | None, output: str, named: str
) -> None:
    from cdvd.cli.evaluate import run_eval

    if setup == "folder":
        (inputs / "adir").mkdir()
    elif setup == "csv folder":
        (inputs / "m.csv").mkdir()
    elif setup == "fifo":
        os.mkfifo(inputs / "m.json")
    elif setup == "under a file":
        (inputs / "afile").write_text("a file\n")
    (inputs / "frames" / "00002.png").write_bytes(b"not a PNG")  # scoring would fail on it: the check comes first
    with pytest.raises(ConfigError, match=named):
        run_eval(eval_cfg(inputs, output))


def test_eval_and_export_refuse_an_unwritable_place_before_the_work(inputs: Path, checkpoint: Path) -> None:
    """As an ordinary user meets it: a folder owned by someone else (mode 755); root drops to 'nobody' in a child."""
    from cdvd.cli.evaluate import run_eval
    from cdvd.cli.export import run_export

    shared = Path(tempfile.mkdtemp(prefix="cdvd-not-yours-"))  # 'nobody' reaches it (pytest's tmp is 0700)
    try:
        shared.chmod(0o755)
        (shared / "a.pt").write_bytes(checkpoint.read_bytes())
        for folder in ("frames", "gt"):  # readable by 'nobody': without the check, the scoring would run first
            shutil.copytree(inputs / folder, shared / folder)
        folder = shared / "not_yours" if os.geteuid() == 0 else Path("/")  # an ordinary user cannot write in /
        folder.mkdir(mode=0o755, exist_ok=True)
        eval_settings = eval_cfg(shared, str(folder / "m.json"))
        export_settings = compose_config("export", [f"checkpoint={shared / 'a.pt'}", f"output={folder / 'exp'}"])
        runs = {"eval": lambda: run_eval(eval_settings), "export": lambda: run_export(export_settings)}
        for name, run in runs.items():
            report = run_as_nobody(run)
            assert report.startswith(f"ConfigError: cannot write output={folder}"), (name, report)
            assert "Permission denied" in report, (name, report)
        if folder != Path("/"):
            assert not any(folder.iterdir())
    finally:
        shutil.rmtree(shared)


# ---------------------------------------------------------------------------------------------------------------
# cdvd-export's output


@pytest.mark.parametrize(
    ("setup", "output", "extra", "named"),
    [
        ("file", "notes.txt", ["overwrite=true"], "output=notes.txt is a file"),  # a file: refused even if asked
        ("checkpoint", "a.pt", [], "output=a.pt is a file"),
        ("file", "notes.txt/exp", [], "notes.txt is not a folder"),
        ("user report", "exp", [], "export_check.json exists: pass overwrite=true"),
        ("report folder", "exp", ["overwrite=true"], "export_check.json is a folder"),
    ],
)
def test_export_refuses_an_output_in_the_way_before_the_model_loads(
    tmp_path: Path,
    checkpoint: Path,
    setup: str,
    output: str,
    extra: list[str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cdvd.cli.export import run_export

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.pt").write_bytes(checkpoint.read_bytes())
    if setup == "file":
        (tmp_path / "notes.txt").write_text("mine\n")
    elif setup == "user report":
        (tmp_path / "exp").mkdir()
        (tmp_path / "exp" / "export_check.json").write_text("mine\n")
    elif setup == "report folder":
        (tmp_path / "exp" / "export_check.json").mkdir(parents=True)
    before = snapshot(tmp_path)
    cfg = compose_config("export", ["checkpoint=a.pt", f"output={output}", "formats=[onnx]", *extra])
    with pytest.raises(ConfigError, match=named):
        run_export(cfg)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------------------------
# FIFOs and devices


def test_a_fifo_or_a_device_as_input_is_one_line_and_no_hang(tmp_path: Path, checkpoint: Path) -> None:
    os.mkfifo(tmp_path / "pipe.mp4")  # a reader of it would wait for a writer forever
    result = run_command(
        [console_script("cdvd-deblur"), "input=pipe.mp4", "output=out", f"checkpoint={checkpoint}"], tmp_path, 120
    )
    one_line_error(result, "input=pipe.mp4 is a FIFO (named pipe)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting", ["input", "gt", "results"])
def test_eval_and_discovery_name_a_device_or_fifo(
    inputs: Path, checkpoint: Path, setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdvd.cli.evaluate import run_eval
    from cdvd.data.sources import discover_sources

    with pytest.raises(UserError, match="input=/dev/zero is a character device"):
        discover_sources("/dev/zero")
    monkeypatch.chdir(inputs)
    os.mkfifo(inputs / "pipe")
    settings = {"input": "frames", "gt": "gt/frames", "results": None, setting: "pipe"}
    overrides = [f"{key}={value}" for key, value in settings.items() if value is not None]
    cfg = compose_config("eval", [*overrides, f"checkpoint={checkpoint}", "progress=false"])
    with pytest.raises(UserError, match=f"{setting}=pipe is a FIFO"):
        run_eval(cfg)


# ---------------------------------------------------------------------------------------------------------------
# file names that Hydra's grammar reads as syntax


def test_a_file_name_with_brackets_is_told_how_to_quote_it(tmp_path: Path) -> None:
    write_test_video(tmp_path / "clip (1).mp4", frames(3), audio=False)
    deblur = console_script("cdvd-deblur")
    line = one_line_error(run_command([deblur, "input=clip (1).mp4", "output=out"], tmp_path), "clip (1).mp4")
    hint = """'input="clip (1).mp4"'"""
    assert hint in line
    # the argument the hint gives, as the shell hands it over, reads the file: the next mistake is the checkpoint
    one_line_error(run_command([deblur, 'input="clip (1).mp4"', "output=out"], tmp_path), "no checkpoint given")
