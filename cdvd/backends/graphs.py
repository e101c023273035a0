"""The network's parts as traceable graphs, and their conversion to OpenVINO: what a backend runs and what
:mod:`cdvd.export` writes (the deployment tool depends on this module, not the reverse).

Parts (``part``): ``full`` (the whole two-stage cascade), ``stage`` (one cascade stage), ``flow`` (PWC-Net),
``reconstruction`` (the encoder-decoder) and ``alignment`` (flow, warps and the sharpness prior: the reconstruction's
inputs). Each part's inputs and outputs, with their shapes, are declared once, in :data:`SIGNATURES`.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

import torch
from torch import nn

from cdvd.models import CDVDTSP

logger = logging.getLogger(__name__)

ExportPart = Literal["full", "stage", "flow", "reconstruction", "alignment"]
EXAMPLE_SIZE = (64, 96)  # the size traced; any other size works with the exported graph
OPENVINO_EXTRA = "pip install 'cdvd[openvino]'"
DYNAMIC_DIMS = ("height", "width")  # the names of the last two dimensions of every input and output


@dataclass(frozen=True)
class PartSignature:
    """A part's input and output names with their shapes: -1 for the dynamic height and width (the last two)."""

    inputs: Mapping[str, tuple[int, ...]]
    outputs: Mapping[str, tuple[int, ...]]

    def named_dims(self, shape: tuple[int, ...]) -> list[int | str]:
        """``shape`` with its dynamic dimensions named (:data:`DYNAMIC_DIMS`), the fixed ones as they are."""
        return [DYNAMIC_DIMS[i - len(shape) + 2] if size < 0 else size for i, size in enumerate(shape)]


SIGNATURES: dict[str, PartSignature] = {
    "full": PartSignature({"frames": (5, 1, 3, -1, -1)}, {"restored": (1, 1, 3, -1, -1)}),
    "stage": PartSignature({"frames": (3, 1, 3, -1, -1)}, {"restored": (1, 1, 3, -1, -1)}),
    "flow": PartSignature({"reference": (1, 3, -1, -1), "neighbour": (1, 3, -1, -1)}, {"flow": (1, 2, -1, -1)}),
    "reconstruction": PartSignature({"inputs": (1, 10, -1, -1)}, {"restored": (1, 3, -1, -1)}),
    "alignment": PartSignature({"frames": (3, 1, 3, -1, -1)}, {"inputs": (1, 10, -1, -1)}),
}
PARTS: tuple[str, ...] = tuple(SIGNATURES)


class _ModelGraph(nn.Module):
    """A graph over the whole network (its weights under ``model.``)."""

    def __init__(self, model: CDVDTSP) -> None:
        super().__init__()
        self.model = model


class FullGraph(_ModelGraph):
    """The whole cascade as a module: (5, 1, 3, H, W) frames -> (1, 1, 3, H, W), :meth:`CDVDTSP.forward`'s ``out``
    (stage 1 on the three overlapping triples, stage 2 on the three stage-1 results)."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model(frames.transpose(0, 1)).out.unsqueeze(0)


class StageGraph(_ModelGraph):
    """One cascade stage as a module: (3, 1, 3, H, W) frames -> (1, 1, 3, H, W) restored centre."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.restore_centres(frames)


class FlowGraph(nn.Module):
    """PWC-Net flow as a module: (B, 3, H, W) reference and neighbour -> (B, 2, H, W) flow in pixels."""

    def __init__(self, model: CDVDTSP) -> None:
        super().__init__()
        self.flow = model.flow

    def forward(self, reference: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        return self.flow(reference, neighbour)


class AlignmentGraph(_ModelGraph):
    """The reconstruction net's inputs of one stage: (3, 1, 3, H, W) frames -> (1, 10, H, W)."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.aligned_inputs(frames)


def part_module(model: CDVDTSP, part: ExportPart) -> nn.Module:
    """The module that ``part`` exports (sharing ``model``'s weights), in eval mode."""
    part_io(part)
    model.eval()
    if part == "reconstruction":
        return model.recons.eval()
    graphs = {"full": FullGraph, "stage": StageGraph, "flow": FlowGraph, "alignment": AlignmentGraph}
    return graphs[part](model).eval()


def part_io(part: ExportPart) -> PartSignature:
    """The inputs and outputs of ``part`` (batch 1; height and width dynamic)."""
    if part not in SIGNATURES:
        raise ValueError(f"unknown part={part!r}; expected one of {', '.join(PARTS)}")
    return SIGNATURES[part]


def example_inputs(part: ExportPart, size: tuple[int, int], *, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of ``part`` at ``size`` = (H, W): frames uniform in [0, 1] (float32, CPU)."""
    height, width = size
    if height % 4 or width % 4 or height < 4 or width < 4:
        raise ValueError(f"size must be multiples of 4, instead got {height}x{width}")
    generator = torch.Generator().manual_seed(seed)
    shapes = part_io(part).inputs.values()
    return tuple(torch.rand(*shape[:-2], height, width, generator=generator) for shape in shapes)


@contextmanager
def exporter_warnings_logged(what: str) -> Iterator[None]:
    """Keep the warnings raised while tracing and converting (``TracerWarning``, torch.onnx's constant folding,
    OpenVINO's) off the terminal: they describe how the tracer sees shape arithmetic the export then checks by
    running the file (:func:`cdvd.export.verify_export`), nothing a user can act on. One DEBUG line counts them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if caught:
        kinds = Counter(w.category.__name__ for w in caught)
        places = sorted({f"{'/'.join(PurePath(w.filename).parts[-2:])}:{w.lineno}" for w in caught})
        summary = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
        logger.debug("%s: %s kept off the terminal (from %s)", what, summary, ", ".join(places))


def convert_openvino(
    model: CDVDTSP, *, part: ExportPart = "stage", size: tuple[int, int] | None = None
) -> object:  # openvino.Model
    """``part`` of ``model`` as an ``openvino.Model``: static at ``size`` = (H, W), or dynamic H and W if None."""
    ov = import_openvino()
    module = part_module(model, part)
    example = example_inputs(part, size or EXAMPLE_SIZE)
    shapes = part_io(part).inputs.values() if size is None else [x.shape for x in example]
    input_shapes = [ov.PartialShape(list(shape)) for shape in shapes]
    with torch.no_grad(), exporter_warnings_logged(f"{part} to OpenVINO"):
        return ov.convert_model(module, example_input=example if len(example) > 1 else example[0], input=input_shapes)


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
    return copy.deepcopy(model).to("cpu", torch.float32)
