"""``cdvd-app``: a page in the browser to deblur one's own clip and compare before and after (pip install 'cdvd[app]').

cdvd-app checkpoint=CDVD_TSP_DVD_Convergent.pt
cdvd-app checkpoint=model.ckpt device=cuda port=8080 workdir=app_runs/
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cdvd.app.jobs import app_settings, check_engine, make_workdir
from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra


def run_app(cfg: DictConfig) -> None:
    """Check the settings, Gradio and the checkpoint (one line each, before serving), then serve until Ctrl-C."""
    from cdvd.app.page import import_gradio, serve

    settings = app_settings(cfg)
    gradio = import_gradio(settings)
    check_engine(settings)  # a broken checkpoint or a device the machine lacks: one line now, not at the first run
    make_workdir(settings)
    serve(settings, gradio)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="app")
def _main(cfg: DictConfig) -> None:
    run_cli(run_app, cfg, "cdvd-app")


def main() -> None:
    run_hydra(_main, "cdvd-app")


if __name__ == "__main__":
    main()
