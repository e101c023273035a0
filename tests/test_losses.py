"""The training losses: the 12-channel target, hard example mining, MS-SSIM + L1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim

from cdvd.losses import L1HEMLoss, MSSSIML1Loss, cascade_target, check_patch_size, hard_example_mask
from cdvd.models.cdvd_tsp import CascadeOutput


def make_batch(b: int = 2, h: int = 16, w: int = 20, seed: int = 0) -> tuple[CascadeOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    outputs = CascadeOutput(*(torch.rand(b, 3, h, w, generator=g).requires_grad_() for _ in range(4)))
    sharp = torch.rand(b, 5, 3, h, w, generator=g)
    return outputs, sharp


def original_hard_mask(x: torch.Tensor, y: torch.Tensor, hard_ratio: float) -> np.ndarray:
    """The original code's hard part: numpy on the host, threshold at rank int(p * H * W), descending."""
    b, _, h, w = x.shape
    res = torch.sum(torch.abs(x - y), dim=1, keepdim=True).detach()
    res_np = res.numpy()
    line = res.view(b, -1)
    mask = np.zeros((b, 1, h, w), dtype=np.float32)
    k = int(hard_ratio * h * w)
    for i in range(b):
        threshold = line[i].sort(descending=True)[0][k].item()
        mask[i] = (res_np[i] > threshold).astype(np.float32)
    return mask


def test_cascade_target_order() -> None:
    outputs, sharp = make_batch()
    prediction, target = cascade_target(outputs, sharp)
    assert prediction.shape == target.shape == (2, 12, 16, 20)
    assert torch.equal(prediction[:, 9:12], outputs.out)
    for group, frame in enumerate((1, 2, 3, 2)):
        assert torch.equal(target[:, 3 * group : 3 * group + 3], sharp[:, frame])
    with pytest.raises(ValueError, match="sharp clip"):
        cascade_target(outputs, sharp[:, :3])


def test_hem_mask_hard_part_matches_original() -> None:
    outputs, sharp = make_batch(h=24, w=30)
    x, y = cascade_target(outputs, sharp)
    mask = hard_example_mask(x, y, hard_ratio=0.5, random_ratio=0.0)
    expected = original_hard_mask(x, y, 0.5)
    assert np.array_equal(mask.numpy(), expected)
    assert mask.shape == (2, 1, 24, 30)
    assert mask.sum(dim=(1, 2, 3)).tolist() == [24 * 30 // 2] * 2  # no ties in random data


def test_hem_mask_random_part() -> None:
    outputs, sharp = make_batch(h=40, w=50)
    x, y = cascade_target(outputs, sharp)
    n = 40 * 50
    only_random = hard_example_mask(x, y, hard_ratio=0.0, random_ratio=0.1, generator=torch.Generator().manual_seed(3))
    assert only_random.sum(dim=(1, 2, 3)).tolist() == [n // 10] * 2  # exactly 10%, without replacement
    assert not torch.equal(only_random[0], only_random[1])  # each sample its own draw

    hard = torch.from_numpy(original_hard_mask(x, y, 0.5)).bool()
    mask = hard_example_mask(x, y, generator=torch.Generator().manual_seed(3)).bool()
    assert torch.all(mask[hard])  # the hardest half always in
    extra = (mask & ~hard).sum(dim=(1, 2, 3))
    # the random 10% falls half on hard pixels: about 5% of pixels are added (binomial, 6 sigma bounds)
    assert torch.all((extra > n * 0.05 - 70) & (extra < n * 0.05 + 70)), extra
    assert torch.all(extra <= n // 10)


def test_hem_mask_uniform_and_reproducible() -> None:
    x = torch.zeros(1, 3, 10, 10)
    counts = torch.zeros(1, 1, 10, 10)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        counts += hard_example_mask(x, x, hard_ratio=0.0, random_ratio=0.1, generator=g)
    assert counts.min() > 10 and counts.max() < 55  # mean 30 per pixel
    a = hard_example_mask(x, x, random_ratio=0.1, generator=torch.Generator().manual_seed(7))
    b = hard_example_mask(x, x, random_ratio=0.1, generator=torch.Generator().manual_seed(7))
    c = hard_example_mask(x, x, random_ratio=0.1, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = hard_example_mask(x, x, random_ratio=0.1)
    torch.manual_seed(5)
    assert torch.equal(d, hard_example_mask(x, x, random_ratio=0.1))  # the global generator is seeded too


def test_l1_hem_loss_value_and_gradient() -> None:
    outputs, sharp = make_batch()
    loss = L1HEMLoss()
    result = loss(outputs, sharp, generator=torch.Generator().manual_seed(1))
    x, y = cascade_target(outputs, sharp)
    mask = hard_example_mask(x, y, generator=torch.Generator().manual_seed(1))
    hem = F.l1_loss(x * mask, y * mask)
    l1 = F.l1_loss(x, y)
    assert set(result) == {"l1", "hem", "loss"}
    torch.testing.assert_close(result["hem"], hem)
    torch.testing.assert_close(result["loss"], l1 + 2 * hem)
    result["loss"].backward()
    for tensor in outputs:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_msssim_loss_matches_pytorch_msssim() -> None:
    outputs, sharp = make_batch(b=1, h=161, w=168)
    result = MSSSIML1Loss()(outputs, sharp)
    x, y = cascade_target(outputs, sharp)
    score = ms_ssim(x, y, data_range=1.0)
    # the 12 channels score like the four RGB images on their own
    per_image = ms_ssim(x.reshape(4, 3, 161, 168), y.reshape(4, 3, 161, 168), data_range=1.0)
    torch.testing.assert_close(result["ms_ssim"], score)
    torch.testing.assert_close(score, per_image)
    torch.testing.assert_close(result["loss"], 0.84 * (1 - score) + 0.16 * F.l1_loss(x, y))
    result["loss"].backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in outputs)


def test_patch_size_checks() -> None:
    for loss in (MSSSIML1Loss, MSSSIML1Loss(), "cdvd.losses.MSSSIML1Loss", "msssim_l1"):
        with pytest.raises(ValueError, match="at least 161x161"):
            check_patch_size(loss, 160)
        check_patch_size(loss, 161)
    with pytest.raises(ValueError, match="161"):
        check_patch_size("cdvd.losses.MSSSIML1Loss", (256, 128))
    check_patch_size("cdvd.losses.L1HEMLoss", 64)
    check_patch_size(L1HEMLoss(), 8)
    outputs, sharp = make_batch(b=1, h=64, w=64)
    with pytest.raises(ValueError, match="at least 161x161"):
        MSSSIML1Loss()(outputs, sharp)
