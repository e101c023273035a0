"""``cdvd-eval``: PSNR and SSIM of deblurred videos with the published protocol.

    cdvd-eval results=deblurred/ gt=/data/DVD [output=metrics.json] [frames=paper|all]
    cdvd-eval input=/data/DVD checkpoint=CDVD_TSP_DVD_Convergent.pt      # deblur, then score

``frames=paper`` (default) leaves out the first and last 2 frames of each video, as the published tables did;
``frames=all`` scores every frame. The scores go to the terminal (a table), to ``output`` (JSON) and a CSV beside it.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra
from cdvd.evaluation.report import evaluate, results_table
from cdvd.inference.settings import eval_settings


def run_eval(cfg: DictConfig, own_process: bool = False) -> dict[str, Any]:
    """Score as ``cfg`` says; the report (``videos``, ``total``, provenance) as written to ``output``."""
    return evaluate(eval_settings(cfg), own_process=own_process)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def _main(cfg: DictConfig) -> float:
    report = run_cli(lambda c: run_eval(c, own_process=True), cfg, "cdvd-eval")
    from rich.console import Console

    Console().print(results_table(report, title=f"{report['results']} vs GT (frames={report['frames_set']})"))
    return float(report["total"]["psnr"])


def main() -> None:
    run_hydra(_main, "cdvd-eval")


if __name__ == "__main__":
    main()
