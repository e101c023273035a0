"""Benchmark CDVD-TSP on the CPU: one 5-frame window forward, and one training step.

The full-size network (``n_feat=32``, ``n_resblock=3``, random weights) runs in eval mode under
``torch.no_grad``. For each size it reports the best time of ``--repeat`` runs after ``--warmup`` untimed
ones, the FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` (on the meta device, so counting
costs no compute), the achieved GFLOP/s and the peak resident memory. Every size runs in its own subprocess
so that the RSS high-water mark (``getrusage``) belongs to that size alone; ``tracemalloc`` does not see
PyTorch's allocations.

Examples::

    python scripts/bench_model.py                                   # 256x256 and 1280x720, plus a train step
    python scripts/bench_model.py --sizes 256x256 --repeat 5 --no-train
    python scripts/bench_model.py --json bench.json

Other scripts can import the timing helpers (``from bench_model import time_train_step``) when run from
``scripts/``.

For scale: the original CDVD-TSP code takes about 106 s for a 1280x720 window on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cdvd.hardware import cpu_description
from cdvd.models import CDVDTSP
from cdvd.runtime import reuse_freed_memory, reusing_freed_memory

FULL_SIZE = {"n_feat": 32, "n_resblock": 3}
DEFAULT_SIZES = ("256x256", "1280x720")
SMALL_PIXELS = 512 * 512  # sizes up to this many pixels default to 3 timed runs, larger ones to 1
MIB = 2**20


# ------------------------------------------------------------------------------------------------------------
# helpers other scripts can import


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` (width x height, as video sizes are written) -> ``(720, 1280)`` = (H, W)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like 1280x720 (width x height), instead got {text!r}"
        ) from None
    if height % 4 or width % 4 or height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"height and width must be positive multiples of 4, instead got {text!r}")
    return height, width


def build_model(*, device: str | torch.device = "cpu", seed: int = 0, **kwargs: Any) -> CDVDTSP:
    """The full-size network with random weights (``kwargs`` override ``n_feat`` / ``n_resblock`` ...)."""
    torch.manual_seed(seed)
    with torch.device(device):
        return CDVDTSP(**{**FULL_SIZE, **kwargs})


def count_forward_flops(height: int, width: int, *, batch: int = 1, **model_kwargs: Any) -> int:
    """FLOPs of one forward of a (batch, 5, 3, H, W) window, counted on the meta device (no compute)."""
    model = build_model(device="meta", **model_kwargs).eval()
    clip = torch.empty(batch, 5, 3, height, width, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(clip)
    return int(counter.get_total_flops())


def count_train_flops(batch: int, patch: int, **model_kwargs: Any) -> int:
    """FLOPs of one forward + backward on (batch, 5, 3, patch, patch) clips, counted on the meta device."""
    model = build_model(device="meta", **model_kwargs).train()
    clip = torch.empty(batch, 5, 3, patch, patch, device="meta")
    target = torch.empty(batch, 12, patch, patch, device="meta")
    with FlopCounterMode(display=False) as counter:
        _train_loss(model, clip, target).backward()
    return int(counter.get_total_flops())


def best_time(fn: Callable[[], object], *, repeat: int = 1, warmup: int = 1) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; returns the timed durations in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_forward(model: torch.nn.Module, clip: torch.Tensor, *, repeat: int = 1, warmup: int = 1) -> float:
    """Best seconds of one ``model(clip)`` in eval mode under ``torch.no_grad``."""
    model.eval()

    def step() -> None:
        with torch.no_grad():
            model(clip)

    return min(best_time(step, repeat=repeat, warmup=warmup))


def _train_loss(model: torch.nn.Module, clip: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 of the 12-channel concatenation [R1, R2, R3, out] against its target, as in training."""
    return F.l1_loss(torch.cat(tuple(model(clip)), dim=1), target)


def time_train_step(
    model: torch.nn.Module,
    batch: int = 2,
    patch: int = 256,
    *,
    repeat: int = 1,
    warmup: int = 1,
    seed: int = 0,
) -> float:
    """Best seconds of one training step (forward + backward, no optimiser) on random (B, 5, 3, P, P) clips.

    Args:
        model: the network; put in train mode. Its parameters' ``.grad`` are reset between steps.
        batch: clips per step (published: 8; 2 fits a small CPU).
        patch: square crop size in pixels (published: 256).
        repeat: timed steps; the best is returned.
        warmup: untimed steps first (allocator and oneDNN primitive caches).
        seed: for the random clip and target.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    clip = torch.rand(batch, 5, 3, patch, patch, generator=generator).to(device)
    target = torch.rand(batch, 12, patch, patch, generator=generator).to(device)
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        _train_loss(model, clip, target).backward()

    seconds = min(best_time(step, repeat=repeat, warmup=warmup))
    model.zero_grad(set_to_none=True)
    return seconds


def current_rss() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """High-water mark of this process's resident set size in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


# ------------------------------------------------------------------------------------------------------------
# one measurement per process


def _cpu_times() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _sys_percent(before: tuple[float, float]) -> float:
    """Share of this process's CPU time since ``before`` that the kernel took (page faults, mostly)."""
    user, system = (now - then for now, then in zip(_cpu_times(), before, strict=True))
    return 100.0 * system / max(user + system, 1e-9)


