"""Benchmark every backend and precision of one cascade stage side by side, with their agreement to torch fp32.

The full-size network (``n_feat=32``, ``n_resblock=3``, random weights, seeded) restores the centre of three
random frames (``restore_centres`` on (3, 1, 3, H, W)): exactly what the streaming engine runs once per stage and
frame, so a streamed output frame costs two of these. Each backend gets one untimed warm-up call (conversion,
compilation, oneDNN primitive creation; reported as ``first_call_s``) and ``--repeat`` timed calls (best kept).

Backends: ``torch-fp32`` (the reference), ``torch-bf16`` (autocast), ``torch-channels-last``, ``torch-compile``
(reconstruction net and flow pyramid compiled), ``openvino-fp32``, ``openvino-bf16``
(``INFERENCE_PRECISION_HINT``; OpenVINO keeps f32 on CPUs without native bf16, see ``ov_precision``).

Examples::

    python scripts/bench_backends.py                       # 640x384
    python scripts/bench_backends.py --size 256x256 --json bench_backends.json
    python scripts/bench_backends.py --backends torch-fp32 openvino-fp32 openvino-bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cdvd.backends.torch import prepare_torch_model
from cdvd.export import agreement
from cdvd.hardware import cpu_description
from cdvd.models import CDVDTSP

FULL_SIZE = {"n_feat": 32, "n_resblock": 3}
BACKENDS = (
    "torch-fp32",
    "torch-bf16",
    "torch-channels-last",
    "torch-compile",
    "openvino-fp32",
    "openvino-bf16",
)
STAGES_PER_FRAME = 2  # streaming: each output frame needs one stage-1 and one stage-2 call


def parse_size(text: str) -> tuple[int, int]:
    """``"640x384"`` (width x height) -> ``(384, 640)`` = (H, W), multiples of 4."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like 640x384, instead got {text!r}") from None
    if width % 4 or height % 4 or width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"--size sides must be positive multiples of 4, instead got {text}")
    return height, width


def full_model(seed: int) -> CDVDTSP:
    torch.manual_seed(seed)
    return CDVDTSP(**FULL_SIZE, corr_backend="torch").eval()


def make_stage(name: str, seed: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, object]]:
    """A fresh full-size model (same seed: same weights) behind backend ``name``, and facts to report."""
    model = full_model(seed)
    info: dict[str, object] = {}
    if name == "torch-fp32":
        return model.restore_centres, info
    if name == "torch-bf16":

        def bf16(frames: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model.restore_centres(frames).float()

        return bf16, info
    if name == "torch-channels-last":
        return prepare_torch_model(model, channels_last=True), info
    if name == "torch-compile":
        return prepare_torch_model(model, compile=True), info
    if name.startswith("openvino-"):
        from cdvd.backends.openvino import OpenVINOStage

        start = time.perf_counter()
        stage = OpenVINOStage(model, precision=name.removeprefix("openvino-"))
        info["convert_s"] = round(time.perf_counter() - start, 2)
        return stage.restore_centres, {**info, "stage": stage}
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


def run(size: tuple[int, int], backends: list[str], repeat: int, seed: int) -> dict[str, object]:
    generator = torch.Generator().manual_seed(seed + 1)
    frames = torch.rand(3, 1, 3, *size, generator=generator)
    results: dict[str, dict[str, object]] = {}
    reference: torch.Tensor | None = None
    for name in backends:
        stage, info = make_stage(name, seed)
        with torch.inference_mode():
            start = time.perf_counter()
            out = stage(frames)
            first = time.perf_counter() - start
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                out = stage(frames)
                times.append(time.perf_counter() - start)
        out = out.float()
        if reference is None:
            if name != "torch-fp32":
                raise ValueError("the first backend must be torch-fp32 (the reference)")
            reference = out
        max_abs, psnr = agreement(reference, out)
        entry: dict[str, object] = {
            "stage_s": round(min(times), 4),
            "seconds_per_frame": round(STAGES_PER_FRAME * min(times), 4),
            "first_call_s": round(first, 2),
            "max_abs_diff": max_abs,
            "psnr_db": psnr if psnr != float("inf") else "inf",
        }
        stage_obj = info.pop("stage", None)
        if stage_obj is not None:
            entry["ov_precision"] = stage_obj.inference_precision(*size)  # type: ignore[attr-defined]
        entry.update(info)
        results[name] = entry
        del stage, stage_obj
        print(f"{name:20s} {entry['seconds_per_frame']:8.3f} s/frame  max|diff| {max_abs:.2e}  PSNR {psnr:6.1f} dB")
    base = results["torch-fp32"]["seconds_per_frame"]
    for entry in results.values():
        entry["speedup"] = round(float(base) / float(entry["seconds_per_frame"]), 2)  # type: ignore[arg-type]
    return {
        "size": f"{size[1]}x{size[0]}",
        "network": FULL_SIZE,
        "seed": seed,
        "repeat": repeat,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "openvino": _version("openvino"),
        "cpu": cpu_description(),
        "backends": results,
    }


def _version(package: str) -> str | None:
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        return version(package)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=(384, 640), help="WIDTHxHEIGHT (default 640x384)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per backend (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    backends = ["torch-fp32"] + [b for b in args.backends if b != "torch-fp32"]
    report = run(args.size, backends, args.repeat, args.seed)
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
