"""PWC-Net optical flow (the sniklaus variant used by CDVD-TSP), with its resize-and-rescale wrapper.

The numerics follow sniklaus/pytorch-pwc exactly (pad to a multiple of 64, x20, rescale), so that the published
``network-default.pytorch`` weights give the same flow. Frames go in as RGB in [0, 1]: CDVD-TSP trained the
flow net end to end on RGB and never flipped to BGR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cdvd.models.correlation import NUM_DISPLACEMENTS, CorrelationBackend, correlation
from cdvd.models.warp import backwarp_zero

PYRAMID_CHANNELS = (16, 32, 64, 96, 128, 196)  # levels 1 (1/2 resolution) .. 6 (1/64)
DENSE_GROWTH = (128, 128, 96, 64, 32)
# Flow at level L is upsampled to level L-1 and scaled before warping: 20 / 2**(L-1) in sniklaus' units.
BACKWARP_SCALE = {5: 0.625, 4: 1.25, 3: 2.5, 2: 5.0}
FLOW_SCALE = 20.0


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(negative_slope=0.1, inplace=False)


class FeaturePyramid(nn.Module):
    """Six stride-2 stages of three 3x3 convs each; returns the features of levels 1..6."""

    def __init__(self) -> None:
        super().__init__()
        stages = []
        in_ch = 3
        for out_ch in PYRAMID_CHANNELS:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1),
                    _lrelu(),
                    nn.Conv2d(out_ch, out_ch, 3, padding=1),
                    _lrelu(),
                    nn.Conv2d(out_ch, out_ch, 3, padding=1),
                    _lrelu(),
                )
            )
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            image = stage(image)
            features.append(image)
        return features


def decoder_in_channels(level: int) -> int:
    """Channels entering the decoder of ``level`` (cost volume, own features, upsampled flow and features)."""
    if level == 6:
        return NUM_DISPLACEMENTS
    return NUM_DISPLACEMENTS + PYRAMID_CHANNELS[level - 1] + 2 + 2


def decoder_out_channels(level: int) -> int:
    """Channels of the decoder's final feature map (input plus the dense growth)."""
    return decoder_in_channels(level) + sum(DENSE_GROWTH)


