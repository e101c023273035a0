"""Running the console scripts and composing the packaged configs as the command lines do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def console_script(name: str) -> str:
    """Path of an installed console script (``cdvd-train`` ...) beside the running interpreter."""
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"console script {name} not installed beside {sys.executable}: pip install -e .")
    return str(path)


def compose_config(name: str | None, overrides: list[str]):  # noqa: ANN201 - DictConfig
    """Config ``name`` (``None``: only the overrides) composed as an entry point would, from the packaged configs."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="cdvd.configs", version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def compose_train(overrides: list[str]):  # noqa: ANN201 - DictConfig
    """The training config composed as ``cdvd-train`` would."""
    return compose_config("train", overrides)


def smoke_cli_args(data_root: Path, multirun: bool = False) -> list[str]:
    """``cdvd-train [-m]`` and its arguments for one smoke epoch on ``data_root``, without a progress bar."""
    return [
        console_script("cdvd-train"),
        *(["-m"] if multirun else []),
        "experiment=smoke",
        f"data.root={data_root}",
        "data.synthesize=null",
        "data.patch_size=32",
        "trainer.max_epochs=1",
        "~callbacks.progress_bar",
    ]


def run_command(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a console script with unbuffered output, capturing it as text."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2, only_line: bool = False) -> str:
    """The one error line of a refused command (exit ``code``, no traceback, one line with ``error:``), checked to
    hold each of ``needles``. ``only_line``: stderr holds nothing else either."""
    output = result.stdout + result.stderr
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in output, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and (len(lines) == 1 or not only_line), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
