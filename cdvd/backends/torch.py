"""The torch backend's speed options for one cascade stage: channels-last memory and ``torch.compile``."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from cdvd.models import CDVDTSP

logger = logging.getLogger(__name__)

StageFn = Callable[[torch.Tensor], torch.Tensor]


def prepare_torch_model(model: CDVDTSP, *, channels_last: bool = False, compile: bool = False) -> StageFn:
    """``model.restore_centres`` ((T, B, 3, H, W) RGB in [0, 1] -> (T - 2, B, 3, H, W)) with the speed options.

    Args:
        model: the network, already on its device; put in eval mode. ``channels_last`` converts its weights in
            place (NHWC memory; the values are unchanged, so the model stays usable as before).
        channels_last: store the conv weights as NHWC, which makes oneDNN (CPU) and cuDNN run the convolutions
            in that layout. Inputs stay as they are; outputs have the same values, laid out as the convs choose.
        compile: ``torch.compile`` the stage's heavy parts (``dynamic=False``: recompiled once per frame size, the
            first call at a new size takes long). Needs a C++ compiler on CPU.
    """
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        # the reconstruction net (about 70% of the FLOPs) and PWC-Net's feature pyramid, compiled in place:
        # ``Module.compile`` keeps the parameter names, so checkpoints still load. The flow decoders stay eager:
        # their 81-displacement cost volumes unroll into a graph that takes many minutes to compile.
        logger.info("compiling the reconstruction net and the flow pyramid with torch.compile (once per frame size)")
        for module in (model.recons, model.flow.pwc.extractor, model.flow.pwc.refiner):
            module.compile(dynamic=False)
    return model.restore_centres
