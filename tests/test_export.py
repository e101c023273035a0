"""Tracing, ONNX / OpenVINO export and the OpenVINO and torch stage backends, on a tiny network."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers.cli import console_script, run_command
from helpers.data import tiny_checkpoint

from cdvd.backends.graphs import StageGraph, example_inputs
from cdvd.backends.torch import prepare_torch_model
from cdvd.export import agreement, export_onnx, export_openvino, verify_export
from cdvd.models import CDVDTSP

needs_onnxruntime = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime: pip install 'cdvd[export]'"
)
needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="needs openvino: pip install 'cdvd[openvino]'"
)
SIZE = (32, 48)
OTHER_SIZE = (40, 56)  # a second size: the export must not have frozen the traced one


@pytest.fixture(scope="module")
def model() -> CDVDTSP:
    torch.manual_seed(0)
    return CDVDTSP(n_feat=4, n_resblock=1, corr_backend="torch").eval()


def reference(model: CDVDTSP, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.restore_centres(frames)


@pytest.mark.slow  # tracing the unrolled cost volumes takes 20-40 s on two shared cores
def test_trace_passes_its_checks_and_keeps_the_frame_size_dynamic(model: CDVDTSP) -> None:
    """jit.trace re-runs the graph and compares: this failed with 'Graphs differed across invocations'.

    Traced with autograd on (as OpenVINO's converter may do), then run at another frame size.
    """
    (frames,) = example_inputs("stage", SIZE)
    traced = torch.jit.trace(StageGraph(model), (frames,), check_trace=True)
    (other,) = example_inputs("stage", OTHER_SIZE, seed=1)
    with torch.no_grad():
        got = traced(other)
    assert got.shape == (1, 1, 3, *OTHER_SIZE)
    assert agreement(reference(model, other), got)[0] < 1e-4


@pytest.mark.slow
@needs_onnxruntime
def test_onnx_stage_matches_torch_at_another_size(model: CDVDTSP, tmp_path: Path) -> None:
    path = export_onnx(model, tmp_path / "stage.onnx", example_size=SIZE)
    assert path.is_file() and not list(tmp_path.glob(".*"))  # no temporary left behind
    check = verify_export(model, path, size=OTHER_SIZE)
    assert check.runtime == "onnxruntime" and check.size == OTHER_SIZE
    assert check.max_abs_diff < 1e-4
    assert check.psnr > 80


@needs_onnxruntime
def test_onnx_reconstruction_part(model: CDVDTSP, tmp_path: Path) -> None:
    path = export_onnx(model, tmp_path / "recons.onnx", part="reconstruction", example_size=SIZE)
    assert verify_export(model, path, part="reconstruction", size=OTHER_SIZE).max_abs_diff < 1e-4


@pytest.fixture(scope="module")
def full_onnx(model: CDVDTSP, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole cascade exported to ONNX once for the tests below (tracing it takes 10-20 s)."""
    return export_onnx(model, tmp_path_factory.mktemp("full") / "full.onnx", part="full", example_size=SIZE)


@pytest.mark.slow  # traces both cascade stages
@needs_onnxruntime
def test_onnx_full_cascade_is_the_torch_model(model: CDVDTSP, full_onnx: Path) -> None:
    """Five frames in, the restored centre out: what the torch model's forward returns as ``out``, at a size other
    than the traced one."""
    import onnxruntime

    frames = torch.rand(5, 1, 3, *OTHER_SIZE, generator=torch.Generator().manual_seed(7))
    session = onnxruntime.InferenceSession(str(full_onnx), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"frames": frames.numpy()})
    with torch.no_grad():
        expected = model(frames.transpose(0, 1)).out  # (1, 3, H, W): the clip's batch first
    assert got.shape == (1, 1, 3, *OTHER_SIZE)
    assert agreement(expected[None], got)[0] < 1e-4


