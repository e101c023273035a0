"""The core proof: an original-format checkpoint, read by our loader, reproduces the original code's outputs.

``tests/fixtures/reference_case_a`` was produced by the original CDVD-TSP code on deterministic weights (see
``shared/reference/README.md``); :mod:`reference_weights` rebuilds those weights from the key names alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.reference import reference_clip, reference_expected, reference_state_dict

import cdvd
from cdvd.models import CDVDTSP
from cdvd.models.pwc import FLOW_SCALE, padded_size

TOLERANCE = 1e-4
OUTPUT_NAMES = ("recons_1", "recons_2", "recons_3", "out")


def _save_reference(path: Path, prefix: str = "") -> Path:
    torch.save({prefix + k: v for k, v in reference_state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> CDVDTSP:
    """The reference weights loaded through ``cdvd.load_model`` (shared by the size tests)."""
    path = _save_reference(tmp_path_factory.mktemp("reference") / "case_a.pt")
    return cdvd.load_model(path, corr_backend="torch")


@pytest.mark.parametrize(
    ("prefix", "recons_nhwc"),
    [("", False), ("module.", False), ("", True)],
    ids=["plain", "dataparallel", "recons-nhwc"],
)
def test_reference_case_matches_original_code(tmp_path: Path, prefix: str, recons_nhwc: bool) -> None:
    """``recons-nhwc``: the reconstruction net's weights in channels-last, a faster layout for CPU inference."""
    path = _save_reference(tmp_path / "CDVD_TSP_case_a.pt", prefix)
    model = cdvd.load_model(path, corr_backend="torch")
    assert not model.training
    assert (model.n_feat, model.n_resblock, model.residual) == (32, 3, False)
    if recons_nhwc:
        model.recons.to(memory_format=torch.channels_last)

    clip = reference_clip()
    expected = reference_expected()
    with torch.no_grad():
        outputs = model(clip)
        flow = model.flow(clip[:, 1], clip[:, 0])

    for name in OUTPUT_NAMES:
        got = getattr(outputs, name)[0].numpy()
        assert got.shape == expected[name].shape, name
        diff = float(np.abs(got - expected[name]).max())
        assert diff <= TOLERANCE, f"{name}: max abs difference {diff:.3g}"
    diff = float(np.abs(flow[0].numpy() - expected["flow_1_to_0"]).max())
    assert diff <= TOLERANCE, f"flow_1_to_0: max abs difference {diff:.3g}"


@pytest.mark.parametrize("size", [(100, 140), (36, 52)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_forward_keeps_sizes_not_multiple_of_64(reference_model: CDVDTSP, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    clip = torch.rand(1, 5, 3, *size)
    with torch.no_grad():
        outputs = reference_model(clip)
    for name in OUTPUT_NAMES:
        tensor = getattr(outputs, name)
        assert tensor.shape == (1, 3, *size), name
        assert torch.isfinite(tensor).all(), name


@pytest.mark.parametrize("size", [(100, 140), (36, 52)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_flow_on_sizes_not_multiple_of_64(reference_model: CDVDTSP, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    frame = torch.rand(1, 3, *size)
    with torch.no_grad():
        flow = reference_model.flow(frame, frame)
    assert flow.shape == (1, 2, *size)
    assert torch.isfinite(flow).all()
    # deterministic (untrained) weights give no exact zero, but a frame against itself moves under a pixel
    assert float(flow.abs().max()) < 1.0


@pytest.mark.parametrize("size", [(100, 140), (36, 52), (128, 192)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_flow_wrapper_resizes_and_rescales(
    reference_model: CDVDTSP, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    """The network runs at the size rounded up to /64; its flow is scaled by 20 and by W/W', H/H' back."""
    height, width = size
    padded_h, padded_w = padded_size(height, width)
    assert padded_h % 64 == 0 and padded_w % 64 == 0
    assert 0 <= padded_h - height < 64 and 0 <= padded_w - width < 64
    seen: list[tuple[int, ...]] = []

    def constant_decode(first: list[torch.Tensor], second: list[torch.Tensor]) -> torch.Tensor:
        seen.extend(tuple(level.shape) for level in first)
        n = first[0].shape[0]
        return torch.ones(n, 2, padded_h // 4, padded_w // 4)

    monkeypatch.setattr(reference_model.flow.pwc, "decode", constant_decode)
    with torch.no_grad():
        flow = reference_model.flow(torch.rand(1, 3, *size), torch.rand(1, 3, *size))
    # pyramid level L (1..6) of the padded frame is at 1/2**L resolution
    assert [s[-2:] for s in seen] == [(padded_h >> level, padded_w >> level) for level in range(1, 7)]
    assert flow.shape == (1, 2, height, width)
    torch.testing.assert_close(flow[:, 0], torch.full((1, height, width), FLOW_SCALE * width / padded_w))
    torch.testing.assert_close(flow[:, 1], torch.full((1, height, width), FLOW_SCALE * height / padded_h))
