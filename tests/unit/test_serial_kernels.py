"""Small vLLM CPU kernels on one OpenMP thread (r1zero.rollout.serial_kernels): when, and always restored."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from r1zero.rollout.serial_kernels import (
    LibgompThreads,
    restore_kernels,
    serialize_small_kernels,
)


class FakeThreads:
    """An OpenMP thread count that records every change."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.changes: list[int] = []

    def get(self) -> int:
        return self.threads

    def set(self, threads: int) -> None:
        self.threads = threads
        self.changes.append(threads)


class Tokens:
    """Stands in for a tensor: only its shape and size are read."""

    def __init__(self, *shape: int) -> None:
        self.shape = shape

    def numel(self) -> int:
        return math.prod(self.shape)


def _fake_ops(threads: FakeThreads, seen: list[tuple[str, int]]) -> Any:
    def rotary_embedding(positions: Any, query: Any, key: Any, head_size: int, cache: Any, neox: bool) -> str:
        seen.append(("rotary", threads.get()))
        return "rotated"

    def cpu_attn_reshape_and_cache(
        key: Any, value: Any, kc: Any, vc: Any, slots: Any, isa: str, **kw: Any
    ) -> None:
        seen.append(("cache", threads.get()))
        if kw.get("fail"):
            raise RuntimeError("kernel failed")

    def cpu_attention_with_kv_cache(*args: Any) -> None:
        seen.append(("attention", threads.get()))

    return SimpleNamespace(
        rotary_embedding=rotary_embedding,
        cpu_attn_reshape_and_cache=cpu_attn_reshape_and_cache,
        cpu_attention_with_kv_cache=cpu_attention_with_kv_cache,
    )


def test_decode_sized_calls_run_on_one_thread_and_restore() -> None:
    threads, seen = FakeThreads(2), []
    ops = _fake_ops(threads, seen)
    assert serialize_small_kernels(ops, threads) == ["rotary_embedding", "cpu_attn_reshape_and_cache"]
    assert ops.rotary_embedding(Tokens(16), None, None, 64, None, True) == "rotated"  # result passed through
    ops.cpu_attn_reshape_and_cache(Tokens(16, 3, 64), None, None, None, None, "vec")
    ops.cpu_attention_with_kv_cache()  # not one of the two: untouched
    assert seen == [("rotary", 1), ("cache", 1), ("attention", 2)]
    assert threads.changes == [1, 2, 1, 2] and threads.threads == 2


def test_large_batches_keep_every_thread() -> None:
    threads, seen = FakeThreads(4), []
    ops = _fake_ops(threads, seen)
    serialize_small_kernels(ops, threads, max_tokens=100)
    ops.rotary_embedding(
        Tokens(3, 101), None, None, 64, None, True
    )  # mrope positions [3, tokens]: 101 tokens
    ops.cpu_attn_reshape_and_cache(
        Tokens(100, 3, 64), None, None, None, None, "vec"
    )  # exactly the bound: serial
    assert seen == [("rotary", 4), ("cache", 1)]
    assert threads.threads == 4


def test_thread_count_restored_when_the_kernel_raises() -> None:
    threads, seen = FakeThreads(2), []
    ops = _fake_ops(threads, seen)
    serialize_small_kernels(ops, threads)
    with pytest.raises(RuntimeError, match="kernel failed"):
        ops.cpu_attn_reshape_and_cache(Tokens(8, 3, 64), None, None, None, None, "vec", fail=True)
    assert seen == [("cache", 1)] and threads.threads == 2


def test_single_thread_pool_is_left_alone() -> None:
    threads, seen = FakeThreads(1), []
    ops = _fake_ops(threads, seen)
    serialize_small_kernels(ops, threads)
    ops.rotary_embedding(Tokens(4), None, None, 64, None, True)
    assert seen == [("rotary", 1)] and threads.changes == []


def test_install_is_idempotent_and_restorable() -> None:
    threads, seen = FakeThreads(2), []
    ops = _fake_ops(threads, seen)
    original = ops.rotary_embedding
    serialize_small_kernels(ops, threads)
    once = ops.rotary_embedding
    serialize_small_kernels(ops, threads)
    assert ops.rotary_embedding is once  # not wrapped twice
    ops.rotary_embedding(Tokens(4), None, None, 64, None, True)
    assert threads.changes == [1, 2]  # one set/restore pair per call
    restore_kernels(ops)
    assert ops.rotary_embedding is original
    restore_kernels(ops)  # a second restore is harmless
    assert ops.rotary_embedding is original


def test_inside_a_compile_trace_the_kernel_is_called_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    threads, seen = FakeThreads(2), []
    ops = _fake_ops(threads, seen)
    serialize_small_kernels(ops, threads)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    ops.rotary_embedding(Tokens(4), None, None, 64, None, True)
    assert seen == [("rotary", 2)] and threads.changes == []  # no thread change traced into a graph


def test_missing_kernels_are_skipped() -> None:
    ops = SimpleNamespace(rotary_embedding=lambda *a: None)
    assert serialize_small_kernels(ops, FakeThreads(2)) == ["rotary_embedding"]


def test_libgomp_control_is_torchs_thread_count() -> None:
    """The count set through libgomp is the one torch's own kernels use (torch.get_num_threads reads it)."""
    torch = pytest.importorskip("torch")
    threads = LibgompThreads.loaded()
    if threads is None:
        pytest.skip("torch here does not use libgomp")
    before = torch.get_num_threads()
    assert threads.get() == before
    try:
        threads.set(1)
        assert torch.get_num_threads() == 1
    finally:
        threads.set(before)
    assert torch.get_num_threads() == before
