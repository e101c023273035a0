"""Lightning plugins and callbacks of our own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytorch_lightning.plugins.io import TorchCheckpointIO

from cdvd.checkpoints import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves checkpoints to a temporary file beside the target, then renames it into place."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, instead got {storage_options!r}")
        atomic_torch_save(checkpoint, Path(path))
