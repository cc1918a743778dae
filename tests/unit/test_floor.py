"""The rollout floor's arithmetic (r1zero.bench.floor), against counts done by hand; the matrix-product replay."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

from r1zero.bench.floor import forward_bytes, forward_flops, matrix_products_seconds, roofline_seconds
from r1zero.bench.stats import ModelShape

# A 2-layer toy: hidden 4 (2 heads of 2), kv_dim 2 (1 kv head), per layer q 4x4 + k 4x2 + v 4x2 + o 4x4 +
# mlp 3 x 4x8 = 144 body parameters; head 10 x 4 = 40.
TOY = ModelShape(layers=2, hidden=4, intermediate=8, heads=2, kv_heads=1, head_dim=2, vocab=10)


def test_prefill_counts_every_token_in_the_body_and_only_sampled_rows_in_the_head() -> None:
    # 3 tokens of one sequence: pairs 1 + 2 + 3 = 6 (causal), one row to the head.
    # body 2*3*288 = 1728, head 2*1*40 = 80, attention 4*2*4*6 = 192.
    assert forward_flops(TOY, tokens=3, logit_rows=1, pairs=6) == 1728 + 80 + 192


def test_decode_step_reads_weights_once_and_the_kv_of_each_pair() -> None:
    # weights (288 + 40) * 4 = 1312 bytes; KV 2 * 2 layers * 2 * 10 pairs * 4 = 320 bytes.
    assert TOY.body_params == 2 * 144
    assert forward_bytes(TOY, pairs=10) == 1312 + 320
    assert forward_bytes(TOY, pairs=10, dtype_bytes=2) == (1312 + 320) / 2


def test_smollm2_decode_step_matches_the_docstring() -> None:
    smol = ModelShape(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64, vocab=49152)
    assert smol.body_params == 30 * (576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3)
    assert forward_flops(smol, 16, 16, 16 * 80) == pytest.approx(4.39e9, rel=1e-3)
    assert forward_bytes(smol, 16 * 80) == pytest.approx(597e6, rel=1e-3)


def test_roofline_is_the_slower_of_compute_and_memory() -> None:
    assert roofline_seconds(100.0, 10.0, peak_flops=10.0, bandwidth=100.0) == 10.0  # compute-bound
    assert roofline_seconds(1.0, 1000.0, peak_flops=10.0, bandwidth=100.0) == 10.0  # memory-bound
    with pytest.raises(ValueError):
        roofline_seconds(1.0, 1.0, peak_flops=0.0, bandwidth=1.0)


def test_matrix_products_replay_every_product_in_order_for_each_distinct_shape() -> None:
    calls: list[tuple[str, tuple[int, ...], torch.dtype]] = []

    def product(name: str, seconds: float = 0.0) -> Callable[[torch.Tensor], None]:
        def run(x: torch.Tensor) -> None:
            calls.append((name, tuple(x.shape), x.dtype))
            time.sleep(seconds)

        return run

    products = [(product("qkv"), 4), (product("down", 0.002), 8)]
    shapes = [(7, 2), (3, 3), (3, 3), (7, 2)]
    seconds = matrix_products_seconds(products, product("head"), 4, shapes, torch.float64, repeats=2)

    assert set(seconds) == {(3, 3), (7, 2)}

    # warm-up + 2 timed replays per distinct shape, smallest shape first, products in order then the head
    def replay(tokens: int, rows: int) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        f64 = torch.float64
        return [("qkv", (tokens, 4), f64), ("down", (tokens, 8), f64), ("head", (rows, 4), f64)]

    assert calls == replay(3, 3) * 3 + replay(7, 2) * 3
    assert all(s >= 0.002 for s in seconds.values())  # each replay sleeps 2 ms in "down"


def test_matrix_products_keep_the_best_replay() -> None:
    sleeps = iter([0.05, 0.05, 0.001, 0.05])  # warm-up, then replays of 50, 1 and 50 ms

    def slow_then_fast(x: torch.Tensor) -> None:
        time.sleep(next(sleeps))

    seconds = matrix_products_seconds(
        [(slow_then_fast, 2)], lambda h: None, 2, [(1, 1)], torch.float32, repeats=3
    )
    assert 0.001 <= seconds[(1, 1)] < 0.02  # the mean would be 34 ms
