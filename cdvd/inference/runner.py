"""Whole runs: every video of an input deblurred into its sink, with a progress bar and a report per video."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdvd.atomic import probe_writable
from cdvd.data.sources import VideoSource, check_apart
from cdvd.errors import ConfigError, DataError
from cdvd.evaluation.metrics import to_uint8
from cdvd.inference.engine import VideoDeblurrer
from cdvd.inference.manifest import differences, source_fingerprint
from cdvd.inference.sinks import FrameFolderSink, FrameSink, VideoFileSink, VideoOutputOptions
from cdvd.video import OUTPUT_FORMATS, FrameTap, compare_path, is_video_path, writable_destination

logger = logging.getLogger(__name__)

#: ``on_frame(video, done, total)``: called after each frame written (``total``: the frames to compute, or None).
FrameCallback = Callable[[str, int, "int | None"], None]

#: Input frames the runner remembers while the engine works a few frames behind the reader (it needs 3).
TAP_FRAMES = 8


@dataclass
class VideoReport:
    """What happened to one video."""

    name: str
    output: str
    written: int = 0
    skipped: int = 0
    seconds: float = 0.0
    frame_seconds: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        per_frame = self.frame_seconds
        return {
            "name": self.name,
            "output": self.output,
            "written": self.written,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "seconds_per_frame": round(sum(per_frame) / len(per_frame), 4) if per_frame else None,
            "warnings": list(self.warnings),
        }


@dataclass
class VideoPlan:
    """One video of a run: where it comes from, where it goes, and what an earlier run already wrote."""

    source: VideoSource
    sink: FrameSink
    count: int | None
    done: set[int]
    complete: bool = False
    compare: bool = False

    @property
    def remaining(self) -> int | None:
        return None if self.count is None else self.count - len(self.done)


def is_video_output(output: str | os.PathLike) -> bool:
    """Whether ``output`` names a video file (by its suffix: a container, :data:`cdvd.video.OUTPUT_FORMATS` or any
    video suffix) rather than a folder of frames."""
    return Path(output).suffix.lower() in OUTPUT_FORMATS or is_video_path(output)


def check_writable(folder: Path) -> None:
    """Make ``folder`` (and its parents) and prove a file can be written there, before any frame is computed."""
    try:
        probe_writable(folder)
    except OSError as err:
        raise DataError(f"cannot write into {folder}: {err.strerror or err} (pass a writable output=)") from err


def check_video_sources(
    output: str | os.PathLike, sources: Sequence[VideoSource], input: str | os.PathLike | None = None
) -> None:
    """The rule of a video file output: it holds one video, so the input must hold exactly one.

    Raises:
        ConfigError: ``output`` names a video file and ``sources`` are not one video (naming ``output=`` and
            ``input``, else the videos).
    """
    if is_video_output(output) and len(sources) != 1:
        held = input if input is not None else "the input"
        raise ConfigError(
            f"output={output} is a video file but {held} holds {len(sources)} videos: "
            "pass output=DIR (a folder of PNG frames per video)"
        )


def _key(path: Path) -> Path:
    return Path(os.path.normcase(os.path.abspath(path)))


def check_distinct_outputs(sources: Sequence[VideoSource], sinks: Sequence[FrameSink]) -> None:
    """Refuse a plan in which two inputs map to one output file (input frames ``00003.jpg`` and ``00003.png``;
    a video ``clip_compare`` beside ``clip``'s ``compare=true`` frames), naming both: one of the two outputs would
    be lost while the run reported both written. An output that is an input file (``clip.mp4``'s compare video
    ``clip_compare.mp4`` when that is the input) is refused the same way.

    Raises:
        DataError: two planned outputs are one file, or an output is an input file.
    """
    inputs = {_key(p) for s in sources for p in (s.frame_files if s.frame_files is not None else [s.path])}
    planned: dict[Path, str] = {}
    for sink in sinks:
        for path, origin in sink.outputs():
            key = _key(path)
            if key in inputs:
                raise DataError(f"{origin} would be written over the input {path}: choose another output")
            if key in planned:
                raise DataError(
                    f"{planned[key]} and {origin} would both be written to {path}: rename one of them "
                    "(or deblur them into separate outputs)"
                )
            planned[key] = origin


def plan_videos(
    sources: Sequence[VideoSource],
    output: str | os.PathLike,
    fingerprint: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    video: VideoOutputOptions | None = None,
    compare: bool = False,
) -> list[VideoPlan]:
    """One :class:`VideoPlan` per source: a PNG folder ``output/<video>/`` each, or the one video file ``output``.

    Nothing is computed and nothing is written but the output folders (checked writable). Outputs that an earlier
    run left (PNG frames, a video file, or the segments of an interrupted video) are resumed when their record
    matches ``fingerprint`` plus the video's input (the content of its files) and, for a video file, the encoder
    settings; otherwise the run is refused, or with ``overwrite`` they are removed (every file the earlier run's
    record lists) and made again. Every video is checked before any output is removed. ``output`` is a folder, or a
    video file (by its suffix) for one video; ``fingerprint`` the engine's (:meth:`VideoDeblurrer.fingerprint`);
    ``compare`` adds side-by-side (blurry | deblurred) outputs beside each output.

    Raises:
        DataError: two inputs that map to one output file, an unwritable output, a record of the outputs that is
            not a file, or outputs made another way (without ``overwrite``).
        ConfigError: a video file output for several videos (:func:`check_video_sources`), an output at, in or
            over a video's input (:func:`cdvd.data.sources.check_apart`), a video output suffix or encoder setting
            that cannot be written (named).
    """
    output = Path(output)
    to_video = is_video_output(output)
    check_video_sources(output, sources)
    if to_video:  # its suffix and place, before any input is read (a ConfigError for a suffix it cannot write)
        writable_destination(output)
        if compare:
            writable_destination(compare_path(output))
    sinks: list[FrameSink] = []
    for source in sources:
        expected = {**(fingerprint or {}), "input": source_fingerprint(source)}
        if to_video:
            sinks.append(VideoFileSink(output, source, expected, video, compare=compare))
        else:
            sinks.append(FrameFolderSink(output / source.name, source, expected, compare=compare))
    check_distinct_outputs(sources, sinks)
    replace = []
    for source, sink in zip(sources, sinks, strict=True):
        check_apart({"output": sink.target}, {"input": source.path})  # the command lines check the whole input first
        if not to_video:
            for folder in sink.folders():  # type: ignore[attr-defined]
                check_writable(folder)
        recorded = sink.recorded()
        replace.append(recorded is not None and recorded != sink.fingerprint)
        if replace[-1] and not overwrite:
            sink.abort()  # gives back what it took (a video output's lock): a retry in this process may proceed
            changed = "; ".join(differences(recorded, sink.fingerprint)) if recorded else "no record of what made them"
            raise DataError(
                f"{sink.target} holds outputs made with other weights, input or settings ({changed}): "
                "pass overwrite=true to replace them, or choose another output"
            )
    plans = []  # every video checked: only now is anything removed
    for source, sink, replaced in zip(sources, sinks, replace, strict=True):
        if replaced:
            logger.info("%s: overwrite=true, replacing the outputs of an earlier run", sink.target)
            sink.clear()
        complete = sink.complete()
        done = set() if complete else sink.done()
        plans.append(VideoPlan(source, sink, source.frame_count(), done, complete, compare))
    return plans


def _progress(enabled: bool) -> Any:
    """A rich progress bar with frames/s (or s/frame) and ETA, or ``None``."""
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """frames/s, or s/frame below one frame a second."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            if not speed and task.completed and task.elapsed:
                speed = task.completed / task.elapsed
            if not speed:
                return Text("-- frames/s")
            return Text(f"{speed:.2f} frames/s" if speed >= 1 else f"{1 / speed:.1f} s/frame")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        # seconds-long frames on a CPU: average over minutes, not rich's default 30 s
        speed_estimate_period=600.0,
    )


