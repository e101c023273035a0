"""``cdvd-deblur``: deblur videos with a trained CDVD-TSP checkpoint.

    cdvd-deblur input=blurry/ output=deblurred/ checkpoint=CDVD_TSP_DVD_Convergent.pt
    cdvd-deblur input=clip.mp4 output=clip_sharp.mp4 checkpoint=model.ckpt device=cuda precision=bf16
    cdvd-deblur input=clip.mov output=clip_sharp.mkv checkpoint=model.pt crf=20 compare=true
    cdvd-deblur input=/data/DVD output=results/ checkpoint=model.pt tile.size=512 tile.overlap=64

``input`` is a video file, a folder of frames, a folder of videos or a dataset root (its ``split``, blurry
frames only). Paths are taken relative to the directory the command runs in. Rerunning skips frames already
written (a video file output resumes after its last finished segment). See :mod:`cdvd.inference` for the engine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra
from cdvd.data.sources import discover_sources, shard_sources
from cdvd.errors import ConfigError
from cdvd.inference.runner import is_video_output, plan_videos, run_plans
from cdvd.inference.settings import DeblurSettings, build_deblurrer, check_run_paths, deblur_settings
from cdvd.runtime import reuse_freed_memory

logger = logging.getLogger(__name__)


def check_paths(settings: DeblurSettings) -> tuple[Path, Path]:
    """``(input, output)``: both given, the input present and a file or folder, the output apart from it (not at,
    in or over it: :func:`cdvd.inference.settings.check_run_paths`)."""
    if not settings.input:
        raise ConfigError(
            "no input given: pass input=PATH (a video file, a folder of frames, a folder of videos or a dataset root)"
        )
    if not settings.output:
        raise ConfigError(
            "no output given: pass output=DIR (one folder of PNG frames per video) "
            "or output=FILE.mp4 (.mkv, .mov, .webm)"
        )
    input_path = Path(settings.input)
    if not input_path.exists():
        raise ConfigError(f"input not found: {input_path} (pass input=PATH of a video, frames or a dataset)")
    check_run_paths(settings)
    return input_path, Path(settings.output)


def run_deblur(cfg: DictConfig) -> dict[str, Any]:
    """Deblur ``cfg.input`` into ``cfg.output`` with ``cfg.checkpoint``.

    Everything is checked (input found, checkpoint loaded, settings valid) before anything is written.

    Returns:
        ``{"output", "videos": [per-video report], "written", "skipped"}``.

    Raises:
        UserError: the user's mistakes, with the key or file named.
    """
    settings = deblur_settings(cfg)
    input_path, output = check_paths(settings)
    sources = discover_sources(input_path, split=settings.split)
    if settings.num_shards > 1:
        sources = shard_sources(sources, settings.num_shards, settings.shard)
        logger.info("shard %d of %d: %d video(s)", settings.shard, settings.num_shards, len(sources))
    if is_video_output(output) and len(sources) != 1:
        raise ConfigError(f"output={output} is a video file but {input_path} holds {len(sources)} videos")
    deblurrer = build_deblurrer(settings)
    plans = plan_videos(
        sources,
        output,
        deblurrer.fingerprint(),
        overwrite=settings.overwrite,
        video=settings.video_options(),
        compare=settings.compare,
    )  # checks the outputs (writable, not made another way) before any frame is computed
    if settings.reuse_memory:
        reuse_freed_memory()
    logger.info(
        "deblurring %d video(s) from %s into %s on %s (%s, %s)",
        len(sources),
        input_path,
        output,
        deblurrer.device,
        deblurrer.precision,
        "streaming" if deblurrer.streaming else "per window",
    )
    reports = run_plans(deblurrer, plans, progress=settings.progress)
    return {
        "output": str(output),
        "videos": [r.as_dict() for r in reports],
        "written": sum(r.written for r in reports),
        "skipped": sum(r.skipped for r in reports),
    }


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="deblur")
def _main(cfg: DictConfig) -> None:
    summary = run_cli(run_deblur, cfg, "cdvd-deblur")
    logger.info("%d frames written, %d skipped: %s", summary["written"], summary["skipped"], summary["output"])


def main() -> None:
    """The console script: Hydra's command line (non-ASCII values quoted, its errors as one line: run_hydra)."""
    run_hydra(_main, "cdvd-deblur")


if __name__ == "__main__":
    main()
