"""Training clips per second of DeblurDataModule from 1280x720 PNGs, with and without workers and cache.

    python scripts/bench_data.py [--videos 2] [--frames 12] [--samples 48] [--patch 256] [--workers 0 2]

Writes a small folder-layout dataset to a temporary directory, then times two epochs of the training loader
for every setting: the first epoch reads from disk, the second shows the cache (workers are persistent, so
each keeps its own cache). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cdvd.data import DeblurDataModule, write_rgb


def make_dataset(root: Path, videos: int, frames: int, height: int, width: int, seed: int = 0) -> None:
    """Photo-like frames (smooth random colour fields plus fine texture) that drift a little per frame."""
    rng = np.random.default_rng(seed)
    for v in range(videos):
        base = cv2.resize(
            rng.random((height // 40, width // 40, 3), dtype=np.float32),
            (width + 64, height + 64),
            interpolation=cv2.INTER_CUBIC,
        )
        texture = rng.normal(0, 0.06, (height + 64, width + 64, 3)).astype(np.float32)
        scene = np.clip((base + texture) * 255, 0, 255).astype(np.uint8)
        for k in range(frames):
            sharp = scene[2 * k : 2 * k + height, 3 * k : 3 * k + width]
            write_rgb(root / "gt" / f"{v:03d}" / f"{k:05d}.png", np.ascontiguousarray(sharp))
            write_rgb(root / "blur" / f"{v:03d}" / f"{k:05d}.png", cv2.blur(sharp, (9, 1)))


def time_epochs(
    root: Path, workers: int, cache: bool, samples: int, patch: int, batch: int, epochs: int
) -> list[float]:
    """Clips per second of each epoch."""
    dm = DeblurDataModule(
        layout="folder",
        root=root,
        train_split=None,
        val_split=None,
        patch_size=patch,
        batch_size=batch,
        samples_per_epoch=samples,
        num_workers=workers,
        persistent_workers=True,
        cache_frames=cache,
        seed=0,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        clips = sum(b["blur"].shape[0] for b in loader)
        rates.append(clips / (time.perf_counter() - start))
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--samples", type=int, default=48, help="clips per epoch")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    results = []
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="cdvd-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_dataset(root, args.videos, args.frames, args.height, args.width)
        print(
            f"{args.videos} videos x {args.frames} frames of {args.width}x{args.height} PNG written in "
            f"{time.perf_counter() - start:.1f} s; {args.samples} clips of 5 x {args.patch}x{args.patch} per "
            f"epoch, batch {args.batch}, {os.cpu_count()} CPUs\n"
        )
        header = " | ".join(f"epoch {e + 1} clips/s" for e in range(args.epochs))
        print(f"| num_workers | cache_frames | {header} |")
        print("|---:|:---:|" + "---:|" * args.epochs)
        for workers in args.workers:
            for cache in (False, True):
                rates = time_epochs(root, workers, cache, args.samples, args.patch, args.batch, args.epochs)
                results.append({"num_workers": workers, "cache_frames": cache, "clips_per_s": rates})
                print(f"| {workers} | {'yes' if cache else 'no'} | " + " | ".join(f"{r:.1f}" for r in rates) + " |")
    if args.json:
        settings = {"size": f"{args.width}x{args.height}", "patch": args.patch, "batch": args.batch}
        Path(args.json).write_text(json.dumps({"settings": settings, "results": results}, indent=2))


if __name__ == "__main__":
    main()
