"""The evaluation protocol against a direct numpy implementation and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d
from skimage.metrics import structural_similarity

from cdvd.evaluation.metrics import (
    psnr_protocol,
    psnr_uint8,
    quantize,
    ssim_protocol,
    ssim_uint8,
)
from cdvd.evaluation.protocol import MetricAccumulator


def numpy_psnr(pred: np.ndarray, target: np.ndarray, crop: int = 4) -> float:
    """Direct protocol: uint8 HWC in, crop, PSNR over all values."""
    x = pred[crop:-crop, crop:-crop].astype(np.float64)
    y = target[crop:-crop, crop:-crop].astype(np.float64)
    mse = np.mean((x - y) ** 2)
    return 10 * math.log10(255.0**2 / mse)


def numpy_ssim(pred: np.ndarray, target: np.ndarray, crop: int = 4) -> float:
    """Direct protocol: 11x11 Gaussian (sigma 1.5) 2-D window, 'valid' convolution, channel mean."""
    ax = np.arange(11) - 5.0
    g = np.exp(-(ax**2) / (2 * 1.5**2))
    window = np.outer(g, g)
    window /= window.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for c in range(3):
        x = pred[crop:-crop, crop:-crop, c].astype(np.float64)
        y = target[crop:-crop, crop:-crop, c].astype(np.float64)

        def f(img: np.ndarray) -> np.ndarray:
            return convolve2d(img, window, mode="valid")

        mx, my = f(x), f(y)
        sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        scores.append(ssim_map.mean())
    return float(np.mean(scores))


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:52]
    target = (127 + 100 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] * np.ones(3)).astype(np.uint8)
    noisy = target.astype(np.int16) + rng.integers(-20, 21, size=target.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), target


def to_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255.0 for i in images])


def test_psnr_matches_numpy(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = pair
    expected = numpy_psnr(pred, target)
    assert psnr_uint8(pred, target) == pytest.approx(expected, abs=1e-9)
    batch = psnr_protocol(to_batch(pred, target), to_batch(target, target))
    assert batch.shape == (2,) and batch.dtype == torch.float32
    assert batch[0].item() == pytest.approx(expected, abs=1e-4)
    assert math.isinf(batch[1].item())


def test_ssim_matches_numpy_and_skimage(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = pair
    expected = numpy_ssim(pred, target)
    assert ssim_uint8(pred, target) == pytest.approx(expected, abs=1e-10)
    assert ssim_protocol(to_batch(pred), to_batch(target))[0].item() == pytest.approx(expected, abs=1e-6)
    # skimage filters with reflection then drops (win - 1) / 2 = 5 pixels per border before averaging: the
    # same pixels as 'valid' filtering, so it agrees to round-off
    sk = structural_similarity(
        pred[4:-4, 4:-4],
        target[4:-4, 4:-4],
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=2,
    )
    assert sk == pytest.approx(expected, abs=1e-10)
    assert ssim_uint8(target, target) == pytest.approx(1.0)


def test_rounding_and_clipping() -> None:
    x = torch.tensor([-0.1, 0.0, 0.4 / 255, 1.6 / 255, 0.999, 1.3])
    assert quantize(x).tolist() == [0.0, 0.0, 0.0, 2.0, 255.0, 255.0]
    # a float prediction scores like its uint8 rounding
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    pred = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    rounded = (pred.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert psnr_protocol(pred, to_batch(target))[0].item() == pytest.approx(numpy_psnr(rounded, target), abs=1e-4)
    assert ssim_protocol(pred, to_batch(target))[0].item() == pytest.approx(numpy_ssim(rounded, target), abs=1e-6)


def test_crop_border_and_errors() -> None:
    a = torch.zeros(1, 3, 20, 20)
    b = a.clone()
    b[..., :2, :] = 1.0  # differs only inside the cropped border
    assert math.isinf(psnr_protocol(a, b, crop_border=4)[0].item())
    assert math.isfinite(psnr_protocol(a, b, crop_border=0)[0].item())
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_protocol(a, torch.zeros(1, 3, 20, 21))
    with pytest.raises(ValueError, match="nothing left"):
        ssim_protocol(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_accumulator_total_is_mean_over_frames() -> None:
    acc = MetricAccumulator()
    acc.update("a", [30.0, 32.0], [0.9, 0.8])
    acc.update("b", torch.tensor([20.0]), torch.tensor([0.5]))
    videos = acc.per_video()
    assert videos["a"].psnr == pytest.approx(31.0) and videos["a"].frames == 2
    total = acc.total()
    assert total.psnr == pytest.approx((30 + 32 + 20) / 3)
    assert total.ssim == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    assert total.frames == 3
    report = acc.as_dict()
    assert set(report) == {"videos", "total"} and report["videos"]["b"]["frames"] == 1
