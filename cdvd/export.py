"""Export the network for deployment: ONNX and OpenVINO IR, with dynamic frame height and width.

Four parts can be exported (``part``):

* ``stage``: one cascade stage, :meth:`CDVDTSP.restore_centres` on three consecutive frames,
  ``frames`` (3, 1, 3, H, W) -> ``restored`` (1, 1, 3, H, W). The deblurring engine calls exactly this once per
  stage and frame (stage 1 on the inputs, stage 2 on three stage-1 results), so an exported stage keeps the
  streaming reuse of the torch engine. Run it twice for the full cascade.
* ``flow``: PWC-Net with its resize wrapper, ``reference``, ``neighbour`` (B, 3, H, W) -> ``flow`` (B, 2, H, W)
  in pixels.
* ``reconstruction``: the encoder-decoder, ``inputs`` (B, 10, H, W) -> ``restored`` (B, 3, H, W).
* ``alignment``: the rest of a stage, ``frames`` (3, 1, 3, H, W) -> ``inputs`` (1, 10, H, W): flow, warps and the
  sharpness prior, which the reconstruction net turns into the restored centre. Deploy the two apart to run
  ``alignment`` in float32 and ``reconstruction`` in a lower precision (as ``backend=openvino`` does).

Frames are RGB in [0, 1], H and W multiples of 4 (pad with :func:`cdvd.models.padding.pad_to_multiple`). The
exporters trace the network (TorchScript); the models in :mod:`cdvd.models` keep the frame size in the traced
graph, so one export serves every frame size. :func:`verify_export` runs an exported file on a random input and
compares it with torch.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from cdvd.atomic import atomic_destination, commit
from cdvd.models import CDVDTSP

logger = logging.getLogger(__name__)

ExportPart = Literal["stage", "flow", "reconstruction", "alignment"]
PARTS: tuple[str, ...] = ("stage", "flow", "reconstruction", "alignment")
ONNX_OPSET = 17  # GridSample needs 16; 17 is widely supported by ONNX Runtime and TensorRT
EXAMPLE_SIZE = (64, 96)  # the size traced; any other size works with the exported graph
OPENVINO_EXTRA = "pip install 'cdvd[openvino]'"
EXPORT_EXTRA = "pip install 'cdvd[export]'"


class StageGraph(nn.Module):
    """One cascade stage as a module: (3, 1, 3, H, W) frames -> (1, 1, 3, H, W) restored centre."""

    def __init__(self, model: CDVDTSP) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.restore_centres(frames)


class FlowGraph(nn.Module):
    """PWC-Net flow as a module: (B, 3, H, W) reference and neighbour -> (B, 2, H, W) flow in pixels."""

    def __init__(self, model: CDVDTSP) -> None:
        super().__init__()
        self.flow = model.flow

    def forward(self, reference: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        return self.flow(reference, neighbour)


class AlignmentGraph(nn.Module):
    """The reconstruction net's inputs of one stage: (3, 1, 3, H, W) frames -> (1, 10, H, W)."""

    def __init__(self, model: CDVDTSP) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.aligned_inputs(frames)


def part_module(model: CDVDTSP, part: ExportPart) -> nn.Module:
    """The module that ``part`` exports (sharing ``model``'s weights), in eval mode."""
    model.eval()
    if part == "stage":
        return StageGraph(model).eval()
    if part == "flow":
        return FlowGraph(model).eval()
    if part == "reconstruction":
        return model.recons.eval()
    if part == "alignment":
        return AlignmentGraph(model).eval()
    raise ValueError(f"unknown part={part!r}; expected one of {', '.join(PARTS)}")


def part_io(part: ExportPart) -> tuple[list[str], list[str], list[tuple[int, ...]]]:
    """Input names, output names and input shapes with -1 for the dynamic H and W (batch 1) of ``part``."""
    if part == "stage":
        return ["frames"], ["restored"], [(3, 1, 3, -1, -1)]
    if part == "flow":
        return ["reference", "neighbour"], ["flow"], [(1, 3, -1, -1), (1, 3, -1, -1)]
    if part == "reconstruction":
        return ["inputs"], ["restored"], [(1, 10, -1, -1)]
    if part == "alignment":
        return ["frames"], ["inputs"], [(3, 1, 3, -1, -1)]
    raise ValueError(f"unknown part={part!r}; expected one of {', '.join(PARTS)}")


