"""Seconds per output frame of ``cdvd-deblur``'s engine: streaming against per-window, with peak memory.

    python scripts/bench_deblur.py                          # 640x360 and 1280x720, fp32 on CPU
    python scripts/bench_deblur.py --sizes 640x360 --json bench.json
    python scripts/bench_deblur.py --device cuda --precisions fp32 bf16 fp16
    python scripts/bench_deblur.py --sizes 1280x720 --modes streaming --precisions fp32 bf16 --backends torch openvino

The full-size network (n_feat=32, n_resblock=3) with random weights, on synthetic frames. Every case runs in a
fresh subprocess so that its peak memory (``ru_maxrss``, or the CUDA allocator's peak) is its own.

Figures per case:
- ``s_per_frame``: wall time of the whole video over its frame count (streaming pays for the reflected
  border positions once per video);
- ``steady_s_per_frame``: the median time between consecutive output frames after the first, the cost of one
  more frame of a long video. Per-window runs compute only ``--window-frames`` interior windows (every window
  costs the same), so they stay short.
The speed-up compares the steady figures: the work per frame of streaming (2 flow pairs and 1 reconstruction
per stage, 2 stages) against per-window (8 flow estimates and 4 reconstructions), asymptotically 2x.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_FRAMES = {"640x360": 7, "1280x720": 6}


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height)."""
    w, h = text.lower().split("x")
    return int(w), int(h)


def worker(args: argparse.Namespace) -> dict:
    """One case, in this process: returns its timings and peak memory."""
    import numpy as np
    import torch

    from cdvd.inference import VideoDeblurrer
    from cdvd.models import CDVDTSP
    from cdvd.runtime import reuse_freed_memory

    reused = bool(args.reuse_memory) and reuse_freed_memory()  # as cdvd-deblur does (reuse_memory=true)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = parse_size(args.size)
    torch.manual_seed(0)
    model = CDVDTSP(n_feat=32, n_resblock=3)
    engine = VideoDeblurrer(
        model, device=args.device, precision=args.precision, streaming=args.mode == "streaming", backend=args.backend
    )
    rng = np.random.default_rng(0)
    # a smooth pattern moving 2 pixels a frame, plus noise
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(args.frames):
        base = 0.5 + 0.4 * np.sin((xx - 2 * t) / 23.0)[..., None] * np.cos(yy / 17.0)[..., None]
        noisy = base + 0.05 * rng.standard_normal((height, width, 3), dtype=np.float32)
        frames.append((np.clip(noisy, 0, 1) * 255).round().astype(np.uint8))

    wanted = None
    if args.mode == "window":
        first = min(2, args.frames - 1)
        wanted = set(range(first, min(first + args.window_frames, args.frames)))
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    intervals = []
    start = last = time.perf_counter()
    count = 0
    for _, _ in engine.run(frames, skip=(lambda t: t not in wanted) if wanted is not None else None):
        if cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        intervals.append(now - last)
        last = now
        count += 1
    total = last - start
    steady = intervals[1:] if args.mode == "streaming" and len(intervals) > 1 else intervals
    result = {
        "size": args.size,
        "mode": args.mode,
        "precision": args.precision,
        "backend": args.backend,
        "device": str(engine.device),
        "threads": torch.get_num_threads(),
        "reuse_memory": reused,
        "frames_in": args.frames,
        "frames_out": count,
        "seconds": round(total, 3),
        "s_per_frame": round(total / count, 3),
        "steady_s_per_frame": round(statistics.median(steady), 3),
        "frame_intervals_s": [round(v, 3) for v in intervals],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mib": round(rss_before / 1024, 1),
    }
    if cuda:
        result["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"], help="WxH, default both")
    parser.add_argument("--modes", nargs="+", default=["streaming", "window"], choices=["streaming", "window"])
    parser.add_argument("--precisions", nargs="+", default=None, help="default fp32 (CPU), fp32 bf16 fp16 (CUDA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--backends", nargs="+", default=["torch"], choices=["torch", "openvino"], help="openvino: CPU only"
    )
    parser.add_argument("--frames", type=int, default=None, help="video length (default 7 at 640x360, 6 else)")
    parser.add_argument("--window-frames", type=int, default=2, help="windows timed in per-window mode")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--reuse-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep freed memory for reuse, as cdvd-deblur's reuse_memory=true (default) does",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))  # noqa: T201 - the parent reads this line
        return

    import torch

    from cdvd.hardware import cpu_description

    cpu = cpu_description()
    print(f"CPU: {cpu['model']}, {cpu['cores']} threads, flags {cpu['flags']}", flush=True)
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    precisions = args.precisions or (["fp32", "bf16", "fp16"] if cuda else ["fp32"])
    results = []
    for size in args.sizes:
        frames = args.frames or DEFAULT_FRAMES.get(size, 6)
        for backend, precision, mode in itertools.product(args.backends, precisions, args.modes):
            cmd = [
                sys.executable, os.path.abspath(__file__), "--worker", "--size", size, "--mode", mode,
                "--precision", precision, "--device", args.device, "--frames", str(frames),
                "--window-frames", str(args.window_frames), "--threads", str(args.threads),
                "--reuse-memory" if args.reuse_memory else "--no-reuse-memory", "--backend", backend,
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{size} {backend} {mode} {precision}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(result)
            print(
                f"{size:>9} {backend:>8} {precision:>5} {mode:>9}: {result['s_per_frame']:8.2f} s/frame over "
                f"{result['frames_out']} frames, steady {result['steady_s_per_frame']:8.2f} s/frame, "
                f"peak RSS {result['peak_rss_mib']:.0f} MiB"
                + ("" if result["reuse_memory"] else ", malloc default")
                + (f", CUDA {result['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in result else ""),
                flush=True,
            )
    speedups = {}
    for r in results:
        if r["mode"] != "streaming":
            continue
        for w in results:
            same = all(w[k] == r[k] for k in ("size", "precision", "backend"))
            if w["mode"] == "window" and same:
                key = f"{r['size']} {r['backend']} {r['precision']}"
                speedups[key] = round(w["steady_s_per_frame"] / r["steady_s_per_frame"], 2)
                print(f"{key}: streaming is {speedups[key]:.2f}x the per-window rate (steady state)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"cpu": cpu, "torch": torch.__version__, "results": results, "speedup_steady": speedups}, f, indent=2
            )


if __name__ == "__main__":
    main()
