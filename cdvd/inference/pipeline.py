"""Deblurring as one library call: settings -> sources -> shard -> plan -> run -> report.

``cdvd-deblur``, ``cdvd-eval`` (with ``input=``), ``cdvd-demo`` and ``cdvd-app`` all deblur through
:func:`deblur_with`, so they read the same frames, write the same outputs and manifests, and refuse the same
mistakes with the same one-line errors. From Python, :func:`deblur` (also ``cdvd.deblur``) takes the settings of
``cdvd-deblur`` as keyword arguments, with the defaults of its YAML file (``configs/deblur.yaml``)::

    import cdvd

    result = cdvd.deblur("clip.mp4", "clip_sharp.mp4", checkpoint="CDVD_TSP_DVD_Convergent.pt", device="cpu")
    print(result.written, result.output)

The outputs are those of ``cdvd-deblur input=clip.mp4 output=clip_sharp.mp4 checkpoint=...`` to the byte: a rerun
resumes or skips, other weights or settings are refused unless ``overwrite=True``.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cdvd.data.sources import VideoSource, discover_sources, shard_sources
from cdvd.errors import ConfigError
from cdvd.inference.runner import FrameCallback, VideoReport, check_video_sources, plan_videos, run_plans
from cdvd.inference.settings import DeblurSettings, build_deblurrer, check_run_paths, deblur_settings
from cdvd.runtime import reuse_freed_memory

logger = logging.getLogger(__name__)


@dataclass
class DeblurResult:
    """What a run did: where its outputs are, and one report per video."""

    output: Path
    videos: list[VideoReport] = field(default_factory=list)
    engine: dict[str, Any] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return sum(report.written for report in self.videos)

    @property
    def skipped(self) -> int:
        return sum(report.skipped for report in self.videos)

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "videos": [report.as_dict() for report in self.videos],
            "written": self.written,
            "skipped": self.skipped,
            "engine": dict(self.engine),
        }


def select_sources(settings: DeblurSettings, input_path: Path) -> list[VideoSource]:
    """The videos of ``input_path`` this run deblurs: all of them, or this shard's (``num_shards``/``shard``, whose
    range :func:`cdvd.data.sources.shard_sources` checks)."""
    sources = discover_sources(input_path, split=settings.split)
    if settings.num_shards == 1 and settings.shard == 0:
        return sources
    try:
        chosen = shard_sources(sources, settings.num_shards, settings.shard)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    logger.info("shard %d of %d: %d video(s)", settings.shard, settings.num_shards, len(chosen))
    return chosen


def check_input(settings: DeblurSettings) -> Path:
    """The input, given and present (a file or folder; what else it is, :func:`check_run_paths` checks)."""
    if not settings.input:
        raise ConfigError(
            "no input given: pass input=PATH (a video file, a folder of frames, a folder of videos or a dataset root)"
        )
    input_path = Path(settings.input)
    if not input_path.exists():
        raise ConfigError(f"input not found: {input_path} (pass input=PATH of a video, frames or a dataset)")
    return input_path


def deblur_with(
    settings: DeblurSettings,
    output: str | os.PathLike | None = None,
    *,
    on_frame: FrameCallback | None = None,
    own_process: bool = False,
) -> DeblurResult:
    """Deblur ``settings.input`` into ``output`` (default ``settings.output``) with ``settings.checkpoint``.

    Everything a user can get wrong is checked before the first frame is computed: the paths (the output apart
    from every input), the shard, a video output having one source, the checkpoint, the engine's settings, and
    every output's writability and provenance (:func:`cdvd.inference.runner.plan_videos`).

    Args:
        settings: checked settings (:func:`cdvd.inference.settings.deblur_settings`).
        output: where to write, when not ``settings.output`` (``cdvd-eval`` deblurs into its ``results``).
        on_frame: called after each written frame, for progress shown elsewhere than the terminal.
        own_process: the caller owns this process and it ends after the run (a console script): only then does
            ``settings.reuse_memory`` change the process's allocator (:func:`cdvd.runtime.reuse_freed_memory`, which
            holds the peak memory until the process exits), never under a page's server, a notebook or a test runner.

    Raises:
        UserError: the user's mistakes, each naming the setting or file.
    """
    input_path = check_input(settings)
    target = output if output is not None else settings.output
    if not target:
        raise ConfigError(
            "no output given: pass output=DIR (one folder of PNG frames per video) "
            "or output=FILE.mp4 (.mkv, .mov, .webm)"
        )
    target = Path(target)
    check_run_paths(settings)
    sources = select_sources(settings, input_path)
    check_video_sources(target, sources, input_path)  # before the model loads (plan_videos asks again)
    deblurrer = build_deblurrer(settings)
    plans = plan_videos(
        sources,
        target,
        deblurrer.fingerprint(),
        overwrite=settings.overwrite,
        video=settings.video_options(),
        compare=settings.compare,
    )  # checks the outputs (writable, not made another way) before any frame is computed
    if settings.reuse_memory and own_process:
        reuse_freed_memory()
    logger.info(
        "deblurring %d video(s) from %s into %s on %s (%s, %s)",
        len(sources),
        input_path,
        target,
        deblurrer.device,
        deblurrer.precision,
        "streaming" if deblurrer.streaming else "per window",
    )
    reports = run_plans(deblurrer, plans, progress=settings.progress, on_frame=on_frame)
    engine = {"device": str(deblurrer.device), "precision": deblurrer.precision, "backend": deblurrer.backend}
    return DeblurResult(target, reports, engine)


def default_settings() -> dict[str, Any]:
    """The settings of ``cdvd-deblur`` as its packaged YAML file gives them (the one home of their defaults)."""
    text = importlib.resources.files("cdvd.configs").joinpath("deblur.yaml").read_text("utf-8")
    values = OmegaConf.to_container(OmegaConf.create(text))
    assert isinstance(values, dict)
    return {key: value for key, value in values.items() if key not in ("defaults", "hydra")}


def settings_from(**values: Any) -> DeblurSettings:
    """Checked :class:`DeblurSettings` from keyword arguments (paths may be ``os.PathLike``) over the YAML
    defaults; an unknown name is refused."""
    defaults = default_settings()
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; the settings are {', '.join(sorted(defaults))}")
    values = {key: os.fspath(v) if isinstance(v, os.PathLike) else v for key, v in values.items()}
    return deblur_settings(OmegaConf.create({**defaults, **values}))


def deblur(
    input: str | os.PathLike,
    output: str | os.PathLike,
    checkpoint: str | os.PathLike,
    *,
    on_frame: FrameCallback | None = None,
    **settings: Any,
) -> DeblurResult:
    """Deblur a video file, a folder of frames, a folder of videos or a dataset root, as ``cdvd-deblur`` does.

    Args:
        input: what to deblur.
        output: a folder (one folder of PNG frames per video) or a video file (``.mp4``, ``.mkv``, ``.mov``,
            ``.webm``) for one video.
        checkpoint: the weights: an original ``.pt`` or a cdvd ``.ckpt``.
        on_frame: ``on_frame(video, done, total)`` after each frame written.
        **settings: any other setting of ``cdvd-deblur`` (``device="cpu"``, ``precision="bf16"``,
            ``tile={"size": 512, "overlap": 64}``, ``compare=True``, ``overwrite=True``, ``progress=False``...).
            ``reuse_memory`` is off here unless passed: it changes this whole process's allocator (pass
            ``reuse_memory=True`` in a process that only deblurs and ends, as ``cdvd-deblur``'s is).

    Returns:
        A :class:`DeblurResult` (``.output``, ``.videos``, ``.written``, ``.skipped``).

    Raises:
        UserError: a missing file or a setting that cannot work, with one message naming it.
    """
    checked = settings_from(input=input, output=output, checkpoint=checkpoint, **settings)
    own_process = bool(settings.get("reuse_memory", False))  # asked for by the caller, not the YAML's default
    return deblur_with(checked, on_frame=on_frame, own_process=own_process)
