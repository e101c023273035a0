"""scripts/bench_gpu.py, the GPU benchmark, run as on the GPU machine but with ``--device cpu --quick``.

On the CPU every part runs with tiny sizes (the cupy kernel, fp16, NCCL and torch.compile are skipped, each with its
reason), so the command's logic is checked before a GPU is at hand: one JSON per run with the machine, every
measurement with its settings and its figures as numbers, the agreement with fp32, DDP with 2 processes.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"
DEBLUR_RUN_ON_CPU = {"deblur-fp32-torch", "deblur-bf16-torch", "deblur-fp32-cl", "deblur-bf16-cl"}
SKIPPED_ON_CPU = {
    "deblur-fp32-cupy": "cupy",
    "deblur-bf16-cupy": "cupy",
    "deblur-fp16-cupy": "cupy",  # the cupy reason comes first; fp16 alone would also be refused on the CPU
    "deblur-bf16-cl-cudnnbench": "cudnn",
    "deblur-bf16-cl-cudnnbench-compile": "compile",
}


def bench(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


# a whole benchmark process (about 40 s on 2 cores): in `make test`, not in `make test-quick`
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, list[Path]]:
    out = tmp_path_factory.mktemp("gpu-bench")
    done = bench(["--device", "cpu", "--quick", "--out-dir", str(out)], out)
    return done, sorted(out.glob("*.json"))


@pytest.fixture(scope="module")
def results(quick_run: tuple[subprocess.CompletedProcess, list[Path]]) -> dict[str, Any]:
    done, files = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def _numbers(figures: dict[str, Any]) -> list[str]:
    """Names of the figures that are not finite numbers."""
    return [
        k for k, v in figures.items() if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
    ]


def test_quick_run_writes_one_whole_json_named_by_date_and_card(quick_run: Any, results: dict[str, Any]) -> None:
    done, files = quick_run
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-cpu\.json", files[0].name)
    assert results["complete"] is True
    assert results["settings"]["quick"] is True and results["settings"]["device"] == "cpu"
    env = results["environment"]
    assert env["card"] == "cpu" and env["torch"] == torch.__version__
    assert {"cuda", "cudnn", "cupy", "lightning", "python", "cpu"} <= set(env)
    assert results["flops"]["deblur_tflop_per_frame"] > 0 and results["flops"]["train_tflop_per_step"] > 0
    # the table and where the JSON went
    assert "| measurement | status | figures |" in done.stdout
    assert f"written: {files[0]}" in done.stdout


def test_every_measurement_is_there_with_settings_and_numbers(results: dict[str, Any]) -> None:
    by_id = {m["id"]: m for m in results["measurements"]}
    assert set(by_id) == DEBLUR_RUN_ON_CPU | set(SKIPPED_ON_CPU) | {
        "train-32",
        "train-bf16-mixed",
        "correlation",
        "ddp",
    }
    for name, word in SKIPPED_ON_CPU.items():
        assert by_id[name]["status"] == "skipped" and word in by_id[name]["reason"], by_id[name]
    for name, entry in by_id.items():
        assert isinstance(entry["settings"], dict) and entry["settings"], name
        if name in SKIPPED_ON_CPU:
            continue
        assert entry["status"] == "ok", (name, entry.get("error"), entry.get("log_tail"))
        assert entry["figures"] and not _numbers(entry["figures"]), (name, entry["figures"])
        assert 0 < entry["wall_s"] <= entry["limit_s"] + 5


def test_deblurring_figures_and_agreement_with_fp32(results: dict[str, Any]) -> None:
    by_id = {m["id"]: m for m in results["measurements"]}
    for name in DEBLUR_RUN_ON_CPU:
        figures = by_id[name]["figures"]
        assert figures["frames_out"] == by_id[name]["settings"]["frames"]
        assert figures["fps_steady"] > 0 and figures["peak_rss_mib"] > 0 and figures["tflops_per_s"] > 0
        assert by_id[name]["details"]["corr_used"] == "torch"
    assert "psnr_vs_fp32_db" not in by_id["deblur-fp32-torch"]["figures"]  # the reference itself
    for name in ("deblur-bf16-torch", "deblur-bf16-cl"):  # bf16 differs from fp32, a little
        assert 30 < by_id[name]["figures"]["psnr_vs_fp32_db"] < 120
        assert 0 < by_id[name]["figures"]["max_abs_diff_vs_fp32"] < 0.1
    cl = by_id["deblur-fp32-cl"]  # the same arithmetic in another memory layout
    assert cl["figures"]["max_abs_diff_vs_fp32"] < 1e-4
    assert cl["details"].get("identical_to_fp32") or cl["figures"]["psnr_vs_fp32_db"] > 80


def test_training_step_implies_an_epoch_time_beside_the_seeds(results: dict[str, Any]) -> None:
    by_id = {m["id"]: m for m in results["measurements"]}
    for name, precision in (("train-32", "32"), ("train-bf16-mixed", "bf16-mixed")):
        entry = by_id[name]
        assert entry["settings"]["precision"] == precision
        figures = entry["figures"]
        batch = entry["settings"]["batch"]
        assert figures["samples_per_s"] == pytest.approx(batch / figures["step_s"], rel=1e-2)
        assert figures["gopro_epoch_min"] == pytest.approx(2103 / figures["samples_per_s"] / 60, rel=1e-2)
        assert figures["seed_gopro_epoch_min"] == 45
    targets = results["targets"]
    epochs = [by_id[name]["figures"]["gopro_epoch_min"] for name in ("train-32", "train-bf16-mixed")]
    assert targets["best_gopro_epoch_min"] == min(epochs)
    assert targets["epoch_target_met"] is (targets["best_gopro_epoch_min"] < 5)


def test_ddp_runs_two_ranks_with_gloo_and_says_what_two_gpus_need(results: dict[str, Any]) -> None:
    ddp = next(m for m in results["measurements"] if m["id"] == "ddp")
    assert ddp["details"]["backend_used"] == "gloo"
    assert "nccl" in ddp["details"]["skipped_backends"]
    assert ddp["figures"]["ranks"] == 2 and ddp["figures"]["steps"] == ddp["settings"]["steps"]
    assert ddp["figures"]["ranks_exit_clean"] == 1 and ddp["figures"]["params_equal_across_ranks"] == 1
    assert all(rank["figures"]["world_size"] == 2 for rank in ddp["details"]["attempts"][-1]["ranks"])
    assert ddp["details"]["still_needed_for_2_gpus"]


def test_correlation_alone_times_pytorch_and_names_why_not_cupy(results: dict[str, Any]) -> None:
    corr = next(m for m in results["measurements"] if m["id"] == "correlation")
    assert corr["settings"]["backends"] == ["torch"]
    assert "CUDA" in corr["settings"]["skipped_backends"]["cupy"]
    for shape in corr["settings"]["shapes"]:
        assert corr["figures"][f"{shape}.fp32.torch.forward_ms"] > 0
        assert corr["figures"][f"{shape}.fp32.torch.forward_backward_ms"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = bench(["--device", "cuda", "--out-dir", str(tmp_path / "out")], tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "--device cuda" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("*.json"))


def test_unknown_measurement_is_named_before_any_work(tmp_path: Path) -> None:
    done = bench(["--device", "cpu", "--quick", "--only", "deblur-fp64", "--out-dir", str(tmp_path)], tmp_path, 120)
    assert done.returncode == 2
    assert "deblur-fp64" in done.stderr and "deblur-bf16-cl" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("*.json"))


def test_the_device_command_installs_the_carried_wheels_and_fits_the_device_tool(tmp_path: Path) -> None:
    done = bench(["--print-device-command"], tmp_path, 120)
    command = done.stdout.strip()
    assert done.returncode == 0 and "\n" not in command and len(command) < 2000
    assert "--no-index --no-deps" in command and ".gpu-wheels/*.whl" in command
    assert "scripts/bench_gpu.py --device cuda --out-dir $OUT" in command and command.count("timeout ") == 1
    readme = (SCRIPT.parents[1] / "README.md").read_text()
    assert command in readme  # the README shows the command the script runs, not an older one
