"""Ways to run one cascade stage fast on the hardware at hand, each a callable with the contract of
:meth:`cdvd.models.CDVDTSP.restore_centres`, (T, B, 3, H, W) -> (T - 2, B, 3, H, W):

* :mod:`cdvd.backends.torch`: the torch model with channels-last memory and/or ``torch.compile``.
* :mod:`cdvd.backends.openvino`: the stage converted to OpenVINO (optional extra ``cdvd[openvino]``).
* :mod:`cdvd.backends.graphs`: the network's parts as traceable graphs and their OpenVINO conversion (also what
  :mod:`cdvd.export` writes).

The backend list and its check live here (:data:`BACKENDS`, :func:`check_backend`); nothing here imports torch.
"""

from __future__ import annotations

BACKENDS: tuple[str, ...] = ("torch", "openvino")


def check_backend(backend: str, *, channels_last: bool, compile: bool) -> None:
    """A ValueError naming the setting when ``backend`` is unknown or given options only the torch backend has."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend}: expected one of {', '.join(BACKENDS)}")
    if backend == "openvino" and (channels_last or compile):
        raise ValueError("channels_last and compile are torch backend settings: unset them with backend=openvino")