def measure_forward(
    height: int, width: int, *, repeat: int, warmup: int, channels_last: bool = False
) -> dict[str, Any]:
    """Time, FLOPs and memory of one window forward at H x W, in this process.

    ``channels_last`` stores the reconstruction net's weights NHWC, so oneDNN runs its convs without reordering
    (about 15% faster at 640x360 and up, no gain at 256x256, and slower for training). Outputs change by ~1e-6.
    """
    flops = count_forward_flops(height, width)
    model = build_model().eval()
    if channels_last:
        model.recons.to(memory_format=torch.channels_last)
    clip = torch.rand(1, 5, 3, height, width, generator=torch.Generator().manual_seed(0))
    rss_before = current_rss()
    cpu_before = _cpu_times()

    def step() -> None:
        with torch.no_grad():
            model(clip)

    times = best_time(step, repeat=repeat, warmup=warmup)
    sys_percent = _sys_percent(cpu_before)
    return {
        "task": "forward, recons NHWC" if channels_last else "forward",
        "size": f"{width}x{height}",
        "batch": 1,
        "repeat": repeat,
        "warmup": warmup,
        "seconds": min(times),
        "times": times,
        "gflop": flops / 1e9,
        "gflops_per_s": flops / 1e9 / min(times),
        "peak_rss_mib": peak_rss() / MIB,
        "rss_increase_mib": (peak_rss() - rss_before) / MIB,
        "sys_percent": sys_percent,
        "malloc_tuned": reusing_freed_memory(),
    }


def measure_train(batch: int, patch: int, *, repeat: int, warmup: int) -> dict[str, Any]:
    """Time, FLOPs and memory of one training step (forward + backward), in this process."""
    flops = count_train_flops(batch, patch)
    model = build_model()
    rss_before = current_rss()
    cpu_before = _cpu_times()
    seconds = time_train_step(model, batch, patch, repeat=repeat, warmup=warmup)
    sys_percent = _sys_percent(cpu_before)
    return {
        "task": "train step",
        "size": f"{patch}x{patch}",
        "batch": batch,
        "repeat": repeat,
        "warmup": warmup,
        "seconds": seconds,
        "gflop": flops / 1e9,
        "gflops_per_s": flops / 1e9 / seconds,
        "peak_rss_mib": peak_rss() / MIB,
        "rss_increase_mib": (peak_rss() - rss_before) / MIB,
        "sys_percent": sys_percent,
        "malloc_tuned": reusing_freed_memory(),
    }


def _measure(kind: str, numbers: Sequence[int]) -> dict[str, Any]:
    if kind in ("forward", "forward-nhwc"):
        height, width, repeat, warmup = numbers
        return measure_forward(height, width, repeat=repeat, warmup=warmup, channels_last=kind != "forward")
    batch, patch, repeat, warmup = numbers
    return measure_train(batch, patch, repeat=repeat, warmup=warmup)


def _in_subprocess(args: Sequence[str], threads: int | None, malloc: bool) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]
    if threads:
        command += ["--threads", str(threads)]
    if malloc:
        command.append("--tune-malloc")
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------
# command line


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| task | size (WxH) | batch | runs | best s | GFLOP | GFLOP/s | peak RSS MiB | RSS increase MiB "
        "| sys % | malloc |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['task']} | {r['size']} | {r['batch']} | {r['repeat']} | {r['seconds']:.2f} "
            f"| {r['gflop']:.0f} | {r['gflops_per_s']:.1f} | {r['peak_rss_mib']:.0f} "
            f"| {r['rss_increase_mib']:.0f} | {r['sys_percent']:.0f} "
            f"| {'tuned' if r['malloc_tuned'] else 'glibc default'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES])
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per size (default 3, 1 above 512^2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--train", action=argparse.BooleanOptionalAction, default=True, help="time a train step")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-patch", type=int, default=256)
    parser.add_argument("--train-repeat", type=int, default=1)
    parser.add_argument(
        "--tune-malloc",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep freed memory for reuse (cdvd.runtime.reuse_freed_memory): fewer page faults, peak RSS kept",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="forward with the reconstruction net's weights in NHWC (model.recons.to(memory_format=...))",
    )
    parser.add_argument("--in-process", action="store_true", help="no subprocesses (peak RSS is then shared)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tune_malloc and (args.worker or args.in_process) and not reuse_freed_memory():
        print("could not tune malloc (not glibc?); measuring with the default", file=sys.stderr)

    if args.worker:  # one measurement, its JSON on the last line of stdout
        kind, *numbers = args.worker
        result = _measure(kind, [int(x) for x in numbers])
        print(json.dumps(result))
        return [result]

    load_before = os.getloadavg()
    results = []
    jobs: list[tuple[str, list[int]]] = []
    for height, width in args.sizes:
        repeat = args.repeat or (3 if height * width <= SMALL_PIXELS else 1)
        jobs.append(("forward-nhwc" if args.channels_last else "forward", [height, width, repeat, args.warmup]))
    if args.train:
        jobs.append(("train", [args.train_batch, args.train_patch, args.train_repeat, args.warmup]))
    for kind, numbers in jobs:
        if args.in_process:
            result = _measure(kind, numbers)
        else:
            result = _in_subprocess([kind, *map(str, numbers)], args.threads, args.tune_malloc)
        results.append(result)
        print(markdown_table([result]).splitlines()[-1], flush=True)

    environment = {
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_description(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    print()
    print(markdown_table(results))
    print(
        f"\n{environment['cpu']['model']}, CPU flags {environment['cpu']['flags']}; "
        f"torch {environment['torch']}, {environment['threads']} threads, {environment['cpu_count']} CPUs; "
        f"1-min load average {load_before[0]:.2f} before, {environment['loadavg_after'][0]:.2f} after "
        "(other work on the CPU inflates the times)."
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": environment, "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
