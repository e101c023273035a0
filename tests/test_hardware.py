"""CPU flags from /proc/cpuinfo, native bf16, and what precision=auto chooses."""

from __future__ import annotations

import logging

import pytest
import torch

from cdvd import hardware

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 fma avx avx2 bmi2
"""

# an Intel Xeon of the AVX-512 generation before bf16 (Skylake/Cascade Lake): bf16 there is emulated
AVX512_NO_BF16 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
flags\t\t: fpu sse2 fma avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""

GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 i8mm
"""


def test_parse_cpuinfo_reads_model_and_flags() -> None:
    model, flags = hardware.parse_cpuinfo(XEON)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx512_bf16", "amx_bf16", "avx2"} <= flags
    assert hardware.cpu_has_native_bf16(flags)


def test_avx2_only_cpu_has_no_native_bf16() -> None:
    model, flags = hardware.parse_cpuinfo(EPYC)
    assert model == "AMD EPYC 7B12"
    assert "avx2" in flags and not hardware.cpu_has_native_bf16(flags)


def test_arm_features_are_read_but_not_taken_for_x86_bf16() -> None:
    # ARM lists "bf16" under Features; only the x86 flags count (torch's CPU bf16 fast paths are x86 oneDNN)
    model, flags = hardware.parse_cpuinfo(GRAVITON)
    assert model == "" and "bf16" in flags
    assert not hardware.cpu_has_native_bf16(flags)


def test_auto_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: hardware.parse_cpuinfo(XEON)[1])
    assert hardware.native_bf16(torch.device("cpu"))
    assert hardware.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: hardware.parse_cpuinfo(EPYC)[1])
    assert not hardware.native_bf16(torch.device("cpu"))
    assert hardware.resolve_precision("auto", "cpu") == "fp32"


@pytest.mark.parametrize(
    ("cpuinfo", "native"), [(XEON, True), (AVX512_NO_BF16, False), (EPYC, False)], ids=["amx", "avx512", "avx2"]
)
def test_bf16_runs_only_where_the_cpu_has_it_and_says_so_elsewhere(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, cpuinfo: str, native: bool
) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: hardware.parse_cpuinfo(cpuinfo)[1])
    with caplog.at_level(logging.INFO, logger="cdvd.hardware"):
        chosen = hardware.resolve_precision("bf16", "cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if native:
        assert chosen == "bf16" and not warnings
    else:  # emulated bf16 would be slower than fp32, and its frames worse: fp32, in one line that says why
        assert chosen == "fp32" and len(warnings) == 1
        assert "precision=bf16" in warnings[0] and "avx512_bf16" in warnings[0] and "fp32" in warnings[0]
    assert hardware.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"


def test_explicit_precisions_pass_through_and_fp16_needs_cuda() -> None:
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision=fp16"):
        hardware.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision=fp8: expected one of"):
        hardware.resolve_precision("fp8", "cpu")


def test_this_machine_matches_its_cpuinfo() -> None:
    """On the machine at hand: auto gives bf16 exactly when /proc/cpuinfo lists avx512_bf16 or amx_bf16."""
    flags = hardware.cpu_flags()
    expected = "bf16" if flags & {"avx512_bf16", "amx_bf16"} else "fp32"
    assert hardware.resolve_precision("auto", "cpu") == expected
    described = hardware.cpu_description()
    assert set(described["flags"]) == set(hardware.REPORTED_FLAGS)
    assert described["flags"]["avx2"] == ("avx2" in flags)


@pytest.mark.parametrize(("capability", "native"), [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_cuda_bf16_follows_the_compute_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], native: bool
) -> None:
    """The CUDA rule, on any machine: Ampere (8.0) and later compute bf16 natively; a Turing card (7.5) runs fp32."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert hardware.native_bf16("cuda") is native
    assert hardware.resolve_precision("auto", "cuda") == ("bf16" if native else "fp32")
    assert hardware.resolve_precision("bf16", "cuda") == ("bf16" if native else "fp32")
    assert (hardware.missing_bf16("cuda") is None) is native
    assert hardware.resolve_precision("fp16", "cuda") == "fp16"
