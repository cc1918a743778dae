"""What this CPU can do, read from /proc/cpuinfo without importing torch (its vector extensions, whether it does
bf16 arithmetic natively), and how long its idle cores take to wake. `bf16_warning` and `idle_wake_warning` say
at start-up what costs a run time on this CPU, and the fix: bf16 that is emulated (~12x slower than fp32 on an
AVX2-only machine), or a virtual machine whose halted cores wake slowly for r1zero's passive OpenMP threads
(docs/performance.md: "CPU features", "Idle cores that halt", "The CPU-only tweaks, re-measured").
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

# The flags that matter for this project's CPU paths, in the order they are printed.
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# Any of these gives native bf16 arithmetic (dot products / tile matmuls in bf16).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Measured on a 2-core AVX2-only machine, CPU default run (issue #16): bf16 / fp32 seconds per step.
EMULATED_BF16_SLOWDOWN = (
    "~12x slower than fp32 (121-128 s vs 9-10 s per step of the CPU default on 2 AVX2 cores)"
)
HALT_POLL_PARAMETER = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")
# A parallel region that takes longer than this to start and join is paying for a halted core: the 2-core VM
# measured 51-55 us with guest halt polling off, 10 us with it on, 5 us with spinning threads.
SLOW_WAKE_US = 25.0
# Measured there, CPU default run's rollout (generate) per step, passive threads: halt polling off / on.
SLOW_WAKE_COST = "the rollout took 2.0-2.5 s per step of the CPU default instead of 1.74-1.87 s"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first processor in `cpuinfo` (the text of /proc/cpuinfo; read when None).
    Empty when unknown (no /proc/cpuinfo: another OS).

    Example: "processor : 0\\nflags : fpu avx2 avx512f\\n" -> {"fpu", "avx2", "avx512f"}.
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        try:
            cpuinfo = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / arm64
            return set(value.split())
    return set()


def has_native_bf16(flags: set[str]) -> bool:
    """True when the CPU does bf16 arithmetic in hardware (AVX512_BF16 or AMX-BF16)."""
    return any(flag in flags for flag in BF16_FLAGS)


def describe_vector_features(flags: set[str]) -> str:
    """One line for reports. Example: {"avx2", "avx512f"} -> "avx2 avx512f, bf16 emulated"."""
    if not flags:
        return "vector features unknown"
    present = [flag for flag in VECTOR_FLAGS if flag in flags] or ["no AVX2"]
    return " ".join(present) + (", bf16 native" if has_native_bf16(flags) else ", bf16 emulated")


def bf16_warning(flags: set[str], *, uses_bf16: bool, on_gpu: bool) -> str | None:
    """The start-up warning for bf16 compute on a CPU without bf16 arithmetic, or None when there is nothing to
    say (fp32, a GPU, a CPU with bf16 instructions, or flags unknown)."""
    if not uses_bf16 or on_gpu or not flags or has_native_bf16(flags):
        return None
    return (
        f"bf16 on this CPU ({describe_vector_features(flags)}) is emulated: expect it to run "
        f"{EMULATED_BF16_SLOWDOWN}. Use rollout.dtype=float32 learner.precision=fp32 here, or a CPU with "
        "AVX512_BF16 / AMX."
    )


def guest_halt_poll_ns(parameter: Path = HALT_POLL_PARAMETER, driver: Path = CPUIDLE_DRIVER) -> int | None:
    """How long (ns) an idle core of this virtual machine polls before it halts: the haltpoll cpuidle driver's
    `guest_halt_poll_ns`. None when that driver is not the one in use (bare metal, another hypervisor) or either
    file is unreadable.

    Example: driver "haltpoll\n", parameter "0\n" -> 0 (polling off: idle cores halt at once).
    """
    try:
        if driver.read_text(encoding="ascii").strip() != "haltpoll":
            return None
        return int(parameter.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def parallel_region_us(batches: int = 5, regions: int = 100) -> float:
    """Microseconds one OpenMP parallel region of a tiny op takes in this process (median of `batches` batches
    of `regions` regions): torch.add over 40,000 floats, above torch's 32,768-element grain, so both threads
    run; the add itself is ~2 us. Needs torch; ~20 ms. The figure is what starting and joining costs: waking
    the sleeping threads when they sleep."""
    import torch

    a, b = torch.ones(40_000), torch.ones(40_000)
    out = torch.empty_like(a)
    for _ in range(20):
        torch.add(a, b, out=out)
    per_batch = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(regions):
            torch.add(a, b, out=out)
        per_batch.append((time.perf_counter() - started) / regions * 1e6)
    return statistics.median(per_batch)


def idle_wake_warning(
    region_us: float, halt_poll_ns: int | None, *, threads: int, on_gpu: bool
) -> str | None:
    """The start-up warning for a virtual machine whose idle cores halt at once (guest halt polling off) and pay
    for it on every parallel region, or None: on a GPU, with one thread, without the haltpoll driver (nothing
    known to suggest), with polling on, or when the measured region cost `region_us` is not slow.

    Example: (52.0, 0, threads=2, on_gpu=False) -> "one OpenMP parallel region takes 52 us here ... echo 200000
    | sudo tee /sys/module/haltpoll/parameters/guest_halt_poll_ns ..."; (9.0, 0, ...) -> None.
    """
    if on_gpu or threads < 2 or halt_poll_ns != 0 or region_us < SLOW_WAKE_US:
        return None
    return (
        f"one OpenMP parallel region takes {region_us:.0f} us here (~10 us where idle cores poll): this virtual "
        f"machine's guest halt polling is off ({HALT_POLL_PARAMETER} = 0), so every region waits for a halted "
        f"core to wake; measured on 2 cores, {SLOW_WAKE_COST}. `echo 200000 | sudo tee {HALT_POLL_PARAMETER}` "
        "turns polling on (the kernel's default for this driver; a core polls only while it has nothing to run, "
        "so other processes lose nothing). On a machine you do not share, OMP_WAIT_POLICY=ACTIVE also works."
    )
