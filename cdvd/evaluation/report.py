"""``cdvd-eval``'s work: deblur (with ``input=``), score with the published protocol, and write the report.

The report (JSON, with its CSV beside it, and with ``pictures=true`` the worst and best frame's pictures) is checked
before any work: each file replaces only an earlier one of ``cdvd-eval`` (known by its content: :data:`REPORT_MARK`
in the JSON and in the pictures' PNG text, the CSV's header) unless ``overwrite=true``, and never goes at, in or over
what the run reads. Result frames are matched to GT frames by name (the stem).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdvd.atomic import atomic_destination, check_writable_place
from cdvd.data.io import has_frames, read_rgb
from cdvd.data.sources import (
    VideoSource,
    discover_sources,
    frame_folders,
    layout_videos,
    pair_videos,
    special_kind,
)
from cdvd.errors import ConfigError, DataError
from cdvd.evaluation.metrics import psnr_uint8
from cdvd.evaluation.pictures import comparison_strip, encode_png, png_text
from cdvd.evaluation.protocol import (
    CLIP_LENGTH,
    REPORT_CSV_HEADER,
    FrameScore,
    MetricAccumulator,
    crop_border,
    write_report,
)
from cdvd.evaluation.scoring import check_something_scored, evaluate_pairs
from cdvd.fingerprint import file_sha256
from cdvd.inference.pipeline import check_input, deblur_with
from cdvd.inference.settings import EvalSettings, check_run_paths

logger = logging.getLogger(__name__)

REPORT_MARK = ("made_by", "cdvd-eval")
"""The key and value every report's JSON holds: how a later run knows a file at ``output`` as one it may replace."""

#: A report larger than this is not read to tell whether it is one (reports are a few hundred bytes per video).
_REPORT_MAX_BYTES = 64 << 20


def is_eval_report(path: Path) -> bool:
    """Whether ``path`` is a JSON report that ``cdvd-eval`` wrote (it holds :data:`REPORT_MARK`)."""
    try:
        if path.stat().st_size > _REPORT_MAX_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    key, value = REPORT_MARK
    return isinstance(data, dict) and data.get(key) == value


def is_eval_csv(path: Path) -> bool:
    """Whether ``path`` is the CSV of a report (its first row is :data:`cdvd.evaluation.protocol.REPORT_CSV_HEADER`)."""
    try:
        with path.open("rb") as file:
            first = file.readline(256)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == ",".join(REPORT_CSV_HEADER).encode()


def is_eval_picture(path: Path) -> bool:
    """Whether ``path`` is a picture that ``cdvd-eval`` wrote (a PNG whose text holds :data:`REPORT_MARK`)."""
    key, value = REPORT_MARK
    return png_text(path).get(key) == value


def check_report_destination(settings: EvalSettings) -> None:
    """Before any work: the report (``output``), its CSV and with ``pictures=true`` its pictures can be written and
    each replaces only an earlier one of ``cdvd-eval`` (by content: :func:`is_eval_report`, :func:`is_eval_csv`,
    :func:`is_eval_picture`) unless ``overwrite=true``; a folder, FIFO or device at any of them is refused.
    Raises ConfigError naming ``output`` and the file in the way."""
    json_path = settings.report_path()
    csv_path = json_path.with_suffix(".csv")
    if json_path == csv_path:
        raise ConfigError(f"output={json_path}: the report is JSON, with its CSV beside it: pass output=NAME.json")
    checks: list[tuple[Path, Callable[[Path], bool], str]] = [
        (json_path, is_eval_report, "report"),
        (csv_path, is_eval_csv, "report"),
    ]
    checks += [(path, is_eval_picture, "picture") for path in settings.picture_paths().values()]
    for path, is_ours, what in checks:
        if not path.exists() and not path.is_symlink():
            continue
        kind = "a folder" if path.is_dir() else special_kind(path)
        if kind is not None:
            raise ConfigError(f"output={json_path}: {path} is {kind}; pass output=FILE.json elsewhere")
        if not settings.overwrite and not is_ours(path):
            raise ConfigError(
                f"output={json_path}: {path} exists and is not a cdvd-eval {what}: "
                "pass another output=, or overwrite=true to replace it"
            )
    check_writable_place(json_path.parent, "output", json_path)


