"""One cascade stage run by OpenVINO: a drop-in for :meth:`cdvd.models.CDVDTSP.restore_centres` on the CPU.

The stage runs as two models (parts of :mod:`cdvd.backends.graphs`): ``alignment`` (flow, warps and the sharpness prior)
always in f32, then ``reconstruction``, at the chosen precision. Both are converted from torch once (dynamic frame size)
and compiled once per frame size (static shapes run faster on OpenVINO's CPU plugin). ``precision="bf16"`` sets the
reconstruction's ``INFERENCE_PRECISION_HINT``; the stage takes a precision already resolved by the engine
(:func:`cdvd.hardware.resolve_precision`, the one place that keeps bf16 to CPUs that compute it natively: emulated bf16
is slower than f32 and its frames are worse).
Flow is precision-sensitive (bf16 sampling coordinates are whole pixels off past 256), and a model compiled in
bf16 as a whole computed it in bf16 even where its layers were marked to stay f32, hence the two models.

Converting takes longer than deblurring a few frames, and compiling several seconds, so with a ``cache_dir`` both are
kept on disk for later processes, under ``<cache_dir>/openvino/``:

* ``ir/<key>/``: the converted parts (``alignment.xml``/``.bin``, ``reconstruction.xml``/``.bin``). The key is a
  SHA-256 over everything the conversion depends on: the weights, the architecture, the source of the network and
  conversion code, and the torch and OpenVINO versions.
* ``compiled/<key>/``: one part compiled for one frame size (``<part>.blob``, from ``export_model``). The key is a
  SHA-256 over the converted part's files, the frame size, the device and its settings, the OpenVINO version and the
  processor (its name and flags).

Every entry records its files' SHA-256 (``record.json``), and every read checks the bytes it is about to use against
them: a damaged or foreign file is never used, the entry is made again. Entries are written whole or not at all (a
folder renamed into place) and only ever replaced when this user's cdvd made them. A cache that cannot be written
(another user's, read-only) is still read: what verifies is used, the rest is converted or compiled in memory, and
one warning says so; nothing in it is deleted or written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from cdvd.atomic import atomic_folder
from cdvd.backends.graphs import convert_openvino, cpu_float_model, import_openvino
from cdvd.fingerprint import file_sha256, source_sha256, weights_sha256
from cdvd.hardware import cpu_flags
from cdvd.models import CDVDTSP
from cdvd.runtime import signal_stack_kept

logger = logging.getLogger(__name__)

OPENVINO_PRECISIONS: dict[str, str] = {"fp32": "f32", "bf16": "bf16"}
CACHE_FORMAT = 2  # bump when the cache's layout or record changes
RECORD = "record.json"
PARTS = ("alignment", "reconstruction")  # run in this order; alignment always in f32
IR_FILES = tuple(f"{part}.{ext}" for part in PARTS for ext in ("xml", "bin"))  # what save_model writes
ENTRY_KIND = "openvino-cache-entry"  # the owner marker of an entry: only this user's entries are ever replaced


class StageModels(NamedTuple):
    """The two compiled models (``openvino.CompiledModel``) of a stage at one frame size."""

    alignment: object
    reconstruction: object


class OpenVINOStage:
    """``restore_centres`` of a :class:`CDVDTSP` through OpenVINO.

    The weights are read once, when the stage is built: build a new stage after changing them.

    Args:
        model: the network (any device; converted from a CPU float32 view of its weights).
        precision: ``fp32`` or ``bf16`` as :func:`cdvd.hardware.resolve_precision` chose it (the engine resolves it,
            on the CPU): the reconstruction net's ``INFERENCE_PRECISION_HINT``. The alignment always runs in f32.
        cache_dir: where converted and compiled models are kept for later processes (see the module docstring),
            or None to convert and compile in memory only.

    Raises:
        ImportError: openvino is not installed (the message says how to install it).
    """

    def __init__(
        self,
        model: CDVDTSP,
        *,
        precision: str = "fp32",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        ov = import_openvino()
        self.precision = precision
        self.device = "CPU"  # the OpenVINO device
        self.residual = model.residual
        self._core = ov.Core()
        self._configs: dict[str, dict[str, object]] = {
            "alignment": {"INFERENCE_PRECISION_HINT": "f32"},
            "reconstruction": {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision]},
        }
        self._cache = None if cache_dir is None else CacheFolder(Path(cache_dir) / "openvino")
        self._ir_sha256: dict[str, str] = {}
        if self._cache is None:
            self._models = {part: convert_openvino(cpu_float_model(model), part=part) for part in PARTS}
        else:
            self._models, self._ir_sha256 = cached_stage(model, self._cache, self._core)
        self._compiled: dict[tuple[int, int], StageModels] = {}
        self._requests: dict[tuple[int, int], tuple[object, object]] = {}

    def compiled_for(self, height: int, width: int) -> StageModels:
        """The compiled models for (H, W) frames, compiled on first use (or read from the cache)."""
        key = (int(height), int(width))
        if key not in self._compiled:
            with signal_stack_kept():  # OpenVINO's compile leaves the thread a signal stack it frees later
                self._compiled[key] = StageModels(*(self._cached_or_compiled(part, key) for part in PARTS))
            actual = self.inference_precision(*key)
            if actual != OPENVINO_PRECISIONS[self.precision]:
                logger.warning(
                    "OpenVINO runs %dx%d frames at %s, not the requested %s (no native support on this %s)",
                    key[1],
                    key[0],
                    actual,
                    self.precision,
                    self.device,
                )
        return self._compiled[key]

    def _cached_or_compiled(self, part: str, size: tuple[int, int]) -> object:
        cache, config, entry = self._cache, self._configs[part], None
        name = f"{part}.blob"
        if cache is not None and part in self._ir_sha256:
            entry = cache.root / "compiled" / compiled_key(self._ir_sha256[part], size, self.device, config, self._core)
            loaded = cache.load(entry, (name,), f"compiled OpenVINO {part}")
            if loaded is not None:
                try:
                    compiled = self._core.import_model(loaded[0][name], self.device, config)
                except RuntimeError as err:
                    logger.warning(
                        "ignoring the compiled OpenVINO %s %s: OpenVINO cannot import it (%s)", part, entry, err
                    )
                else:
                    logger.info("OpenVINO %s for %dx%d frames read from the cache %s", part, size[1], size[0], entry)
                    return compiled
        ov = import_openvino()
        sized = self._models[part].clone()  # type: ignore[attr-defined]
        sized.reshape({sized.inputs[0].get_any_name(): ov.PartialShape(_input_shape(part, size))})
        compiled = self._core.compile_model(sized, self.device, config)
        hint = config["INFERENCE_PRECISION_HINT"]
        logger.info("OpenVINO %s compiled for %dx%d frames (%s, %s)", part, size[1], size[0], self.device, hint)
        if cache is not None and entry is not None:

            def write(folder: Path) -> None:
                (folder / name).write_bytes(compiled.export_model().getvalue())

            cache.save(entry, write, (name,))
        return compiled

    def requests_for(self, height: int, width: int) -> tuple[object, object]:
        """The infer requests (alignment, reconstruction) that run (H, W) frames, made once per compiled model and
        reused by every call (a request holds its intermediate buffers; results are copied out of it)."""
        key = (int(height), int(width))
        if key not in self._requests:
            compiled = self.compiled_for(*key)
            self._requests[key] = tuple(model.create_infer_request() for model in compiled)  # type: ignore[assignment,attr-defined]
        return self._requests[key]

    def inference_precision(self, height: int, width: int) -> str:
        """The precision OpenVINO actually runs the reconstruction net at for (H, W) frames (``f32`` or ``bf16``)."""
        compiled = self.compiled_for(height, width).reconstruction
        return _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))  # type: ignore[attr-defined]

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
        align, reconstruct = self.requests_for(h, w)
        array = frames.detach().to("cpu", torch.float32).numpy()
        out = np.empty((t - 2, b, 3, h, w), dtype=np.float32)
        for centre in range(1, t - 1):
            for k in range(b):
                window = np.ascontiguousarray(array[centre - 1 : centre + 2, k : k + 1])
                inputs = align.infer([window])[0]  # type: ignore[attr-defined]
                out[centre - 1, k] = reconstruct.infer([inputs])[0][0]  # type: ignore[attr-defined]
                if self.residual:
                    out[centre - 1, k] += window[1, 0]
        return torch.from_numpy(out).to(frames.device)

    __call__ = restore_centres


class CacheFolder:
    """``<cache_dir>/openvino``: entries whose bytes are checked on every read, written whole or not at all.

    A cache that cannot be written is used read-only: after the first failed write (one warning) nothing more is
    tried there in this process.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.writable = True

    def load(self, entry: Path, names: tuple[str, ...], what: str) -> tuple[dict[str, bytes], dict[str, str]] | None:
        """The bytes of ``names`` in ``entry`` and their SHA-256, when each matches the one its record holds; None
        when the entry is absent, or (with a warning) when it is incomplete or damaged."""
        if not entry.is_dir():
            return None
        try:
            record = json.loads((entry / RECORD).read_text(encoding="utf-8"))
            expected = dict(record["sha256"])
            files = {name: (entry / name).read_bytes() for name in names}
        except (OSError, ValueError, KeyError, TypeError) as err:
            problem = f"incomplete ({err})"
        else:
            digests = {name: hashlib.sha256(files[name]).hexdigest() for name in names}
            damaged = [name for name in names if digests[name] != expected.get(name)]
            if not damaged:
                return files, digests
            problem = f"{damaged[0]} differs from what was saved"
        logger.warning("ignoring the cached %s %s: %s; making it again", what, entry, problem)
        return None

    def save(self, entry: Path, write: Callable[[Path], None], names: tuple[str, ...]) -> bool:
        """Make ``entry`` with ``write(folder)`` and a record of the SHA-256 of its ``names``; an existing entry
        (one that did not verify) is replaced only when this user's cdvd made it. False when it could not be saved."""
        if not self.writable:
            return False
        try:
            with atomic_folder(entry, kind=ENTRY_KIND, replace=True) as tmp:
                write(tmp)
                digests = {name: file_sha256(tmp / name) for name in names}
                (tmp / RECORD).write_text(json.dumps({"format": CACHE_FORMAT, "sha256": digests}, indent=1) + "\n")
        except OSError as err:
            self.writable = False
            logger.warning(
                "cannot write to the OpenVINO cache %s (%s): using what verifies in it, converting and compiling "
                "the rest in every run",
                self.root,
                err,
            )
            return False
        return True


