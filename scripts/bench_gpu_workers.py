"""The measurements of ``scripts/bench_gpu.py``, one per process.

Each function takes the measurement's settings (plain JSON data) and a work folder, and returns
``{"figures": {name: number}, "details": {...}}`` (plus ``"error"`` when it failed in a way it could describe).
``bench_gpu.py`` runs each in a fresh ``python scripts/bench_gpu.py --worker KIND ...`` process, so that peak memory
is the measurement's own and a crash, a hang or a failed ``torch.compile`` costs that measurement alone.
Torch and cdvd are imported inside the functions: the DDP launcher, which only starts the two ranks, stays light.

The timings reuse the other benchmarks: ``bench_model.build_model`` (the full-size network with seeded random
weights), ``bench_model.best_time``, ``bench_train.bench_train_step`` (forward, L1 + HEM loss, backward, Adam step)
and ``bench_deblur.parse_size``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

MIB = 2**20
GOPRO_TRAIN_FRAMES = 2103  # the GOPRO training split: one training sample per frame and epoch
SEED_EPOCH_MIN = 45.0  # the original CDVD-TSP README: one GOPRO epoch on a TITAN RTX


# ----------------------------------------------------------------------------------------------------- shared


def _device(spec: dict[str, Any]) -> Any:
    import torch

    return torch.device(spec["device"])


def reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: Any) -> dict[str, float]:
    """The CUDA allocator's peaks on CUDA, the process's peak resident memory on the CPU (MiB)."""
    import torch
    from bench_model import peak_rss

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return {
            "peak_cuda_allocated_mib": round(torch.cuda.max_memory_allocated(device) / MIB, 1),
            "peak_cuda_reserved_mib": round(torch.cuda.max_memory_reserved(device) / MIB, 1),
        }
    return {"peak_rss_mib": round(peak_rss() / MIB, 1)}


def resolve_corr(corr: str, device: Any) -> str:
    """``auto`` made explicit as the model would choose it: the cupy kernel on CUDA where it passes its self-check."""
    if corr != "auto":
        return corr
    from cdvd.models.correlation import cupy_available, cupy_kernel_agrees

    if device.type == "cuda" and cupy_available() and cupy_kernel_agrees(device.index or 0):
        return "cupy"
    return "torch"


# ----------------------------------------------------------------------------------------------------- deblur


def synthetic_frames(width: int, height: int, count: int, seed: int = 0) -> list[Any]:
    """uint8 (H, W, 3) frames of a smooth pattern moving 2 pixels a frame, plus noise (seeded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(count):
        base = 0.5 + 0.4 * np.sin((xx - 2 * t) / 23.0)[..., None] * np.cos(yy / 17.0)[..., None]
        noisy = base + 0.05 * rng.standard_normal((height, width, 3), dtype=np.float32)
        frames.append((np.clip(noisy, 0, 1) * 255).round().astype(np.uint8))
    return frames


def deblur(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """A synthetic video through ``VideoDeblurrer`` (streaming), as ``cdvd-deblur`` runs it; outputs kept on disk.

    The outputs go to ``workdir/<id>.pt`` so that the parent can compare every case with the fp32 reference.
    """
    import torch
    from bench_deblur import parse_size
    from bench_model import build_model

    from cdvd.inference.engine import VideoDeblurrer
    from cdvd.runtime import reuse_freed_memory

    reuse_freed_memory()  # as cdvd-deblur does (reuse_memory=true)
    device = _device(spec)
    torch.backends.cudnn.benchmark = bool(spec["cudnn_benchmark"])
    corr = resolve_corr(spec["corr"], device)
    width, height = parse_size(spec["size"])
    model = build_model(corr_backend=corr, **spec["network"])
    engine = VideoDeblurrer(
        model,
        device=device,
        precision=spec["precision"],
        streaming=True,
        channels_last=spec["channels_last"],
        compile=spec["compile"],
    )
    frames = synthetic_frames(width, height, spec["frames"])
    reset_peak(device)
    outputs, intervals = [], []
    start = last = time.perf_counter()
    for _, out in engine.run(frames):  # each output is a CPU tensor: the device has finished it
        now = time.perf_counter()
        intervals.append(now - last)
        last = now
        outputs.append(out)
    total = last - start
    peak = peak_memory(device)
    video = torch.stack(outputs)
    torch.save(video, workdir / f"{spec['id']}.pt")
    steady = statistics.median(intervals[1:] if len(intervals) > 1 else intervals)
    return {
        "figures": {
            "fps_steady": round(1.0 / steady, 3),
            "ms_per_frame_steady": round(1000.0 * steady, 2),
            "fps_overall": round(len(outputs) / total, 3),
            "first_frame_s": round(intervals[0], 3),
            "frames_out": len(outputs),
            "nonfinite_output_values": int((~torch.isfinite(video)).sum()),
            **peak,
        },
        "details": {
            "corr_used": corr,
            "precision_used": engine.precision,
            "frame_intervals_s": [round(v, 4) for v in intervals],
        },
    }


# ------------------------------------------------------------------------------------------------------ train


def train(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``bench_train.bench_train_step`` (full-size network, L1 + HEM, Adam) with its peak memory and epoch time."""
    from bench_train import bench_train_step

    device = _device(spec)
    reset_peak(device)
    step = bench_train_step(
        spec["loss"],
        batch=spec["batch"],
        patch=spec["patch"],
        repeats=spec["repeats"],
        device=spec["device"],
        precision=spec["precision"],
    )
    peak = peak_memory(device)
    samples_per_s = spec["batch"] / float(step["step_s"])  # type: ignore[arg-type]
    epoch_min = GOPRO_TRAIN_FRAMES / samples_per_s / 60.0
    return {
        "figures": {
            "step_s": round(float(step["step_s"]), 4),  # type: ignore[arg-type]
            "samples_per_s": round(samples_per_s, 3),
            "gopro_epoch_min": round(epoch_min, 2),
            "seed_gopro_epoch_min": SEED_EPOCH_MIN,
            "speedup_vs_seed_epoch": round(SEED_EPOCH_MIN / epoch_min, 3),
            **peak,
        },
        "details": {"gopro_train_frames": GOPRO_TRAIN_FRAMES, "corr_used": resolve_corr("auto", device)},
    }


# -------------------------------------------------------------------------------------------------- correlation


def correlation(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """The cost volume alone, forward (no grad) and forward + backward, per shape, dtype and backend."""
    import torch
    from bench_model import best_time

    from cdvd.models.correlation import correlation as cost_volume

    device = _device(spec)
    figures: dict[str, float] = {}
    details: dict[str, Any] = {"backends": spec["backends"], "shapes": spec["shapes"]}

    def synced(fn: Any) -> Any:
        def call() -> None:
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        return call

    for label, shape in spec["shapes"].items():
        for dtype_name in spec["dtypes"]:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
            generator = torch.Generator(device=device).manual_seed(0)
            first, second = (torch.randn(*shape, generator=generator, device=device).to(dtype) for _ in range(2))
            weight = torch.randn(shape[0], 81, *shape[2:], generator=generator, device=device).to(dtype)
            reference: dict[str, Any] = {}
            for backend in spec["backends"]:
                key = f"{label}.{dtype_name}.{backend}"

                def forward(backend: str = backend, first: Any = first, second: Any = second) -> Any:
                    with torch.no_grad():
                        return cost_volume(first, second, backend)  # type: ignore[arg-type]

                def forward_backward(
                    backend: str = backend, first: Any = first, second: Any = second, weight: Any = weight
                ) -> Any:
                    a, b = first.detach().requires_grad_(), second.detach().requires_grad_()
                    out = cost_volume(a, b, backend)  # type: ignore[arg-type]
                    return (out, *torch.autograd.grad((out * weight).sum(), (a, b)))

                times = best_time(synced(forward), repeat=spec["repeat"], warmup=spec["warmup"])
                figures[f"{key}.forward_ms"] = round(1000 * min(times), 4)
                times = best_time(synced(forward_backward), repeat=spec["repeat"], warmup=spec["warmup"])
                figures[f"{key}.forward_backward_ms"] = round(1000 * min(times), 4)
                results = [t.float() for t in forward_backward()]
                if not reference:
                    reference = {"backend": backend, "results": results}
                    continue
                for name, got, ref in zip(
                    ("out", "grad_first", "grad_second"), results, reference["results"], strict=True
                ):
                    figures[f"{key}.max_abs_diff_{name}_vs_{reference['backend']}"] = float((got - ref).abs().max())
            if "torch" in spec["backends"] and "cupy" in spec["backends"]:
                for part in ("forward_ms", "forward_backward_ms"):
                    torch_ms = figures[f"{label}.{dtype_name}.torch.{part}"]
                    figures[f"{label}.{dtype_name}.cupy_speedup_{part.removesuffix('_ms')}"] = round(
                        torch_ms / figures[f"{label}.{dtype_name}.cupy.{part}"], 3
                    )
    return {"figures": figures, "details": details}


WORKERS = {"deblur": deblur, "train": train, "correlation": correlation}