def results_table(report: Mapping[str, Any], title: str = "PSNR / SSIM") -> Any:
    """The per-video and total scores as a ``rich`` table, for the terminal."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("video")
    for heading in ("frames", "PSNR (dB)", "SSIM"):
        table.add_column(heading, justify="right")
    for name, score in report["videos"].items():
        table.add_row(name, str(score["frames"]), f"{score['psnr']:.3f}", f"{score['ssim']:.4f}")
    total = report["total"]
    table.add_section()
    table.add_row("total", str(total["frames"]), f"{total['psnr']:.3f}", f"{total['ssim']:.4f}", style="bold")
    return table


def provenance(settings: EvalSettings, results: Path) -> dict[str, Any]:
    """What the scores are of: the checkpoint (path and SHA-256), the input, the results, the GT, the protocol and
    the versions, for ``metrics.json``."""
    import platform

    import torch

    from cdvd import __version__

    checkpoint = None
    if settings.input and settings.checkpoint:
        checkpoint = {"path": str(Path(settings.checkpoint).resolve()), "sha256": file_sha256(settings.checkpoint)}
        checkpoint.update({k: getattr(settings, k) for k in ("precision", "streaming", "device", "corr_backend")})
        checkpoint["tile"] = None if settings.tile.size is None else [settings.tile.size, settings.tile.overlap]
    return {
        REPORT_MARK[0]: REPORT_MARK[1],
        "checkpoint": checkpoint,
        "input": str(Path(settings.input).resolve()) if settings.input else None,
        "results": str(results.resolve()),
        "gt": str(Path(settings.gt).resolve()) if settings.gt else None,
        "split": settings.split,
        "protocol": {
            "clip_length": CLIP_LENGTH,
            "frames": settings.frames,
            "crop_border": crop_border(settings.crop_border),
        },
        "versions": {"cdvd": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _input_frame(sources: Mapping[str, VideoSource], result: Path) -> np.ndarray:
    """The blurry input frame that ``result`` (``results/VIDEO/STEM.png``) was deblurred from."""
    source = sources.get(result.parent.name)
    if source is None:
        raise DataError(f"no input video {result.parent.name} for {result} (input= is not what the results came from)")
    if source.frame_files is not None:
        for path in source.frame_files:
            if path.stem == result.stem:
                return read_rgb(path)
    else:
        for frame in source.frames():  # a video file: decoded up to the frame
            if Path(source.output_name(frame.index)).stem == result.stem:
                return frame.image
    raise DataError(f"no frame {result.stem} in the input {source.path} for {result}")


def _picture(
    frame: FrameScore,
    pairs: Mapping[str, tuple[Sequence[Path], Sequence[Path]]],
    sources: Mapping[str, VideoSource] | None,
    border: int,
) -> np.ndarray:
    """The comparison strip of a scored frame: blurry (where the input is known) | deblurred | sharp."""
    result_frames, gt_frames = pairs[frame.video]
    result = {path.stem: path for path in result_frames}[frame.frame]  # the match of scoring: by stem
    sharp = read_rgb(next(path for path in gt_frames if path.stem == frame.frame))
    scored = [("deblurred", read_rgb(result), frame.psnr)]
    if sources is not None:
        blurry = _input_frame(sources, result)
        if blurry.shape != sharp.shape:
            raise DataError(f"the input frame of {result} is {blurry.shape[1]}x{blurry.shape[0]}, not the GT's size")
        scored.insert(0, ("blurry", blurry, psnr_uint8(blurry, sharp, border)))
    return comparison_strip(scored, sharp)


def write_pictures(
    settings: EvalSettings,
    accumulator: MetricAccumulator,
    pairs: Mapping[str, tuple[Sequence[Path], Sequence[Path]]],
    border: int,
) -> dict[str, dict[str, Any]]:
    """Write the worst and best scored frame's (by PSNR) pictures to :meth:`EvalSettings.picture_paths`, atomically
    and marked (:func:`is_eval_picture`); returns ``{"worst": {"video", "frame", "psnr", "path"}, "best": ...}``."""
    extremes = accumulator.extremes()
    if extremes is None:  # nothing scored: refused before (check_something_scored)
        return {}
    sources = None
    if settings.input:  # the blurry frames, as the pipeline read them
        sources = {source.name: source for source in discover_sources(settings.input, settings.split)}
    paths = settings.picture_paths()
    written: dict[str, dict[str, Any]] = {}
    for which, frame in zip(("worst", "best"), extremes, strict=True):
        path = paths[which]
        data = encode_png(_picture(frame, pairs, sources, border), dict([REPORT_MARK]))
        try:
            with atomic_destination(path) as tmp:
                tmp.write_bytes(data)
        except OSError as err:
            raise DataError(f"cannot write {path}: {err.strerror or err}") from err
        psnr = frame.psnr if math.isfinite(frame.psnr) else str(frame.psnr)
        written[which] = {"video": frame.video, "frame": frame.frame, "psnr": psnr, "path": str(path.resolve())}
        logger.info("%s frame: %s/%s at %.2f dB, pictured in %s", which, frame.video, frame.frame, frame.psnr, path)
    return written


def _deblur_first(settings: EvalSettings, own_process: bool) -> tuple[Path, dict[str, list[Path]] | None, set[str]]:
    """With ``input=``: deblur it into ``results`` (default: ``results/`` beside the report); GT from a dataset."""
    input_path = check_input(settings)  # the pipeline's own check, before looking for ground truth beside it
    if not settings.checkpoint:
        raise ConfigError("input= needs a checkpoint to deblur with: pass checkpoint=PATH (or results=DIR)")
    gt_videos = None
    if settings.gt is None:
        if input_path.is_file() or has_frames(input_path):
            raise ConfigError(f"{input_path} holds no ground truth: pass gt=DIR")
        pairs = layout_videos(input_path, settings.split, require_gt=True)
        if not pairs:
            raise ConfigError(f"cannot find ground truth in {input_path}: pass gt=DIR")
        gt_videos = {pair.name: list(pair.gt) for pair in pairs}
        check_something_scored(gt_videos, settings.frames)  # before deblurring what would score nothing
    results = settings.results_path()
    assert results is not None  # input= is given: results= or results/ beside the report
    # the one deblurring pipeline (this shard's videos where num_shards > 1; score the union with results= gt=)
    done = deblur_with(settings, results, own_process=own_process)
    return results, gt_videos, {report.name for report in done.videos}


def evaluate(settings: EvalSettings, own_process: bool = False) -> dict[str, Any]:
    """Score ``settings.results`` against ``settings.gt``, deblurring ``settings.input`` with ``settings.checkpoint``
    first if given (:func:`cdvd.inference.pipeline.deblur_with`, this shard's videos only; ``own_process`` as there).

    Returns ``{"videos": {name: {"psnr", "ssim", "frames"}}, "total": {...}, "frames_set", "crop_border"}`` and the
    provenance; raises UserError for the user's mistakes, naming the key or file.
    """
    check_run_paths(settings)  # no output at, in or over an input; no FIFO or device to read
    check_report_destination(settings)
    gt_videos = None
    deblurred: set[str] | None = None
    if settings.input:
        results, gt_videos, deblurred = _deblur_first(settings, own_process)
    elif not settings.results:
        raise ConfigError("nothing to score: pass results=DIR gt=DIR, or input=DIR checkpoint=PATH")
    else:
        results = Path(settings.results)
    if not results.is_dir():
        raise ConfigError(f"results not found: {results} (pass results=DIR of deblurred frames)")
    if settings.gt is not None:
        if not Path(settings.gt).exists():
            raise ConfigError(f"gt not found: {settings.gt} (pass gt=DIR of sharp frames or a dataset root)")
        gt_videos = frame_folders(settings.gt, settings.split, gt=True)
    elif gt_videos is None:
        raise ConfigError("no ground truth given: pass gt=DIR (sharp frames or a dataset root)")

    if deblurred is not None and settings.num_shards > 1:  # this shard's videos only
        gt_videos = {name: frames for name, frames in gt_videos.items() if name in deblurred}
    pairs = pair_videos(frame_folders(results, settings.split), gt_videos)
    border = crop_border(settings.crop_border)
    accumulator = evaluate_pairs(pairs, frames=settings.frames, border=border, progress=settings.progress)
    report: dict[str, Any] = {**accumulator.as_dict(), "frames_set": settings.frames, "crop_border": border}
    report.update(provenance(settings, results))
    if settings.pictures:  # before the report, which names them
        report["pictures"] = write_pictures(settings, accumulator, pairs, border)
    json_path, csv_path = write_report(report, settings.report_path())
    logger.info("metrics written to %s and %s", json_path, csv_path)
    return report
