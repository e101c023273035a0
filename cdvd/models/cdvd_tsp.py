"""The cascaded CDVD-TSP network: flow, warp, temporal sharpness prior, reconstruction, two stages."""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cdvd.errors import check_count
from cdvd.models.correlation import CorrelationBackend, check_corr_backend
from cdvd.models.pwc import FlowEstimator
from cdvd.models.reconstruction import ReconstructionNet
from cdvd.models.warp import _as, warp_with_mask

CLIP_LENGTH = 5


class CascadeOutput(NamedTuple):
    """The four outputs of one 5-frame window, each (B, 3, H, W)."""

    recons_1: torch.Tensor  # stage 1, frame 1
    recons_2: torch.Tensor  # stage 1, frame 2 (the centre)
    recons_3: torch.Tensor  # stage 1, frame 3
    out: torch.Tensor  # stage 2, frame 2: the result


def temporal_sharpness_prior(
    previous: torch.Tensor,
    centre: torch.Tensor,
    following: torch.Tensor,
    previous_mask: torch.Tensor,
    following_mask: torch.Tensor,
) -> torch.Tensor:
    """One-channel prior (spec section 3), (B, 1, H, W) in [0, 1]: close to 1 where the neighbours aligned to the
    centre agree with it, zero where any warp left the image (its (B, 3, H, W) validity mask). No gradient flows
    through it."""
    frames = [
        F.avg_pool2d(f.detach(), 5, stride=1, padding=2, count_include_pad=True) for f in (previous, centre, following)
    ]
    middle = frames[1]
    diff = torch.zeros_like(middle)
    for frame in frames:
        diff = diff + (frame - middle).pow(2)
    diff = diff / 2.0  # 2 * delta^2 with delta = 1
    prior = torch.exp(-torch.sqrt(diff.sum(dim=1, keepdim=True)))
    valid = (previous_mask.detach() * following_mask.detach()).sum(dim=1, keepdim=True) > 0
    return prior * valid.to(prior.dtype)


def _cpu_autocast_off(frames: torch.Tensor) -> contextlib.AbstractContextManager:
    """A region without CPU autocast, where ``frames`` are on the CPU and autocast is on; else nothing.

    Flow estimation, warping and the prior run in the flow network's own dtype (float32) on every CPU: under bf16
    autocast PWC-Net's flows lose the sub-pixel precision the warp needs (and bf16 sampling coordinates are whole
    pixels off past 256), so warped frames drift from fp32's. The reconstruction net, about 70% of the work, keeps
    autocast. GPUs keep their autocast (tensor cores; the warp samples in float32 there too: :mod:`cdvd.models.warp`).
    """
    if frames.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


def check_architecture(*, prefix: str = "", n_feat: Any, n_resblock: Any, corr_backend: Any) -> None:
    """The network's rules for its arguments, in one place: :class:`CDVDTSP` applies them, and so does the training
    schema before any work (``prefix="model.net."`` names the setting).

    Raises:
        ConfigError: (a ValueError) the first argument the network cannot be built with, named.
    """
    check_count(f"{prefix}n_feat", n_feat, 1)
    check_count(f"{prefix}n_resblock", n_resblock, 0)
    check_corr_backend(corr_backend, f"{prefix}corr_backend")


