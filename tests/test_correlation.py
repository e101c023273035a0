"""The PWC-Net cost volume: PyTorch version against its definition, backend choice, and the cupy kernel."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.reference import reference_clip, reference_expected, reference_state_dict

import cdvd
from cdvd.models.correlation import MAX_DISPLACEMENT, NUM_DISPLACEMENTS, correlation, correlation_torch

# `cdvd.models.correlation` as an attribute is the function that `cdvd.models` re-exports, not the module
correlation_module = importlib.import_module("cdvd.models.correlation")
needs_cupy = pytest.mark.skipif(not correlation_module.cupy_available(), reason="needs a CUDA GPU and cupy")


def correlation_by_definition(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``out[b, (dy+4)*9 + (dx+4), y, x] = sum_c first[b,c,y,x] * second[b,c,y+dy,x+dx] / C``, looped."""
    batch, channels, height, width = first.shape
    d = MAX_DISPLACEMENT
    out = torch.zeros(batch, NUM_DISPLACEMENTS, height, width, dtype=torch.float64)
    for b in range(batch):
        for dy in range(-d, d + 1):
            for dx in range(-d, d + 1):
                k = (dy + d) * (2 * d + 1) + (dx + d)
                for y in range(height):
                    for x in range(width):
                        y2, x2 = y + dy, x + dx
                        if 0 <= y2 < height and 0 <= x2 < width:
                            total = sum(float(first[b, c, y, x]) * float(second[b, c, y2, x2]) for c in range(channels))
                            out[b, k, y, x] = total / channels
    return out


def test_matches_definition() -> None:
    # 5 x 6 is smaller than the 9 x 9 window: many displacements fall partly or wholly outside the image
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=generator)
    second = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=generator)
    got = correlation_torch(first, second)
    assert got.shape == (2, 81, 5, 6)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, correlation_by_definition(first, second), rtol=1e-12, atol=1e-12)


def test_channel_order_and_zero_outside() -> None:
    """A single bright pixel in ``second`` shows up in the channel of its displacement only."""
    first = torch.ones(1, 2, 9, 9)
    second = torch.zeros(1, 2, 9, 9)
    second[0, :, 6, 3] = 1.0  # displacement from the centre (4, 4): dy = 2, dx = -1
    out = correlation_torch(first, second)
    centre = out[0, :, 4, 4]
    expected_channel = (2 + 4) * 9 + (-1 + 4)
    assert int(centre.argmax()) == expected_channel
    assert float(centre[expected_channel]) == 1.0  # (1 * 1 + 1 * 1) / C
    assert float(centre.sum()) == 1.0
    # the corner pixel sees nothing beyond the border: every displacement with y + dy < 0 is zero
    assert torch.all(out[0, : 4 * 9, 0, 0] == 0)


