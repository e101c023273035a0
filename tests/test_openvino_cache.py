"""The OpenVINO backend's caches and precision: later processes read the converted and the compiled stage instead of
making them again, never use one made from other weights, architecture, code or settings, or a damaged one, and use
a cache they cannot write read-only; flow estimation and sampling coordinates stay f32 in bf16."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import console_script, run_command
from helpers.data import tiny_checkpoint
from helpers.processes import dead_pid

from cdvd import hardware
from cdvd.atomic import mark_owned, temp_path
from cdvd.data.io import write_rgb
from cdvd.export import agreement
from cdvd.models import CDVDTSP
from cdvd.runtime import default_cache_dir, resolve_cache_dir

openvino = pytest.importorskip("openvino", reason="backend=openvino needs the optional extra cdvd[openvino]")
from cdvd.backends import openvino as ov_backend  # noqa: E402 - only with openvino installed
from cdvd.backends.openvino import OpenVINOStage, compiled_key, conversion_key  # noqa: E402
from cdvd.inference.engine import VideoDeblurrer  # noqa: E402

SIZE = (32, 48)
AVX512_WITHOUT_BF16 = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"})


@pytest.fixture(scope="module")
def model() -> CDVDTSP:
    torch.manual_seed(0)
    return CDVDTSP(n_feat=4, n_resblock=1, corr_backend="torch").eval()


@pytest.fixture(scope="module")
def converted(model: CDVDTSP) -> dict[str, object]:
    """One real conversion of each part (20-40 s on two cores), shared: the tests below count conversions instead
    of redoing them."""
    return {part: ov_backend.convert_openvino(model, part=part) for part in ov_backend.PARTS}


@pytest.fixture
def conversions(converted: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the conversion by the shared one, listing the parts converted."""
    calls: list[str] = []

    def convert(model: CDVDTSP, *, part: str = "stage", size: object = None) -> object:
        calls.append(part)
        return converted[part].clone()  # type: ignore[attr-defined]

    monkeypatch.setattr(ov_backend, "convert_openvino", convert)
    return calls


@pytest.fixture
def compilations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count OpenVINO's compilations (a compiled stage read from the cache is imported, not compiled)."""
    calls: list[int] = []
    compile_model = openvino.Core.compile_model

    def counting(self: object, *args: object, **kwargs: object) -> object:
        calls.append(1)
        return compile_model(self, *args, **kwargs)

    monkeypatch.setattr(openvino.Core, "compile_model", counting)
    return calls


def frames() -> torch.Tensor:
    return torch.rand(3, 1, 3, *SIZE, generator=torch.Generator().manual_seed(1))


def entries(cache: Path, kind: str = "ir") -> list[Path]:
    return sorted((cache / "openvino" / kind).iterdir())


