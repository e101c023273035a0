"""backend=openvino, precision=auto, channels_last through cdvd-deblur, and cdvd-export through its command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import compose_config, console_script, run_command
from helpers.data import tiny_checkpoint

from cdvd import hardware
from cdvd.data.io import read_rgb, write_rgb
from cdvd.hardware import native_bf16
from cdvd.inference.settings import build_deblurrer, deblur_settings
from cdvd.models import CDVDTSP

openvino = pytest.importorskip("openvino", reason="backend=openvino needs the optional extra cdvd[openvino]")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def frames(folder: Path, n: int = 5, h: int = 36, w: int = 44) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(h, w, 3)).astype(np.float64)
    for i in range(n):  # a smooth shift, so the flow has something to find
        write_rgb(folder / f"{i:05d}.png", np.clip(np.roll(base, i, axis=1) * 0.9 + 10, 0, 255).astype(np.uint8))


def test_precision_auto_follows_the_hardware(checkpoint: Path) -> None:
    cfg = compose_config("deblur", [f"checkpoint={checkpoint}", "device=cpu"])
    assert cfg.precision == "auto"
    engine = build_deblurrer(deblur_settings(cfg))
    assert engine.precision == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    assert compose_config("eval", []).precision == "fp32"  # the published numbers stay exact


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_bf16_without_native_support_runs_fp32_and_says_so(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    # an Intel Xeon with AVX-512 but neither AVX-512 BF16 nor AMX: bf16 there ran 0.6x fp32's speed, 28 dB off
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vl"}))
    cfg = compose_config("deblur", [f"checkpoint={checkpoint}", "device=cpu", "precision=bf16", f"backend={backend}"])
    with caplog.at_level(logging.WARNING):
        engine = build_deblurrer(deblur_settings(cfg))
    assert engine.precision == "fp32" and engine.fingerprint()["precision"] == "fp32"  # what makes the frames
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "precision=bf16" in line and "avx512_bf16" in line and "running fp32 instead" in line


def test_bf16_autocast_keeps_flow_and_warp_in_fp32() -> None:
    torch.manual_seed(0)
    model = CDVDTSP(n_feat=4, n_resblock=1, corr_backend="torch").eval()
    seen: list[torch.Tensor] = []  # what the reconstruction net gets: warped neighbours, centre, sharpness prior
    model.recons.register_forward_pre_hook(lambda module, args: seen.append(args[0].float()))
    base = torch.rand(1, 3, 32, 8, generator=torch.Generator().manual_seed(1)).repeat(1, 1, 1, 34)
    clip = torch.stack([torch.roll(base, k, dims=-1) for k in range(3)])  # 272 wide: past bf16's exact integers
    with torch.inference_mode():
        model.restore_centres(clip)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # what precision=bf16 does on a CPU with native bf16
            model.restore_centres(clip)
    fp32, bf16 = seen
    assert torch.equal(fp32, bf16)  # flow, warp and prior computed in fp32: only the reconstruction net is bf16


@pytest.mark.slow
def test_openvino_backend_gives_the_torch_frames_within_one_level(tmp_path: Path, checkpoint: Path) -> None:
    frames(tmp_path / "in")
    common = ["device=cpu", "progress=false", "input=in", f"checkpoint={checkpoint}", "precision=fp32"]
    torch_run = run_command([console_script("cdvd-deblur"), *common, "output=torch"], tmp_path)
    assert torch_run.returncode == 0, torch_run.stderr
    ov_run = run_command([console_script("cdvd-deblur"), *common, "output=ov", "backend=openvino"], tmp_path)
    assert ov_run.returncode == 0, ov_run.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "torch" / "in").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "ov" / "in").glob("*.png")) and len(names) == 5
    for name in names:
        a = read_rgb(tmp_path / "torch" / "in" / name).astype(int)
        b = read_rgb(tmp_path / "ov" / "in" / name).astype(int)
        assert np.abs(a - b).max() <= 1, name
    # a later run reads the converted stage from the cache (conftest: $CDVD_CACHE_DIR) and makes the same bytes
    again = run_command([console_script("cdvd-deblur"), *common, "output=ov2", "backend=openvino"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "OpenVINO stage read from the cache" in " ".join(again.stdout.split())
    for name in names:
        assert (tmp_path / "ov2" / "in" / name).read_bytes() == (tmp_path / "ov" / "in" / name).read_bytes(), name
    # the backend is part of what made the frames: resuming torch's outputs with openvino is refused
    mixed = run_command([console_script("cdvd-deblur"), *common, "output=torch", "backend=openvino"], tmp_path)
    assert mixed.returncode == 2 and "backend" in mixed.stderr and "overwrite=true" in mixed.stderr


def test_channels_last_keeps_the_frames(checkpoint: Path) -> None:
    clip = torch.rand(4, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    outputs = []
    for channels_last in (False, True):
        cfg = compose_config(
            "deblur", [f"checkpoint={checkpoint}", "device=cpu", "precision=fp32", f"channels_last={channels_last}"]
        )
        outputs.append(build_deblurrer(deblur_settings(cfg)).deblur_tensor(clip))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)


@pytest.mark.slow
def test_backend_settings_are_checked(tmp_path: Path, checkpoint: Path) -> None:
    frames(tmp_path / "in", n=2)
    exe = console_script("cdvd-deblur")
    base = ["device=cpu", "input=in", "output=out", f"checkpoint={checkpoint}"]
    for extra, needle in (
        (["backend=tensorrt"], "backend=tensorrt"),
        (["backend=openvino", "compile=true"], "compile"),
        (["precision=fp16"], "precision=fp16"),
    ):
        result = run_command([exe, *base, *extra], tmp_path)
        assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cdvd_export_writes_checked_files(tmp_path: Path, checkpoint: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX check needs the optional extra cdvd[export]")
    exe = console_script("cdvd-export")
    args = [exe, f"checkpoint={checkpoint}", "output=exported", "check_size=[40,52]"]
    result = run_command(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "exported" / "export_check.json").read_text())
    assert {c["runtime"] for c in report["checks"]} == {"onnxruntime", "openvino"}
    for check in report["checks"]:
        assert check["max_abs_diff"] < 1e-4 and check["size"] in ([40, 52], (40, 52))
    assert (tmp_path / "exported" / "stage.onnx").is_file() and (tmp_path / "exported" / "stage.xml").is_file()
    again = run_command(args, tmp_path)
    assert again.returncode == 2 and "overwrite=true" in again.stderr
