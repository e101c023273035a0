"""Every GPU measurement of issue 24 in one command: deblurring, training, DDP and the correlation kernel.

    python scripts/bench_gpu.py                            # on a GPU: 7.5 minutes at most, JSON in benchmarks/gpu/
    python scripts/bench_gpu.py --device cpu --quick       # tiny sizes on the CPU (what the tests run)
    python scripts/bench_gpu.py --only deblur-bf16-cupy train-bf16-mixed --out-dir /tmp/gpu

Measured side by side on one card, each in its own process (its own peak memory; a crash, a hang past its limit or
a failed ``torch.compile`` is written down as that measurement's error and the others go on):

- ``deblur-*``: a synthetic 1280x720 video through the streaming engine of ``cdvd-deblur`` (the full-size network,
  seeded random weights): fp32, bf16, fp16; the cupy and the PyTorch correlation; channels-last; cudnn benchmark;
  ``compile=true``. Frames per second (steady: the median interval between outputs after the first), peak memory,
  and the agreement with ``deblur-fp32-torch`` (PSNR and max |diff| of the outputs clipped to [0, 1]).
- ``train-*``: one training step at the paper's setting (batch 8, patch 256, L1 + HEM, Adam), fp32 and bf16-mixed:
  samples per second, peak memory, the GOPRO epoch (2103 frames) this implies beside the original's 45 minutes.
- ``ddp``: Lightning DDP with 2 processes on the one GPU (NCCL, else gloo), a few steps, both ranks exit cleanly.
- ``correlation``: the cupy kernel against PyTorch's correlation alone, forward and forward + backward.

A total time budget (``--budget-s``) bounds the run: each measurement runs under its own limit, cut to what is
left, and one that cannot start in time is recorded as skipped. The JSON (``<date>-<card>.json``: card, driver,
torch/CUDA/cudnn/cupy/Lightning versions, every figure with its settings) is rewritten after every measurement,
so a run stopped from outside keeps what it measured (``"complete": false``). Parts this machine cannot run
(cupy or fp16 without CUDA, NCCL on the CPU, ``torch.compile`` in ``--quick`` on the CPU) are skipped with the reason.

On the GPU machine (PyTorch, Lightning, torchmetrics and cupy there; not Hydra, omegaconf, pytorch-msssim,
torch-lr-finder or PyAV): deblurring and the correlation need PyAV (``cdvd.inference`` reaches it through
``cdvd.video``) but neither Hydra nor pytorch-msssim; the training step needs pytorch-msssim (``cdvd.losses``), DDP
also Hydra (``cdvd.training.module``). So first, here, ``bash scripts/gpu_wheels.sh`` (wheels into ``.gpu-wheels/``),
then one device call with ``carry=[".gpu-wheels"]``, ``timeout_s=600`` and as its command the one line that
``python scripts/bench_gpu.py --print-device-command`` prints (the same, wrapped)::

    set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .gpu-wheels/*.whl || exit 1; export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1; \\
        timeout 560 python3 scripts/bench_gpu.py --device cuda --out-dir $OUT 2>&1 | tee $OUT/bench_gpu.log

``$PWD`` first on ``PYTHONPATH``: the benchmark measures the working tree's cdvd (the wheel's copy brings the
console scripts and the packaged configs: for ``pytest tests/test_gpu.py`` there, ``PYTHONPATH=/tmp/site``).
Copy ``$OUT/<date>-<card>.json`` into ``benchmarks/gpu/``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_gpu_report import (
    REFERENCE,
    Measurement,
    add_agreement,
    add_throughput,
    environment,
    flops,
    last_line,
    output_path,
    report,
    table,
    targets,
    write_json,
)

SCRIPTS = Path(__file__).resolve().parent
DEVICE_COMMAND = " ".join(
    [
        "set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade",
        "--target /tmp/site .gpu-wheels/*.whl || exit 1; export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1;",
        "timeout 560 python3 scripts/bench_gpu.py --device cuda --out-dir $OUT 2>&1 | tee $OUT/bench_gpu.log",
    ]
)
DEFAULT_OUT = SCRIPTS.parent / "benchmarks" / "gpu"
FULL_SIZE = {"n_feat": 32, "n_resblock": 3}
TINY = {"n_feat": 4, "n_resblock": 1}
# (id, precision, correlation, channels_last, cudnn_benchmark, compile); corr "auto": the cupy kernel on CUDA
DEBLUR_CASES = [
    (REFERENCE, "fp32", "torch", False, False, False),
    ("deblur-fp32-cupy", "fp32", "cupy", False, False, False),
    ("deblur-bf16-cupy", "bf16", "cupy", False, False, False),
    ("deblur-bf16-torch", "bf16", "torch", False, False, False),
    ("deblur-fp16-cupy", "fp16", "cupy", False, False, False),
    ("deblur-fp32-cl", "fp32", "auto", True, False, False),
    ("deblur-bf16-cl", "bf16", "auto", True, False, False),
    ("deblur-bf16-cl-cudnnbench", "bf16", "auto", True, True, False),
    ("deblur-bf16-cl-cudnnbench-compile", "bf16", "auto", True, True, True),
]


class BenchError(Exception):
    """A setting of this command that cannot work: one line on stderr, exit 2."""


# ---------------------------------------------------------------------------------------------------- the plan


def plan(device: str, quick: bool, cupy: str | None) -> list[Measurement]:
    """Every measurement in running order (compile last: the slowest and likeliest to fail).

    ``cupy``: why the cupy kernel cannot run here, or None when it can.
    """
    cuda = device == "cuda"
    scale = 4.0 if quick and not cuda else 1.0  # a loaded CPU: generous limits rather than flaky timeouts
    network = TINY if quick else FULL_SIZE
    out: list[Measurement] = []
    for case_id, precision, corr, channels_last, cudnn_bench, compile_ in DEBLUR_CASES:
        settings = {
            "size": "48x32" if quick else "1280x720",
            "frames": 5 if quick else 12,
            "network": network,
            "precision": precision,
            "corr": corr,
            "channels_last": channels_last,
            "cudnn_benchmark": cudnn_bench,
            "compile": compile_,
            "streaming": True,
            "weights": "random, seed 0",
        }
        skip = None
        if corr == "cupy" and cupy:
            skip = cupy
        elif precision == "fp16" and not cuda:
            skip = "fp16 runs on CUDA only (cdvd-deblur refuses precision=fp16 on the CPU)"
        elif cudnn_bench and not compile_ and not cuda:
            skip = "cudnn.benchmark is a CUDA setting: on the CPU this case is deblur-bf16-cl again"
        elif compile_ and quick and not cuda:
            skip = "torch.compile on the CPU takes minutes: left out of --quick (run without --quick to measure it)"
        out.append(Measurement(case_id, "deblur", settings, (200.0 if compile_ else 75.0) * scale, skip))
    for precision in ("32", "bf16-mixed"):
        settings = {
            "batch": 1 if quick else 8,
            "patch": 32 if quick else 256,
            "repeats": 1 if quick else 3,
            "precision": precision,
            "loss": "l1_hem",
            "optimizer": "Adam",
            "network": FULL_SIZE,
        }
        out.append(Measurement(f"train-{precision}", "train", settings, 100.0 * scale))
    shapes = (
        {"tiny": [1, 8, 12, 16]}
        if quick
        else {"720p-level2": [1, 32, 192, 320], "720p-level3": [1, 64, 96, 160], "train-level2": [8, 32, 64, 64]}
    )
    settings = {
        "shapes": shapes,
        "dtypes": ["fp32"] if quick else ["fp32", "bf16"],
        "backends": ["torch"] + ([] if cupy else ["cupy"]),
        "repeat": 2 if quick else 10,
        "warmup": 1 if quick else 2,
        "skipped_backends": {"cupy": cupy} if cupy else {},
    }
    out.append(Measurement("correlation", "correlation", settings, 60.0 * scale))
    settings = {
        "processes": 2,
        "network": network,
        "batch": 1 if quick else 2,
        "patch": 32 if quick else 128,
        "steps": 2 if quick else 4,
        "precision": "bf16-mixed" if cuda else "32-true",
        "backends": ["nccl", "gloo"] if cuda else ["gloo"],
        "skipped_backends": {} if cuda else {"nccl": "NCCL needs CUDA devices"},
        "collective_timeout_s": 60,
    }
    out.append(Measurement("ddp", "ddp", settings, 150.0 * scale))
    compile_case = next(m for m in out if m.settings.get("compile"))
    out.remove(compile_case)
    return [*out, compile_case]


# ---------------------------------------------------------------------------------------------------- running


def run_one(m: Measurement, device: str, workdir: Path, limit: float, threads: int | None) -> dict[str, Any]:
    """``m`` in its own process group, killed with everything it started once ``limit`` seconds have passed."""
    result, log = workdir / f"{m.id}.result.json", workdir / f"{m.id}.log"
    spec = {**m.settings, "id": m.id, "device": device, "limit_s": limit, "threads": threads}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", m.kind, "--spec", json.dumps(spec)]
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:  # also for Lightning, which sets torch's threads from the CPU count unless OMP_NUM_THREADS is set
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*command, "--result", str(result)], stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
            env=env, **group,  # type: ignore[call-overload]
        )  # fmt: skip
        timed_out = False
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # also when this process is interrupted: nothing of the measurement outlives it
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    entry: dict[str, Any] = {"wall_s": round(time.perf_counter() - start, 2), "limit_s": round(limit, 1)}
    tail = log.read_text(errors="replace")[-3000:]
    if timed_out:
        return {**entry, "status": "timeout", "error": f"stopped after its limit of {limit:.0f} s", "log_tail": tail}
    if proc.returncode != 0 or not result.exists():
        error = f"exit code {proc.returncode}: {last_line(tail)}"
        return {**entry, "status": "error", "error": error, "log_tail": tail}
    data = json.loads(result.read_text())
    if "error" in data:
        return {**entry, **data, "status": "error", "log_tail": tail}
    return {**entry, **data, "status": "ok"}


# -------------------------------------------------------------------------------------------------- command line


def check_settings(args: argparse.Namespace) -> str | None:
    """Refuse what cannot work before any measurement; returns why cupy cannot run here (None: it can)."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is visible here (use --device cpu --quick to try the script)")
    if args.budget_s <= 0:
        raise BenchError(f"--budget-s must be positive, instead got {args.budget_s:g}")
    try:
        from cdvd.atomic import probe_writable

        probe_writable(args.out_dir)
    except OSError as err:
        raise BenchError(f"--out-dir {args.out_dir}: cannot write there ({err.strerror or err})") from None
    if args.device != "cuda":
        return "the cupy kernel needs CUDA (device cpu)"
    from cdvd.models.correlation import cupy_available

    return None if cupy_available() else "cupy is not importable here (pip install 'cdvd[cuda]' or 'cdvd[cuda13]')"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing")
    parser.add_argument("--budget-s", type=float, default=None, help="whole run (default 450; --quick on CPU 900)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--only", nargs="+", default=None, metavar="ID", help="run only these measurements")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per measurement (default: torch's; --quick on CPU: 1)"
    )
    parser.add_argument("--print-device-command", action="store_true", help="print the GPU machine's command line")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick_cpu = args.quick and args.device == "cpu"
    if args.budget_s is None:
        args.budget_s = 900.0 if quick_cpu else 450.0
    if args.threads is None and quick_cpu:
        args.threads = 1  # tiny sizes on a shared CPU: more threads only wait for each other
    return args


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process; its result goes to ``--result`` (written last: absent on a crash)."""
    from bench_gpu_ddp import WORKERS as DDP_WORKERS
    from bench_gpu_workers import WORKERS

    spec = json.loads(args.spec)
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    result = {**WORKERS, **DDP_WORKERS}[args.worker](spec, Path.cwd())
    tmp = args.result.with_name(args.result.name + ".tmp")
    tmp.write_text(json.dumps(result, allow_nan=False))
    os.replace(tmp, args.result)


def selected(args: argparse.Namespace, cupy: str | None) -> list[Measurement]:
    """The plan, or the part of it that ``--only`` names (an unknown name refused before any work)."""
    measurements = plan(args.device, args.quick, cupy)
    if args.only:
        known = {m.id for m in measurements}
        unknown = sorted(set(args.only) - known)
        if unknown:
            raise BenchError(f"--only {' '.join(unknown)}: no such measurement (known: {', '.join(sorted(known))})")
        measurements = [m for m in measurements if m.id in args.only]
    return measurements


def add_comparisons(state: dict[str, Any], measurements: list[Measurement], workdir: Path) -> None:
    """The figures that compare measurements (PSNR against fp32, TFLOP/s): a failure loses them, not the rest."""
    try:
        add_agreement(measurements, workdir)
    except Exception as err:  # noqa: BLE001
        state["agreement_error"] = f"{type(err).__name__}: {err}"
    try:
        state["flops"] = flops(measurements)
        add_throughput(measurements, state["flops"])
    except Exception as err:  # noqa: BLE001
        state["flops_error"] = f"{type(err).__name__}: {err}"


def run_all(args: argparse.Namespace, cupy: str | None) -> Path:
    started = time.monotonic()
    measurements = selected(args, cupy)
    env = environment(args.device)
    now = datetime.datetime.now(datetime.timezone.utc)
    path = output_path(args.out_dir, env["card"], now.date().isoformat())
    state: dict[str, Any] = {
        "schema": 1,
        "started": now.isoformat(timespec="seconds"),
        "complete": False,
        "settings": {
            "device": args.device,
            "quick": args.quick,
            "budget_s": args.budget_s,
            "threads": args.threads,
            "only": args.only,
        },
        "environment": env,
    }
    print(f"{env['card']}, torch {env['torch']}, CUDA {env['cuda']}, cupy {env['cupy']}; results: {path}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        workdir = Path(tmp)
        for m in measurements:
            left = args.budget_s - (time.monotonic() - started)
            if m.skip:
                m.entry = {"status": "skipped", "reason": m.skip}
            elif left < min(30.0, m.limit_s):
                m.entry = {"status": "skipped", "reason": f"time budget spent ({left:.0f} s of {args.budget_s:g} left)"}
            else:
                print(f"{m.id} ...", flush=True)
                try:
                    m.entry = run_one(m, args.device, workdir, min(m.limit_s, left), args.threads)
                except KeyboardInterrupt:
                    m.entry = {"status": "interrupted", "error": "the run was stopped (SIGINT or SIGTERM) during it"}
                    write_json(path, report(state, measurements))
                    raise
            print(table([m]).splitlines()[-1], flush=True)
            write_json(path, report(state, measurements))
        add_comparisons(state, measurements, workdir)
    state["complete"] = True
    state["wall_s"] = round(time.monotonic() - started, 1)
    write_json(path, report(state, measurements))
    print("\n" + table(measurements) + "\n")
    print(json.dumps({"targets": targets(measurements)}, indent=2))
    print(f"written: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.print_device_command:
        print(DEVICE_COMMAND)
        return 0
    if args.worker:
        worker(args)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` stops the run: the measurement in flight goes too
    try:
        cupy = check_settings(args)
        run_all(args, cupy)
    except BenchError as err:
        print(f"bench_gpu: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench_gpu: stopped; the JSON keeps the measurements finished so far", file=sys.stderr)
        return 130
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
