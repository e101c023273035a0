"""The evaluation protocol of the published CDVD-TSP tables, in one place.

Validation (:mod:`cdvd.training.module`, :class:`cdvd.data.datasets.WindowDataset`) and ``cdvd-eval``
(:mod:`cdvd.evaluation.scoring`) both read their rules from here:

- :data:`CLIP_LENGTH` frames per window (the network's input), centred on the frame it restores;
- :func:`scored_frames`: which frames of a video are scored: ``paper`` leaves out the first and last
  ``CLIP_LENGTH // 2`` frames (no full window inside the video), ``all`` scores every frame;
- :data:`CROP_BORDER` pixels left out at every border of every scored frame;
- :class:`MetricAccumulator`: a video's score is the mean over its frames, the total the mean over all frames of
  all videos (not the mean of the video means);
- :func:`write_report`: the JSON and CSV that ``cdvd-eval`` writes.

The rules are read when used (``protocol.CROP_BORDER``, not a copied default), so a change here reaches every
caller.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cdvd.atomic import write_text_atomic
from cdvd.models.cdvd_tsp import CLIP_LENGTH

CROP_BORDER = 4
"""Pixels left out at every border of a frame before PSNR/SSIM (the published tables: 4)."""

FRAME_SETS = ("paper", "all")
"""``paper``: only frames with a full window inside the video (the published tables); ``all``: every frame."""


def crop_border(value: int | None = None) -> int:
    """``value``, or the protocol's :data:`CROP_BORDER` when ``None``."""
    return CROP_BORDER if value is None else int(value)


def check_frame_set(frames: str) -> str:
    """``frames`` if it names a frame set; a ValueError naming the setting otherwise."""
    if frames not in FRAME_SETS:
        raise ValueError(f"frames={frames}: expected one of {', '.join(FRAME_SETS)}")
    return frames


def scored_frames(n_frames: int, frames: str = "paper", clip_length: int | None = None) -> range:
    """Indices of the frames of an ``n_frames``-frame video that the protocol scores: with ``paper``, the centres of
    a full ``clip_length``-frame window inside the video (frames 2..n-3 for 5-frame windows; ``None``:
    :data:`CLIP_LENGTH`), with ``all`` every frame."""
    check_frame_set(frames)
    if frames == "all":
        return range(n_frames)
    length = CLIP_LENGTH if clip_length is None else clip_length
    half = length // 2
    return range(half, max(half, n_frames - (length - 1 - half)))


# ------------------------------------------------------------------------------------------------------------
# accumulation


def _values(values: float | Iterable[float] | Any) -> list[float]:
    if hasattr(values, "reshape") and hasattr(values, "tolist"):  # torch.Tensor or np.ndarray
        return [float(v) for v in values.reshape(-1).tolist()]
    if isinstance(values, Iterable):
        return [float(v) for v in values]
    return [float(values)]


@dataclass
class VideoScore:
    """Mean PSNR/SSIM of one video over ``frames`` frames."""

    psnr: float
    ssim: float
    frames: int


def _mean_score(frames: list[tuple[float, float, str | None]]) -> VideoScore:
    """The mean PSNR and SSIM of ``(psnr, ssim, name)`` ``frames``, NaN for none."""
    count = len(frames)
    if count == 0:
        return VideoScore(math.nan, math.nan, 0)
    return VideoScore(math.fsum(f[0] for f in frames) / count, math.fsum(f[1] for f in frames) / count, count)


@dataclass(frozen=True)
class FrameScore:
    """The PSNR of one named frame of a video (:meth:`MetricAccumulator.extremes`)."""

    video: str
    frame: str
    psnr: float


@dataclass
class MetricAccumulator:
    """Per-frame PSNR/SSIM collected per video.

    A video's score is the mean over its frames; :meth:`total` is the mean over all frames of all videos (not
    the mean of the video means), as in the published tables. An infinite PSNR (identical frames) is kept as
    it is and makes the mean infinite. Frames added with their names can be found again by score
    (:meth:`extremes`).
    """

    _frames: dict[str, list[tuple[float, float, str | None]]] = field(default_factory=dict)  # (psnr, ssim, name)

    def update(
        self,
        video: str,
        psnr: float | Iterable[float],
        ssim: float | Iterable[float],
        frames: str | Iterable[str] | None = None,
    ) -> None:
        """Add one frame's (or several frames') scores to ``video`` (floats, tensors or arrays); ``frames``: their
        names (one per score), kept for :meth:`extremes`."""
        psnrs, ssims = _values(psnr), _values(ssim)
        if len(psnrs) != len(ssims):
            raise ValueError(f"got {len(psnrs)} PSNR values and {len(ssims)} SSIM values")
        names: list[str | None] = [None] * len(psnrs)
        if frames is not None:
            names = [frames] if isinstance(frames, str) else list(frames)
            if len(names) != len(psnrs):
                raise ValueError(f"got {len(names)} frame names for {len(psnrs)} scores")
        self._frames.setdefault(video, []).extend(zip(psnrs, ssims, names, strict=True))

    def extremes(self) -> tuple[FrameScore, FrameScore] | None:
        """The named frames of lowest and of highest PSNR over all videos (the first one met on a tie), or ``None``
        when no named frame was added."""
        named = [
            FrameScore(video, name, psnr)
            for video, frames in self._frames.items()
            for psnr, _, name in frames
            if name is not None
        ]
        if not named:
            return None
        return min(named, key=lambda frame: frame.psnr), max(named, key=lambda frame: frame.psnr)

    def per_video(self) -> dict[str, VideoScore]:
        return {name: _mean_score(frames) for name, frames in self._frames.items()}

    def total(self) -> VideoScore:
        return _mean_score([frame for frames in self._frames.values() for frame in frames])

    def as_dict(self) -> dict[str, Any]:
        """``{"videos": {name: {"psnr", "ssim", "frames"}}, "total": {"psnr", "ssim", "frames"}}``."""
        return {
            "videos": {name: asdict(score) for name, score in self.per_video().items()},
            "total": asdict(self.total()),
        }


# ------------------------------------------------------------------------------------------------------------
# reports


def _number(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


REPORT_CSV_HEADER = ("video", "psnr", "ssim", "frames")
"""The first row of the CSV beside a report (how ``cdvd-eval`` knows a CSV as one it wrote)."""


def write_report(report: Mapping[str, Any], json_path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report`` (:meth:`MetricAccumulator.as_dict` plus any extra keys: the frame set, the crop border,
    what was scored and with which checkpoint) as JSON, and its scores as a CSV beside it, both atomically. Returns
    the JSON and CSV paths."""
    json_path = Path(json_path)
    csv_path = json_path.with_suffix(".csv")
    clean = {key: value for key, value in report.items() if key not in ("videos", "total")}
    clean["videos"] = {n: {k: _number(v) for k, v in s.items()} for n, s in report["videos"].items()}
    clean["total"] = {k: _number(v) for k, v in report["total"].items()}
    write_text_atomic(json_path, json.dumps(clean, indent=2) + "\n")
    lines = [list(REPORT_CSV_HEADER)]
    for name, score in [*report["videos"].items(), ("total", report["total"])]:
        lines.append([name, f"{score['psnr']:.4f}", f"{score['ssim']:.6f}", str(score["frames"])])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    write_text_atomic(csv_path, buffer.getvalue())
    return json_path, csv_path
