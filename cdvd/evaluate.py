"""``cdvd-eval``: PSNR and SSIM of deblurred videos with the published protocol (:mod:`cdvd.metrics`).

    cdvd-eval results=deblurred/ gt=/data/DVD [output=metrics.json] [frames=paper|all]
    cdvd-eval input=/data/DVD checkpoint=CDVD_TSP_DVD_Convergent.pt      # deblur, then score

``results`` holds one folder of frames per video (as ``cdvd-deblur`` writes them); ``gt`` is a dataset root in
a supported layout (its ``split``), a folder of per-video frame folders, or one folder of frames. Result
frames are matched to GT frames by name (the stem: ``00012.png`` scores against ``00012.jpg``).
``frames=paper`` (default) leaves out the first and last 2 frames of each video, as the published tables did;
``frames=all`` scores every frame. A video's score is the mean over its frames; the total is the mean over all
frames of all videos. The scores go to the terminal (a table), to ``output`` (JSON) and to a CSV beside it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from cdvd.atomic import atomic_destination
from cdvd.data.io import DataError, has_frames, list_frames, read_rgb
from cdvd.deblur import CONFIG_PATH, UsageError, build_deblurrer, run_cli
from cdvd.inference import deblur_videos, discover_sources, layout_videos
from cdvd.metrics import MetricAccumulator, psnr_uint8, ssim_uint8

logger = logging.getLogger(__name__)

FRAME_SETS = ("paper", "all")
PAPER_BORDER = 2  # frames left out at each end by the published tables (no full 5-frame window)


def frame_folders(root: str | os.PathLike, split: str | None = "test", *, gt: bool = False) -> dict[str, list[Path]]:
    """The frames of every video under ``root``, by video name, in natural order.

    Args:
        root: one folder of frames (a single video, named after the folder), a folder of per-video frame
            folders, or (with ``gt=True``) a dataset root in a layout of :mod:`cdvd.data.layouts`.
        split: the split read from a dataset root.
        gt: read a dataset root's sharp frames.

    Raises:
        DataError: ``root`` is missing or holds no frames.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder not found: {root}")
    if has_frames(root):
        return {root.name: list_frames(root)}
    if gt:
        pairs = layout_videos(root, split, require_gt=True)
        if pairs:
            return {pair.name: list(pair.gt) for pair in pairs}
    videos = {
        sub.name: list_frames(sub)
        for sub in sorted(root.iterdir())
        if sub.is_dir() and not sub.name.startswith(".") and has_frames(sub)
    }
    if not videos:
        raise DataError(f"no frames in {root}: expected frames, or one folder of frames per video")
    return videos


def select_frames(frames: Sequence[Path], which: str) -> list[Path]:
    """The frames scored: all of them, or without the first and last 2 (``paper``)."""
    if which not in FRAME_SETS:
        raise UsageError(f"frames={which}: expected one of {', '.join(FRAME_SETS)}")
    if which == "all":
        return list(frames)
    return list(frames[PAPER_BORDER : len(frames) - PAPER_BORDER])


def pair_videos(
    results: Mapping[str, list[Path]], gt: Mapping[str, list[Path]]
) -> dict[str, tuple[list[Path], list[Path]]]:
    """Match result videos to GT videos by name; a lone video on each side is matched whatever the names.

    Raises:
        DataError: a GT video without results, naming the folder expected.
    """
    if len(results) == 1 and len(gt) == 1:
        (result_frames,), (name, gt_frames) = results.values(), next(iter(gt.items()))
        return {name: (result_frames, gt_frames)}
    pairs = {}
    for name, gt_frames in gt.items():
        if name not in results:
            raise DataError(
                f"no results for video {name} (GT in {gt_frames[0].parent}); found: {', '.join(results) or 'none'}"
            )
        pairs[name] = (results[name], gt_frames)
    extra = sorted(set(results) - set(gt))
    if extra:
        logger.warning("results without GT, not scored: %s", ", ".join(extra))
    return pairs


