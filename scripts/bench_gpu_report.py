"""The records of ``scripts/bench_gpu.py``: the machine, the FLOPs, the agreement with fp32, the targets, the JSON.

``bench_gpu.py`` plans and runs the measurements; this module describes the machine they ran on, adds the figures
that compare one measurement with another (PSNR against the fp32 reference, TFLOP/s) and writes the results.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE = "deblur-fp32-torch"  # the case every deblurring output is compared with
TARGETS = {"deblur_bf16_fps": 24.0, "psnr_vs_fp32_db": 40.0, "gopro_epoch_min": 5.0, "seed_gopro_epoch_min": 45.0}


@dataclass
class Measurement:
    id: str
    kind: str
    settings: dict[str, Any]
    limit_s: float
    skip: str | None = None
    entry: dict[str, Any] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------- the environment


def environment(device: str) -> dict[str, Any]:
    """The card, driver and versions that decide the figures."""
    import importlib.metadata as metadata

    import torch

    from cdvd.hardware import cpu_description

    def version(*names: str) -> str | None:
        for dist in metadata.distributions():
            name = (dist.metadata["Name"] or "").lower()
            if any(name == n or (n.endswith("*") and name.startswith(n[:-1])) for n in names):
                return f"{dist.metadata['Name']} {dist.version}"
        return None

    import cdvd

    env: dict[str, Any] = {
        "device": device,
        "card": "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cupy": version("cupy*"),
        "lightning": version("pytorch-lightning", "lightning"),
        "cdvd_source": str(Path(cdvd.__file__).parent),
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(
            card=torch.cuda.get_device_name(0),
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_mib=round(props.total_memory / 2**20),
            driver=_driver(),
        )
    return env


def _driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def flops(measurements: list[Measurement]) -> dict[str, Any]:
    """FLOPs (convolutions and matrix products) of one streamed output frame and of one training step, on meta."""
    import torch
    from bench_deblur import parse_size
    from bench_model import build_model, count_train_flops
    from torch.utils.flop_counter import FlopCounterMode

    deblur = next((m.settings for m in measurements if m.kind == "deblur"), None)
    train = next((m.settings for m in measurements if m.kind == "train"), None)
    out = {}
    if deblur is not None:
        width, height = parse_size(deblur["size"])
        model = build_model(device="meta", corr_backend="torch", **deblur["network"]).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.restore_centres(torch.empty(3, 1, 3, height, width, device="meta"))
        out["deblur_tflop_per_frame"] = 2 * counter.get_total_flops() / 1e12  # streaming: 2 stages per frame
    if train is not None:
        out["train_tflop_per_step"] = count_train_flops(train["batch"], train["patch"]) / 1e12
    return out


def add_agreement(measurements: list[Measurement], workdir: Path) -> None:
    """PSNR and max |diff| of every deblurring case's outputs against the fp32 reference's (clipped to [0, 1])."""
    import torch

    from cdvd.export import agreement

    path = workdir / f"{REFERENCE}.pt"
    if not path.exists():
        return
    reference = torch.load(path).clamp(0, 1)
    for m in measurements:
        other = workdir / f"{m.id}.pt"
        if m.kind != "deblur" or m.id == REFERENCE or m.entry.get("status") != "ok" or not other.exists():
            continue
        output = torch.load(other)
        if not bool(torch.isfinite(output).all()):  # fp16 overflow, say: no PSNR to give (the worker counted them)
            m.entry["details"]["agreement"] = "outputs hold non-finite values"
            continue
        max_abs, psnr = agreement(reference, output.clamp(0, 1))
        m.entry["figures"]["max_abs_diff_vs_fp32"] = max_abs
        if psnr == float("inf"):
            m.entry["details"]["identical_to_fp32"] = True
        else:
            m.entry["figures"]["psnr_vs_fp32_db"] = round(psnr, 2)


def add_throughput(measurements: list[Measurement], counted: dict[str, Any]) -> None:
    """TFLOP/s achieved (the counted FLOPs over the measured time), to set beside the card's peak."""
    for m in measurements:
        figures = m.entry.get("figures") if m.entry.get("status") == "ok" else None
        if figures and m.kind == "deblur" and "deblur_tflop_per_frame" in counted:
            figures["tflops_per_s"] = float(f"{figures['fps_steady'] * counted['deblur_tflop_per_frame']:.4g}")
        if figures and m.kind == "train" and "train_tflop_per_step" in counted:
            figures["tflops_per_s"] = float(f"{counted['train_tflop_per_step'] / figures['step_s']:.4g}")


def report(state: dict[str, Any], measurements: list[Measurement]) -> dict[str, Any]:
    entries = [{"id": m.id, "kind": m.kind, "settings": m.settings, **m.entry} for m in measurements]
    return {**state, "measurements": entries, "targets": targets(measurements)}


def targets(measurements: list[Measurement]) -> dict[str, Any]:
    """The issue's targets against what was measured (None: not measured).

    The deblurring target holds for a bf16 case that is both fast enough and close enough to fp32.
    """
    ok = [m for m in measurements if m.entry.get("status") == "ok"]
    bf16 = [m.entry["figures"] for m in ok if m.kind == "deblur" and m.settings["precision"] == "bf16"]
    close = [f for f in bf16 if f.get("psnr_vs_fp32_db", 0.0) >= TARGETS["psnr_vs_fp32_db"]]
    epoch = [m.entry["figures"]["gopro_epoch_min"] for m in ok if m.kind == "train"]
    return {
        **TARGETS,
        "best_deblur_bf16_fps": max((f["fps_steady"] for f in bf16), default=None),
        "best_deblur_bf16_fps_within_psnr": max((f["fps_steady"] for f in close), default=None),
        "deblur_target_met": any(f["fps_steady"] >= TARGETS["deblur_bf16_fps"] for f in close) if bf16 else None,
        "best_gopro_epoch_min": min(epoch, default=None),
        "epoch_target_met": min(epoch) < TARGETS["gopro_epoch_min"] if epoch else None,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Whole or not at all: written beside ``path`` and renamed onto it."""
    from cdvd.atomic import atomic_destination

    with atomic_destination(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def table(measurements: list[Measurement]) -> str:
    lines = ["| measurement | status | figures |", "|---|---|---|"]
    for m in measurements:
        entry = m.entry
        if entry.get("status") == "ok":
            shown = {k: v for k, v in entry["figures"].items() if "." not in k or "speedup" in k or "forward" in k}
            text = ", ".join(f"{k} {v:g}" for k, v in list(shown.items())[:9])
        else:
            text = entry.get("reason") or entry.get("error", "")
        lines.append(f"| {m.id} | {entry.get('status', '?')} | {' '.join(text.split())[:300]} |")
    return "\n".join(lines)


def last_line(text: str) -> str:
    """The last non-empty line of a log: for a Python failure, the exception and its message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def output_path(folder: Path, card: str, date: str) -> Path:
    """``<date>-<card>.json``, with ``-2``, ``-3``... where an earlier run of that day is there (never overwritten)."""
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-") or "unknown"
    path, n = folder / f"{date}-{slug}.json", 2
    while path.exists():
        path, n = folder / f"{date}-{slug}-{n}.json", n + 1
    return path
