"""``cdvd-deblur``: deblur videos with a trained CDVD-TSP checkpoint.

cdvd-deblur input=blurry/ output=deblurred/ checkpoint=CDVD_TSP_DVD_Convergent.pt
cdvd-deblur input=clip.mp4 output=clip_sharp.mp4 checkpoint=model.ckpt device=cuda precision=bf16
cdvd-deblur input=clip.mov output=clip_sharp.mkv checkpoint=model.pt crf=20 compare=true
cdvd-deblur input=/data/DVD output=results/ checkpoint=model.pt tile.size=512 tile.overlap=64
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig

from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra
from cdvd.inference.pipeline import deblur_with
from cdvd.inference.settings import deblur_settings

logger = logging.getLogger(__name__)


def run_deblur(cfg: DictConfig, own_process: bool = False) -> dict[str, Any]:
    """Deblur as ``cfg`` says; ``{"output", "videos", "written", "skipped", "engine"}``. ``own_process``: the console
    script's own process, whose allocator ``reuse_memory`` may change."""
    return deblur_with(deblur_settings(cfg), own_process=own_process).as_dict()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="deblur")
def _main(cfg: DictConfig) -> None:
    summary = run_cli(lambda c: run_deblur(c, own_process=True), cfg, "cdvd-deblur")
    logger.info("%d frames written, %d skipped: %s", summary["written"], summary["skipped"], summary["output"])


def main() -> None:
    run_hydra(_main, "cdvd-deblur")


if __name__ == "__main__":
    main()
