"""Whole ``cdvd-deblur`` processes on real footage, one per backend/precision, side by side in one run.

Each configuration deblurs the same frames (the shared phone clip, resized to ``--size``) with the full-size network
(random weights, seeded, saved as an original ``.pt``) as a user would run it, timed as a whole process (start-up,
model load, conversion, every frame, writing). The OpenVINO conversion cache (``cache_dir``) starts empty: the
first ``backend=openvino`` run converts and saves, later ones read it (``ov_cache`` says which). List a config
twice to time it both ways. Outputs are compared with the first configuration's frames: the
largest difference in uint8 levels and the PSNR. The CPU's relevant flags are printed with the figures.

    python scripts/bench_cli_backends.py
    python scripts/bench_cli_backends.py --size 640x384 --frames 6 --json bench_cli_backends.json
    python scripts/bench_cli_backends.py --configs "precision=fp32 backend=torch" "precision=fp32 backend=openvino"
    python scripts/bench_cli_backends.py --configs "precision=fp32 backend=torch" "precision=bf16 backend=openvino" \
        "precision=bf16 backend=openvino"       # OpenVINO bf16 with a cold, then a warm cache
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cdvd.checkpoints import save_original
from cdvd.data.io import list_frames, read_rgb, write_rgb
from cdvd.hardware import cpu_description
from cdvd.models import CDVDTSP

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = REPO.parent / "shared" / "data" / "real" / "smartphone_shake" / "frames" / "VID_20150407_232353"
DEFAULT_CONFIGS = (
    "precision=fp32 backend=torch",
    "precision=fp32 backend=torch channels_last=true",
    "precision=bf16 backend=torch",
    "precision=fp32 backend=openvino",
    "precision=bf16 backend=openvino",
)


def prepare_frames(source: Path, target: Path, size: tuple[int, int], n: int) -> None:
    frames = list_frames(source)[:n]
    if len(frames) < n:
        raise SystemExit(f"{source} has {len(frames)} frames, fewer than --frames {n}")
    for path in frames:
        image = cv2.resize(read_rgb(path), size, interpolation=cv2.INTER_AREA)
        write_rgb(target / path.name, image)


def compare(reference: Path, other: Path) -> dict[str, float]:
    worst, squared, count = 0, 0.0, 0
    for path in sorted(reference.glob("*.png")):
        a = read_rgb(path).astype(np.int64)
        b = read_rgb(other / path.name).astype(np.int64)
        worst = max(worst, int(np.abs(a - b).max()))
        squared += float(((a - b) ** 2).sum())
        count += a.size
    mse = squared / count
    return {"max_abs_levels": worst, "psnr_db": math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames-dir", type=Path, default=DEFAULT_FRAMES)
    parser.add_argument("--size", default="640x384", help="WIDTHxHEIGHT the frames are resized to")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    script = Path(sys.executable).with_name("cdvd-deblur")
    # the console script where cdvd is installed; the module where it runs from a source tree (PYTHONPATH)
    exe = [str(script)] if script.exists() else [sys.executable, "-m", "cdvd.cli.deblur"]
    work = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    try:
        prepare_frames(args.frames_dir, work / "in", (width, height), args.frames)
        torch.manual_seed(0)
        save_original(CDVDTSP(n_feat=32, n_resblock=3), work / "full.pt")
        rows = []
        for index, config in enumerate(args.configs):
            out = work / f"out{index}"
            command = [*exe, f"input={work / 'in'}", f"output={out}", f"checkpoint={work / 'full.pt'}", "device=cpu"]
            command += ["progress=false", *config.split()]
            cache = work / "cache"
            warm = (cache / "openvino" / "ir").is_dir() and any((cache / "openvino" / "ir").iterdir())
            env = {**os.environ, "CDVD_CACHE_DIR": str(cache)}
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - start
            row: dict[str, object] = {"config": config, "seconds": round(seconds, 1), "returncode": done.returncode}
            if "openvino" in config:
                row["ov_cache"] = "warm" if warm else "cold"
            if done.returncode != 0:
                row["error"] = done.stderr.strip().splitlines()[-1:]
            else:
                row.update(compare(work / "out0" / "in", out / "in"))
                # the run's own summary line: its video loop, from reading the first frame to the last write (an
                # OpenVINO conversion and compilation happen inside it, at the first frame); the rest of the process
                # (interpreter, imports, settings, loading the checkpoint) is start-up
                found = re.search(r"frames written to \S+ in ([\d.]+) s", " ".join(done.stdout.split()))
                if found:
                    row["video_s"] = float(found[1])
                    row["startup_s"] = round(seconds - float(found[1]), 1)
                row["speedup"] = round(rows[0]["seconds"] / seconds, 2) if rows else 1.0  # type: ignore[operator]
            rows.append(row)
            print(json.dumps(row))  # noqa: T201 - a benchmark's output
        result = {
            "cpu": cpu_description(),
            "torch": torch.__version__,
            "size": [width, height],
            "frames": args.frames,
            "source": str(args.frames_dir),
            "rows": rows,
        }
        print(json.dumps(result["cpu"]))  # noqa: T201
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