class CDVDTSP(nn.Module):
    """Cascaded Deep Video Deblurring with the Temporal Sharpness Prior (Pan, Bai and Tang, CVPR 2020).

    Args:
        n_feat: channels of the reconstruction net's first scale (published: 32).
        n_resblock: residual blocks per stage of the reconstruction net (published: 3).
        corr_backend: PWC-Net cost volume implementation: ``auto``, ``torch`` or ``cupy``.
        residual: add the centre frame to every reconstruction (``out = centre + net(...)``). Not the
            published architecture; off by default, useful to train from scratch quickly. The last conv then
            starts at zero, so the untrained network returns the centre frame.
    """

    def __init__(
        self,
        *,
        n_feat: int = 32,
        n_resblock: int = 3,
        corr_backend: CorrelationBackend = "auto",
        residual: bool = False,
    ) -> None:
        super().__init__()
        check_architecture(n_feat=n_feat, n_resblock=n_resblock, corr_backend=corr_backend)
        self.n_feat = n_feat
        self.n_resblock = n_resblock
        self.residual = residual
        self.flow = FlowEstimator(corr_backend=corr_backend)
        self.recons = ReconstructionNet(n_feat=n_feat, n_resblock=n_resblock)
        if residual:
            # start as the identity (out = centre frame): training from scratch begins at the blurry input's
            # quality instead of below it
            nn.init.zeros_(self.recons.head.conv.weight)
            nn.init.zeros_(self.recons.head.conv.bias)

    def aligned_inputs(self, frames: torch.Tensor) -> torch.Tensor:
        """The reconstruction net's inputs of one cascade stage over (T, B, 3, H, W) ``frames``, T >= 3: flow, warps
        and the temporal sharpness prior.

        Returns:
            ((T - 2) * B, 10, H, W): for frame t = 1 .. T - 2 of every batch item (row (t - 1) * B + item), the
            previous frame warped onto it, the frame itself, the following frame warped onto it, and the prior.
            Every frame's flow pyramid is computed once and shared by the (up to three) pairs it takes part in.
            Computed in the flow network's dtype (float32) on every CPU, under autocast too (:func:`_cpu_autocast_off`).
        """
        t, b, c, h, w = frames.shape
        if t < 3:
            raise ValueError(f"a cascade stage needs at least 3 frames, instead got {t}")
        flat = frames.reshape(t * b, c, h, w)
        centre_ids = torch.arange(1, t - 1, device=frames.device)
        # pairs (centre, previous) for every centre, then (centre, following)
        ref_frames = torch.cat((centre_ids, centre_ids))
        nbr_frames = torch.cat((centre_ids - 1, centre_ids + 1))

        def rows(frame_ids: torch.Tensor) -> torch.Tensor:
            return (frame_ids[:, None] * b + torch.arange(b, device=frames.device)).reshape(-1)

        ref_rows, nbr_rows = rows(ref_frames), rows(nbr_frames)
        with _cpu_autocast_off(flat):
            exact = _as(flat, next(self.flow.parameters()).dtype)
            pyramids = self.flow.pyramid(exact)
            flows = self.flow.flow_from_pyramids(
                [p[ref_rows] for p in pyramids], [p[nbr_rows] for p in pyramids], (h, w)
            )
            warped, masks = warp_with_mask(exact[nbr_rows], flows)
            n = (t - 2) * b
            centres = exact[rows(centre_ids)]
            prior = temporal_sharpness_prior(warped[:n], centres, warped[n:], masks[:n], masks[n:])
            return torch.cat((warped[:n], centres, warped[n:], prior), dim=1)

    def restore_centres(self, frames: torch.Tensor) -> torch.Tensor:
        """One cascade stage over (T, B, 3, H, W) ``frames``, T >= 3 (:meth:`aligned_inputs`, then the reconstruction
        net): (T - 2, B, 3, H, W), frame t restored from frames t - 1, t, t + 1 for t = 1 .. T - 2."""
        t, b, c, h, w = frames.shape
        inputs = self.aligned_inputs(frames)
        restored = self.recons(inputs)
        if self.residual:
            restored = restored + inputs[:, 3:6]  # the centre frames
        return restored.reshape(t - 2, b, c, h, w)

    def forward(self, clip: torch.Tensor) -> CascadeOutput:
        """Deblur the centre of a (B, 5, 3, H, W) RGB ``clip`` in [0, 1], H and W multiples of 4: the
        :class:`CascadeOutput`, each (B, 3, H, W)."""
        if clip.dim() != 5 or clip.shape[1] != CLIP_LENGTH or clip.shape[2] != 3:
            raise ValueError(f"CDVDTSP expects a (B, 5, 3, H, W) clip, instead got {tuple(clip.shape)}")
        h, w = clip.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"frame height and width must be multiples of 4, instead got {h}x{w}")
        frames = clip.transpose(0, 1)
        stage1 = self.restore_centres(frames)
        stage2 = self.restore_centres(stage1)
        return CascadeOutput(stage1[0], stage1[1], stage1[2], stage2[0])