class FlowDecoder(nn.Module):
    """Estimates the flow at one pyramid level from the cost volume and the coarser level's estimate."""

    def __init__(self, level: int, *, corr_backend: CorrelationBackend = "auto") -> None:
        super().__init__()
        self.level = level
        self.corr_backend = corr_backend
        if level < 6:
            self.upsample_flow = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1)
            self.upsample_feat = nn.ConvTranspose2d(decoder_out_channels(level + 1), 2, 4, stride=2, padding=1)
        channels = decoder_in_channels(level)
        dense = []
        for growth in DENSE_GROWTH:
            dense.append(nn.Sequential(nn.Conv2d(channels, growth, 3, padding=1), _lrelu()))
            channels += growth
        self.dense = nn.ModuleList(dense)
        self.predict_flow = nn.Sequential(nn.Conv2d(channels, 2, 3, padding=1))

    def forward(
        self,
        first: torch.Tensor,
        second: torch.Tensor,
        previous: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(flow, features)`` of this level; ``previous`` is the coarser level's pair (None at 6)."""
        if previous is None:
            volume = F.leaky_relu(correlation(first, second, self.corr_backend), 0.1)
            feat = volume
        else:
            prev_flow, prev_feat = previous
            flow = self.upsample_flow(prev_flow)
            up_feat = self.upsample_feat(prev_feat)
            warped = backwarp_zero(second, flow * BACKWARP_SCALE[self.level])
            volume = F.leaky_relu(correlation(first, warped, self.corr_backend), 0.1)
            feat = torch.cat((volume, first, flow, up_feat), dim=1)
        for layer in self.dense:
            feat = torch.cat((layer(feat), feat), dim=1)
        return self.predict_flow(feat), feat


class ContextRefiner(nn.Module):
    """Dilated convolutions that add a residual to the level-2 flow."""

    def __init__(self) -> None:
        super().__init__()
        widths = (128, 128, 128, 96, 64, 32)
        dilations = (1, 2, 4, 8, 16, 1)
        layers: list[nn.Module] = []
        in_ch = decoder_out_channels(2)
        for width, dilation in zip(widths, dilations, strict=True):
            layers += [nn.Conv2d(in_ch, width, 3, padding=dilation, dilation=dilation), _lrelu()]
            in_ch = width
        layers.append(nn.Conv2d(in_ch, 2, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.layers(feat)


class PWCNet(nn.Module):
    """The bare network: two frames whose sides are multiples of 64 in, flow / 20 at 1/4 resolution out."""

    def __init__(self, *, corr_backend: CorrelationBackend = "auto") -> None:
        super().__init__()
        self.extractor = FeaturePyramid()
        self.decoders = nn.ModuleDict(
            {f"level{level}": FlowDecoder(level, corr_backend=corr_backend) for level in (6, 5, 4, 3, 2)}
        )
        self.refiner = ContextRefiner()

    def decode(self, first: Sequence[torch.Tensor], second: Sequence[torch.Tensor]) -> torch.Tensor:
        """Flow from two precomputed feature pyramids (lists of the six levels)."""
        estimate = None
        for level in (6, 5, 4, 3, 2):
            estimate = self.decoders[f"level{level}"](first[level - 1], second[level - 1], estimate)
        flow, feat = estimate
        return flow + self.refiner(feat)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.decode(self.extractor(first), self.extractor(second))


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The size PWC-Net runs at: each side rounded up to a multiple of 64."""
    # integer arithmetic on positive numbers (not math.ceil on a float): traced sizes stay in the graph, and
    # ONNX's truncating division agrees with floor division
    return (height + 63) // 64 * 64, (width + 63) // 64 * 64


class FlowEstimator(nn.Module):
    """PWC-Net with the resize-to-/64, x20 and rescale wrapper of sniklaus and CDVD-TSP.

    ``flow(reference, neighbour)`` returns the (B, 2, H, W) flow in pixels that warps ``neighbour`` onto
    ``reference``. The pyramid of a frame can be computed once with :meth:`pyramid` and reused for several pairs.
    """

    def __init__(self, *, corr_backend: CorrelationBackend = "auto") -> None:
        super().__init__()
        self.pwc = PWCNet(corr_backend=corr_backend)

    def pyramid(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Feature pyramid of (N, 3, H, W) frames at the padded size."""
        height, width = frames.shape[-2:]
        size = padded_size(height, width)
        resized = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        return self.pwc.extractor(resized)

    def flow_from_pyramids(
        self, reference: Sequence[torch.Tensor], neighbour: Sequence[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        """Flow in pixels at ``size`` = (H, W) from the two frames' pyramids."""
        height, width = size
        padded_h, padded_w = padded_size(height, width)
        raw = self.pwc.decode(reference, neighbour)
        flow = FLOW_SCALE * F.interpolate(raw, size=(height, width), mode="bilinear", align_corners=False)
        # x by W / W', y by H / H': one channel at a time so that the sizes may stay symbolic in an export
        return torch.cat((flow[:, :1] * (width / padded_w), flow[:, 1:] * (height / padded_h)), dim=1)

    def forward(self, reference: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        if reference.shape != neighbour.shape:
            raise ValueError(
                f"flow needs two frames of one shape, instead got {tuple(reference.shape)} and {tuple(neighbour.shape)}"
            )
        size = reference.shape[-2:]
        pyramids = self.pyramid(torch.cat((reference, neighbour), dim=0))
        n = reference.shape[0]
        return self.flow_from_pyramids([p[:n] for p in pyramids], [p[n:] for p in pyramids], tuple(size))
