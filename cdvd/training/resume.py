"""Resuming a training run: where a resumed run writes, and the partial files a killed run leaves behind.

A run resumed with ``ckpt_path=<run>/checkpoints/last.ckpt`` continues in ``<run>`` (its TensorBoard folder, its
checkpoints, its ``train.log``) rather than in a new dated folder. The choice is made in the Hydra config, where the
run folder is chosen, by the resolvers here (``configs/hydra/train.yaml``; registered by
:func:`cdvd.training.tracking.register_resolvers`)::

    hydra.run.dir: ${cdvd_run_dir:${ckpt_path},outputs/${task_name}/runs/<date>_<time>}
    hydra.output_subdir: ${cdvd_config_subdir:${ckpt_path},.hydra,.hydra/resumed_<date>_<time>}

so Hydra itself creates no stray folder, and the resumed run's composed config is kept beside the original one
(``.hydra/resumed_<date>_<time>/``) instead of overwriting it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cdvd.atomic import remove_stale_temp_files

if TYPE_CHECKING:  # Lightning takes seconds to import: the resolvers here are read by every command line
    import pytorch_lightning as pl

CHECKPOINT_FOLDER = "checkpoints"


def run_folder_of_checkpoint(ckpt_path: str | os.PathLike | None) -> Path | None:
    """``<run>`` when ``ckpt_path`` is ``<run>/checkpoints/<file>``, else None (not a checkpoint of a run folder)."""
    path = Path(ckpt_path or "")
    return path.parent.parent if ckpt_path and path.parent.name == CHECKPOINT_FOLDER else None


def run_dir(ckpt_path: str | None, default: str) -> str:
    """The resolver ``cdvd_run_dir``: the run folder of ``ckpt_path`` (see above), else ``default``."""
    folder = run_folder_of_checkpoint(ckpt_path)
    return str(folder) if folder is not None else default


def config_subdir(ckpt_path: str | None, fresh: str, resumed: str) -> str:
    """The resolver ``cdvd_config_subdir``: Hydra's config folder, ``resumed`` when continuing a run folder."""
    return resumed if run_folder_of_checkpoint(ckpt_path) is not None else fresh


def clean_checkpoint_folder(trainer: pl.Trainer) -> None:
    """Remove the partial checkpoint files that killed runs left in the trainer's checkpoint folders.

    Only on the global rank zero; only the project's temporary files of processes that no longer run
    (:func:`cdvd.atomic.remove_stale_temp_files`).
    """
    from pytorch_lightning.callbacks import ModelCheckpoint

    if trainer.is_global_zero:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                remove_stale_temp_files(callback.dirpath)
