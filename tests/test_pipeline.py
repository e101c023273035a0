"""The one deblurring pipeline: ``cdvd.deblur`` from Python gives what ``cdvd-deblur`` writes, and every tool's
settings reach it the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import console_script, run_command
from helpers.data import tiny_checkpoint

import cdvd
from cdvd.data.io import list_frames, read_rgb, write_rgb
from cdvd.errors import ConfigError
from cdvd.inference.pipeline import default_settings, settings_from
from cdvd.runtime import reusing_freed_memory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _frames(folder: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_rgb(folder / f"{i:05d}.png", rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8))
    return folder


def _cdvd_deblur(clip: Path, output: Path, checkpoint: Path, *settings: str) -> subprocess.CompletedProcess:
    """``cdvd-deblur`` on the CPU, without a progress bar, run in ``output``'s parent folder as a user would."""
    args = [f"input={clip}", f"output={output.name}", f"checkpoint={checkpoint}", "device=cpu", "progress=false"]
    return run_command([console_script("cdvd-deblur"), *args, *settings], output.parent, timeout=300)


def test_the_python_function_writes_what_the_command_line_writes(tmp_path: Path, checkpoint: Path) -> None:
    clip = _frames(tmp_path / "in" / "clip", 6)
    seen: list[tuple[str, int, int | None]] = []
    result = cdvd.deblur(
        clip,
        tmp_path / "py",
        checkpoint,
        device="cpu",
        precision="fp32",
        progress=False,
        on_frame=lambda *a: seen.append(a),
    )
    assert result.written == 6 and result.skipped == 0 and result.output == tmp_path / "py"
    assert seen == [("clip", done, 6) for done in range(1, 7)]  # progress for a page or a notebook
    # reuse_memory changes a whole process's allocator: the function leaves its caller's process (a page's server,
    # a notebook, this test runner) as it was, unless asked (the subprocess test below)
    assert not reusing_freed_memory()
    done = _cdvd_deblur(clip, tmp_path / "cli", checkpoint, "precision=fp32")
    assert done.returncode == 0, done.stderr
    ours, theirs = list_frames(tmp_path / "py" / "clip"), list_frames(tmp_path / "cli" / "clip")
    assert [p.name for p in ours] == [p.name for p in theirs] and len(ours) == 6
    for a, b in zip(ours, theirs, strict=True):
        assert np.array_equal(read_rgb(a), read_rgb(b))
    # a rerun resumes (nothing to do), as the command line's does
    again = cdvd.deblur(clip, tmp_path / "py", checkpoint, device="cpu", precision="fp32", progress=False)
    assert again.written == 0 and again.skipped == 6


def test_settings_come_from_the_yaml_and_are_checked_by_their_owners(tmp_path: Path) -> None:
    defaults = default_settings()
    assert defaults["precision"] == "auto" and defaults["tile"] == {"size": None, "overlap": 64}
    assert "hydra" not in defaults and "defaults" not in defaults
    with pytest.raises(ConfigError, match="unknown setting.*precison"):
        settings_from(input="x", output="y", checkpoint="z", precison="fp32")
    with pytest.raises(ConfigError, match="tile"):
        settings_from(input="x", output="y", checkpoint="z", tile={"size": 8, "overlap": 8})


def test_mistakes_through_the_function_are_user_errors_naming_the_setting(tmp_path: Path, checkpoint: Path) -> None:
    clip = _frames(tmp_path / "clip", 3)
    cases = [
        (dict(input=tmp_path / "nope"), "input not found"),
        (dict(precision="fp8"), "precision=fp8"),
        (dict(backend="tensorrt"), "backend=tensorrt"),
        (dict(corr_backend="foo"), "corr_backend=foo"),
        (dict(num_shards=2, shard=2), "shard"),
        (dict(checkpoint=tmp_path / "missing.pt"), "checkpoint not found"),
    ]
    for overrides, needle in cases:
        args = {"input": clip, "output": tmp_path / "out", "checkpoint": checkpoint, "progress": False, **overrides}
        with pytest.raises(cdvd.errors.UserError, match=needle):
            cdvd.deblur(**args)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.slow
def test_reuse_memory_changes_only_a_process_the_run_owns(tmp_path: Path, checkpoint: Path) -> None:
    """``reuse_memory`` turns glibc's mmap off and its trimming for the rest of the process: right for cdvd-deblur's
    own process, wrong under a page's server, a notebook or a test runner. The Python function changes its caller's
    process only when asked (left alone by default: the first test); the console script applies the YAML's default."""
    clip = _frames(tmp_path / "clip", 3)
    code = (
        "import sys, cdvd; from cdvd.runtime import reusing_freed_memory\n"
        "cdvd.deblur(sys.argv[1], sys.argv[2], sys.argv[3], device='cpu', progress=False, reuse_memory=True)\n"
        "print(reusing_freed_memory())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(clip), str(tmp_path / "asked"), str(checkpoint)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "True"
    cli = _cdvd_deblur(clip, tmp_path / "cli", checkpoint, "hydra.verbose=cdvd.runtime")
    assert cli.returncode == 0, cli.stderr
    assert "freed memory kept for reuse" in cli.stdout + cli.stderr
