"""Shared fixtures: a tiny synthetic dataset and the composed training config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Two intra-op threads at most: CI has two cores, and oversubscription only slows the small tests down; one per
# process when pytest-xdist runs the tests in several processes (make test: TEST_WORKERS=2).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # the console scripts a test starts share the cores with the other workers too: one OpenMP thread each (two
    # per process on two busy cores spin against each other; measured on tests/test_train.py: 65 s -> 60 s)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic paired dataset in the folder layout: train/ (3 videos x 7 frames) and val/ (1 x 6), 48x64."""
    from cdvd.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("synthetic")
    synthesize(root / "train", n_videos=3, n_frames=7, size=[48, 64], seed=0)
    synthesize(root / "val", n_videos=1, n_frames=6, size=[48, 64], seed=1)
    return root


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


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # cdvd-deblur's cache_dir=auto reads $CDVD_CACHE_DIR first: the tests' conversions never land in the home folder
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CDVD_CACHE_DIR", str(tmp_path_factory.mktemp("cdvd-cache")))
        yield


@pytest.fixture(autouse=True)
def _no_cuda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # keep subprocesses from grabbing a GPU that a CPU test did not ask for
    if not torch.cuda.is_available():
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))
