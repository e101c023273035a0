"""``cdvd-demo``: the whole job on built-in data, no download.

Synthesizes a small paired dataset from scikit-image's photos, trains the ``demo`` experiment (a small network
with a residual output) for a fixed number of steps, deblurs a held-out synthetic clip and prints a table of blurry
input vs deblurred output (PSNR, SSIM), with the paths of the frames, the checkpoint and the TensorBoard logs, and
writes ``comparison.png`` (the clip's middle frame: blurry | deblurred | sharp, each labelled with its PSNR).

    cdvd-demo                         # 3 to 7 minutes on 2 CPU cores (README); a GPU is used when present
    cdvd-demo steps=80                # shorter (a smaller gain)
    cdvd-demo precision=32-true       # fp32 training everywhere (auto: bf16-mixed on CPUs with native bf16)
    cdvd-demo 'train_overrides=["model.net.n_feat=16"]'
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra
from cdvd.training.demo import run_demo, summary_view


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="demo")
def _main(cfg: DictConfig) -> float:
    summary = run_cli(run_demo, cfg, "cdvd-demo")
    from rich.console import Console

    Console().print(summary_view(summary))
    return float(summary["gain_db"])


def main() -> None:
    run_hydra(_main, "cdvd-demo")


if __name__ == "__main__":
    main()
