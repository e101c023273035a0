"""``cdvd-synth``: make a paired blurry/sharp video dataset from sharp material (:mod:`cdvd.data.synthetic`).

cdvd-synth output=data/synthetic/train
cdvd-synth output=data/mine source=folder source_path=photos/ n_videos=20 size=256 seed=1
cdvd-synth output=data/hfr source=video source_path=clip_240fps.mp4 sub_frames=7 noise_std=0.01
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra
from cdvd.data.synthetic import synthesize
from cdvd.errors import ConfigError


def run_synth(cfg: DictConfig) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "output"):
        raise ConfigError("output=DIR is required (the dataset folder to create)")
    return synthesize(**OmegaConf.to_container(cfg, resolve=True))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="synth")
def _main(cfg: DictConfig) -> None:
    run_cli(run_synth, cfg, "cdvd-synth")


def main() -> None:
    run_hydra(_main, "cdvd-synth")


if __name__ == "__main__":
    main()