@pytest.mark.slow
@needs_onnxruntime
def test_onnx_dimensions_are_named_height_and_width(full_onnx: Path) -> None:
    """A user inspecting the graph sees the fixed sizes and height/width, not the exporter's ``Reshape..._dim_0``."""
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(full_onnx)).graph
    dims = {
        value.name: [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
        for value in [*graph.input, *graph.output]
    }
    assert dims == {"frames": [5, 1, 3, "height", "width"], "restored": [1, 1, 3, "height", "width"]}


@needs_openvino
def test_openvino_ir_matches_torch(model: CDVDTSP, tmp_path: Path) -> None:
    path = export_openvino(model, tmp_path / "recons.xml", part="reconstruction")
    assert path.with_suffix(".bin").is_file() and not list(tmp_path.glob(".*"))
    check = verify_export(model, path, part="reconstruction", size=OTHER_SIZE)
    assert check.runtime == "openvino"
    assert check.max_abs_diff < 1e-4


@pytest.mark.slow
@needs_openvino
def test_openvino_stage_fp32_on_two_sizes(model: CDVDTSP) -> None:
    from cdvd.backends.openvino import OpenVINOStage

    stage = OpenVINOStage(model, precision="fp32")
    for size in (SIZE, OTHER_SIZE):
        # T = 4, B = 2: two centres per clip, both batch rows, like restore_centres
        frames = torch.rand(4, 2, 3, *size, generator=torch.Generator().manual_seed(size[0]))
        got = stage.restore_centres(frames)
        assert got.dtype == torch.float32 and got.shape == (2, 2, 3, *size)
        assert agreement(reference(model, frames), got)[0] < 1e-4
    compiled = stage.compiled_for(*SIZE)
    stage.restore_centres(torch.rand(3, 1, 3, *SIZE))
    assert stage.compiled_for(*SIZE) is compiled  # compiled once per frame size
    assert set(stage._compiled) == {SIZE, OTHER_SIZE}
    assert stage.inference_precision(*SIZE) == "f32"


@needs_openvino
def test_the_openvino_stage_gets_only_a_precision_it_takes(model: CDVDTSP) -> None:
    """The engine (every entry's way to the stage) resolves the precision on the CPU: fp16 is refused there."""
    from cdvd.backends.openvino import OPENVINO_PRECISIONS
    from cdvd.inference import VideoDeblurrer

    with pytest.raises(ValueError, match="precision=fp16 needs a CUDA device"):
        VideoDeblurrer(model, device="cpu", backend="openvino", precision="fp16")
    for precision in ("auto", "bf16", "fp32"):
        engine = VideoDeblurrer(model, device="cpu", backend="openvino", precision=precision)
        assert engine.precision in OPENVINO_PRECISIONS


def test_missing_openvino_says_how_to_install(model: CDVDTSP, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    from cdvd.backends.openvino import OpenVINOStage

    with pytest.raises(ImportError, match=r"pip install 'cdvd\[openvino\]'"):
        OpenVINOStage(model)


def test_channels_last_stage_gives_the_same_output() -> None:
    torch.manual_seed(0)
    net = CDVDTSP(n_feat=4, n_resblock=1, corr_backend="torch").eval()
    frames = torch.rand(3, 1, 3, *SIZE)
    expected = reference(net, frames)
    stage = prepare_torch_model(net, channels_last=True, compile=False)
    assert net.recons.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = stage(frames)
    assert agreement(expected, got)[0] < 1e-5


def test_cupy_kernel_module_does_not_import_the_dispatcher() -> None:
    """correlation.py imports correlation_cupy lazily; the reverse import made a cycle."""
    import ast

    import cdvd.models.correlation_cupy as cupy_module

    tree = ast.parse(Path(cupy_module.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "cdvd.models.correlation" not in imported
    assert "cdvd.models.correlation_window" in imported


@pytest.mark.slow  # traces the cascade twice (ONNX, OpenVINO): about a minute on two shared cores
@needs_onnxruntime
@needs_openvino
def test_cdvd_export_full_in_both_formats_is_checked_and_quiet(tmp_path: Path) -> None:
    """``cdvd-export parts=[full]``: both files checked against torch, and none of the exporters' warnings
    (TracerWarning, torch.onnx's constant folding, OpenVINO's) on the terminal."""
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    args = [console_script("cdvd-export"), f"checkpoint={checkpoint}", "output=exported", "parts=[full]"]
    result = run_command([*args, "check_size=[40,52]"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = [line for line in (result.stdout + result.stderr).splitlines() if "Warning" in line]
    assert not warned, warned
    report = json.loads((tmp_path / "exported" / "export_check.json").read_text())
    checks = sorted((check["part"], check["runtime"]) for check in report["checks"])
    assert checks == [("full", "onnxruntime"), ("full", "openvino")]
    assert all(check["max_abs_diff"] < 1e-4 for check in report["checks"])
