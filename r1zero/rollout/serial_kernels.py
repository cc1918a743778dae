"""Run two of vLLM's small per-token CPU kernels on the calling thread, so they do not wake the other cores.

Every OpenMP parallel region first wakes the pool's sleeping threads. r1zero's threads sleep when idle (passive
waiting, so that the loop shares the machine: README, "Sharing the machine"), and on a VM whose idle cores halt
a wake costs ~50 us (`r1zero.cpu.parallel_region_us`). In a decode pass of the CPU default (SmolLM2-135M, 16
rows) each of the 30 layers opens 7 regions (`scripts/profile_rollout.py --regions`, 2026-12-01): 4 for the
matrix products, where two cores pay off, and 3 for kernels with microseconds of work, each taking 60-120 us
almost all of it waking: rotary embedding, writing the new keys and values into the KV cache, and attention.

The first two are `#pragma omp parallel for` loops over (token, head) whose results do not depend on the thread
count, so for batches up to `MAX_SERIAL_TOKENS` tokens they run with one OpenMP thread (set around the call
for the calling thread only, and restored after, also on error): 7-24 us a call instead of 62-75 us. Same
samples bit for bit (tests/integration/test_rollout_vllm_batches.py). Measured on that VM with
`scripts/ab_serial_kernels.py` (4 runs of 16 steps; each step's seeded prompts sampled both ways, back to
back in one process, so a pair sees one machine state): `generate` per step, medians 2.34/2.86/2.48/2.36 s
against 2.49/3.02/2.81/2.48 s, faster in 47 of the 64 pairs, per-pair ratio medians 0.95-0.99: ~3-5% (measured
with a 1,024-token bound; the CPU default's passes, 16-row decodes and ~250-token prefills, are serial under
both).
Attention is left alone: vLLM plans its work for the pool's full thread count and checks it
(`TORCH_CHECK_EQ(metadata.thread_num, thread_num)`).

Installed process-wide (on `vllm._custom_ops`) by the first eager `VLLMEngine` on CPU, and left in place for the
process. Inside a torch.compile trace the wrappers call the kernel directly (`torch.compiler.is_compiling()`), so a
compiled engine later in the same process is unaffected. Nothing changes on GPUs.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from typing import Any, Protocol

import torch

# Up to this many tokens one thread was as fast as the pool or faster (each call after a 200 us pause, as
# between layers; 2-core VM, 2026-12-01, `scripts/ab_serial_kernels.py --kernel-sizes`): rotary 18-88 us on one
# thread against 28-121 us, the cache write 16-270 us against 26-327 us, for 16-512 tokens. At 1,024 the pool
# wins (cache write 384 and 349 us against 487 and 597 us in two runs).
MAX_SERIAL_TOKENS = 512


def _rotary_tokens(positions: Any, *args: Any, **kwargs: Any) -> int:
    """`rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox)`: one position per token
    ([tokens] or [batch, seq]; mrope's [3, tokens] counts 3x, which only makes the bound stricter)."""
    return int(positions.numel())


def _cache_write_tokens(key: Any, *args: Any, **kwargs: Any) -> int:
    """`cpu_attn_reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, isa, ...)`: key [tokens, ..]."""
    return int(key.shape[0])


# vllm._custom_ops function -> how many tokens a call covers (its first positional argument's shape).
SERIAL_KERNELS: dict[str, Callable[..., int]] = {
    "rotary_embedding": _rotary_tokens,
    "cpu_attn_reshape_and_cache": _cache_write_tokens,
}
_MARK = "_r1zero_serial_kernel"


class OpenMPThreads(Protocol):
    """The OpenMP thread count of the calling thread (`omp_get_max_threads` / `omp_set_num_threads`)."""

    def get(self) -> int: ...

    def set(self, threads: int) -> None: ...


class LibgompThreads:
    """`OpenMPThreads` of the libgomp already loaded in this process (torch's own copy)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._get, self._set = library.omp_get_max_threads, library.omp_set_num_threads
        self._get.restype, self._set.argtypes = ctypes.c_int, [ctypes.c_int]

    @classmethod
    def loaded(cls) -> LibgompThreads | None:
        """None when no libgomp is loaded (e.g. a torch built with another OpenMP runtime)."""
        try:
            return cls(ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY))
        except OSError:
            return None

    def get(self) -> int:
        return int(self._get())

    def set(self, threads: int) -> None:
        self._set(threads)


def on_one_thread(
    kernel: Callable[..., Any], tokens: Callable[..., int], threads: OpenMPThreads, max_tokens: int
) -> Callable[..., Any]:
    """`kernel` run with one OpenMP thread when its call covers at most `max_tokens` tokens, else unchanged.

    Example: with `threads.get() == 2`, a decode pass's call (16 tokens) runs under `threads.set(1)` and
    `threads.set(2)` follows; a 4,096-token prefill call runs on both threads.
    """

    @functools.wraps(kernel)
    def serial(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():  # traced into a graph: no ctypes calls there
            return kernel(*args, **kwargs)
        full = threads.get()
        if full <= 1 or tokens(*args, **kwargs) > max_tokens:
            return kernel(*args, **kwargs)
        try:
            threads.set(1)
            return kernel(*args, **kwargs)
        finally:
            threads.set(full)

    setattr(serial, _MARK, True)
    return serial


def serialize_small_kernels(
    ops: Any = None, threads: OpenMPThreads | None = None, max_tokens: int = MAX_SERIAL_TOKENS
) -> list[str]:
    """Wrap `SERIAL_KERNELS` in `ops` (default: `vllm._custom_ops`) with `on_one_thread`; idempotent.

    Returns the names wrapped now or before; empty when no libgomp is loaded or `ops` lacks them. Kernels
    wrapped before keep their `threads` and `max_tokens` (`restore_kernels` first to change them).
    """
    if ops is None:
        import vllm._custom_ops as ops
    threads = threads or LibgompThreads.loaded()
    if threads is None:
        return []
    wrapped = []
    for name, tokens in SERIAL_KERNELS.items():
        kernel = getattr(ops, name, None)
        if kernel is None:
            continue
        if not getattr(kernel, _MARK, False):
            setattr(ops, name, on_one_thread(kernel, tokens, threads, max_tokens))
        wrapped.append(name)
    return wrapped


def restore_kernels(ops: Any = None) -> None:
    """Undo `serialize_small_kernels` (for tests that compare both)."""
    if ops is None:
        import vllm._custom_ops as ops
    for name in SERIAL_KERNELS:
        kernel = getattr(ops, name, None)
        if kernel is not None and getattr(kernel, _MARK, False):
            setattr(ops, name, kernel.__wrapped__)