def evaluate_pairs(
    pairs: Mapping[str, tuple[Sequence[Path], Sequence[Path]]],
    *,
    frames: str = "paper",
    crop_border: int = 4,
    progress: bool = False,
) -> MetricAccumulator:
    """Score every video: each selected GT frame against the result frame of the same stem.

    Args:
        pairs: ``{video: (result frames, GT frames)}``.
        frames: ``paper`` (leave out the first and last 2 GT frames of each video) or ``all``.
        crop_border: pixels left out at every border.
        progress: show a rich progress bar.

    Raises:
        DataError: a result frame is missing, or its size differs from the GT frame's; the file is named.
    """
    accumulator = MetricAccumulator()
    jobs = []
    for name, (result_frames, gt_frames) in pairs.items():
        by_stem = {p.stem: p for p in result_frames}
        selected = select_frames(gt_frames, frames)
        if not selected:
            logger.warning("%s: %d frames, none scored with frames=%s", name, len(gt_frames), frames)
        folder = result_frames[0].parent if result_frames else Path("?")
        for gt_path in selected:
            result = by_stem.get(gt_path.stem)
            if result is None:
                raise DataError(f"result frame missing: {folder / (gt_path.stem + '.png')} (for GT {gt_path})")
            jobs.append((name, result, gt_path))
        accumulator.update(name, [], [])

    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        task = bar.add_task("scoring", total=len(jobs))
        bar.start()
    try:
        for name, result, gt_path in jobs:
            pred, target = read_rgb(result), read_rgb(gt_path)
            if pred.shape != target.shape:
                raise DataError(
                    f"size {pred.shape[1]}x{pred.shape[0]} of {result} differs from "
                    f"{target.shape[1]}x{target.shape[0]} of the GT frame {gt_path}"
                )
            accumulator.update(name, psnr_uint8(pred, target, crop_border), ssim_uint8(pred, target, crop_border))
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return accumulator


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_destination(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _number(value: float) -> float | str | None:
    if np.isnan(value):
        return None
    if np.isinf(value):
        return "inf"
    return value


def write_report(report: Mapping[str, Any], json_path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report`` (from :meth:`MetricAccumulator.as_dict`) as JSON and as a CSV beside it.

    Returns:
        The JSON and CSV paths.
    """
    json_path = Path(json_path)
    csv_path = json_path.with_suffix(".csv")
    clean = {
        "videos": {n: {k: _number(v) for k, v in s.items()} for n, s in report["videos"].items()},
        "total": {k: _number(v) for k, v in report["total"].items()},
    }
    for key in ("frames_set", "crop_border"):
        if key in report:
            clean[key] = report[key]
    _atomic_write_text(json_path, json.dumps(clean, indent=2) + "\n")
    lines = [["video", "psnr", "ssim", "frames"]]
    for name, score in report["videos"].items():
        lines.append([name, f"{score['psnr']:.4f}", f"{score['ssim']:.6f}", str(score["frames"])])
    total = report["total"]
    lines.append(["total", f"{total['psnr']:.4f}", f"{total['ssim']:.6f}", str(total["frames"])])
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    _atomic_write_text(csv_path, buffer.getvalue())
    return json_path, csv_path


def print_table(report: Mapping[str, Any], title: str = "PSNR / SSIM") -> None:
    """The per-video and total scores as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("video")
    table.add_column("frames", justify="right")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("SSIM", justify="right")
    for name, score in report["videos"].items():
        table.add_row(name, str(score["frames"]), f"{score['psnr']:.3f}", f"{score['ssim']:.4f}")
    total = report["total"]
    table.add_section()
    table.add_row("total", str(total["frames"]), f"{total['psnr']:.3f}", f"{total['ssim']:.4f}", style="bold")
    Console().print(table)


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.results`` against ``cfg.gt``, deblurring ``cfg.input`` with ``cfg.checkpoint`` first if
    given.

    Returns:
        ``{"videos": {name: {"psnr", "ssim", "frames"}}, "total": {...}, "frames_set", "crop_border"}``.

    Raises:
        UsageError, DataError, CheckpointError: the user's mistakes, naming the key or file.
    """
    frames = str(cfg.get("frames", "paper"))
    if frames not in FRAME_SETS:
        raise UsageError(f"frames={frames}: expected one of {', '.join(FRAME_SETS)}")
    split = cfg.get("split", "test")
    output = Path(cfg.get("output") or "metrics.json")
    crop_border = int(cfg.get("crop_border", 4))
    input_path = cfg.get("input")
    results = cfg.get("results")
    gt = cfg.get("gt")

    if input_path:
        input_path = Path(input_path)
        if not input_path.exists():
            raise UsageError(f"input not found: {input_path} (pass input=PATH of blurry videos or a dataset root)")
        if not cfg.get("checkpoint"):
            raise UsageError("input= needs a checkpoint to deblur with: pass checkpoint=PATH (or results=DIR)")
        if gt is None and (input_path.is_file() or has_frames(input_path)):
            raise UsageError(f"{input_path} holds no ground truth: pass gt=DIR")
        results = Path(results) if results else output.parent / "results"
        if gt is None:
            pairs = layout_videos(input_path, split, require_gt=True)
            if not pairs:
                raise UsageError(f"cannot find ground truth in {input_path}: pass gt=DIR")
            gt_videos = {pair.name: list(pair.gt) for pair in pairs}
        sources = discover_sources(input_path, split=split)
        deblurrer = build_deblurrer(cfg)
        deblur_videos(deblurrer, sources, results, progress=bool(cfg.get("progress", True)))
    elif not results:
        raise UsageError("nothing to score: pass results=DIR gt=DIR, or input=DIR checkpoint=PATH")
    results = Path(results)
    if not results.is_dir():
        raise UsageError(f"results not found: {results} (pass results=DIR of deblurred frames)")
    if gt is not None:
        if not Path(gt).exists():
            raise UsageError(f"gt not found: {gt} (pass gt=DIR of sharp frames or a dataset root)")
        gt_videos = frame_folders(gt, split, gt=True)
    elif not input_path:
        raise UsageError("no ground truth given: pass gt=DIR (sharp frames or a dataset root)")

    pairs = pair_videos(frame_folders(results, split), gt_videos)
    accumulator = evaluate_pairs(
        pairs, frames=frames, crop_border=crop_border, progress=bool(cfg.get("progress", True))
    )
    report: dict[str, Any] = accumulator.as_dict()
    report["frames_set"] = frames
    report["crop_border"] = crop_border
    json_path, csv_path = write_report(report, output)
    print_table(report, title=f"{results} vs GT (frames={frames})")
    logger.info("metrics written to %s and %s", json_path, csv_path)
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def main(cfg: DictConfig) -> float:
    report = run_cli(run_eval, cfg, "cdvd-eval")
    return float(report["total"]["psnr"])


if __name__ == "__main__":
    main()
