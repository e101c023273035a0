"""``cdvd-pack``: pack a dataset's frames into one LMDB frame store (:mod:`cdvd.data.packing`).

cdvd-pack root=/data/DVD                       # writes /data/DVD.lmdb, every split found
cdvd-pack root=/data/GOPRO_Large output=/fast/gopro.lmdb splits=[train,test] layout=gopro
cdvd-train data.frame_store=/data/DVD.lmdb     # then train from the store
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from cdvd.cli.common import CONFIG_PATH, run_cli, run_hydra
from cdvd.data.packing import PackReport, pack_dataset
from cdvd.errors import ConfigError


def run_pack(cfg: DictConfig) -> PackReport:
    if OmegaConf.is_missing(cfg, "root"):
        raise ConfigError("root=DIR is required (the dataset root to pack)")
    splits = cfg.splits
    if splits is not None:  # splits=train or splits=[train,test]
        splits = [None if s is None else str(s) for s in (splits if OmegaConf.is_list(splits) else [splits])]
    return pack_dataset(
        cfg.root,
        cfg.output,
        layout=cfg.layout,
        splits=splits,
        blur_gamma=cfg.blur_gamma,
        map_size=cfg.map_size,
        overwrite=cfg.overwrite,
        encoding=cfg.encoding,
    )


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="pack")
def _main(cfg: DictConfig) -> None:
    run_cli(run_pack, cfg, "cdvd-pack")  # the library logs what it packed


def main() -> None:
    run_hydra(_main, "cdvd-pack")


if __name__ == "__main__":
    main()
