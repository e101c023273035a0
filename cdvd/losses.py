"""Training losses on the 12-channel target of CDVD-TSP (spec section 6).

The cascade's four outputs ``[R1, R2, R3, out]`` are concatenated along channels, (B, 12, H, W), and compared
with the sharp frames ``[G1, G2, G3, G2]`` of the 5-frame clip, as the original code did. Every loss module
takes ``(outputs: CascadeOutput, sharp: (B, 5, 3, H, W))`` and returns a dict of its components plus ``loss``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim
from torch import nn

from cdvd.models.cdvd_tsp import CLIP_LENGTH, CascadeOutput


def cascade_target(outputs: Sequence[torch.Tensor], sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12-channel ``(prediction, target)`` of the published training, each (B, 12, H, W): the cascade's four
    (B, 3, H, W) ``outputs`` ``[R1, R2, R3, out]`` and ``[G1, G2, G3, G2]`` of the (B, 5, 3, H, W) ``sharp`` clip."""
    if len(outputs) != 4:
        raise ValueError(f"expected the cascade's 4 outputs, instead got {len(outputs)}")
    if sharp.dim() != 5 or sharp.shape[1] != CLIP_LENGTH or sharp.shape[2] != 3:
        raise ValueError(f"expected a (B, 5, 3, H, W) sharp clip, instead got {tuple(sharp.shape)}")
    if tuple(outputs[0].shape) != (sharp.shape[0], 3, *sharp.shape[-2:]):
        raise ValueError(f"outputs {tuple(outputs[0].shape)} do not match the sharp clip {tuple(sharp.shape)}")
    prediction = torch.cat(tuple(outputs), dim=1)
    target = torch.cat((sharp[:, 1], sharp[:, 2], sharp[:, 3], sharp[:, 2]), dim=1)
    return prediction, target