def conversion_key(model: CDVDTSP) -> str:
    """SHA-256 over what the converted stage of ``model`` depends on: equal keys, identical conversions."""
    ov = import_openvino()
    record = {
        "format": CACHE_FORMAT,
        "parts": list(PARTS),
        "weights_sha256": weights_sha256(model),
        "architecture": {"n_feat": model.n_feat, "n_resblock": model.n_resblock, "residual": model.residual},
        "code_sha256": source_sha256("models", "backends/graphs.py"),
        "torch": torch.__version__,
        "openvino": ov.get_version(),
    }
    return _sha256_of(record)


def compiled_key(ir_sha256: str, size: tuple[int, int], device: str, config: dict[str, object], core: object) -> str:
    """SHA-256 over what a compiled part depends on: the converted part's bytes (``ir_sha256``), the frame size, the
    device and its settings, the OpenVINO version and the processor it was compiled for."""
    ov = import_openvino()
    record = {
        "format": CACHE_FORMAT,
        "ir_sha256": ir_sha256,
        "size": list(size),
        "device": device,
        "config": {name: str(value) for name, value in sorted(config.items())},
        "openvino": ov.get_version(),
        "device_name": str(core.get_property(device, "FULL_DEVICE_NAME")),  # type: ignore[attr-defined]
        "cpu_flags": sorted(cpu_flags()),
    }
    return _sha256_of(record)


