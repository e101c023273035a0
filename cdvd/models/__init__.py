"""Network modules: plain ``nn.Module``s with no training code."""

from cdvd.models.cdvd_tsp import CDVDTSP, CascadeOutput, temporal_sharpness_prior
from cdvd.models.correlation import correlation, correlation_torch
from cdvd.models.pwc import FlowEstimator, PWCNet
from cdvd.models.reconstruction import ReconstructionNet
from cdvd.models.warp import backwarp_zero, warp_with_mask

__all__ = [
    "CDVDTSP",
    "CascadeOutput",
    "FlowEstimator",
    "PWCNet",
    "ReconstructionNet",
    "backwarp_zero",
    "correlation",
    "correlation_torch",
    "temporal_sharpness_prior",
    "warp_with_mask",
]
