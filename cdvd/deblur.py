"""``cdvd-deblur``: deblur videos with a trained CDVD-TSP checkpoint.

    cdvd-deblur input=blurry/ output=deblurred/ checkpoint=CDVD_TSP_DVD_Convergent.pt
    cdvd-deblur input=clip.mp4 output=clip_sharp.mp4 checkpoint=model.ckpt device=cuda precision=bf16
    cdvd-deblur input=/data/DVD output=results/ checkpoint=model.pt tile.size=512 tile.overlap=64

``input`` is a video file, a folder of frames, a folder of videos or a dataset root (its ``split``, blurry
frames only). Paths are taken relative to the directory the command runs in. Rerunning skips frames already
written. See :mod:`cdvd.inference` for the engine.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cdvd.checkpoints import CheckpointError, load_model
from cdvd.data.io import DataError
from cdvd.inference import PRECISIONS, TileSpec, VideoDeblurrer, deblur_videos, discover_sources
from cdvd.runtime import reuse_freed_memory

logger = logging.getLogger(__name__)

CONFIG_PATH = "pkg://cdvd.configs"
EXIT_USAGE = 2


class UsageError(ValueError):
    """A missing or impossible setting; the message names the key to pass."""


def tile_from_config(tile: Any) -> TileSpec | None:
    """``null`` or ``{size: null}``: no tiling; an int: that size, default overlap; ``{size, overlap}``."""
    if tile is None or (isinstance(tile, DictConfig | dict) and tile.get("size") is None):
        return None
    try:
        if isinstance(tile, int):
            # a quarter of the tile, at most the default overlap
            return TileSpec(size=tile, overlap=min(TileSpec.overlap, tile // 16 * 4))
        if isinstance(tile, DictConfig | dict):
            tile = OmegaConf.to_container(tile) if isinstance(tile, DictConfig) else tile
            return TileSpec(**{k: int(v) for k, v in tile.items()})
    except (TypeError, ValueError) as err:
        raise UsageError(f"tile={tile}: {err}") from err
    raise UsageError(f"tile={tile}: expected null, a size or {{size: 512, overlap: 64}}")


def build_deblurrer(cfg: DictConfig) -> VideoDeblurrer:
    """Load ``cfg.checkpoint`` and wrap it in the engine with the config's device, precision, streaming,
    tiling.

    Raises:
        UsageError: no checkpoint given, or a bad device/precision/tile setting.
        CheckpointError: the checkpoint is missing or does not load.
    """
    checkpoint = cfg.get("checkpoint")
    if not checkpoint:
        raise UsageError("no checkpoint given: pass checkpoint=PATH (an original .pt or a cdvd .ckpt)")
    if not Path(checkpoint).is_file():
        raise UsageError(f"checkpoint not found: {checkpoint} (pass checkpoint=PATH of an existing file)")
    precision = str(cfg.get("precision", "fp32"))
    if precision not in PRECISIONS:
        raise UsageError(f"precision={precision}: expected one of {', '.join(PRECISIONS)}")
    tile = tile_from_config(cfg.get("tile"))
    model = load_model(checkpoint, "cpu", corr_backend=str(cfg.get("corr_backend", "auto")))
    try:
        return VideoDeblurrer(
            model,
            device=str(cfg.get("device", "auto")),
            precision=precision,
            streaming=bool(cfg.get("streaming", True)),
            tile=tile,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def run_deblur(cfg: DictConfig) -> dict[str, Any]:
    """Deblur ``cfg.input`` into ``cfg.output`` with ``cfg.checkpoint``.

    Everything is checked (input found, checkpoint loaded, settings valid) before anything is written.

    Returns:
        ``{"output", "videos": [per-video report], "written", "skipped"}``.

    Raises:
        UsageError, DataError, CheckpointError: the user's mistakes, with the key or file named.
    """
    if not cfg.get("input"):
        raise UsageError(
            "no input given: pass input=PATH (a video file, a folder of frames, a folder of videos or a dataset root)"
        )
    if not cfg.get("output"):
        raise UsageError("no output given: pass output=DIR (one folder of PNG frames per video) or output=FILE.mp4")
    input_path, output = Path(cfg.input), Path(cfg.output)
    if not input_path.exists():
        raise UsageError(f"input not found: {input_path} (pass input=PATH of a video, frames or a dataset)")
    sources = discover_sources(input_path, split=str(cfg.get("split", "test")))
    if output.suffix.lower() == ".mp4" and len(sources) != 1:
        raise UsageError(f"output={output} is a video file but {input_path} holds {len(sources)} videos")
    deblurrer = build_deblurrer(cfg)
    logger.info(
        "deblurring %d video(s) from %s into %s on %s (%s, %s)",
        len(sources),
        input_path,
        output,
        deblurrer.device,
        deblurrer.precision,
        "streaming" if deblurrer.streaming else "per window",
    )
    fps = cfg.get("fps")
    reports = deblur_videos(
        deblurrer, sources, output, progress=bool(cfg.get("progress", True)), fps=float(fps) if fps else None
    )
    return {
        "output": str(output),
        "videos": [r.as_dict() for r in reports],
        "written": sum(r.written for r in reports),
        "skipped": sum(r.skipped for r in reports),
    }


def run_cli(task: Any, cfg: DictConfig, prog: str) -> Any:
    """Run ``task(cfg)``; a user's mistake is one line on stderr and exit code 2, no traceback."""
    if cfg.get("reuse_memory", True):
        reuse_freed_memory()
    try:
        return task(cfg)
    except (UsageError, DataError, CheckpointError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)  # noqa: T201 - the CLI's one line
        sys.exit(EXIT_USAGE)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="deblur")
def main(cfg: DictConfig) -> None:
    summary = run_cli(run_deblur, cfg, "cdvd-deblur")
    logger.info("%d frames written, %d skipped: %s", summary["written"], summary["skipped"], summary["output"])


if __name__ == "__main__":
    main()
