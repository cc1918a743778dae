"""CPU feature detection on hand-written /proc/cpuinfo texts (an AVX2-only machine, an AVX-512 one with bf16, an
arm64 one, an unreadable one)."""

from __future__ import annotations

from r1zero.cpu import bf16_warning, cpu_flags, describe_vector_features, has_native_bf16

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
