"""cdvd: CDVD-TSP video deblurring with PyTorch Lightning and Hydra.

The names below load on first use: ``import cdvd.errors`` (or ``python -m cdvd``) costs no torch import, while
``cdvd.load_model(path)`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# the module that defines each public name
_EXPORTS = {
    "cdvd.checkpoints": ("CheckpointError", "load_flow_weights", "load_model", "load_weights", "save_original"),
    "cdvd.inference.pipeline": ("DeblurResult", "deblur"),
    "cdvd.models": ("CDVDTSP", "CascadeOutput"),
}

__all__ = [
    "CDVDTSP",
    "CascadeOutput",
    "CheckpointError",
    "DeblurResult",
    "deblur",
    "load_flow_weights",
    "load_model",
    "load_weights",
    "save_original",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from cdvd.checkpoints import CheckpointError, load_flow_weights, load_model, load_weights, save_original
    from cdvd.inference.pipeline import DeblurResult, deblur
    from cdvd.models import CDVDTSP, CascadeOutput


def __getattr__(name: str) -> Any:
    module = next((module for module, names in _EXPORTS.items() if name in names), None)
    if module is None:
        raise AttributeError(f"module 'cdvd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