def test_gradcheck() -> None:
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(1, 3, 6, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    second = torch.randn(1, 3, 6, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(correlation_torch, (first, second), fast_mode=True)


def correlation_by_autograd(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The cost volume in plain differentiable PyTorch (autograd derives the backward)."""
    d = MAX_DISPLACEMENT
    height, width = first.shape[-2:]
    padded = torch.nn.functional.pad(second, (d, d, d, d))
    planes = [
        (first * padded[:, :, dy : dy + height, dx : dx + width]).sum(dim=1)
        for dy in range(2 * d + 1)
        for dx in range(2 * d + 1)
    ]
    return torch.stack(planes, dim=1) / first.shape[1]


@pytest.mark.parametrize("needs", ["both", "first", "second"])
def test_backward_matches_autograd(needs: str) -> None:
    generator = torch.Generator().manual_seed(1)
    first = torch.randn(2, 5, 7, 9, dtype=torch.float64, generator=generator)
    second = torch.randn(2, 5, 7, 9, dtype=torch.float64, generator=generator)
    grad = torch.randn(2, 81, 7, 9, dtype=torch.float64, generator=generator)
    results = []
    for fn in (correlation_torch, correlation_by_autograd):
        a = first.clone().requires_grad_(needs in ("both", "first"))
        b = second.clone().requires_grad_(needs in ("both", "second"))
        out = fn(a, b)
        out.backward(grad)
        results.append((out, a.grad, b.grad))
    (out, grad_a, grad_b), (ref_out, ref_a, ref_b) = results
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    for got, expected in ((grad_a, ref_a), (grad_b, ref_b)):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_without_grad_mode_returns_a_plain_tensor() -> None:
    first = torch.randn(1, 4, 6, 6, requires_grad=True)
    with torch.no_grad():
        out = correlation_torch(first, first.detach())
    assert out.grad_fn is None and not out.requires_grad
    assert correlation_torch(first, first.detach()).requires_grad


def test_float32_matches_float64() -> None:
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(2, 16, 12, 10, generator=generator)
    second = torch.randn(2, 16, 12, 10, generator=generator)
    expected = correlation_torch(first.double(), second.double()).float()
    torch.testing.assert_close(correlation_torch(first, second), expected, rtol=1e-5, atol=1e-6)


def test_auto_backend_uses_torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []

    def spy(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(first.shape))
        return correlation_torch(first, second)

    monkeypatch.setattr(correlation_module, "correlation_torch", spy)
    first, second = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    out = correlation(first, second, backend="auto")
    assert calls == [(1, 4, 8, 8)]
    torch.testing.assert_close(out, correlation_torch(first, second), rtol=0, atol=0)
    correlation(first, second, backend="torch")
    assert len(calls) == 2


def test_cupy_backend_on_cpu_raises() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        correlation(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), backend="cupy")


def test_unknown_backend_raises() -> None:
    with pytest.raises(ValueError, match="corr_backend=triton: expected one of auto, torch, cupy"):
        correlation(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), backend="triton")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("first_shape", "second_shape"),
    [
        ((1, 4, 8, 8), (1, 4, 8, 9)),
        ((1, 4, 8, 8), (1, 3, 8, 8)),
        ((4, 8, 8), (4, 8, 8)),
        ((2, 1, 4, 8, 8),) * 2,
    ],
    ids=["width", "channels", "3d", "5d"],
)
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_bad_shapes_raise(first_shape: tuple[int, ...], second_shape: tuple[int, ...], backend: str) -> None:
    with pytest.raises(ValueError, match="instead got"):
        correlation(torch.randn(first_shape), torch.randn(second_shape), backend=backend)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------
# CUDA: the cupy kernel against the PyTorch version


def _forward_backward(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    first: torch.Tensor,
    second: torch.Tensor,
    grad: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    first = first.detach().requires_grad_()
    second = second.detach().requires_grad_()
    out = fn(first, second)
    out.backward(grad.to(out.dtype))
    return out, first.grad, second.grad  # type: ignore[return-value]


@pytest.mark.gpu
@needs_cupy
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2, 16, 24, 40), (1, 196, 4, 4), (3, 5, 7, 9)], ids=str)
def test_cupy_matches_torch(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    from cdvd.models.correlation_cupy import correlation_cupy

    generator = torch.Generator(device="cuda").manual_seed(0)
    first = torch.randn(shape, device="cuda", generator=generator).to(dtype)
    second = torch.randn(shape, device="cuda", generator=generator).to(dtype)
    grad = torch.randn(shape[0], NUM_DISPLACEMENTS, *shape[2:], device="cuda", generator=generator)

    out, grad_first, grad_second = _forward_backward(correlation_cupy, first, second, grad)
    assert out.dtype == dtype and grad_first.dtype == dtype and grad_second.dtype == dtype
    # the kernel computes in float32 whatever the input dtype: compare with PyTorch in float32, same values
    ref_out, ref_first, ref_second = _forward_backward(correlation_torch, first.float(), second.float(), grad)
    if dtype == torch.float32:
        tolerance = {"rtol": 1e-5, "atol": 1e-5}
    else:  # the only error is the final rounding to 16 bits
        tolerance = {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(out.float(), ref_out, **tolerance)
    torch.testing.assert_close(grad_first.float(), ref_first, **tolerance)
    torch.testing.assert_close(grad_second.float(), ref_second, **tolerance)


@pytest.mark.gpu
@needs_cupy
def test_auto_backend_uses_cupy_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the PyTorch correlation ran on CUDA tensors")

    # a one-off self-check of the kernel (where there is one) runs the PyTorch version: let it run first
    self_check = getattr(correlation_module, "cupy_kernel_agrees", None)
    if self_check is not None:
        assert self_check(torch.cuda.current_device())
    monkeypatch.setattr(correlation_module, "correlation_torch", fail)
    first = torch.randn(1, 8, 16, 16, device="cuda")
    assert correlation(first, first.clone(), backend="auto").shape == (1, 81, 16, 16)


@pytest.mark.parametrize("context", ["inference_mode", "no_grad", "autocast_bf16"])
def test_the_kernel_self_check_ignores_the_callers_context(context: str) -> None:
    """The CPU counterpart of the CUDA test below: the check of a kernel equal to PyTorch's passes in every
    context a deblurring or training run calls it from (it failed inside inference_mode: no gradient to compare)."""
    contexts = {
        "inference_mode": torch.inference_mode,
        "no_grad": torch.no_grad,
        "autocast_bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    }
    with contexts[context]():
        assert correlation_module.kernel_agrees(correlation_torch, torch.device("cpu"))


def test_the_kernel_self_check_rejects_a_wrong_kernel(caplog: pytest.LogCaptureFixture) -> None:
    def off_by_a_little(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return correlation_torch(first, second) * 1.001

    def broken(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no kernel image for this device")

    with torch.inference_mode():
        assert not correlation_module.kernel_agrees(off_by_a_little, torch.device("cpu"))
        assert not correlation_module.kernel_agrees(broken, torch.device("cpu"))
    assert "disagrees" in caplog.text and "no kernel image" in caplog.text


@pytest.mark.gpu
@needs_cupy
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_the_self_check_holds_under_inference_mode_and_autocast(dtype: torch.dtype) -> None:
    """The first cost volume of a deblurring run comes under both: a check run there failed, and stayed failed."""
    correlation_module.cupy_kernel_agrees.cache_clear()
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
            assert correlation_module.cupy_kernel_agrees(torch.cuda.current_device())
    finally:
        correlation_module.cupy_kernel_agrees.cache_clear()


@pytest.mark.gpu
@needs_cupy
def test_bf16_deblurring_on_cuda_uses_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdvd.inference import VideoDeblurrer
    from cdvd.models import CDVDTSP
    from cdvd.models import correlation_cupy as kernel_module

    calls: list[tuple[int, ...]] = []
    kernel = kernel_module.correlation_cupy

    def counted(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(first.shape))
        return kernel(first, second)

    monkeypatch.setattr(kernel_module, "correlation_cupy", counted)
    correlation_module.cupy_kernel_agrees.cache_clear()
    try:
        torch.manual_seed(0)
        model = CDVDTSP(n_feat=4, n_resblock=1, residual=True)  # corr_backend auto, as checkpoints load
        frames = [np.random.default_rng(t).integers(0, 256, (36, 52, 3), dtype=np.uint8) for t in range(5)]
        outputs = list(VideoDeblurrer(model, device="cuda", precision="bf16").run(frames))
    finally:
        correlation_module.cupy_kernel_agrees.cache_clear()
    assert len(outputs) == 5
    assert len([shape for shape in calls if shape != (2, 7, 11, 13)]) > 0, "only the self-check ran the kernel"


@pytest.mark.gpu
@needs_cupy
def test_full_model_on_cuda_matches_reference(tmp_path: Path) -> None:
    path = tmp_path / "case_a.pt"
    torch.save(reference_state_dict(), path)
    model = cdvd.load_model(path, device="cuda", corr_backend="cupy")
    clip = reference_clip().cuda()
    expected = reference_expected()
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions would round to 10 mantissa bits
    try:
        with torch.no_grad():
            outputs = model(clip)
            flow = model.flow(clip[:, 1], clip[:, 0])
    finally:
        torch.backends.cudnn.allow_tf32 = allow_tf32
    for name in ("recons_1", "recons_2", "recons_3", "out"):
        diff = float(np.abs(getattr(outputs, name)[0].cpu().numpy() - expected[name]).max())
        assert diff <= 1e-4, f"{name}: max abs difference {diff:.3g}"
    diff = float(np.abs(flow[0].cpu().numpy() - expected["flow_1_to_0"]).max())
    assert diff <= 1e-4, f"flow_1_to_0: max abs difference {diff:.3g}"
