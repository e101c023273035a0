"""The encoder-decoder that restores the centre frame from three aligned frames and the sharpness prior."""

from __future__ import annotations

import torch
from torch import nn

KERNEL = 5


def _conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, KERNEL, stride=stride, padding=KERNEL // 2)


class ResBlock(nn.Module):
    """conv -> ReLU -> conv, plus the input; no activation after the sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place on the fresh conv output (its backward does not need it): one full-size allocation less
        return self.conv2(self.act(self.conv1(x))).add_(x)


class EncoderStage(nn.Module):
    """conv (stride 1 or 2) -> ReLU, then ``n_resblock`` residual blocks."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, n_resblock: int) -> None:
        super().__init__()
        self.conv = _conv(in_ch, out_ch, stride)
        self.act = nn.ReLU(inplace=True)
        self.blocks = nn.Sequential(*(ResBlock(out_ch) for _ in range(n_resblock)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.act(self.conv(x)))


class DecoderStage(nn.Module):
    """``n_resblock`` residual blocks, then a 3x3 transposed conv that doubles the resolution -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, *, n_resblock: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResBlock(in_ch) for _ in range(n_resblock)))
        self.upsample = nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.upsample(self.blocks(x)))


class OutputStage(nn.Module):
    """``n_resblock`` residual blocks and a conv to 3 channels."""

    def __init__(self, in_ch: int, *, n_resblock: int, out_ch: int = 3) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResBlock(in_ch) for _ in range(n_resblock)))
        self.conv = _conv(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.blocks(x))


class ReconstructionNet(nn.Module):
    """Two-scale encoder-decoder with additive skips (spec section 4).

    Input: (B, 10, H, W) = warped previous, centre, warped next (RGB each) and the one-channel prior; H and W
    multiples of 4. Output: (B, 3, H, W), the restored centre frame itself.
    """

    def __init__(self, *, in_channels: int = 10, n_feat: int = 32, n_resblock: int = 3) -> None:
        super().__init__()
        self.stem = EncoderStage(in_channels, n_feat, stride=1, n_resblock=n_resblock)
        self.enc1 = EncoderStage(n_feat, 2 * n_feat, stride=2, n_resblock=n_resblock)
        self.enc2 = EncoderStage(2 * n_feat, 4 * n_feat, stride=2, n_resblock=n_resblock)
        self.dec2 = DecoderStage(4 * n_feat, 2 * n_feat, n_resblock=n_resblock)
        self.dec1 = DecoderStage(2 * n_feat, n_feat, n_resblock=n_resblock)
        self.head = OutputStage(n_feat, n_resblock=n_resblock)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.stem(x)
        half = self.enc1(full)
        quarter = self.enc2(half)
        up_half = self.dec2(quarter)
        up_full = self.dec1(up_half + half)
        return self.head(up_full + full)