def _deblur_one(
    deblurrer: VideoDeblurrer, plan: VideoPlan, report: VideoReport, bar: Any, on_frame: FrameCallback | None
) -> None:
    """One video into its sink; each written frame moves ``bar`` and calls ``on_frame``."""
    source, sink = plan.source, plan.sink
    task = bar.add_task(source.name, total=plan.remaining) if bar is not None else None
    start = last = time.perf_counter()
    tap = FrameTap(source.frames(), keep=TAP_FRAMES, images=plan.compare)
    try:
        sink.start()
        for index, frame in deblurrer.run(tap, skip=plan.done.__contains__):
            sink.write(index, to_uint8(frame), tap.frame(index))
            now = time.perf_counter()
            report.frame_seconds.append(now - last)
            logger.debug("%s/%s: %.3f s", source.name, source.output_name(index), now - last)
            last = now
            report.written += 1
            if bar is not None:
                bar.advance(task)
            if on_frame is not None:
                on_frame(source.name, report.written, plan.remaining)
        sink.close()
    except DataError as err:
        sink.abort()
        raise DataError(f"{source.name}: {err}") from err
    except BaseException:
        sink.abort()
        raise
    report.warnings = list(source.problems)
    report.seconds = time.perf_counter() - start
    if bar is not None:  # a damaged input ends early: the bar ends whole
        bar.update(task, total=report.written, completed=report.written)


