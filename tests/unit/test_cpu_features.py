"""CPU feature detection on hand-written /proc/cpuinfo texts (an AVX2-only machine, an AVX-512 one with bf16, an
arm64 one, an unreadable one); the idle-wake warning on hand-written haltpoll parameters and region costs."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from r1zero import cpu
from r1zero.config import RunConfig
from r1zero.cpu import (
    HALT_POLL_PARAMETER,
    bf16_warning,
    cpu_flags,
    describe_vector_features,
    guest_halt_poll_ns,
    has_native_bf16,
    idle_wake_warning,
    parallel_region_us,
)

AVX2_ONLY = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu sse4_2 avx avx2 fma\n\nprocessor\t: 1\n"
AVX512_BF16 = "processor : 0\nflags : fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags : avx2 avx512f amx_bf16 amx_tile amx_int8\n"
ARM = "processor : 0\nFeatures : fp asimd bf16 sve\n"


def test_flags_are_read_from_the_first_processor() -> None:
    assert cpu_flags(AVX2_ONLY) == {"fpu", "sse4_2", "avx", "avx2", "fma"}
    assert cpu_flags(ARM) == {"fp", "asimd", "bf16", "sve"}
    assert cpu_flags("processor : 0\n") == set()


def test_native_bf16_needs_avx512_bf16_or_amx() -> None:
    assert not has_native_bf16(cpu_flags(AVX2_ONLY))
    assert has_native_bf16(cpu_flags(AVX512_BF16)) and has_native_bf16(cpu_flags(SAPPHIRE))
    assert not has_native_bf16({"avx2", "avx512f", "avx512bw"})  # AVX-512 alone converts, it does not compute


def test_description_for_reports() -> None:
    assert describe_vector_features(cpu_flags(AVX2_ONLY)) == "avx2, bf16 emulated"
    assert describe_vector_features(cpu_flags(AVX512_BF16)) == "avx2 avx512f avx512_bf16, bf16 native"
    assert describe_vector_features(cpu_flags(SAPPHIRE)) == "avx2 avx512f amx_bf16 amx_tile, bf16 native"
    assert describe_vector_features(set()) == "vector features unknown"


def test_bf16_warning_only_where_bf16_is_emulated() -> None:
    avx2 = cpu_flags(AVX2_ONLY)
    message = bf16_warning(avx2, uses_bf16=True, on_gpu=False)
    assert message is not None and "emulated" in message and "~12x slower" in message
    assert "rollout.dtype=float32 learner.precision=fp32" in message
    assert bf16_warning(avx2, uses_bf16=False, on_gpu=False) is None  # fp32
    assert bf16_warning(avx2, uses_bf16=True, on_gpu=True) is None  # the GPU computes
    assert bf16_warning(cpu_flags(AVX512_BF16), uses_bf16=True, on_gpu=False) is None
    assert bf16_warning(set(), uses_bf16=True, on_gpu=False) is None  # unknown: say nothing rather than guess


def test_guest_halt_poll_is_read_from_the_driver_parameter(tmp_path: Path) -> None:
    parameter, driver = tmp_path / "guest_halt_poll_ns", tmp_path / "current_driver"
    driver.write_text("haltpoll\n")
    parameter.write_text("0\n")
    assert guest_halt_poll_ns(parameter, driver) == 0
    parameter.write_text("200000\n")
    assert guest_halt_poll_ns(parameter, driver) == 200_000
    parameter.write_text("not a number\n")
    assert guest_halt_poll_ns(parameter, driver) is None
    assert guest_halt_poll_ns(tmp_path / "missing", driver) is None
    parameter.write_text("0\n")
    driver.write_text("intel_idle\n")  # the module is loaded but another driver idles the cores
    assert guest_halt_poll_ns(parameter, driver) is None
    assert guest_halt_poll_ns(parameter, tmp_path / "missing") is None  # no cpuidle at all


def test_idle_wake_warning_only_for_halting_cores_that_cost_time() -> None:
    message = idle_wake_warning(52.0, 0, threads=2, on_gpu=False)
    assert message is not None
    assert "52 us" in message and f"echo 200000 | sudo tee {HALT_POLL_PARAMETER}" in message
    assert "OMP_WAIT_POLICY=ACTIVE" in message
    # the host wakes the core fast: nothing to fix
    assert idle_wake_warning(9.0, 0, threads=2, on_gpu=False) is None
    assert idle_wake_warning(52.0, 200_000, threads=2, on_gpu=False) is None  # polling already on
    assert idle_wake_warning(52.0, None, threads=2, on_gpu=False) is None  # cause unknown: say nothing
    assert idle_wake_warning(52.0, 0, threads=1, on_gpu=False) is None  # one thread wakes no one
    assert idle_wake_warning(52.0, 0, threads=2, on_gpu=True) is None


def test_parallel_region_cost_is_a_duration() -> None:
    us = parallel_region_us(batches=3, regions=10)
    assert math.isfinite(us) and us > 0


@pytest.mark.parametrize(("poll_ns", "warned"), [(0, True), (200_000, False), (None, False)])
def test_startup_warns_about_halting_cores(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, poll_ns: int | None, warned: bool
) -> None:
    from r1zero.session import _warn_about_this_cpu

    monkeypatch.setattr(cpu, "parallel_region_us", lambda: 52.0)
    monkeypatch.setattr(cpu, "guest_halt_poll_ns", lambda: poll_ns)
    with caplog.at_level(logging.WARNING, logger="r1zero"):
        _warn_about_this_cpu(RunConfig(), on_gpu=False, threads=2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("halt polling is off" in w for w in warnings) == warned
    assert len(warnings) == int(warned)  # and nothing else: an fp32 run on this CPU has no bf16 warning