def cached_stage(model: CDVDTSP, cache: CacheFolder, core: object) -> tuple[dict[str, object], dict[str, str]]:
    """The parts of ``model``'s stage as ``openvino.Model`` s, and the SHA-256 of each part's saved files (empty
    when they could not be saved): read from ``cache.root/ir/<key>/`` when a whole, matching conversion is there;
    otherwise converted and saved there for the next process, and read back, so that the first run computes exactly
    what later ones do. A cache that cannot be written costs the saving only (a warning), never the run.
    """
    ov = import_openvino()
    entry = cache.root / "ir" / conversion_key(model)
    stage = _read_stage(cache, core, entry)
    if stage is not None:
        logger.info("OpenVINO stage read from the cache %s", entry)
        return stage
    converted = {part: convert_openvino(cpu_float_model(model), part=part) for part in PARTS}

    def write(folder: Path) -> None:
        for part, part_model in converted.items():
            ov.save_model(part_model, str(folder / f"{part}.xml"), compress_to_fp16=False)

    stage = _read_stage(cache, core, entry) if cache.save(entry, write, IR_FILES) else None
    if stage is None:
        return converted, {}
    logger.info("OpenVINO stage converted and cached in %s", entry)
    return stage


def _read_stage(cache: CacheFolder, core: object, entry: Path) -> tuple[dict[str, object], dict[str, str]] | None:
    """The models of the cached stage at ``entry`` and, per part, a SHA-256 over its files' SHA-256; None when the
    entry is absent, or (with a warning) damaged or unreadable by OpenVINO."""
    loaded = cache.load(entry, IR_FILES, "OpenVINO stage")
    if loaded is None:
        return None
    files, digests = loaded
    try:
        models = {part: core.read_model(files[f"{part}.xml"], files[f"{part}.bin"]) for part in PARTS}  # type: ignore[attr-defined]
    except RuntimeError as err:
        logger.warning("ignoring the cached OpenVINO stage %s: OpenVINO cannot read it (%s)", entry, err)
        return None
    return models, {part: _sha256_of({n: digests[n] for n in (f"{part}.xml", f"{part}.bin")}) for part in PARTS}


def _input_shape(part: str, size: tuple[int, int]) -> list[int]:
    """The input shape of ``part`` for one window of (H, W) frames."""
    return [3, 1, 3, *size] if part == "alignment" else [1, 10, *size]


def _sha256_of(record: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _type_name(element_type: object) -> str:
    """``f32``, ``bf16``, ... of an ``openvino.Type`` (or of its string form)."""
    name = getattr(element_type, "get_type_name", None)
    return name() if callable(name) else str(element_type).lower()