def _summary(report: VideoReport) -> None:
    """The one line of a finished video, a warning naming the input's problems when it had any."""
    per_frame = report.seconds / report.written if report.written else 0.0
    line = f"{report.name}: {report.written} frames written to {report.output} in {report.seconds:.1f} s"
    line += f" ({per_frame:.3f} s/frame)"
    if report.warnings:
        logger.warning("%s; damaged input: %s", line, "; ".join(report.warnings))
    else:
        logger.info("%s", line)


def run_plans(
    deblurrer: VideoDeblurrer,
    plans: Sequence[VideoPlan],
    *,
    progress: bool = True,
    on_frame: FrameCallback | None = None,
) -> list[VideoReport]:
    """Deblur every planned video into its sink; one :class:`VideoReport` per video.

    The progress bar has one line per video (frames to compute, rate, ETA); each video ends with one summary line.
    ``on_frame(video, done, total)`` is called after each frame written (frames to compute this run).
    """
    bar = _progress(progress)
    reports: list[VideoReport] = []
    with bar if bar is not None else contextlib.nullcontext():
        for plan in plans:
            name, target = plan.source.name, str(plan.sink.target)
            report = VideoReport(name, target, skipped=len(plan.done))
            reports.append(report)
            if plan.complete:
                report.skipped = plan.count or 0
                logger.info("%s: all outputs exist in %s, skipped", name, target)
                continue
            if plan.done:
                logger.info("%s: %d of %s frames already written, resuming", name, len(plan.done), plan.count or "?")
            _deblur_one(deblurrer, plan, report, bar, on_frame)
            _summary(report)
    return reports


def deblur_videos(
    deblurrer: VideoDeblurrer,
    sources: Sequence[VideoSource],
    output: str | os.PathLike,
    *,
    progress: bool = True,
    fps: float | None = None,
    overwrite: bool = False,
    video: VideoOutputOptions | None = None,
    compare: bool = False,
) -> list[VideoReport]:
    """Deblur every video of ``sources`` into ``output``.

    ``output`` is a folder that gets one subfolder of PNG frames per video (named like the inputs;
    ``00000.png`` ... for video files), or, when it ends in a video suffix (``.mp4``, ``.mkv``, ``.mov``,
    ``.webm``) and there is one video, a video file (:class:`cdvd.inference.sinks.VideoFileSink`).
    Rerunning resumes: a video whose outputs all exist is not read, one with some outputs is resumed (existing
    files are never rewritten), but only when they were made with the same weights, input and settings
    (:mod:`cdvd.inference.manifest`); otherwise the run is refused unless ``overwrite``.

    ``sources`` come from :func:`cdvd.data.sources.discover_sources`; ``progress`` shows a rich progress bar (frames/s
    and ETA); ``fps`` is the frame rate of a video output (default: the input video's timestamps, or 25) and overrides
    ``video.fps`` (the encoder settings); ``compare`` also writes side-by-side (blurry | deblurred) outputs. Returns
    one :class:`VideoReport` per video.
    """
    video = video or VideoOutputOptions()
    if fps is not None:
        video = dataclasses.replace(video, fps=fps)
    plans = plan_videos(sources, output, deblurrer.fingerprint(), overwrite=overwrite, video=video, compare=compare)
    return run_plans(deblurrer, plans, progress=progress)
