"""Run every benchmark and write one markdown table.

    python scripts/bench_all.py                      # writes benchmarks.md (and prints it)
    python scripts/bench_all.py --quick              # smaller sizes: a few minutes on 2 cores
    python scripts/bench_all.py --output docs/bench.md

Each benchmark runs as its own process (clean peak memory, no shared caches) with ``--json``; this script only
collects the figures. The machine line (CPU, cores, torch, GPU) heads the table: compare figures only between runs
on the same machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from cdvd.hardware import cpu_description, native_bf16

SCRIPTS = Path(__file__).resolve().parent


def machine() -> str:
    """The machine line: CPU model and the flags that decide the fast paths, cores, torch, GPU."""
    cpu = cpu_description()
    flags = " ".join(name for name, present in cpu["flags"].items() if present) or "none of them"  # type: ignore[union-attr]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu['model']}, {os.cpu_count()} cores (flags: {flags}), torch {torch.__version__}, {gpu}"


def run(script: str, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(SCRIPTS / script), *args, "--json", str(out)]
        print("$", " ".join(cmd[1:]), flush=True)  # noqa: T201 - a script's progress
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


def cpu_backends(size: str) -> list[str]:
    """Streaming on the CPU with every backend and precision that can pay here, side by side with torch fp32:
    OpenVINO where it is installed, bf16 where the CPU has it natively (emulated bf16 would only be slow)."""
    backends = ["torch"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    precisions = ["fp32"] + (["bf16"] if native_bf16(torch.device("cpu")) else [])
    if len(backends) == 1 and len(precisions) == 1:
        return []
    args = ["--device", "cpu", "--sizes", size, "--modes", "streaming", "--backends", *backends]
    results = run("bench_deblur.py", [*args, "--precisions", *precisions])["results"]
    base = next((r for r in results if r["backend"] == "torch" and r["precision"] == "fp32"), None)
    lines = []
    for r in results:
        ratio = f" ({base['steady_s_per_frame'] / r['steady_s_per_frame']:.2f}x torch fp32)" if base else ""
        lines.append(
            f"| deblur (bench_deblur.py) | streaming, {r['size']}, {r['backend']} {r['precision']}, cpu | "
            f"{r['steady_s_per_frame']:.2f} s/frame{ratio} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--output", type=Path, default=Path("benchmarks.md"))
    args = parser.parse_args()

    model_sizes = ["256x256"] if args.quick else ["256x256", "1280x720"]
    deblur_sizes = ["640x360"] if args.quick else ["640x360", "1280x720"]
    lines = [f"Machine: {machine()}", "", "| benchmark | setting | figure |", "|---|---|---|"]

    model = run("bench_model.py", ["--sizes", *model_sizes])
    for r in model["results"]:
        what = f"{r['task']}, batch {r['batch']}, {r['size']}, fp32"
        lines.append(
            f"| model (bench_model.py) | {what} | {r['seconds']:.2f} s, {r['gflop']:.0f} GFLOP, "
            f"{r['gflops_per_s']:.0f} GFLOP/s, peak RSS {r['peak_rss_mib']:.0f} MiB |"
        )
    deblur = run("bench_deblur.py", ["--sizes", *deblur_sizes])
    for r in deblur["results"]:
        lines.append(
            f"| deblur (bench_deblur.py) | {r['mode']}, {r['size']}, {r['precision']}, {r['device']} | "
            f"{r['steady_s_per_frame']:.2f} s/frame, peak RSS {r['peak_rss_mib']:.0f} MiB |"
        )
    for size, speedup in deblur.get("speedup_steady", {}).items():
        lines.append(f"| deblur (bench_deblur.py) | streaming vs per-window, {size} | {speedup:.2f}x |")
    lines += cpu_backends(deblur_sizes[0])
    train_args = ["--step-patch", "192", "--step-repeats", "1"] if args.quick else []  # MS-SSIM needs >= 161
    train = run("bench_train.py", train_args)
    for r in train.get("train_step", []):
        lines.append(
            f"| train (bench_train.py) | step, {r['loss']}, batch {r['batch']}, {r['patch']}x{r['patch']}, "
            f"{r['device']} | {r['step_s']:.2f} s |"
        )
    hem = train["hem"]
    lines.append(
        f"| train (bench_train.py) | L1 + 2 HEM {tuple(hem['shape'])}, ours vs original host version | "
        f"{1000 * hem['ours_s']:.1f} ms vs {1000 * hem['host_s']:.1f} ms ({hem['speedup']:.1f}x) |"
    )
    data = run("bench_data.py", ["--frames", "8", "--samples", "24"] if args.quick else [])
    for r in data["results"]:
        rates = ", ".join(f"{v:.1f}" for v in r["clips_per_s"])
        lines.append(
            f"| data (bench_data.py) | {data['settings']['size']}, {r.get('source', 'png')}, patch "
            f"{data['settings']['patch']}, workers {r['num_workers']}, cache {'on' if r['cache_frames'] else 'off'} | "
            f"{rates} clips/s (per epoch) |"
        )
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    print(text)  # noqa: T201


if __name__ == "__main__":
    main()