def damage_blobs(cache: Path, *, header: bool = False) -> list[Path]:
    """Flip one bit every 64 KiB in the second quarter of every compiled blob: the size stays, and OpenVINO imports
    such a blob without complaint (the weights are off: frames were 75 levels off before the blobs were checked).
    ``header``: flip one bit of the blob's header instead, which OpenVINO notices (and then deletes the blob)."""
    blobs = sorted(cache.rglob("*.blob"))
    for path in blobs:
        data = bytearray(path.read_bytes())
        for i in [40] if header else range(len(data) // 4, len(data) // 2, 1 << 16):
            data[i] ^= 0x40
        path.write_bytes(bytes(data))
    return blobs


def test_a_second_stage_reads_the_cache_and_computes_the_same(
    model: CDVDTSP, conversions: list[str], compilations: list[int], tmp_path: Path
) -> None:
    stale = temp_path(tmp_path / "openvino" / "ir" / ("0" * 64), pid=dead_pid())
    stale.mkdir(parents=True)  # what a process killed while saving leaves: a marked temporary folder
    mark_owned(stale, "temporary")
    first = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    assert conversions == ["alignment", "reconstruction"] and len(compilations) == 2 and not stale.exists()
    [entry] = entries(tmp_path)
    assert entry.name == conversion_key(model)
    record = json.loads((entry / "record.json").read_text())
    assert set(record["sha256"]) == {"alignment.xml", "alignment.bin", "reconstruction.xml", "reconstruction.bin"}
    blobs = [json.loads((e / "record.json").read_text())["sha256"] for e in entries(tmp_path, "compiled")]
    assert sorted(name for digests in blobs for name in digests) == ["alignment.blob", "reconstruction.blob"]

    second = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    assert len(conversions) == 2 and len(compilations) == 2  # read and imported, neither converted nor compiled
    assert torch.equal(first, second)  # the first run already computed with the saved model


def test_a_damaged_entry_is_converted_again(
    model: CDVDTSP, conversions: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    [entry] = entries(tmp_path)
    weights = bytearray((entry / "alignment.bin").read_bytes())
    weights[len(weights) // 2] ^= 0xFF  # one flipped byte: OpenVINO would read it without complaint
    (entry / "alignment.bin").write_bytes(bytes(weights))
    with caplog.at_level(logging.WARNING, logger="cdvd.backends.openvino"):
        again = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    assert len(conversions) == 4
    assert "alignment.bin differs from what was saved" in caplog.text
    assert torch.equal(again, expected)
    (entry / "record.json").unlink()  # a save cut short before its record
    OpenVINOStage(model, cache_dir=tmp_path)
    assert len(conversions) == 6 and (entry / "record.json").is_file()


def test_a_damaged_compiled_stage_is_compiled_again(
    model: CDVDTSP, conversions: list[str], compilations: list[int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    blobs = damage_blobs(tmp_path)
    assert sorted(blob.name for blob in blobs) == ["alignment.blob", "reconstruction.blob"]
    with caplog.at_level(logging.WARNING, logger="cdvd.backends.openvino"):
        again = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    for blob in blobs:
        assert f"{blob.parent}: {blob.name} differs from what was saved" in caplog.text
    assert len(compilations) == 4 and torch.equal(again, expected)  # compiled again, never imported
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cdvd.backends.openvino"):
        third = OpenVINOStage(model, cache_dir=tmp_path)(frames())  # the entries were replaced by whole ones
    assert len(compilations) == 4 and not caplog.text and torch.equal(third, expected)


def test_an_unwritable_cache_costs_only_the_saving(
    model: CDVDTSP, conversions: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "openvino").mkdir()
    (tmp_path / "openvino" / "ir").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="cdvd.backends.openvino"):
        out = OpenVINOStage(model, cache_dir=tmp_path)(frames())
    assert out.shape == (1, 1, 3, *SIZE) and len(conversions) == 2
    assert caplog.text.count("cannot write to the OpenVINO cache") == 1  # one line, not one per entry
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")  # no cache at all can be made under it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cdvd.backends.openvino"):
        out = OpenVINOStage(model, cache_dir=not_a_folder)(frames())
    assert out.shape == (1, 1, 3, *SIZE) and len(conversions) == 4
    assert caplog.text.count("cannot write to the OpenVINO cache") == 1
    assert not_a_folder.read_text() == ""


def _signal_stack() -> tuple[int, int, int]:
    """This thread's alternate signal stack: (address, size, flags), from sigaltstack(2)."""
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    now = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(now)) == 0
    return now.ss_sp or 0, now.ss_size, now.ss_flags


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack through glibc: Linux only")
def test_the_stage_leaves_the_threads_signal_stack_as_it_was(model: CDVDTSP, conversions: list[str]) -> None:
    """OpenVINO's compile pointed this thread's signal stack at a buffer it later freed: with a Python handler for
    SIGCHLD (a DataLoader's, once it has run workers), the next child process to end killed the pytest worker with a
    SIGSEGV no handler saw ("node down: Not properly terminated" on CI). pytest's faulthandler gives it one to keep."""
    before = _signal_stack()
    stage = OpenVINOStage(model, cache_dir=None)
    stage(frames())
    assert _signal_stack() == before
    del stage
    gc.collect()
    assert _signal_stack() == before


def test_no_cache_dir_writes_nothing(model: CDVDTSP, conversions: list[str], tmp_path: Path) -> None:
    OpenVINOStage(model, cache_dir=None)(frames())
    assert len(conversions) == 2 and not any(tmp_path.iterdir())


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


def test_the_compiled_key_follows_content_size_settings_and_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    core = openvino.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    key = compiled_key("a" * 64, SIZE, "CPU", config, core)
    assert compiled_key("a" * 64, SIZE, "CPU", dict(config), core) == key
    assert compiled_key("b" * 64, SIZE, "CPU", config, core) != key  # another converted stage
    assert compiled_key("a" * 64, (32, 52), "CPU", config, core) != key
    assert compiled_key("a" * 64, SIZE, "CPU", {**config, "INFERENCE_NUM_THREADS": 1}, core) != key
    monkeypatch.setattr(ov_backend, "cpu_flags", lambda: AVX512_WITHOUT_BF16)  # a blob from another processor
    assert compiled_key("a" * 64, SIZE, "CPU", config, core) != key


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
    model: CDVDTSP, conversions: list[str], monkeypatch: pytest.MonkeyPatch
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
    assert len(made) == 2  # 2 calls x 2 centres, one request per part
    assert torch.equal(out_a, again_a) and not torch.equal(out_a, out_b)  # earlier results are not overwritten
    stage(torch.rand(3, 1, 3, 24, 40, generator=generator))
    assert len(made) == 4  # another frame size, other compiled models and requests


# ------------------------------------------------------------------------------------------------------ precision


def test_flow_and_warps_run_f32_in_bf16(model: CDVDTSP, conversions: list[str]) -> None:
    stage = OpenVINOStage(model, precision="bf16")
    base = torch.rand(1, 3, 32, 8, generator=torch.Generator().manual_seed(1)).repeat(1, 1, 1, 34)
    clip = torch.stack([torch.roll(base, k, dims=-1) for k in range(3)])  # 272 wide: past bf16's exact integers
    out = stage(clip)
    alignment = stage.compiled_for(32, 272).alignment
    assert ov_backend._type_name(alignment.get_property("INFERENCE_PRECISION_HINT")) == "f32"  # type: ignore[attr-defined]
    runtime = alignment.get_runtime_model().get_ordered_ops()  # type: ignore[attr-defined]
    assert {op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime}.isdisjoint({"bf16", "f16"})
    if not hardware.native_bf16("cpu"):
        return  # f32 throughout (the next test); the reconstruction net runs bf16 on bf16 CPUs only
    assert stage.inference_precision(32, 272) == "bf16"
    with torch.no_grad():
        reference = model.restore_centres(clip)
    max_abs, psnr = agreement(reference, out)  # one stage compiled in bf16 as a whole: 0.09, 44 dB
    assert max_abs < 0.02 and psnr > 55


def test_bf16_without_native_support_compiles_f32_and_says_so(
    model: CDVDTSP, conversions: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: AVX512_WITHOUT_BF16)  # AVX-512, no AVX-512 BF16, no AMX
    with caplog.at_level(logging.WARNING):
        # through the engine, as cdvd-deblur backend=openvino precision=bf16 goes: it resolves the precision once
        deblurrer = VideoDeblurrer(model, device="cpu", precision="bf16", backend="openvino")
        stage = deblurrer._stage_function().__self__  # the OpenVINOStage it builds, with the resolved precision
        stage(frames())
    assert deblurrer.precision == "fp32" and stage.precision == "fp32" and stage.inference_precision(*SIZE) == "f32"
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "precision=bf16" in line and "running fp32 instead" in line


# ----------------------------------------------------------------------------------- through cdvd-deblur


def write_frames(folder: Path, n: int = 5, h: int = 36, w: int = 44) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(h, w, 3)).astype(np.float64)
    for i in range(n):  # a smooth shift, so the flow has something to find
        write_rgb(folder / f"{i:05d}.png", np.clip(np.roll(base, i, axis=1) * 0.9 + 10, 0, 255).astype(np.uint8))


def snapshot(folder: Path, pattern: str = "*") -> dict[str, bytes | None]:
    """Every entry under ``folder`` matching ``pattern``, with a file's bytes (None for a folder)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob(pattern))}


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict[str, bytes | None]]:
    """One cdvd-deblur backend=openvino run that fills its cache: (its folder, the run's arguments, its frames)."""
    root = tmp_path_factory.mktemp("filled")
    write_frames(root / "in")
    args = [
        console_script("cdvd-deblur"),
        "device=cpu",
        "progress=false",
        f"input={root / 'in'}",
        f"checkpoint={tiny_checkpoint(root / 'tiny.pt')}",
        "backend=openvino",
        "precision=fp32",
    ]
    result = run_command([*args, f"output={root / 'out'}", f"cache_dir={root / 'cache'}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((root / "cache" / "openvino" / "compiled").rglob("*.blob"))
    return root / "cache", args, snapshot(root / "out", "*.png")


def without_file_permission_override(args: list[str]) -> list[str]:
    """``args`` run so that file modes bind: root ignores them, so drop the capabilities that let it."""
    if os.geteuid() != 0:
        return args
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made read-only for this test")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *args]


@pytest.mark.slow
def test_deblur_never_uses_a_damaged_compiled_stage(
    tmp_path: Path, filled_cache: tuple[Path, list[str], dict[str, bytes | None]]
) -> None:
    source, args, expected = filled_cache
    cache = tmp_path / "cache"
    shutil.copytree(source, cache)
    assert damage_blobs(cache)
    result = run_command([*args, f"output={tmp_path / 'out'}", f"cache_dir={cache}"], tmp_path)
    log = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(tmp_path / "out", "*.png") == expected  # the frames of the run that compiled it, to the byte
    for part in ("alignment", "reconstruction"):
        assert f"{part}.blob differs from what was saved" in log and f"OpenVINO {part} compiled for" in log


@pytest.mark.slow
def test_deblur_uses_a_read_only_cache_without_touching_it(
    tmp_path: Path, filled_cache: tuple[Path, list[str], dict[str, bytes | None]]
) -> None:
    source, args, expected = filled_cache
    cache = tmp_path / "shared-cache"
    shutil.copytree(source, cache)
    damage_blobs(cache, header=True)  # something it would replace if it could (OpenVINO itself deleted it)
    for folder, _, names in os.walk(cache):  # another user's cache: readable, not writable
        for path in [Path(folder), *(Path(folder, name) for name in names)]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = snapshot(cache)
    try:
        command = without_file_permission_override([*args, f"output={tmp_path / 'out'}", f"cache_dir={cache}"])
        result = run_command(command, tmp_path)
    finally:
        for folder, _, _ in os.walk(cache):
            Path(folder).chmod(0o755)
    log = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0 and "Traceback" not in log, result.stderr[-3000:]
    assert "OpenVINO stage read from the cache" in log  # the converted stage verifies: used
    assert "reconstruction.blob differs from what was saved" in log  # the damaged compiled ones are not
    assert log.count("cannot write to the OpenVINO cache") == 1
    assert snapshot(cache) == before  # nothing written, nothing removed
    assert snapshot(tmp_path / "out", "*.png") == expected
