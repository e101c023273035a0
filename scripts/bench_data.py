"""Training clips per second of DeblurDataModule from 1280x720 PNGs or an LMDB frame store, with and without
workers and cache.

    python scripts/bench_data.py [--videos 2] [--frames 12] [--samples 48] [--patch 256] [--workers 0 2]
        [--sources png lmdb lmdb-raw]

Writes a small folder-layout dataset to a temporary directory and packs it into two frame stores (cdvd-pack; needs
pip install 'cdvd[lmdb]'): encoding=file (the PNG bytes) and encoding=raw (decoded pixels). Then times two epochs
of the training loader for every setting: PNG files uncached and cached, each store uncached. The first epoch reads
from disk, the second shows the cache (workers are persistent, so each keeps its own cache). Also prints the bytes
on disk, the time to get one frame (PNG file, each store, a copy of raw bytes) and the CPU's SIMD flags. Prints
markdown tables.
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

from cdvd.data import DeblurDataModule, FrameStore, pack_dataset, read_rgb, write_rgb
from cdvd.hardware import cpu_description, cpu_flags

SOURCES = ["png", "lmdb", "lmdb-raw"]
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_summary() -> str:
    """The CPU model and which of the SIMD flags that matter here it has."""
    flags = cpu_flags()
    have = [f for f in SIMD_FLAGS if f in flags]
    lacks = [f for f in SIMD_FLAGS if f not in flags]
    return f"{cpu_description()['model']}; flags: {' '.join(have) or 'none'}; without: {' '.join(lacks) or 'none'}"


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (a file or a folder)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def frame_read_ms(root: Path, store: FrameStore, n: int = 8, repeats: int = 3) -> dict[str, float]:
    """Milliseconds to get one frame as uint8 RGB: from its PNG file, from ``store``, and as a raw-bytes copy."""
    paths = sorted(root.rglob("*.png"))[:n]
    keys = [p.relative_to(root).as_posix() for p in paths]
    raw = [read_rgb(p).tobytes() for p in paths]
    shape = read_rgb(paths[0]).shape
    timings = {}
    for name, read in (
        ("png file", lambda i: read_rgb(paths[i])),
        ("lmdb (png bytes)", lambda i: store.read(keys[i])),
        ("raw uint8 copy", lambda i: np.frombuffer(raw[i], np.uint8).reshape(shape).copy()),
    ):
        start = time.perf_counter()
        for _ in range(repeats):
            for i in range(len(paths)):
                read(i)
        timings[name] = 1000 * (time.perf_counter() - start) / (repeats * len(paths))
    return timings


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
    root: Path,
    workers: int,
    cache: bool,
    samples: int,
    patch: int,
    batch: int,
    epochs: int,
    frame_store: Path | None = None,
) -> list[float]:
    """Clips per second of each epoch (from the PNG files under ``root``, or from ``frame_store``)."""
    dm = DeblurDataModule(
        layout="folder",
        root=root if frame_store is None else None,
        train_split=None,
        val_split=None,
        patch_size=patch,
        batch_size=batch,
        samples_per_epoch=samples,
        num_workers=workers,
        persistent_workers=True,
        cache_frames=cache,
        seed=0,
        frame_store=frame_store,
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
    parser.add_argument("--sources", nargs="+", default=SOURCES, choices=SOURCES)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    results = []
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="cdvd-bench-") as tmp:
        root = Path(tmp) / "frames"
        start = time.perf_counter()
        make_dataset(root, args.videos, args.frames, args.height, args.width)
        print(
            f"{args.videos} videos x {args.frames} frames of {args.width}x{args.height} PNG written in "
            f"{time.perf_counter() - start:.1f} s; {args.samples} clips of 5 x {args.patch}x{args.patch} per "
            f"epoch, batch {args.batch}, {os.cpu_count()} CPUs\nCPU: {cpu_summary()}\n"
        )
        stores: dict[str, Path] = {}
        for source, encoding in (("lmdb", "file"), ("lmdb-raw", "raw")):
            if source in args.sources:
                report = pack_dataset(root, Path(tmp) / f"frames-{encoding}.lmdb", encoding=encoding)
                stores[source] = report.output
                print(f"packed {report.n_frames} frames with encoding={encoding} in {report.seconds:.1f} s")
        sizes = [f"PNG files {disk_bytes(root) / 2**20:.1f} MiB"]
        sizes += [f"{source} {disk_bytes(path) / 2**20:.1f} MiB" for source, path in stores.items()]
        print(f"on disk: {', '.join(sizes)}\n")
        if "lmdb" in stores:
            timings = frame_read_ms(root, FrameStore(stores["lmdb"]))
            if "lmdb-raw" in stores:
                timings["lmdb (raw)"] = frame_read_ms(root, FrameStore(stores["lmdb-raw"]))["lmdb (png bytes)"]
            print("| one frame as uint8 RGB | ms |\n|:---|---:|")
            for name, ms in timings.items():
                print(f"| {name} | {ms:.2f} |")
            print()
        header = " | ".join(f"epoch {e + 1} clips/s" for e in range(args.epochs))
        print(f"| source | num_workers | cache_frames | {header} |")
        print("|:---|---:|:---:|" + "---:|" * args.epochs)
        cases = [("png", False), ("png", True)] if "png" in args.sources else []
        cases += [(source, False) for source in stores]
        for workers in args.workers:
            for source, cache in cases:
                rates = time_epochs(
                    root,
                    workers,
                    cache,
                    args.samples,
                    args.patch,
                    args.batch,
                    args.epochs,
                    frame_store=stores.get(source),
                )
                results.append({"source": source, "num_workers": workers, "cache_frames": cache, "clips_per_s": rates})
                print(
                    f"| {source} | {workers} | {'yes' if cache else 'no'} | "
                    + " | ".join(f"{r:.1f}" for r in rates)
                    + " |"
                )
    if args.json:
        settings = {"size": f"{args.width}x{args.height}", "patch": args.patch, "batch": args.batch}
        settings["cpu"] = cpu_summary()
        Path(args.json).write_text(json.dumps({"settings": settings, "results": results}, indent=2))


if __name__ == "__main__":
    main()
