"""CDVDTSP on a small network: shapes, errors, the cascade's pieces and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cdvd.models import CDVDTSP, CascadeOutput, temporal_sharpness_prior, warp_with_mask

HEIGHT, WIDTH = 32, 48


@pytest.fixture(scope="module")
def model() -> CDVDTSP:
    torch.manual_seed(0)
    return CDVDTSP(n_feat=4, n_resblock=1, corr_backend="torch").eval()


def _clip(batch: int = 2, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 5, 3, height, width, generator=generator)


# ------------------------------------------------------------------------------------------------------------
# CDVDTSP


@pytest.mark.parametrize(("height", "width"), [(32, 48), (20, 36)])
def test_forward_shapes(model: CDVDTSP, height: int, width: int) -> None:
    with torch.no_grad():
        outputs = model(_clip(2, height, width))
    assert isinstance(outputs, CascadeOutput)
    assert outputs._fields == ("recons_1", "recons_2", "recons_3", "out")
    for tensor in outputs:
        assert tensor.shape == (2, 3, height, width)
        assert tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize(
    "shape",
    [(2, 4, 3, 32, 48), (2, 6, 3, 32, 48), (2, 5, 1, 32, 48), (5, 3, 32, 48), (1, 2, 5, 3, 32, 48)],
    ids=["4-frames", "6-frames", "1-channel", "4d", "6d"],
)
def test_wrong_clip_shape_raises(model: CDVDTSP, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="instead got"):
        model(torch.rand(shape))


@pytest.mark.parametrize(("height", "width"), [(30, 48), (32, 50), (33, 47)])
def test_size_not_multiple_of_4_raises(model: CDVDTSP, height: int, width: int) -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(1, 5, 3, height, width))


def test_restore_centres_agrees_with_forward(model: CDVDTSP) -> None:
    clip = _clip(2)
    with torch.no_grad():
        outputs = model(clip)
        stage1 = model.restore_centres(clip.transpose(0, 1))
        stage2 = model.restore_centres(stage1)
    assert stage1.shape == (3, 2, 3, HEIGHT, WIDTH)
    assert stage2.shape == (1, 2, 3, HEIGHT, WIDTH)
    torch.testing.assert_close(stage1[0], outputs.recons_1)
    torch.testing.assert_close(stage1[1], outputs.recons_2)
    torch.testing.assert_close(stage1[2], outputs.recons_3)
    torch.testing.assert_close(stage2[0], outputs.out)


def test_restore_centres_on_a_long_run_equals_separate_windows(model: CDVDTSP) -> None:
    """Frames shared by several windows (one pyramid each) give what three-frame windows give on their own."""
    frames = torch.rand(6, 1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        together = model.restore_centres(frames)
        separate = torch.cat([model.restore_centres(frames[t - 1 : t + 2]) for t in range(1, 5)])
    assert together.shape == (4, 1, 3, HEIGHT, WIDTH)
    torch.testing.assert_close(together, separate, rtol=1e-4, atol=1e-5)


def test_restore_centres_needs_three_frames(model: CDVDTSP) -> None:
    with pytest.raises(ValueError, match="at least 3 frames"):
        model.restore_centres(torch.rand(2, 1, 3, HEIGHT, WIDTH))


def _zero_recons(net: CDVDTSP) -> CDVDTSP:
    with torch.no_grad():
        for parameter in net.recons.parameters():
            parameter.zero_()
    return net


def test_residual_adds_the_centre_frame() -> None:
    torch.manual_seed(0)
    net = _zero_recons(CDVDTSP(n_feat=4, n_resblock=1, residual=True)).eval()
    clip = _clip(1)
    with torch.no_grad():
        outputs = net(clip)
    # with a reconstruction net that outputs 0, every stage returns its centre frame unchanged
    torch.testing.assert_close(outputs.recons_1, clip[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(outputs.recons_2, clip[:, 2], rtol=0, atol=0)
    torch.testing.assert_close(outputs.recons_3, clip[:, 3], rtol=0, atol=0)
    torch.testing.assert_close(outputs.out, clip[:, 2], rtol=0, atol=0)


def test_published_architecture_has_no_global_skip() -> None:
    torch.manual_seed(0)
    net = _zero_recons(CDVDTSP(n_feat=4, n_resblock=1)).eval()
    assert net.residual is False
    with torch.no_grad():
        outputs = net(_clip(1))
    for tensor in outputs:
        assert torch.count_nonzero(tensor) == 0


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = CDVDTSP(n_feat=4, n_resblock=1, corr_backend="torch").train()
    clip = _clip(1, 32, 32)
    target = torch.rand(1, 12, 32, 32, generator=torch.Generator().manual_seed(3))
    outputs = net(clip)
    loss = nn.functional.l1_loss(torch.cat(tuple(outputs), dim=1), target)
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    flow_grads = [p.grad for p in net.flow.parameters()]
    assert any(float(g.abs().sum()) > 0 for g in flow_grads), "no gradient reached the flow net"
    # the finest and the coarsest parts of PWC-Net both learn
    pwc = net.flow.pwc
    assert float(pwc.extractor.stages[0][0].weight.grad.abs().sum()) > 0
    assert float(pwc.refiner.layers[-1].weight.grad.abs().sum()) > 0
    assert float(pwc.decoders["level6"].predict_flow[0].weight.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------------------------------
# temporal sharpness prior


def _masks(*, batch: int = 2, value: float = 1.0) -> torch.Tensor:
    return torch.full((batch, 3, 16, 20), value)


def test_prior_identical_frames_is_one() -> None:
    frame = torch.rand(2, 3, 16, 20)
    prior = temporal_sharpness_prior(frame, frame, frame.clone(), _masks(), _masks())
    assert prior.shape == (2, 1, 16, 20)
    torch.testing.assert_close(prior, torch.ones_like(prior), rtol=0, atol=0)


def test_prior_zero_where_a_warp_left_the_image() -> None:
    frame = torch.rand(2, 3, 16, 20)
    assert torch.count_nonzero(temporal_sharpness_prior(frame, frame, frame, _masks(), _masks(value=0.0))) == 0
    assert torch.count_nonzero(temporal_sharpness_prior(frame, frame, frame, _masks(value=0.0), _masks())) == 0
    # a partial mask: zero exactly where it is zero
    mask = _masks()
    mask[:, :, :, :5] = 0.0
    prior = temporal_sharpness_prior(frame, frame, frame, mask, _masks())
    assert torch.count_nonzero(prior[..., :5]) == 0
    torch.testing.assert_close(prior[..., 5:], torch.ones_like(prior[..., 5:]))


def test_prior_value_on_constant_frames() -> None:
    """Away from the border the 5x5 mean leaves constant frames alone: prior = exp(-sqrt(sum_c d_c))."""
    previous, centre, following = (torch.full((1, 3, 16, 20), v) for v in (0.2, 0.5, 0.9))
    prior = temporal_sharpness_prior(previous, centre, following, _masks(batch=1), _masks(batch=1))
    d = ((0.2 - 0.5) ** 2 + (0.9 - 0.5) ** 2) / 2.0
    expected = math.exp(-math.sqrt(3 * d))
    torch.testing.assert_close(prior[0, 0, 2:-2, 2:-2], torch.full((12, 16), expected))
    # zero padding in the mean filter: the border differs from the interior
    assert float(prior[0, 0, 0, 0]) != pytest.approx(expected)


def test_prior_range_and_no_gradient() -> None:
    generator = torch.Generator().manual_seed(0)
    frames = [torch.rand(2, 3, 16, 20, generator=generator, requires_grad=True) for _ in range(3)]
    masks = [(torch.rand(2, 3, 16, 20, generator=generator) > 0.3).float().requires_grad_() for _ in range(2)]
    prior = temporal_sharpness_prior(*frames, *masks)
    assert prior.min() >= 0.0 and prior.max() <= 1.0
    assert not prior.requires_grad
    assert prior.grad_fn is None


# ------------------------------------------------------------------------------------------------------------
# warp


def test_warp_with_zero_flow_is_identity() -> None:
    image = torch.rand(2, 3, 12, 17)
    warped, mask = warp_with_mask(image, torch.zeros(2, 2, 12, 17))
    torch.testing.assert_close(warped, image, rtol=0, atol=1e-6)
    assert mask.shape == image.shape
    assert torch.all(mask == 1)


def test_warp_shift_and_mask() -> None:
    """Flow (u, v) = (1, 0) samples the right neighbour; the last column's footprint leaves the image."""
    image = torch.rand(1, 3, 8, 10)
    flow = torch.zeros(1, 2, 8, 10)
    flow[:, 0] = 1.0
    warped, mask = warp_with_mask(image, flow)
    torch.testing.assert_close(warped[..., :-1], image[..., 1:], rtol=0, atol=1e-6)
    assert torch.all(mask[..., :-1] == 1)
    assert torch.all(mask[..., -1] == 0)
    assert torch.all(warped[..., -1] == 0)