def example_inputs(part: ExportPart, size: tuple[int, int], *, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of ``part`` at ``size`` = (H, W): frames uniform in [0, 1] (float32, CPU)."""
    height, width = size
    if height % 4 or width % 4 or height < 4 or width < 4:
        raise ValueError(f"size must be multiples of 4, instead got {height}x{width}")
    generator = torch.Generator().manual_seed(seed)
    _, _, shapes = part_io(part)
    return tuple(torch.rand(*shape[:-2], height, width, generator=generator) for shape in shapes)


def export_onnx(
    model: CDVDTSP,
    path: str | os.PathLike,
    *,
    part: ExportPart = "stage",
    example_size: tuple[int, int] = EXAMPLE_SIZE,
    opset: int = ONNX_OPSET,
) -> Path:
    """Write ``part`` of ``model`` to an ONNX file with dynamic H and W (batch fixed as in :func:`part_io`).

    The file appears whole or not at all. Runs with ONNX Runtime (``CPUExecutionProvider``,
    ``CUDAExecutionProvider``) and TensorRT (``trtexec --onnx=...``).

    Args:
        model: the network (weights on any device; exported from a CPU float32 copy).
        path: the ``.onnx`` file to write.
        part: one of :data:`PARTS` (module docstring).
        example_size: (H, W) traced; multiples of 4.
        opset: ONNX opset (>= 16 for GridSample).

    Returns:
        ``path``.
    """
    module = part_module(cpu_float_model(model), part)
    names_in, names_out, _ = part_io(part)
    inputs = example_inputs(part, example_size)
    ranks = [x.dim() for x in inputs] + [5 if part == "stage" else 4] * len(names_out)  # H and W last in each
    names = names_in + names_out
    dynamic = {name: {rank - 2: "height", rank - 1: "width"} for name, rank in zip(names, ranks, strict=True)}
    path = Path(path)
    with atomic_destination(path) as tmp, torch.no_grad():
        # the TorchScript exporter: the models keep traced sizes in the graph (see cdvd.models), which gives
        # dynamic H and W; torch.export cannot prove the pyramid's shapes line up for every padded size
        torch.onnx.export(
            module,
            inputs,
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=dynamic,
        )
    logger.info("wrote %s (%s, ONNX opset %d, dynamic height and width)", path, part, opset)
    return path


def convert_openvino(
    model: CDVDTSP, *, part: ExportPart = "stage", size: tuple[int, int] | None = None
) -> object:  # openvino.Model
    """``part`` of ``model`` as an ``openvino.Model``: static at ``size`` = (H, W), or dynamic H and W if None."""
    ov = import_openvino()
    module = part_module(model, part)
    _, _, shapes = part_io(part)
    example = example_inputs(part, size or EXAMPLE_SIZE)
    if size is None:
        input_shapes = [ov.PartialShape(list(shape)) for shape in shapes]
    else:
        input_shapes = [ov.PartialShape(list(x.shape)) for x in example]
    with torch.no_grad():
        return ov.convert_model(module, example_input=example if len(example) > 1 else example[0], input=input_shapes)


def export_openvino(
    model: CDVDTSP,
    path: str | os.PathLike,
    *,
    part: ExportPart = "stage",
) -> Path:
    """Write ``part`` of ``model`` as OpenVINO IR (``path`` = ``.xml`` plus its ``.bin``), dynamic H and W.

    Weights stay float32 (no fp16 compression); choose bf16 at compile time with
    ``INFERENCE_PRECISION_HINT`` (see :mod:`cdvd.backends.openvino`). Both files appear whole or not at all.

    Returns:
        ``path`` (the ``.xml``).
    """
    ov = import_openvino()
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"the OpenVINO IR path must end in .xml, instead got {path}")
    converted = convert_openvino(cpu_float_model(model), part=part)
    with atomic_destination(path) as tmp_xml:
        tmp_bin = tmp_xml.with_suffix(".bin")
        try:
            ov.save_model(converted, str(tmp_xml), compress_to_fp16=False)
            commit(tmp_bin, path.with_suffix(".bin"))  # fsynced and renamed, as the .xml after it
        finally:
            tmp_bin.unlink(missing_ok=True)
    logger.info("wrote %s and %s (%s, dynamic height and width)", path, path.with_suffix(".bin").name, part)
    return path


@dataclass(frozen=True)
class ExportCheck:
    """How closely an exported file reproduces torch on one random input."""

    path: str
    runtime: str  # onnxruntime | openvino
    part: str
    size: tuple[int, int]
    max_abs_diff: float
    psnr: float  # dB, peak 1.0; inf when identical

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def agreement(reference: torch.Tensor | np.ndarray, other: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """``(max abs difference, PSNR in dB with peak 1.0)`` of ``other`` against ``reference`` (any equal shapes)."""
    ref = torch.as_tensor(np.asarray(reference), dtype=torch.float64)
    got = torch.as_tensor(np.asarray(other), dtype=torch.float64)
    if ref.shape != got.shape:
        raise ValueError(f"outputs differ in shape: {tuple(ref.shape)} and {tuple(got.shape)}")
    diff = (got - ref).abs()
    mse = float(diff.pow(2).mean())
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    return float(diff.max()), psnr


def verify_export(
    model: CDVDTSP,
    path: str | os.PathLike,
    *,
    part: ExportPart = "stage",
    size: tuple[int, int] = (72, 100),
    seed: int = 0,
) -> ExportCheck:
    """Run an exported ``.onnx`` (ONNX Runtime) or ``.xml`` (OpenVINO, fp32) on a random input and compare.

    The default ``size`` differs from the traced :data:`EXAMPLE_SIZE` on purpose: it checks the dynamic size.

    Args:
        model: the network the file was exported from.
        path: the exported file.
        part: the part the file holds.
        size: (H, W) of the random input, multiples of 4.
        seed: seed of the random input.

    Returns:
        :class:`ExportCheck` with the max abs difference and PSNR against torch float32 on the CPU.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path}")
    inputs = example_inputs(part, size, seed=seed)
    with torch.no_grad():
        expected = part_module(cpu_float_model(model), part)(*inputs).numpy()
    if path.suffix == ".onnx":
        runtime = "onnxruntime"
        got = _run_onnx(path, part, inputs)
    elif path.suffix == ".xml":
        runtime = "openvino"
        ov = import_openvino()
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled([x.numpy() for x in inputs])[0]
    else:
        raise ValueError(f"cannot verify {path}: expected a .onnx or .xml file")
    max_abs, psnr = agreement(expected, got)
    check = ExportCheck(str(path), runtime, part, size, max_abs, psnr)
    logger.info("%s via %s at %dx%d: max abs diff %.3g, PSNR %.1f dB", path, runtime, size[1], size[0], max_abs, psnr)
    return check


def _run_onnx(path: Path, part: ExportPart, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"verifying an ONNX export needs onnxruntime: {EXPORT_EXTRA}") from err
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names, _, _ = part_io(part)
    return session.run(None, {name: x.numpy() for name, x in zip(names, inputs, strict=True)})[0]


def import_openvino():  # noqa: ANN201 - the openvino module
    """``import openvino``, or an ImportError that says how to install it."""
    try:
        import openvino
    except ImportError as err:
        raise ImportError(f"backend=openvino needs the optional extra: {OPENVINO_EXTRA}") from err
    return openvino


def cpu_float_model(model: CDVDTSP) -> CDVDTSP:
    """``model`` itself when already on the CPU in float32; otherwise a CPU float32 copy (the caller's stays)."""
    param = next(model.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return model
    import copy

    return copy.deepcopy(model).to("cpu", torch.float32)
