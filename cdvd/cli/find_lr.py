"""``cdvd-find-lr``: the learning-rate range test on the composed training config (:mod:`cdvd.training.lr_finder`).

    cdvd-find-lr experiment=fork2021_dvd data.root=/data/DVD lr_finder.num_iter=200

Writes ``lr_finder.png`` (loss against lr), ``lr_overrides.yaml`` (``optimizer.lr`` and
``scheduler.scheduler.max_lr`` for OneCycle) into the run folder and logs the suggested values.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra
from cdvd.training.lr_finder import find_lr


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="find_lr")
def _main(cfg: DictConfig) -> None:
    run_cli(find_lr, cfg, "cdvd-find-lr")


def main() -> None:
    run_hydra(_main, "cdvd-find-lr")


if __name__ == "__main__":
    main()
