"""One cascade stage run by OpenVINO: a drop-in for :meth:`cdvd.models.CDVDTSP.restore_centres` on the CPU.

The stage is converted from torch once (dynamic frame size) and compiled once per frame size (static shapes run
faster on OpenVINO's CPU plugin); compiled models are kept per (H, W). ``precision="bf16"`` sets
``INFERENCE_PRECISION_HINT``: OpenVINO then runs the convolutions in bf16 where the CPU has native bf16 (AVX-512
BF16, AMX). On CPUs without it OpenVINO keeps f32 (checked on an AVX2-only AMD EPYC: the compiled model
reports ``f32``), so a bf16 request costs nothing there but gains nothing either; use
:func:`cdvd.hardware.resolve_precision` with ``auto`` to choose.

Converting the stage from torch takes longer than deblurring a few frames, so with a ``cache_dir`` the converted
model is kept on disk (``<cache_dir>/openvino/ir/<key>/``) and later processes read it instead. The key is a
SHA-256 over everything the conversion depends on: the weights, the architecture, the source of the network and
conversion code, and the torch and OpenVINO versions; the files' own SHA-256 are recorded beside them and checked
on every read, so a damaged or foreign file is converted again, never used. Compiled models go to OpenVINO's own
cache (``CACHE_DIR`` = ``<cache_dir>/openvino/compiled``), which OpenVINO keys by model, device and settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from cdvd.atomic import remove_stale_temp_files, temp_path
from cdvd.export import convert_openvino, cpu_float_model, import_openvino
from cdvd.fingerprint import file_sha256, source_sha256, weights_sha256
from cdvd.models import CDVDTSP

logger = logging.getLogger(__name__)

OPENVINO_PRECISIONS: dict[str, str] = {"fp32": "f32", "bf16": "bf16"}
CACHE_FORMAT = 1  # bump when the cache's layout or record changes
RECORD = "record.json"
STAGE_FILES = ("stage.xml", "stage.bin")  # what save_model writes for the stage; the record holds their SHA-256


class OpenVINOStage:
    """``restore_centres`` of a :class:`CDVDTSP` through OpenVINO.

    The weights are read once, when the stage is built: build a new stage after changing them.

    Args:
        model: the network (any device; converted from a CPU float32 view of its weights).
        precision: ``fp32`` or ``bf16`` (``INFERENCE_PRECISION_HINT``; only honoured on CPUs with native bf16).
        cache_dir: where converted and compiled models are kept for later processes (see the module docstring),
            or None to convert and compile in memory only.
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
        self._config: dict[str, object] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision]}
        if num_threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = int(num_threads)
        if cache_dir is None:
            self._model = convert_openvino(cpu_float_model(model), part="stage")
        else:
            root = Path(cache_dir) / "openvino"
            self._model = cached_stage(model, root / "ir", self._core)
            compiled = root / "compiled"
            try:
                compiled.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                logger.warning("no OpenVINO compiled-model cache in %s (%s): compiling in every run", compiled, err)
            else:
                self._core.set_property({"CACHE_DIR": str(compiled)})
        self._compiled: dict[tuple[int, int], object] = {}
        self._requests: dict[tuple[int, int], object] = {}

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

    def request_for(self, height: int, width: int) -> object:
        """The infer request that runs (H, W) frames, made once per compiled model and reused by every call (a
        request holds its intermediate buffers; results are copied out of it)."""
        key = (int(height), int(width))
        request = self._requests.get(key)
        if request is None:
            request = self.compiled_for(*key).create_infer_request()  # type: ignore[attr-defined]
            self._requests[key] = request
        return request

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
        request = self.request_for(h, w)
        array = frames.detach().to("cpu", torch.float32).numpy()
        out = np.empty((t - 2, b, 3, h, w), dtype=np.float32)
        for centre in range(1, t - 1):
            for k in range(b):
                window = np.ascontiguousarray(array[centre - 1 : centre + 2, k : k + 1])
                out[centre - 1, k] = request.infer([window])[0][0, 0]
        return torch.from_numpy(out).to(frames.device)

    __call__ = restore_centres


def conversion_key(model: CDVDTSP) -> str:
    """SHA-256 over what the converted stage of ``model`` depends on: equal keys, identical conversions."""
    ov = import_openvino()
    record = {
        "format": CACHE_FORMAT,
        "part": "stage",
        "weights_sha256": weights_sha256(model),
        "architecture": {"n_feat": model.n_feat, "n_resblock": model.n_resblock, "residual": model.residual},
        "code_sha256": source_sha256("models", "export.py"),
        "torch": torch.__version__,
        "openvino": ov.get_version(),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cached_stage(model: CDVDTSP, folder: str | os.PathLike, core: object) -> object:
    """The stage of ``model`` as an ``openvino.Model``: read from ``folder/<key>/`` when a whole, matching
    conversion is there; otherwise converted and saved there (atomically: a folder renamed into place) for the next
    process, and read back, so that the first run computes exactly what later ones do. A cache that cannot be
    written costs the saving only (a warning), never the run.
    """
    ov = import_openvino()
    key = conversion_key(model)
    entry = Path(folder) / key
    if entry.is_dir():
        problem = _check_entry(entry)
        if problem is None:
            try:
                converted = core.read_model(str(entry / "stage.xml"))  # type: ignore[attr-defined]
            except RuntimeError as err:
                problem = f"OpenVINO cannot read it ({err})"
            else:
                logger.info("OpenVINO stage read from the cache %s", entry)
                return converted
        logger.warning("ignoring the cached OpenVINO stage %s: %s; converting again", entry, problem)
        shutil.rmtree(entry, ignore_errors=True)
    converted = convert_openvino(cpu_float_model(model), part="stage")
    try:
        _save_entry(ov, converted, entry)
    except OSError as err:
        logger.warning("could not cache the converted OpenVINO stage in %s (%s); later runs convert again", entry, err)
        return converted
    logger.info("OpenVINO stage converted and cached in %s", entry)
    # run what later processes will read: the saved model can differ from the in-memory one in the last bit
    return core.read_model(str(entry / "stage.xml"))  # type: ignore[attr-defined]


def _check_entry(entry: Path) -> str | None:
    """None when ``entry`` holds the files its record lists with their recorded digests, else what is wrong."""
    try:
        record = json.loads((entry / RECORD).read_text(encoding="utf-8"))
        expected = dict(record["sha256"])
        for name in STAGE_FILES:
            if file_sha256(entry / name) != expected[name]:
                return f"{name} differs from what was saved"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"incomplete ({err})"
    return None


def _save_entry(ov: object, converted: object, entry: Path) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(entry.parent)
    tmp = temp_path(entry)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        ov.save_model(converted, str(tmp / "stage.xml"), compress_to_fp16=False)  # type: ignore[attr-defined]
        digests = {name: file_sha256(tmp / name) for name in STAGE_FILES}
        (tmp / RECORD).write_text(json.dumps({"format": CACHE_FORMAT, "sha256": digests}, indent=1) + "\n")
        try:
            os.replace(tmp, entry)
        except OSError:
            if not entry.is_dir():  # not another process that saved the same conversion first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _type_name(element_type: object) -> str:
    """``f32``, ``bf16``, ... of an ``openvino.Type`` (or of its string form)."""
    name = getattr(element_type, "get_type_name", None)
    return name() if callable(name) else str(element_type).lower()
