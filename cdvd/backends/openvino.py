"""One cascade stage run by OpenVINO: a drop-in for :meth:`cdvd.models.CDVDTSP.restore_centres` on the CPU.

The stage is converted from torch once (dynamic frame size) and compiled once per frame size (static shapes run
faster on OpenVINO's CPU plugin); compiled models are kept per (H, W). ``precision="bf16"`` sets
``INFERENCE_PRECISION_HINT``: OpenVINO then runs the convolutions in bf16 where the CPU has native bf16 (AVX-512
BF16, AMX). On CPUs without it OpenVINO keeps f32 (checked on an AVX2-only AMD EPYC: the compiled model
reports ``f32``), so a bf16 request costs nothing there but gains nothing either; use
:func:`cdvd.hardware.resolve_precision` with ``auto`` to choose.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from cdvd.export import convert_openvino, cpu_float_model, import_openvino
from cdvd.models import CDVDTSP

logger = logging.getLogger(__name__)

OPENVINO_PRECISIONS: dict[str, str] = {"fp32": "f32", "bf16": "bf16"}


class OpenVINOStage:
    """``restore_centres`` of a :class:`CDVDTSP` through OpenVINO.

    The weights are read once, when the stage is built: build a new stage after changing them.

    Args:
        model: the network (any device; converted from a CPU float32 view of its weights).
        precision: ``fp32`` or ``bf16`` (``INFERENCE_PRECISION_HINT``; only honoured on CPUs with native bf16).
        cache_dir: OpenVINO's compiled-model cache folder (``CACHE_DIR``), or None for none.
        device: OpenVINO device name (``CPU``, ``GPU``, ``AUTO``).
        num_threads: CPU inference threads (``INFERENCE_NUM_THREADS``), or None for OpenVINO's default.

    Raises:
        ImportError: openvino is not installed (the message says how to install it).
        ValueError: an unknown ``precision``.
    """

    def __init__(
        self,
        model: CDVDTSP,
        *,
        precision: str = "fp32",
        cache_dir: str | os.PathLike | None = None,
        device: str = "CPU",
        num_threads: int | None = None,
    ) -> None:
        ov = import_openvino()
        if precision not in OPENVINO_PRECISIONS:
            raise ValueError(
                f"backend=openvino supports precision=fp32 or bf16 (resolve auto first), instead got {precision!r}"
            )
        self.precision = precision
        self.device = device
        self._core = ov.Core()
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            self._core.set_property({"CACHE_DIR": str(cache_dir)})
        self._config: dict[str, object] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision]}
        if num_threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = int(num_threads)
        self._model = convert_openvino(cpu_float_model(model), part="stage")
        self._compiled: dict[tuple[int, int], object] = {}

    def compiled_for(self, height: int, width: int) -> object:
        """The compiled model for (H, W) frames (an ``openvino.CompiledModel``), compiling it on first use."""
        key = (int(height), int(width))
        compiled = self._compiled.get(key)
        if compiled is None:
            ov = import_openvino()
            sized = self._model.clone()
            sized.reshape({sized.inputs[0].get_any_name(): ov.PartialShape([3, 1, 3, key[0], key[1]])})
            compiled = self._core.compile_model(sized, self.device, self._config)
            actual = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
            if actual != OPENVINO_PRECISIONS[self.precision]:
                logger.warning(
                    "OpenVINO runs %dx%d frames at %s, not the requested %s (no native support on this %s)",
                    key[1],
                    key[0],
                    actual,
                    self.precision,
                    self.device,
                )
            logger.info("OpenVINO stage compiled for %dx%d frames (%s, %s)", key[1], key[0], self.device, actual)
            self._compiled[key] = compiled
        return compiled

    def inference_precision(self, height: int, width: int) -> str:
        """The precision OpenVINO actually runs (H, W) frames at (``f32`` or ``bf16``)."""
        return _type_name(self.compiled_for(height, width).get_property("INFERENCE_PRECISION_HINT"))

    def restore_centres(self, frames: torch.Tensor) -> torch.Tensor:
        """One cascade stage, as :meth:`CDVDTSP.restore_centres`.

        Args:
            frames: (T, B, 3, H, W) RGB in [0, 1], T >= 3, H and W multiples of 4; any device and float dtype.

        Returns:
            (T - 2, B, 3, H, W) float32 on ``frames``' device: frame t restored from frames t - 1, t, t + 1.
        """
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"a cascade stage expects (T, B, 3, H, W) frames, instead got {tuple(frames.shape)}")
        t, b, _, h, w = frames.shape
        if t < 3:
            raise ValueError(f"a cascade stage needs at least 3 frames, instead got {t}")
        compiled = self.compiled_for(h, w)
        array = frames.detach().to("cpu", torch.float32).numpy()
        out = np.empty((t - 2, b, 3, h, w), dtype=np.float32)
        request = compiled.create_infer_request()
        for centre in range(1, t - 1):
            for k in range(b):
                window = np.ascontiguousarray(array[centre - 1 : centre + 2, k : k + 1])
                out[centre - 1, k] = request.infer([window])[0][0, 0]
        return torch.from_numpy(out).to(frames.device)

    __call__ = restore_centres


def _type_name(element_type: object) -> str:
    """``f32``, ``bf16``, ... of an ``openvino.Type`` (or of its string form)."""
    name = getattr(element_type, "get_type_name", None)
    return name() if callable(name) else str(element_type).lower()
