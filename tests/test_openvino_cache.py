"""The OpenVINO backend's conversion cache: later processes read the converted stage instead of converting again,
and never use a conversion made from other weights, architecture or code, or a damaged one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from helpers.processes import dead_pid

from cdvd.atomic import temp_path
from cdvd.models import CDVDTSP
from cdvd.runtime import default_cache_dir, resolve_cache_dir

openvino = pytest.importorskip("openvino", reason="backend=openvino needs the optional extra cdvd[openvino]")
from cdvd.backends import openvino as ov_backend  # noqa: E402 - only with openvino installed
from cdvd.backends.openvino import OpenVINOStage, conversion_key  # noqa: E402

SIZE = (32, 48)


@pytest.fixture(scope="module")
def model() -> CDVDTSP:
    torch.manual_seed(0)
    return CDVDTSP(n_feat=4, n_resblock=1, corr_backend="torch").eval()


@pytest.fixture(scope="module")
def converted(model: CDVDTSP) -> object:
    """One real conversion (20-40 s on two cores), shared: the tests below count conversions instead of redoing them."""
    return ov_backend.convert_openvino(model, part="stage")


@pytest.fixture
def conversions(converted: object, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace the conversion by the shared one, counting the calls."""
    calls: list[int] = []

    def convert(model: CDVDTSP, *, part: str = "stage", size: object = None) -> object:
        calls.append(1)
        return converted.clone()  # type: ignore[attr-defined]

    monkeypatch.setattr(ov_backend, "convert_openvino", convert)
    return calls


def frames() -> torch.Tensor:
    return torch.rand(3, 1, 3, *SIZE, generator=torch.Generator().manual_seed(1))


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "openvino" / "ir").iterdir())


def test_a_second_stage_reads_the_cache_and_computes_the_same(
    model: CDVDTSP, conversions: list[int], tmp_path: Path
) -> None:
    stale = temp_path(tmp_path / "openvino" / "ir" / ("0" * 64), pid=dead_pid())
    stale.mkdir(parents=True)  # what a process killed while saving leaves
    first = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    assert len(conversions) == 1 and not stale.exists()
    [entry] = entries(tmp_path)
    assert entry.name == conversion_key(model)
    record = json.loads((entry / "record.json").read_text())
    assert set(record["sha256"]) == {"stage.xml", "stage.bin"}
    assert any((tmp_path / "openvino" / "compiled").iterdir())  # OpenVINO's compiled-model cache

    second = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    assert len(conversions) == 1  # read, not converted
    assert torch.equal(first, second)  # the first run already computed with the saved model


def test_a_damaged_entry_is_converted_again(
    model: CDVDTSP, conversions: list[int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    [entry] = entries(tmp_path)
    weights = bytearray((entry / "stage.bin").read_bytes())
    weights[len(weights) // 2] ^= 0xFF  # one flipped byte: OpenVINO would read it without complaint
    (entry / "stage.bin").write_bytes(bytes(weights))
    with caplog.at_level(logging.WARNING, logger="cdvd.backends.openvino"):
        again = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    assert len(conversions) == 2
    assert "stage.bin differs from what was saved" in caplog.text
    assert torch.equal(again, expected)
    (entry / "record.json").unlink()  # a save cut short before its record
    OpenVINOStage(model, cache_dir=tmp_path)
    assert len(conversions) == 3 and (entry / "record.json").is_file()


def test_an_unwritable_cache_costs_only_the_saving(
    model: CDVDTSP, conversions: list[int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "openvino").mkdir()
    (tmp_path / "openvino" / "ir").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="cdvd.backends.openvino"):
        out = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    assert out.shape == (1, 1, 3, *SIZE) and len(conversions) == 1
    assert "could not cache" in caplog.text
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")  # no cache at all can be made under it
    with caplog.at_level(logging.WARNING, logger="cdvd.backends.openvino"):
        out = OpenVINOStage(model, cache_dir=not_a_folder)(frames())
    assert out.shape == (1, 1, 3, *SIZE) and len(conversions) == 2
    assert "no OpenVINO compiled-model cache" in caplog.text


def test_no_cache_dir_writes_nothing(model: CDVDTSP, conversions: list[int], tmp_path: Path) -> None:
    OpenVINOStage(model, cache_dir=None)(frames())
    assert len(conversions) == 1 and not any(tmp_path.iterdir())


def test_the_key_follows_weights_and_architecture(model: CDVDTSP) -> None:
    key = conversion_key(model)
    assert conversion_key(model) == key
    torch.manual_seed(0)
    same = CDVDTSP(n_feat=4, n_resblock=1, corr_backend="torch")
    assert conversion_key(same) == key  # the same weights, another object
    with torch.no_grad():
        same.recons.head.conv.bias[0] += 1e-6
    assert conversion_key(same) != key
    torch.manual_seed(0)
    residual = CDVDTSP(n_feat=4, n_resblock=1, corr_backend="torch", residual=True)
    residual.load_state_dict(model.state_dict())  # same weights, another forward
    assert conversion_key(residual) != key


def test_cache_dir_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CDVD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "cdvd"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "cdvd"
    monkeypatch.setenv("CDVD_CACHE_DIR", str(tmp_path / "own"))
    assert resolve_cache_dir("auto") == tmp_path / "own"
    assert resolve_cache_dir(str(tmp_path / "x")) == tmp_path / "x"
    assert resolve_cache_dir(None) is None


def test_one_infer_request_per_frame_size_and_no_shared_outputs(
    model: CDVDTSP, conversions: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []
    create = openvino.CompiledModel.create_infer_request

    def counting(self: object) -> object:
        made.append(1)
        return create(self)

    monkeypatch.setattr(openvino.CompiledModel, "create_infer_request", counting)
    stage = OpenVINOStage(model, cache_dir=None)
    generator = torch.Generator().manual_seed(2)
    a, b = (torch.rand(4, 1, 3, *SIZE, generator=generator) for _ in range(2))
    out_a, out_b, again_a = stage(a), stage(b), stage(a)
    assert len(made) == 1  # 2 calls x 2 centres, one request
    assert torch.equal(out_a, again_a) and not torch.equal(out_a, out_b)  # earlier results are not overwritten
    stage(torch.rand(3, 1, 3, 24, 40, generator=generator))
    assert len(made) == 2  # another frame size, another compiled model and request
