"""``cdvd-train``: train CDVD-TSP from one composed Hydra config (:mod:`cdvd.training.run`).

cdvd-train experiment=smoke
cdvd-train experiment=paper_gopro data.root=/data/GOPRO_Large model.flow_pretrained=network-default.pytorch
cdvd-train -m experiment=smoke optimizer.lr=1e-4,3e-4
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra
from cdvd.training.run import train
from cdvd.training.tracking import metric_value


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    metrics, _ = run_cli(train, cfg, "cdvd-train")
    # the value a sweeper optimises (configs/train.yaml: optimized_metric)
    return run_cli(lambda c: metric_value(metrics, c.get("optimized_metric")), cfg, "cdvd-train")


def main() -> None:
    run_hydra(_main, "cdvd-train")


if __name__ == "__main__":
    main()
