"""Lightning DDP with 2 processes on one device, for ``scripts/bench_gpu.py``.

The ``ddp`` measurement starts two rank processes (``bench_gpu.py --worker ddp-rank``) with the variables of
Lightning's ``LightningEnvironment`` (``NODE_RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): two "nodes" of
one process each, both on device 0, which Lightning's own launcher would refuse (``devices=2`` needs two GPUs). Each
rank fits ``cdvd.training.module.DeblurModule`` (L1 + HEM, Adam) for a few steps on random clips; the backends are tried
in turn until one works (NCCL first: it may refuse two ranks on one device; then gloo, which takes CUDA tensors).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_gpu_report import last_line
from bench_gpu_workers import peak_memory, reset_peak

STILL_NEEDED_FOR_2_GPUS = [
    "NCCL between two devices (one rank per GPU, peer-to-peer or NVLink traffic): not exercised by one GPU",
    "Lightning's own launcher (trainer=ddp trainer.devices=2 starts the second process itself); here the two ranks "
    "were started by this script with LightningEnvironment's variables (NODE_RANK, LOCAL_RANK, MASTER_PORT)",
    "the DistributedSampler splitting a real data set between ranks, and validation under DDP",
    "tests/test_gpu.py::test_ddp_on_two_gpus (cdvd-train trainer=ddp on 2 GPUs), skipped on one GPU",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _ddp_attempt(spec: dict[str, Any], backend: str, workdir: Path, timeout: float) -> dict[str, Any]:
    """Two rank processes on one device with ``backend``; waits at most ``timeout`` seconds for both."""
    script = str(Path(__file__).with_name("bench_gpu.py"))
    port = _free_port()
    procs, results, logs = [], [], []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": "2",
            "NODE_RANK": str(rank),
            "LOCAL_RANK": "0",
            "PYTHONUNBUFFERED": "1",
        }
        result, log = workdir / f"ddp-{backend}-rank{rank}.json", workdir / f"ddp-{backend}-rank{rank}.log"
        results.append(result)
        logs.append(log)
        rank_spec = json.dumps({**spec, "backend": backend, "rank": rank})
        command = [sys.executable, script, "--worker", "ddp-rank", "--spec", rank_spec, "--result", str(result)]
        with open(log, "w") as out:
            procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir))
    deadline = time.monotonic() + timeout
    start = time.perf_counter()
    timed_out = False
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    attempt: dict[str, Any] = {"backend": backend, "exit_codes": [p.returncode for p in procs]}
    attempt["seconds"] = round(time.perf_counter() - start, 2)
    ranks = [json.loads(r.read_text()) for r in results if r.exists()]
    if timed_out or len(ranks) < 2 or any(p.returncode != 0 for p in procs):
        reason = f"timed out after {timeout:.0f} s" if timed_out else "a rank failed"
        tails = [_tail(log) for log in logs]
        ranks_said = "; ".join(f"rank {rank}: {last_line(t)}" for rank, t in enumerate(tails))
        attempt.update(ok=False, error=f"{reason} ({ranks_said})", log_tails=tails)
        return attempt
    checksums = [float(r["figures"]["param_checksum"]) for r in ranks]
    attempt.update(
        ok=True,
        ranks=ranks,
        params_equal_across_ranks=abs(checksums[0] - checksums[1]) <= 1e-6 * max(1.0, abs(checksums[0])),
    )
    return attempt


def ddp(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Lightning DDP with 2 processes on one device: each backend of ``spec["backends"]`` in turn until one works."""
    deadline = time.monotonic() + float(spec["limit_s"])
    attempts = []
    for i, backend in enumerate(spec["backends"]):
        left = deadline - time.monotonic()
        share = left / (len(spec["backends"]) - i) if i < len(spec["backends"]) - 1 else left
        attempt = _ddp_attempt(spec, backend, workdir, max(share - 2.0, 5.0))
        attempts.append(attempt)
        if attempt["ok"]:
            break
    details: dict[str, Any] = {
        "attempts": attempts,
        "skipped_backends": spec.get("skipped_backends", {}),
        "still_needed_for_2_gpus": STILL_NEEDED_FOR_2_GPUS,
    }
    good = next((a for a in attempts if a["ok"]), None)
    if good is None:
        return {
            "figures": {},
            "details": details,
            "error": "; ".join(f"{a['backend']}: {a['error']}" for a in attempts),
        }
    ranks = good["ranks"]
    details["backend_used"] = good["backend"]
    details["params_equal_across_ranks"] = good["params_equal_across_ranks"]
    figures = {
        "ranks": len(ranks),
        "steps": min(int(r["figures"]["steps"]) for r in ranks),
        "seconds": good["seconds"],
        "fit_s_rank0": ranks[0]["figures"]["fit_s"],
        "ranks_exit_clean": int(all(code == 0 for code in good["exit_codes"])),
        "params_equal_across_ranks": int(good["params_equal_across_ranks"]),
    }
    for key in ("peak_cuda_allocated_mib", "peak_rss_mib"):
        if key in ranks[0]["figures"]:
            figures[f"{key}_rank0"] = ranks[0]["figures"][key]
    if not good["params_equal_across_ranks"]:
        return {"figures": figures, "details": details, "error": "the ranks' weights differ after training"}
    return {"figures": figures, "details": details}


def ddp_rank(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One rank: ``DeblurModule`` (L1 + HEM, Adam) fitted for a few steps on random clips, then a clean exit."""
    import datetime

    import pytorch_lightning as pl
    import torch
    from bench_model import FULL_SIZE
    from pytorch_lightning.strategies import DDPStrategy
    from torch.utils.data import DataLoader

    from cdvd.training.module import DeblurModule

    device = torch.device(spec["device"])
    patch, batch, steps = spec["patch"], spec["batch"], spec["steps"]
    generator = torch.Generator().manual_seed(spec["rank"])
    clips = [
        {"blur": torch.rand(5, 3, patch, patch, generator=generator), "sharp": torch.rand(5, 3, patch, patch)}
        for _ in range(2 * batch * steps)
    ]
    torch.manual_seed(0)
    module = DeblurModule(
        {"_target_": "cdvd.models.CDVDTSP", **FULL_SIZE, **spec["network"]},
        loss={"_target_": "cdvd.losses.L1HEMLoss"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4},
        log_images=False,
    )
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        num_nodes=2,  # two "nodes" of one process each, both on the one device
        strategy=DDPStrategy(
            process_group_backend=spec["backend"], timeout=datetime.timedelta(seconds=spec["collective_timeout_s"])
        ),
        precision=spec["precision"],
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=str(workdir),
    )
    reset_peak(device)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(clips, batch_size=batch))
    fit_s = time.perf_counter() - start
    peak = peak_memory(device)
    checksum = sum(float(p.detach().double().sum()) for p in module.parameters())
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return {
        "figures": {
            "steps": int(trainer.global_step),
            "fit_s": round(fit_s, 3),
            "world_size": world,
            "param_checksum": checksum,
            **peak,
        },
        "details": {"rank": spec["rank"], "backend": spec["backend"], "device": str(module.device)},
    }


WORKERS = {"ddp": ddp, "ddp-rank": ddp_rank}
