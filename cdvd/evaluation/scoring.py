"""Scoring deblurred frames against ground truth with the protocol of :mod:`cdvd.evaluation.protocol`
(``cdvd-eval``'s core).

Result frames are matched to GT frames by name (the stem: ``00012.png`` scores against ``00012.jpg``); which GT
frames are scored, and the border left out, are the protocol's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from cdvd.data.io import read_rgb
from cdvd.errors import ConfigError, DataError
from cdvd.evaluation.metrics import psnr_uint8, ssim_uint8
from cdvd.evaluation.protocol import CLIP_LENGTH, MetricAccumulator, crop_border, scored_frames

logger = logging.getLogger(__name__)

#: GT videos named in the message of an evaluation that would score nothing.
_NAMED = 3


def check_something_scored(gt: Mapping[str, Sequence[Path]], frames: str = "paper") -> None:
    """Refuse an evaluation of ``gt`` (``{video: GT frames}``) that would score no frame of the frame set ``frames``
    (its totals would be NaN), naming what was looked for.

    Raises:
        DataError: no GT video, or none with a frame in the frame set (every video shorter than a window).
    """
    if any(len(scored_frames(len(paths), frames)) for paths in gt.values()):
        return
    if not gt:
        raise DataError("nothing to score: no GT video matches the results")
    shown = [f"{name}: {len(paths)} frames in {paths[0].parent if paths else '?'}" for name, paths in gt.items()]
    listed = "; ".join(shown[:_NAMED]) + (f"; and {len(shown) - _NAMED} more" if len(shown) > _NAMED else "")
    if frames == "all":
        raise DataError(f"no frame to score: the GT videos hold no frames ({listed})")
    raise DataError(
        f"no frame to score with frames={frames}: it scores only frames with a whole {CLIP_LENGTH}-frame window "
        f"in their video, and no GT video has one ({listed}); pass frames=all to score every frame"
    )


def evaluate_pairs(
    pairs: Mapping[str, tuple[Sequence[Path], Sequence[Path]]],
    *,
    frames: str = "paper",
    border: int | None = None,
    progress: bool = False,
) -> MetricAccumulator:
    """Score every video of ``pairs`` (``{video: (result frames, GT frames)}``): each GT frame of the frame set
    ``frames`` against the result frame of the same stem, kept under that stem
    (:meth:`cdvd.evaluation.protocol.MetricAccumulator.extremes`), ``border`` pixels left out at every border
    (``None``: :data:`cdvd.evaluation.protocol.CROP_BORDER`).

    Raises:
        DataError: nothing to score (:func:`check_something_scored`), a result frame is missing, or its size differs
            from the GT frame's; the file is named.
    """
    check_something_scored({name: gt_frames for name, (_, gt_frames) in pairs.items()}, frames)
    border = crop_border(border)
    accumulator = MetricAccumulator()
    jobs = []
    for name, (result_frames, gt_frames) in pairs.items():
        by_stem = {p.stem: p for p in result_frames}
        selected = [gt_frames[i] for i in scored_frames(len(gt_frames), frames)]
        if not selected:
            logger.warning("%s: %d frames, none scored with frames=%s", name, len(gt_frames), frames)
        folder = result_frames[0].parent if result_frames else Path("?")
        for gt_path in selected:
            result = by_stem.get(gt_path.stem)
            if result is None:
                raise DataError(f"result frame missing: {folder / (gt_path.stem + '.png')} (for GT {gt_path})")
            jobs.append((name, result, gt_path))
        accumulator.update(name, [], [])

    from rich.progress import track

    for name, result, gt_path in track(jobs, description="scoring", disable=not progress):
        pred, target = read_rgb(result), read_rgb(gt_path)
        if pred.shape != target.shape:
            raise DataError(
                f"size {pred.shape[1]}x{pred.shape[0]} of {result} differs from "
                f"{target.shape[1]}x{target.shape[0]} of the GT frame {gt_path}"
            )
        try:
            psnr, ssim = psnr_uint8(pred, target, border), ssim_uint8(pred, target, border)
            accumulator.update(name, psnr, ssim, frames=gt_path.stem)  # named: found again by score
        except ValueError as err:  # a border that leaves nothing of the frame
            raise ConfigError(f"crop_border={border}: {err} ({gt_path})") from err
    return accumulator
