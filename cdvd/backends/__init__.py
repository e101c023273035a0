"""Ways to run one cascade stage (:meth:`cdvd.models.CDVDTSP.restore_centres`) fast on the hardware at hand.

* :mod:`cdvd.backends.torch`: the torch model with channels-last memory and/or ``torch.compile``.
* :mod:`cdvd.backends.openvino`: the stage converted to OpenVINO (optional extra ``cdvd[openvino]``).

Each gives a callable with the contract of ``restore_centres``: (T, B, 3, H, W) -> (T - 2, B, 3, H, W).
"""
