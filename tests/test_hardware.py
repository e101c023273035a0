"""CPU flags from /proc/cpuinfo, native bf16, and what precision=auto chooses."""

from __future__ import annotations

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


def test_explicit_precisions_pass_through_and_fp16_needs_cuda() -> None:
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"
    assert hardware.resolve_precision("bf16", "cpu") == "bf16"  # the user's explicit choice, even if emulated
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