def hard_example_mask(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    hard_ratio: float = 0.5,
    random_ratio: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The mask of hard example mining: per sample, the hardest pixels plus a random set.

    Follows the original ``HEM`` loss, computed on the tensors' device: the residual ``|x - y|`` summed over
    channels; a pixel is hard when its residual is strictly above the value at rank
    ``int(hard_ratio * H * W)`` (0-based) of the descending sort (so at most that many pixels, exactly that
    many without ties); exactly ``int(random_ratio * H * W)`` pixels drawn uniformly without replacement are
    added (they may overlap the hard ones, as in the original).

    Args:
        prediction, target: (B, C, H, W).
        hard_ratio: fraction of pixels taken as hard, in [0, 1).
        random_ratio: fraction of pixels drawn at random, in [0, 1].
        generator: torch generator on the tensors' device for the random draw; ``None``: the global one.

    Returns:
        (B, 1, H, W) float mask of 0 and 1, without gradient.
    """
    residual = (prediction.detach().float() - target.detach().float()).abs().sum(dim=1)
    return _mask_from_residual(residual, hard_ratio, random_ratio, generator).to(prediction.dtype)


def _mask_from_residual(
    residual: torch.Tensor, hard_ratio: float, random_ratio: float, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, H, W) residual summed over channels -> (B, 1, H, W) float32 mask."""
    b, h, w = residual.shape
    n = h * w
    with torch.no_grad():
        flat = residual.detach().float().reshape(b, n)
        hard_rank = int(hard_ratio * n)  # 0-based index in the descending sort
        if hard_rank >= n:
            mask = torch.zeros_like(flat, dtype=torch.bool)
        else:
            # descending index k is the (n - k)-th smallest (1-based); a selection, not a full sort
            threshold = flat.kthvalue(n - hard_rank, dim=1, keepdim=True).values
            mask = flat > threshold
        n_random = int(random_ratio * n)
        if n_random > 0:
            # the n_random largest of uniform scores: a uniform draw without replacement, exactly n_random
            scores = torch.rand(b, n, generator=generator, device=flat.device)
            chosen = scores.topk(n_random, dim=1, sorted=False).indices
            mask = mask.scatter(1, chosen, True)
    return mask.reshape(b, 1, h, w).float()


class L1HEMLoss(nn.Module):
    """The paper's loss: ``l1_weight * L1 + hem_weight * HEM`` on the 12-channel target.

    ``HEM = L1(x * mask, y * mask)``, the mean over all elements, with the mask of :func:`hard_example_mask`.

    Args:
        l1_weight: weight of the plain L1 term (paper: 1).
        hem_weight: weight of the hard-example term (paper: 2).
        hard_ratio: fraction of hardest pixels per sample (paper: 0.5).
        random_ratio: fraction of random pixels per sample (paper: 0.1).
    """

    def __init__(
        self,
        *,
        l1_weight: float = 1.0,
        hem_weight: float = 2.0,
        hard_ratio: float = 0.5,
        random_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        if not 0.0 <= hard_ratio < 1.0:
            raise ValueError(f"hard_ratio must be in [0, 1), instead got {hard_ratio}")
        if not 0.0 <= random_ratio <= 1.0:
            raise ValueError(f"random_ratio must be in [0, 1], instead got {random_ratio}")
        self.l1_weight = l1_weight
        self.hem_weight = hem_weight
        self.hard_ratio = hard_ratio
        self.random_ratio = random_ratio

    def forward(
        self, outputs: CascadeOutput, sharp: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"l1", "hem", "loss"}`` of one batch, scalar tensors; ``generator``: torch generator on the device for the
        random pixels (``None``: the global one)."""
        prediction, target = cascade_target(outputs, sharp)
        # one |x - y| serves the L1 term, the mask and HEM: |m x - m y| = m |x - y| for a 0/1 mask
        diff = (prediction - target).abs()
        l1 = diff.mean()
        mask = _mask_from_residual(diff.detach().sum(dim=1), self.hard_ratio, self.random_ratio, generator)
        hem = (diff * mask.to(diff.dtype)).mean()
        return {"l1": l1, "hem": hem, "loss": self.l1_weight * l1 + self.hem_weight * hem}


MSSSIM_DEFAULT_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class MSSSIML1Loss(nn.Module):
    """The 2021 fork's loss: ``alpha * (1 - MS-SSIM) + (1 - alpha) * L1`` on the 12-channel target.

    MS-SSIM is ``pytorch_msssim.ms_ssim(data_range=1)`` on the (B, 12, H, W) tensors, which computes every
    channel on its own and averages them: the same value as scoring the four RGB images (B * 4, 3, H, W) and
    averaging.

    pytorch-msssim downsamples 4 times whatever the number of scales, so the smaller side of the patch must be
    above ``(win_size - 1) * 16`` pixels: 161 with the default window. :meth:`min_patch_size` gives the figure
    and :func:`check_patch_size` checks a config before training starts.

    Args:
        alpha: weight of the MS-SSIM term (2021 fork: 0.84).
        win_size: Gaussian window of SSIM (odd).
        win_sigma: its standard deviation.
        weights: the per-scale weights (default: the five of Wang et al.).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.84,
        win_size: int = 11,
        win_sigma: float = 1.5,
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], instead got {alpha}")
        if win_size % 2 != 1:
            raise ValueError(f"win_size must be odd, instead got {win_size}")
        self.alpha = alpha
        self.win_size = win_size
        self.win_sigma = win_sigma
        self.weights = list(weights) if weights is not None else list(MSSSIM_DEFAULT_WEIGHTS)

    @staticmethod
    def min_patch_size(win_size: int = 11) -> int:
        """Smallest patch side pytorch-msssim accepts: ``(win_size - 1) * 2**4 + 1``."""
        return (win_size - 1) * 2**4 + 1

    def forward(
        self, outputs: CascadeOutput, sharp: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"ms_ssim", "l1", "loss"}`` of one batch, scalar tensors; ``generator`` is unused (accepted so that every
        loss is called alike)."""
        del generator
        prediction, target = cascade_target(outputs, sharp)
        check_patch_size(self, tuple(prediction.shape[-2:]))
        l1 = F.l1_loss(prediction, target)
        # MS-SSIM in float32 even under autocast: its variances cancel badly in half precision
        score = ms_ssim(
            prediction.float(),
            target.float(),
            data_range=1.0,
            win_size=self.win_size,
            win_sigma=self.win_sigma,
            weights=self.weights,
        )
        loss = self.alpha * (1.0 - score) + (1.0 - self.alpha) * l1
        return {"ms_ssim": score, "l1": l1, "loss": loss}


def _min_size_of(loss: str | type | nn.Module) -> tuple[str, int | None]:
    if isinstance(loss, MSSSIML1Loss):
        return type(loss).__name__, loss.min_patch_size(loss.win_size)
    if isinstance(loss, str):
        name = loss.rsplit(".", 1)[-1]
        msssim = name in (MSSSIML1Loss.__name__, "msssim_l1")
    else:
        cls = loss if isinstance(loss, type) else type(loss)
        name, msssim = cls.__name__, issubclass(cls, MSSSIML1Loss)
    return name, MSSSIML1Loss.min_patch_size() if msssim else None


def check_patch_size(loss: str | type | nn.Module, patch_size: int | Sequence[int]) -> None:
    """Raise a clear ``ValueError`` when ``loss`` cannot work on patches of ``patch_size``.

    Args:
        loss: a loss module, its class, its ``_target_`` path (``cdvd.losses.MSSSIML1Loss``) or its config name
            (``msssim_l1``).
        patch_size: the patch side, or its (H, W).

    Raises:
        ValueError: the MS-SSIM loss with a patch side below 161 pixels (the message names the minimum).
    """
    name, minimum = _min_size_of(loss)
    sides = (int(patch_size),) * 2 if isinstance(patch_size, int) else tuple(int(s) for s in patch_size)
    if minimum is not None and min(sides) < minimum:
        raise ValueError(
            f"{name} needs patches of at least {minimum}x{minimum} pixels (MS-SSIM downsamples 4 times "
            f"with an 11-pixel window), instead got {'x'.join(map(str, sides))}; use a larger patch or the "
            "L1+HEM loss"
        )
