"""PSNR and SSIM as the published CDVD-TSP tables computed them (spec section 7).

The protocol: outputs are rounded to uint8 (clip to [0, 1], x255, round), both images are cropped by 4 pixels
at every border, PSNR is taken on the RGB values and SSIM is Wang et al.'s with an 11x11 Gaussian window
(sigma 1.5), constants (0.01 * 255)^2 and (0.03 * 255)^2, 'valid' filtering (no padding), averaged over the
three channels. Scores are per frame; how they add up to a video's and a dataset's score, and which frames and
borders count, is :mod:`cdvd.evaluation.protocol`.

The torch functions work on any device and are batched per frame, so a LightningModule's validation step can
call them directly; :func:`psnr_uint8` and :func:`ssim_uint8` take the uint8 HWC images that the CLI reads.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cdvd.evaluation import protocol

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2


def _work_dtype(device: torch.device) -> torch.dtype:
    # float64 where the backend has it: sums of squared 8-bit errors stay exact
    return torch.float64 if device.type in ("cpu", "cuda") else torch.float32


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Float images (any shape, nominally in [0, 1]) -> their uint8 levels as floats in [0, 255] (clip, x255, round),
    in the working precision of the device (float64 on CPU/CUDA)."""
    return (images.detach().to(_work_dtype(images.device)).clamp(0, 1) * 255.0).round()


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) float RGB in [0, 1] -> (H, W, 3) uint8 (clip, x255, round): the levels the metrics score."""
    return quantize(frame).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _quantized_pair(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images checked, rounded to their uint8 levels (:func:`quantize`) and cropped by ``crop_border`` pixels at
    every border (``None``: :data:`cdvd.evaluation.protocol.CROP_BORDER`)."""
    crop_border = protocol.crop_border(crop_border)
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, instead got {tuple(pred.shape)}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, instead got {crop_border}")
    h, w = pred.shape[-2:]
    if h <= 2 * crop_border or w <= 2 * crop_border:
        raise ValueError(f"a {h}x{w} image has nothing left after cropping {crop_border} pixels per border")
    x, y = quantize(pred), quantize(target)
    if crop_border == 0:
        return x, y
    inside = (..., slice(crop_border, -crop_border), slice(crop_border, -crop_border))
    return x[inside], y[inside]


def psnr_protocol(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int | None = None, *, keep_precision: bool = False
) -> torch.Tensor:
    """PSNR in dB of each frame, on uint8-rounded RGB with ``crop_border`` pixels cropped at each border.

    Args:
        pred, target: (B, 3, H, W) float RGB in [0, 1] (values outside are clipped).
        crop_border: pixels left out at every border; ``None``: :data:`cdvd.evaluation.protocol.CROP_BORDER`.
        keep_precision: return the working precision (float64 on CPU/CUDA) instead of float32.

    Returns:
        (B,) PSNR in dB (``inf`` for identical frames), float32, on the inputs' device.
    """
    x, y = _quantized_pair(pred, target, crop_border)
    psnr = 10.0 * torch.log10(255.0**2 / (x - y).pow(2).mean(dim=(1, 2, 3)))
    return psnr if keep_precision else psnr.float()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian of SSIM (same as ``cv2.getGaussianKernel(size, sigma)``), shape (size,)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(images: torch.Tensor, kernel_1d: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel with no padding: (N, C, H, W) -> (N, C, H - k + 1, W - k + 1)."""
    c = images.shape[1]
    k = kernel_1d.numel()
    horizontal = kernel_1d.view(1, 1, 1, k).expand(c, 1, 1, k)
    vertical = kernel_1d.view(1, 1, k, 1).expand(c, 1, k, 1)
    return F.conv2d(F.conv2d(images, horizontal, groups=c), vertical, groups=c)


def ssim_protocol(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int | None = None, *, keep_precision: bool = False
) -> torch.Tensor:
    """SSIM of each frame in [-1, 1], on the inputs of :func:`psnr_protocol` and returned as it does.

    11x11 Gaussian window (sigma 1.5), C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, 'valid' filtering (the map
    is 10 pixels smaller than the cropped image in each direction), the map averaged over pixels and channels.
    """
    x, y = _quantized_pair(pred, target, crop_border)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after cropping, got {x.shape[-2:]}")
    kernel = torch.as_tensor(gaussian_window(), dtype=x.dtype, device=x.device)
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    sigma_x = _filter_valid(x * x, kernel) - mu_x.pow(2)
    sigma_y = _filter_valid(y * y, kernel) - mu_y.pow(2)
    sigma_xy = _filter_valid(x * y, kernel) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)) / (
        (mu_x.pow(2) + mu_y.pow(2) + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    )
    ssim = ssim_map.mean(dim=(1, 2, 3))
    return ssim if keep_precision else ssim.float()


def _hwc_to_batch(image: np.ndarray, name: str) -> torch.Tensor:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 (H, W, 3) RGB, instead got {image.dtype} {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(torch.float64) / 255.0


def psnr_uint8(pred: np.ndarray, target: np.ndarray, crop_border: int | None = None) -> float:
    """:func:`psnr_protocol` of one pair of (H, W, 3) uint8 RGB images."""
    pred_t, target_t = _hwc_to_batch(pred, "pred"), _hwc_to_batch(target, "target")
    return float(psnr_protocol(pred_t, target_t, crop_border, keep_precision=True)[0])


def ssim_uint8(pred: np.ndarray, target: np.ndarray, crop_border: int | None = None) -> float:
    """:func:`ssim_protocol` of one pair of (H, W, 3) uint8 RGB images."""
    pred_t, target_t = _hwc_to_batch(pred, "pred"), _hwc_to_batch(target, "target")
    return float(ssim_protocol(pred_t, target_t, crop_border, keep_precision=True)[0])
