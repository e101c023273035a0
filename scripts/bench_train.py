"""Training-side timings.

    python scripts/bench_train.py                 # training steps (both losses) and HEM: ours vs the original's
    python scripts/bench_train.py --skip-steps --hem-shape 2 12 256 256 --repeats 20
    python scripts/bench_train.py --step-batch 2 --step-patch 256 --step-repeats 2 --device cuda

A training step is forward + loss + backward + Adam step of the full-size network (n_feat=32, n_resblock=3)
on random (B, 5, 3, P, P) clips, timed for ``l1_hem`` and ``msssim_l1`` (best of ``--step-repeats`` after one
warm-up step).

The original CDVD-TSP ``HEM`` loss moved the residual to numpy, sorted every sample on the host, built the
random mask with ``np.random.shuffle`` and copied the mask back; :func:`host_hem_loss` reproduces it. Ours
(:class:`cdvd.losses.L1HEMLoss`) stays on the tensors' device with ``kthvalue`` and ``torch.rand``; both are
timed as the whole paper loss (L1 + 2 * HEM) on the 12-channel target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def host_hem_loss(x: torch.Tensor, y: torch.Tensor, hard_ratio: float = 0.5, random_ratio: float = 0.1) -> torch.Tensor:
    """The original code's HEM term, host round trip included (``loss/hard_example_mining.py``)."""
    b, _, h, w = x.size()
    hard_mask = np.zeros(shape=(b, 1, h, w))
    res = torch.sum(torch.abs(x - y), dim=1, keepdim=True)
    res_numpy = res.detach().cpu().numpy()
    res_line = res.view(b, -1)
    res_sort = [res_line[i].sort(descending=True) for i in range(b)]
    hard_thre_ind = int(hard_ratio * w * h)
    for i in range(b):
        thre_res = res_sort[i][0][hard_thre_ind].item()
        hard_mask[i] = (res_numpy[i] > thre_res).astype(np.float32)
    random_thre_ind = int(random_ratio * w * h)
    random_mask = np.zeros(shape=(b, 1 * h * w))
    for i in range(b):
        random_mask[i, :random_thre_ind] = 1.0
        np.random.shuffle(random_mask[i])
    random_mask = np.reshape(random_mask, (b, 1, h, w))
    mask = hard_mask + random_mask
    mask = (mask > 0.0).astype(np.float32)
    mask = torch.Tensor(mask).to(x.device)
    return F.l1_loss(x * mask, y * mask)


def _time(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def bench_hem(
    shape: tuple[int, int, int, int] = (2, 12, 256, 256),
    *,
    repeats: int = 10,
    device: str = "cpu",
    backward: bool = False,
) -> dict[str, float]:
    """Median seconds of the paper loss, ours against the original's host HEM, on ``shape`` = (B, 12, H, W).

    Args:
        shape: prediction and target shape (the 12-channel training target).
        repeats: timed calls of each (after one warm-up).
        device: where the tensors live.
        backward: time forward + backward instead of forward only.

    Returns:
        ``{"ours_s", "host_s", "speedup", ...}``.
    """
    from cdvd.losses import L1HEMLoss, cascade_target
    from cdvd.models.cdvd_tsp import CascadeOutput

    b, c, h, w = shape
    if c != 12:
        raise ValueError(f"the training target has 12 channels, instead got {c}")
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    outputs = CascadeOutput(
        *(torch.rand(b, 3, h, w, generator=g, device=dev, requires_grad=backward) for _ in range(4))
    )
    sharp = torch.rand(b, 5, 3, h, w, generator=g, device=dev)
    loss_fn = L1HEMLoss()

    def ours() -> None:
        loss = loss_fn(outputs, sharp, generator=g)["loss"]
        if backward:
            loss.backward()

    def host() -> None:
        # the original: L1 on the 12 channels plus 2 * HEM with the host mask
        x, y = cascade_target(outputs, sharp)
        loss = F.l1_loss(x, y) + 2.0 * host_hem_loss(x, y)
        if backward:
            loss.backward()

    ours_t = _time(ours, repeats, dev)
    host_t = _time(host, repeats, dev)
    result = {
        "shape": list(shape),
        "device": str(dev),
        "backward": backward,
        "threads": torch.get_num_threads(),
        "ours_s": statistics.median(ours_t),
        "host_s": statistics.median(host_t),
    }
    result["speedup"] = result["host_s"] / result["ours_s"]
    return result


def bench_train_step(
    loss_name: str,
    *,
    batch: int = 2,
    patch: int = 256,
    repeats: int = 2,
    device: str = "cpu",
    precision: str = "32",
) -> dict[str, object]:
    """Best seconds of one optimiser step of the full-size network with the ``loss_name`` loss, in fp32 (``32``) or
    with forward and loss under bf16 autocast (``bf16-mixed``, what Lightning's ``trainer.precision`` does)."""
    from cdvd.losses import L1HEMLoss, MSSSIML1Loss
    from cdvd.models import CDVDTSP

    dev = torch.device(device)
    torch.manual_seed(0)
    net = CDVDTSP().to(dev).train()
    loss_fn = {"l1_hem": L1HEMLoss, "msssim_l1": MSSSIML1Loss}[loss_name]().to(dev)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    blur = torch.rand(batch, 5, 3, patch, patch, device=dev)
    sharp = torch.rand(batch, 5, 3, patch, patch, device=dev)

    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(net(blur), sharp)["loss"]
        loss.backward()
        optimizer.step()

    times = _time(step, repeats, dev)  # after one untimed warm-up step
    return {
        "loss": loss_name,
        "batch": batch,
        "patch": patch,
        "device": str(dev),
        "precision": precision,
        "step_s": min(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hem-shape", nargs=4, type=int, default=[2, 12, 256, 256], metavar=("B", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-steps", action="store_true", help="only the HEM comparison")
    parser.add_argument("--step-batch", type=int, default=2)
    parser.add_argument("--step-patch", type=int, default=256)
    parser.add_argument("--step-repeats", type=int, default=2)
    parser.add_argument("--step-losses", nargs="+", default=["l1_hem", "msssim_l1"], choices=["l1_hem", "msssim_l1"])
    parser.add_argument(
        "--step-precisions", nargs="+", default=["32"], choices=["32", "bf16-mixed"], help="trainer.precision values"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, object] = {}
    if not args.skip_steps:
        steps = [
            bench_train_step(
                name,
                batch=args.step_batch,
                patch=args.step_patch,
                repeats=args.step_repeats,
                device=args.device,
                precision=precision,
            )
            for name in args.step_losses
            for precision in args.step_precisions
        ]
        from cdvd.hardware import cpu_description

        report["cpu"] = cpu_description()
        print(f"CPU: {report['cpu']}")  # noqa: T201 - a script's report
        report["train_step"] = steps
        for step in steps:
            print(  # noqa: T201 - a script's report
                f"training step, {step['loss']}, {step['precision']}, batch {step['batch']}, patch {step['patch']}, "
                f"{step['device']}: {step['step_s']:.2f} s"
            )
    result = bench_hem(tuple(args.hem_shape), repeats=args.repeats, device=args.device, backward=args.backward)
    print(  # noqa: T201 - a script's report
        f"L1 + 2 HEM {tuple(result['shape'])} on {result['device']}: ours {1000 * result['ours_s']:.1f} ms, "
        f"original host version {1000 * result['host_s']:.1f} ms ({result['speedup']:.1f}x)"
    )
    report["hem"] = result
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
