"""Export the network for deployment: ONNX and OpenVINO IR, with dynamic frame height and width.

Five parts can be exported (``part``; inputs and outputs declared in :data:`cdvd.backends.graphs.SIGNATURES`, the
ONNX dimensions named ``height`` and ``width``):

* ``full``: the whole two-stage cascade, :meth:`CDVDTSP.forward`'s ``out``: 5 frames -> the centre frame restored
  (stage 1 on the three overlapping triples, stage 2 on the three stage-1 results). One call per output frame,
  nothing kept between calls.
* ``stage``: one cascade stage, :meth:`CDVDTSP.restore_centres` on three consecutive frames. The deblurring engine
  calls exactly this once per stage and frame, so an exported stage keeps the streaming reuse of the torch engine:
  two stage calls per output frame, where ``full`` runs stage 1 on three triples every time.
* ``flow``: PWC-Net with its resize wrapper, the flow in pixels.
* ``reconstruction``: the encoder-decoder.
* ``alignment``: the rest of a stage (flow, warps and the sharpness prior: the reconstruction net's inputs). Deploy
  the two apart to run ``alignment`` in float32 and ``reconstruction`` in a lower precision (as
  ``backend=openvino`` does).

Frames are RGB in [0, 1], H and W multiples of 4 (pad with :func:`cdvd.models.padding.pad_to_multiple`). The
exporters trace the network (TorchScript); the models in :mod:`cdvd.models` keep the frame size in the traced
graph, so one export serves every frame size. :func:`verify_export` runs an exported file on a random input and
compares it with torch. :func:`run_export` is ``cdvd-export``: the settings checked, every file exported and
checked, and ``export_check.json`` written beside them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cdvd.atomic import atomic_destination, check_writable_place, commit, write_text_atomic
from cdvd.backends.graphs import (
    EXAMPLE_SIZE,
    PARTS,
    ExportPart,
    PartSignature,
    convert_openvino,
    cpu_float_model,
    example_inputs,
    exporter_warnings_logged,
    import_openvino,
    part_io,
    part_module,
)
from cdvd.checkpoints import given_checkpoint, load_model
from cdvd.data.sources import check_apart, special_kind
from cdvd.errors import ConfigError, check_count
from cdvd.models import CDVDTSP
from cdvd.runtime import signal_stack_kept
from cdvd.settings import number, read_settings

logger = logging.getLogger(__name__)

ONNX_OPSET = 17  # GridSample needs 16; 17 is widely supported by ONNX Runtime and TensorRT
EXPORT_EXTRA = "pip install 'cdvd[export]'"
FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
CHECK_REPORT = "export_check.json"
"""Each exported file's agreement to torch, written beside them."""


def export_onnx(
    model: CDVDTSP,
    path: str | os.PathLike,
    *,
    part: ExportPart = "stage",
    example_size: tuple[int, int] = EXAMPLE_SIZE,
    opset: int = ONNX_OPSET,
) -> Path:
    """Write ``part`` of ``model`` to an ONNX file with dynamic H and W (batch fixed as in :func:`part_io`).

    Every input and output declares its shape: fixed sizes as numbers, the frame size as ``height`` and ``width``.
    The exporters' warnings go to one DEBUG line. The file appears whole or not at all. Runs with ONNX Runtime
    (``CPUExecutionProvider``, ``CUDAExecutionProvider``) and TensorRT (``trtexec --onnx=...``). ``model``'s weights
    may be on any device (a CPU float32 copy is exported); ``example_size``: the (H, W) traced, multiples of 4;
    ``opset`` >= 16 (GridSample).
    """
    module = part_module(cpu_float_model(model), part)
    signature = part_io(part)
    inputs = example_inputs(part, example_size)
    shapes = {**signature.inputs, **signature.outputs}
    dynamic = {
        name: {axis: dim for axis, dim in enumerate(signature.named_dims(shape)) if isinstance(dim, str)}
        for name, shape in shapes.items()
    }
    path = Path(path)
    with atomic_destination(path) as tmp, torch.no_grad():
        # the TorchScript exporter: the models keep traced sizes in the graph (see cdvd.models), which gives
        # dynamic H and W; torch.export cannot prove the pyramid's shapes line up for every padded size
        with exporter_warnings_logged(f"{part} to ONNX"):
            torch.onnx.export(
                module,
                inputs,
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=list(signature.inputs),
                output_names=list(signature.outputs),
                dynamic_axes=dynamic,
            )
        _declare_shapes(tmp, signature)
    logger.info("wrote %s (%s, ONNX opset %d, dynamic height and width)", path, part, opset)
    return path


