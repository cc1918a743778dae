"""What this CPU can do, read from /proc/cpuinfo without importing torch: its vector extensions and whether it
does bf16 arithmetic natively.

bf16 on a CPU without bf16 instructions is emulated (converted to and from fp32 around every operation): on a
2-core AVX2-only machine the CPU default run took 121-128 s per step with `rollout.dtype=bfloat16
learner.precision=bf16` against 9-10 s in fp32 (issue #16), while on an AVX-512 machine with AVX512_BF16 bf16
was faster than fp32. `bf16_warning` says so at start-up; the bench prints `describe_vector_features` beside
its numbers.
"""

from __future__ import annotations

from pathlib import Path

# The flags that matter for this project's CPU paths, in the order they are printed.
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# Any of these gives native bf16 arithmetic (dot products / tile matmuls in bf16).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Measured on a 2-core AVX2-only machine, CPU default run (issue #16): bf16 / fp32 seconds per step.
EMULATED_BF16_SLOWDOWN = (
    "~12x slower than fp32 (121-128 s vs 9-10 s per step of the CPU default on 2 AVX2 cores)"
)


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
