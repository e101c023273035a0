"""``cdvd-export``: the network to ONNX and OpenVINO IR for deployment, each file checked against torch
(:func:`cdvd.export.run_export`).

    cdvd-export checkpoint=pretrained/CDVD_TSP_GOPRO.pt output=exported/
    cdvd-export checkpoint=model.ckpt formats=[onnx] parts=[full]
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra
from cdvd.export import run_export


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def _main(cfg: DictConfig) -> None:
    run_cli(run_export, cfg, "cdvd-export")


def main() -> None:
    run_hydra(_main, "cdvd-export")


if __name__ == "__main__":
    main()