def _declare_shapes(path: Path, signature: PartSignature) -> None:
    """Name the dimensions of the ONNX file's inputs and outputs as ``signature`` declares them: the exporter names
    those it could not fix from the trace after the node computing them (``Reshaperestored_dim_0``). ONNX's checker
    runs on the result, and a declared size that contradicts the graph's is refused."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    inputs = {name: signature.named_dims(shape) for name, shape in signature.inputs.items()}
    outputs = {name: signature.named_dims(shape) for name, shape in signature.outputs.items()}
    onnx.save(update_inputs_outputs_dims(onnx.load(str(path)), inputs, outputs), str(path))


def export_openvino(
    model: CDVDTSP,
    path: str | os.PathLike,
    *,
    part: ExportPart = "stage",
) -> Path:
    """Write ``part`` of ``model`` as OpenVINO IR (``path`` = ``.xml`` plus its ``.bin``), dynamic H and W.

    Weights stay float32 (no fp16 compression); choose bf16 at compile time with
    ``INFERENCE_PRECISION_HINT`` (see :mod:`cdvd.backends.openvino`). Both files appear whole or not at all.
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
    """Run the file ``path`` holding ``part`` of ``model``, an ``.onnx`` (ONNX Runtime) or ``.xml`` (OpenVINO, fp32),
    on a random (H, W) = ``size`` input (multiples of 4, drawn with ``seed``) and compare it with torch float32 on the
    CPU. The default ``size`` differs from the traced :data:`EXAMPLE_SIZE` on purpose: it checks the dynamic size.
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
        with signal_stack_kept():  # OpenVINO's compile leaves the thread a signal stack it frees later
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
    names = part_io(part).inputs
    return session.run(None, {name: x.numpy() for name, x in zip(names, inputs, strict=True)})[0]


ExportJob = tuple[str, ExportPart, Path]  # (format, part, path)


@dataclass
class ExportSettings:
    """``cdvd-export``'s settings (``configs/export.yaml``), checked before the model is loaded."""

    checkpoint: str | None
    output: str
    formats: list[str]
    parts: list[str]
    check_size: Any  # [H, W], multiples of 4
    tolerance: float = number()
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in self.formats:
            if name not in FORMATS:
                raise ConfigError(f"formats: {name} is not one of {', '.join(FORMATS)}")
        for part in self.parts:
            if part not in PARTS:
                raise ConfigError(f"parts: {part} is not one of {', '.join(PARTS)}")
        sides = [check_count("check_size", side, 4) for side in self.check_size]
        if len(sides) != 2 or any(side % 4 for side in sides):
            raise ConfigError(f"check_size={self.check_size}: expected [H, W], multiples of 4 (e.g. [72, 100])")


def plan_export(cfg: DictConfig) -> tuple[ExportSettings, list[ExportJob]]:
    """``cdvd-export``'s settings checked and the exports asked for, ``(format, part, path)``, with the destination
    checked (:func:`check_destination`): all before the model is loaded.

    Raises:
        ConfigError: naming the setting.
    """
    settings = read_settings(ExportSettings, cfg)
    checkpoint = given_checkpoint(settings.checkpoint)
    output = Path(settings.output)
    jobs = [(name, part, output / f"{part}{FORMATS[name]}") for name in settings.formats for part in settings.parts]
    check_destination(output, written_files(output, jobs), checkpoint=checkpoint, overwrite=settings.overwrite)
    return settings, jobs


def written_files(output: Path, jobs: list[ExportJob]) -> list[Path]:
    """Every file an export writes: each exported file (an OpenVINO ``.xml`` with its ``.bin``) and the report."""
    files = [path for _, _, path in jobs]
    files += [path.with_suffix(".bin") for name, _, path in jobs if name == "openvino"]
    return [*files, output / CHECK_REPORT]


def check_destination(output: Path, files: list[Path], *, checkpoint: Path, overwrite: bool) -> None:
    """Before the model loads: ``output`` is a folder (or can be made) that takes files, none of ``files`` is a
    folder, a FIFO or a device or the checkpoint itself, and none exists unless ``overwrite`` (the files of an
    earlier export are replaced only when asked, as anything else there).

    Raises:
        ConfigError: naming ``output`` and the path in the way.
    """
    if (output.exists() or output.is_symlink()) and not output.is_dir():
        kind = special_kind(output) or "a file"
        raise ConfigError(f"output={output} is {kind}: the exported files go into a folder; pass output=DIR")
    check_writable_place(output, "output")
    for path in files:
        check_apart({"output": path}, {"checkpoint": checkpoint})
        kind = "a folder" if path.is_dir() else special_kind(path)
        if kind is not None:
            raise ConfigError(
                f"output={output}: {path} is {kind}, where the export writes a file; pass another output="
            )
    existing = [str(path) for path in files if path.exists() or path.is_symlink()]
    if existing and not overwrite:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigError(f"{', '.join(existing)} {verb}: pass overwrite=true to replace, or another output=")


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """``cdvd-export``: export every (format, part) asked for, check each file against torch at ``check_size``,
    and write the checks to ``export_check.json`` beside them (configs/export.yaml has the settings).

    Raises:
        ConfigError: a bad setting, a missing extra, or an exported file whose output differs from torch's by more
            than ``tolerance``.
    """
    settings, jobs = plan_export(cfg)
    output = Path(settings.output)
    model = load_model(settings.checkpoint, "cpu", corr_backend="torch").eval()
    size = tuple(settings.check_size)
    checks = []
    for name, part, path in jobs:
        try:
            if name == "onnx":
                export_onnx(model, path, part=part)
            else:
                export_openvino(model, path, part=part)
            check = verify_export(model, path, part=part, size=size)
        except ImportError as err:
            raise ConfigError(f"formats={name} needs the optional extra: {EXPORT_EXTRA} ({err})") from err
        logger.info("%s: max abs difference to torch %.2e, PSNR %.1f dB", path, check.max_abs_diff, check.psnr)
        if not check.max_abs_diff <= settings.tolerance:
            raise ConfigError(
                f"{path} differs from torch by {check.max_abs_diff:.2e} (tolerance={cfg.tolerance}): not trusted"
            )
        checks.append(asdict(check))
    report = {"checkpoint": str(settings.checkpoint), "settings": OmegaConf.to_container(cfg), "checks": checks}
    write_text_atomic(output / CHECK_REPORT, json.dumps(report, indent=2, default=str) + "\n")
    logger.info("%d exported file(s) checked against torch: %s", len(checks), output)
    return report
