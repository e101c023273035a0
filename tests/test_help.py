"""Each tool's ``--help`` (its own settings with the YAML comments, its own groups, its name first), ``python -m cdvd``
and what the wheel ships (py.typed, the configs, the licence)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.cli import console_script, run_command

from cdvd.cli.help import console_scripts

ROOT = Path(__file__).resolve().parents[1]
TRAIN_GROUPS = {
    "callbacks",
    "data",
    "debug",
    "experiment",
    "hparams_search",
    "logger",
    "loss",
    "model",
    "optimizer",
    "paths",
    "scheduler",
    "trainer",
}
# tool -> (a setting as the help shows it, the start of its YAML comment, the config groups it composes)
TOOLS = {
    "cdvd-deblur": ("device: auto", "auto | cpu | cuda | cuda:N", set()),
    "cdvd-eval": ("frames: paper", "paper: leave out the first and last 2 frames", set()),
    "cdvd-export": ("output: exported", "the folder the exported files go to", set()),
    "cdvd-synth": ("output: ???", "the dataset folder to create", set()),
    "cdvd-pack": ("layout: auto", "dvd | gopro | reds | folder | auto", set()),
    "cdvd-demo": ("steps: 320", "training steps (batches of 4)", {"paths"}),
    "cdvd-app": ("port: 7860", "the port the page is served on", set()),
    "cdvd-train": ("seed: 42", "seed of everything random", TRAIN_GROUPS),
    "cdvd-find-lr": ("seed: 42", "seed of everything random", TRAIN_GROUPS),
}


def tool_help(script: str, args: list[str], cwd: Path) -> str:
    """``script [args] --help`` as a user runs it (the console script, its own process; Hydra's --help configures
    logging and global state that would outlive it in this one): the text it prints, after checking that it exits
    0 with nothing on stderr."""
    result = run_command([console_script(script), *args, "--help"], cwd, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def listed_groups(text: str) -> set[str]:
    """The group names of the help's ``== Config groups`` section."""
    section = re.search(r"^== Config groups.*?\n(.*?)(?:\n\n|\Z)", text, re.M | re.S)
    return {line.split(":")[0] for line in section[1].splitlines()} if section else set()


def has_setting(text: str, setting: str, comment: str) -> bool:
    """Whether a line reads ``setting   # comment...``."""
    return re.search(rf"^{re.escape(setting)} +# {re.escape(comment)}", text, re.M) is not None


# the quick tier keeps one tool with config groups (cdvd-deblur's own help, without, is the next test); each tool's
# help is a process of its own, about 4 s
@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=[] if s == "cdvd-train" else [pytest.mark.slow]) for s in sorted(TOOLS)]
)
def test_every_tool_help_shows_its_own_settings_with_their_comments_and_only_its_groups(
    script: str, tmp_path: Path
) -> None:
    setting, comment, groups = TOOLS[script]
    text = tool_help(script, [], tmp_path)
    assert text.splitlines()[0].startswith(f"{script}: "), text.splitlines()[0]
    assert has_setting(text, setting, comment), text
    assert listed_groups(text) == groups
    if not groups:
        assert "Config groups" not in text and "callbacks" not in text and "trainer" not in text


def test_help_shows_the_values_the_command_line_sets(tmp_path: Path) -> None:
    # cdvd-eval sets precision itself (over deblur.yaml's) with its own comment; the command line's value wins
    text = tool_help("cdvd-eval", ["precision=bf16"], tmp_path)
    assert has_setting(text, "precision: bf16", "exact fp32 by default")
    # a setting cdvd-eval takes from deblur.yaml keeps deblur.yaml's comment
    assert has_setting(text, "device: auto", "auto | cpu | cuda | cuda:N")
    text = tool_help("cdvd-train", ["experiment=smoke"], tmp_path)
    assert re.search(r"^experiment: +smoke  \(options: .*\bpaper_gopro\b", text, re.M), text
    assert re.search(r"^tags: \[smoke\]$", text, re.M), text


def test_the_console_script_help_in_its_own_process(tmp_path: Path) -> None:
    result = run_command([console_script("cdvd-deblur"), "--help"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "cdvd-deblur: deblur videos with a trained CDVD-TSP checkpoint."
    assert "powered by Hydra" not in result.stdout and "callbacks" not in result.stdout
    # a comment with $ in it (Hydra's template would read $CDVD_CACHE_DIR as one of its own placeholders)
    assert "auto: $CDVD_CACHE_DIR, else" in result.stdout
    assert has_setting(result.stdout, "tile:", "overlapping spatial tiles") and "  overlap: 64" in lines
    assert not list(tmp_path.iterdir())  # --help writes nothing


def test_python_m_cdvd_lists_every_tool_without_importing_torch() -> None:
    code = (
        "import runpy, sys\n"
        "try:\n    runpy.run_module('cdvd', run_name='__main__')\n"
        "except SystemExit as done:\n    assert not done.code, done.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "torch imported: False"
    listed = {m[1]: m[2] for m in re.finditer(r"^  (cdvd-[\w-]+) +(\S.*)$", done.stdout, re.M)}
    assert set(listed) == set(console_scripts()) >= set(TOOLS)
    assert listed["cdvd-deblur"] == "deblur videos with a trained CDVD-TSP checkpoint."
    assert all(len(summary) > 20 for summary in listed.values()), listed
    # the documented command itself
    done = subprocess.run([sys.executable, "-m", "cdvd"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "cdvd-train" in done.stdout, done.stderr


def test_the_wheel_ships_py_typed_the_configs_and_the_licence(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="77", reason="PEP 639 licence fields need setuptools >= 77")
    source = tmp_path / "src"  # a copy: building in the checkout would write build/ and egg-info into it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "cdvd", source / "cdvd", ignore=ignore)
    shutil.copytree(ROOT / "configs", source / "configs", ignore=ignore)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")]
    done = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "`project.license` as a TOML table is deprecated" not in done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("cdvd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        fields = archive.read(metadata).decode().splitlines()
    assert "cdvd/py.typed" in names
    configs = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert {f"cdvd/configs/{c}" for c in configs} <= names
    assert "cdvd/configs/hydra/help/cdvd.yaml" in names
    assert "License-Expression: MIT" in fields
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
