"""Shared fixtures: a tiny synthetic dataset and the composed training config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Two intra-op threads at most: CI has two cores, and oversubscription only slows the small tests down.
torch.set_num_threads(min(2, torch.get_num_threads()))

VENV_BIN = Path(sys.executable).parent


def console_script(name: str) -> str:
    """Path of an installed console script (``cdvd-train`` ...) beside the running interpreter."""
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"console script {name} not installed beside {sys.executable}: pip install -e .")
    return str(path)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic paired dataset in the folder layout: train/ (3 videos x 7 frames) and val/ (1 x 6), 48x64."""
    from cdvd.synth import synthesize

    root = tmp_path_factory.mktemp("synthetic")
    synthesize(root / "train", n_videos=3, n_frames=7, size=[48, 64], seed=0)
    synthesize(root / "val", n_videos=1, n_frames=6, size=[48, 64], seed=1)
    return root


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


@pytest.fixture
def smoke_overrides(tiny_dataset: Path, tmp_path: Path) -> list[str]:
    """``experiment=smoke`` on the tiny dataset, writing into tmp_path, logging to CSV, no progress bar."""
    return [
        "experiment=smoke",
        f"data.root={tiny_dataset}",
        "data.synthesize=null",
        "data.patch_size=32",
        f"paths.output_dir={tmp_path}",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
    ]


@pytest.fixture(autouse=True)
def _no_cuda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # keep subprocesses from grabbing a GPU that a CPU test did not ask for
    if not torch.cuda.is_available():
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))
