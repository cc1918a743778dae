"""The arithmetic floor of a transformer forward pass on this machine: how fast the rollout could be.

A forward over M tokens of a decoder with P_body matrix parameters (every linear layer but the output head), whose
output head (P_head = vocab x hidden) runs on R rows (the positions whose next token is sampled), costs

    flops = 2 * M * P_body + 2 * R * P_head + 4 * layers * hidden * pairs

where `pairs` is the number of (query, key) pairs attention scores (sum over the M tokens of their context
length; QK^T and AV cost 2 * hidden each per pair and layer, grouped-query attention included). It must read its
weights once and the keys and values of those pairs:

    bytes = (P_body + P_head) * dtype_bytes + 2 * layers * kv_dim * pairs * dtype_bytes

and cannot take less than `roofline_seconds(flops, bytes, peak_flops, bandwidth)`: the larger of the time at
the machine's peak matrix-multiply rate and the time to stream those bytes from memory. Embedding lookups,
norms, activations and the sampler are left out (a few % of the flops), so the floor is a lower bound.

The shape is the bench's `r1zero.bench.stats.ModelShape` (P_body is its `body_params`, P_head vocab x hidden).
`measure_peak_flops` and `measure_bandwidth` measure the two rates with torch on this machine.
`matrix_products_seconds` times what the floor cannot see: a real engine's own matrix kernels alone, for the
passes a run made (small-M products that stream their weights reach neither rate at once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from r1zero.bench.stats import ModelShape

if TYPE_CHECKING:
    import torch


def forward_flops(shape: ModelShape, tokens: int, logit_rows: int, pairs: int) -> float:
    """Floating-point operations of one forward over `tokens` tokens, the head on `logit_rows` rows, attention
    over `pairs` (query, key) pairs.

    Example (SmolLM2-135M: 30 layers, hidden 576, 9 heads and 3 kv heads of 64, 106.2M body parameters, head
    49152 x 576 = 28.3M), one decode step of 16 sequences at context 80: tokens 16, rows 16, pairs 1280 ->
    2*16*106.2e6 + 2*16*28.3e6 + 4*30*576*1280 = 3.40e9 + 0.91e9 + 0.09e9 = 4.39e9.
    """
    attention = 4 * shape.layers * shape.heads * shape.head_dim * pairs
    return 2.0 * tokens * shape.body_params + 2.0 * logit_rows * _head_params(shape) + attention


def forward_bytes(shape: ModelShape, pairs: int, dtype_bytes: int = 4) -> float:
    """Bytes one forward must read at least: every weight once, and the keys and values of its attention pairs
    (weights and KV cache in a dtype of `dtype_bytes`).

    Example (SmolLM2-135M in fp32, the decode step above): 134.5e6 * 4 + 2*30*192*1280*4 = 538e6 + 59e6 = 597e6.
    """
    weights = (shape.body_params + _head_params(shape)) * dtype_bytes
    kv_dim = shape.kv_heads * shape.head_dim
    return weights + 2.0 * shape.layers * kv_dim * pairs * dtype_bytes


def _head_params(shape: ModelShape) -> int:
    return shape.vocab * shape.hidden


def roofline_seconds(flops: float, bytes_moved: float, peak_flops: float, bandwidth: float) -> float:
    """max(flops / peak_flops, bytes_moved / bandwidth): the time neither the arithmetic units nor memory allow
    beating. Example: 4.39e9 flops, 597e6 bytes at 125e9 flop/s and 27e9 B/s -> max(0.0351, 0.0221) = 0.0351 s."""
    if peak_flops <= 0 or bandwidth <= 0:
        raise ValueError(f"peak_flops and bandwidth must be > 0; got {peak_flops}, {bandwidth}")
    return max(flops / peak_flops, bytes_moved / bandwidth)


def matrix_products_seconds(
    products: Sequence[tuple[Callable[[torch.Tensor], object], int]],
    head: Callable[[torch.Tensor], object],
    hidden: int,
    shapes: Iterable[tuple[int, int]],
    dtype: torch.dtype,
    repeats: int = 3,
) -> dict[tuple[int, int], float]:
    """Seconds one forward's matrix products take alone, for each distinct (tokens, rows) of `shapes`: every
    `(product, in_features)` of `products`, in order, on a random [tokens, in_features] input, then `head` on a
    random [rows, hidden] input, back to back with nothing between them; best of `repeats` after a warm-up.

    With a model's linear layers as `products` (their own kernels and weights, so the weights stream from memory
    as in a real pass), this is the part of each pass that no engine change can take off.
    Example: shapes [(251, 16), (16, 16), (16, 16), (15, 16)] -> keys (15, 16), (16, 16), (251, 16); each value
    is the best of `repeats` replays of all the products for that shape (prefill 251 tokens, decode 16 and 15).
    """
    import torch

    best: dict[tuple[int, int], float] = {}
    with torch.inference_mode():
        for tokens, rows in sorted(set(shapes)):
            inputs = [torch.randn(tokens, in_features, dtype=dtype) for _, in_features in products]
            head_input = torch.randn(rows, hidden, dtype=dtype)

            def replay(inputs: list[torch.Tensor] = inputs, head_input: torch.Tensor = head_input) -> None:
                for (product, _), x in zip(products, inputs):
                    product(x)
                head(head_input)

            best[(tokens, rows)] = _best_seconds(replay, repeats)
    return best


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: thread pool, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_peak_flops(dtype: str = "float32", size: int = 2048, repeats: int = 12) -> float:
    """The machine's matrix-multiply rate (flop/s) with torch's current thread count: best of `repeats`
    size x size products (the shape the BLAS runs fastest; the small-M products of decoding get less)."""
    import torch

    a = torch.randn(size, size, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, dtype=getattr(torch, dtype))
    return 2.0 * size**3 / _best_seconds(lambda: a @ b, repeats)


def measure_bandwidth(mebibytes: int = 512, repeats: int = 12) -> float:
    """Memory read rate (bytes/s): best of `repeats` sums over a buffer far larger than any cache."""
    import torch

    buffer = torch.ones(mebibytes * 2**20 // 4, dtype=torch.float32)
    return buffer.numel() * 4 / _best_seconds(lambda: buffer.sum(), repeats)
