"""A/B of `r1zero.rollout.serial_kernels` on the CPU default's rollout, in pairs (issue #16, item 1).

    .venv/bin/python scripts/ab_serial_kernels.py            # 16 steps
    .venv/bin/python scripts/ab_serial_kernels.py --steps 8 -- rollout.group_size=8
    .venv/bin/python scripts/ab_serial_kernels.py --kernel-sizes   # the two kernels alone, 16-2,048 tokens

One eager engine samples each step's prompts (seeded as the training loop seeds them) twice, back to back: with
rotary embedding and KV-cache writes on one OpenMP thread (r1zero's default) and on the whole pool, the order
alternating from step to step and the prefix cache emptied before each, so both halves of a pair compute the
same tokens on the same machine state. Checks that the two samples are identical and prints the per-step
seconds, their medians and the per-pair ratios. `--kernel-sizes` times each kernel alone on one thread and on
the pool for growing token counts (SmolLM2-135M's shapes, each call after a 200 us pause as between layers): where
one thread stops paying is `MAX_SERIAL_TOKENS`. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--kernel-sizes", action="store_true", help="time the two kernels alone instead")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config (after --)")
    args = parser.parse_args(argv)
    if args.kernel_sizes:
        return kernel_sizes()

    from r1zero.env import setup_environment

    setup_environment()
    import torch

    from r1zero.models import resolve_model
    from r1zero.rollout.base import SamplingSettings, step_seed
    from r1zero.rollout.serial_kernels import restore_kernels, serialize_small_kernels
    from r1zero.rollout.vllm_engine import VLLMEngine
    from r1zero_bench.loops import compose_config, step_prompts

    cfg = compose_config(args.overrides)
    torch.set_num_threads(cfg.cpu_threads if cfg.cpu_threads > 0 else os.cpu_count() or 1)
    engine = VLLMEngine.from_config(
        resolve_model(cfg.model.name), cfg.rollout, seed=cfg.seed, enforce_eager=True
    )
    prompts = step_prompts(cfg, engine.tokenizer, args.steps + 1)

    def sample(step: int, serial: bool) -> tuple[float, list[list[int]]]:
        if serial:
            serialize_small_kernels()
        else:
            restore_kernels()
        engine._llm.reset_prefix_cache()
        sampling = SamplingSettings.from_config(cfg.rollout, seed=step_seed(cfg.seed, step))
        started = time.perf_counter()
        rows = engine.generate(prompts[step], sampling)
        return time.perf_counter() - started, [row.token_ids for row in rows]

    for serial in (True, False):  # warm-up
        sample(0, serial)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for step in range(1, args.steps + 1):
        tokens = {}
        for serial in (True, False) if step % 2 else (False, True):
            took, tokens[serial] = sample(step, serial)
            seconds[serial].append(took)
        if tokens[True] != tokens[False]:
            raise SystemExit(f"step {step}: the two samples differ")
        print(f"step {step:3d}: one thread {seconds[True][-1]:.3f} s, pool {seconds[False][-1]:.3f} s")
    serialize_small_kernels()
    engine.close()
    ratios = [a / b for a, b in zip(seconds[True], seconds[False], strict=True)]
    result = {
        "steps": args.steps,
        "one_thread_median_s": statistics.median(seconds[True]),
        "pool_median_s": statistics.median(seconds[False]),
        "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "one_thread_faster": sum(r < 1 for r in ratios),
    }
    print(json.dumps(result))
    return 0


def kernel_sizes(sizes: tuple[int, ...] = (16, 64, 256, 512, 1024, 2048)) -> int:
    """Median microseconds of rotary embedding and the KV-cache write, pool against one thread, per token count."""
    from r1zero.env import setup_environment

    setup_environment()
    import torch
    import vllm._custom_ops as ops

    from r1zero.rollout.serial_kernels import LibgompThreads

    threads = LibgompThreads.loaded()
    if threads is None:
        raise SystemExit("no libgomp loaded: nothing to compare")
    pool = threads.get()
    try:
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        isa = _get_attn_isa(torch.float32, 32, 64)
    except ImportError:
        isa = "vec"
    blocks, heads, kv_heads, head_dim = 512, 9, 3, 64  # SmolLM2-135M; 32-token KV blocks
    kv_cache = torch.zeros(blocks, kv_heads, 32, 2 * head_dim).view(blocks, kv_heads, 64, -1)
    key_cache, value_cache = kv_cache.chunk(2, dim=2)
    cos_sin = torch.randn(4096, head_dim)

    def median_us(call: Any, count: int = 300) -> float:
        for _ in range(20):
            call()
        seconds = []
        for _ in range(count):
            time.sleep(0.0002)  # the other core goes idle, as between layers
            started = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - started)
        return 1e6 * statistics.median(seconds)

    print(f"{'tokens':>6} | rotary: pool, one thread (us) | cache write: pool, one thread (us)")
    for n in sizes:
        positions = torch.arange(n) % 4096
        query, key = torch.randn(n, heads * head_dim), torch.randn(n, kv_heads * head_dim)
        keys, values = torch.randn(n, kv_heads, head_dim), torch.randn(n, kv_heads, head_dim)
        slots = torch.randperm(blocks * 32)[:n]
        calls = (
            functools.partial(ops.rotary_embedding, positions, query, key, head_dim, cos_sin, True),
            functools.partial(
                ops.cpu_attn_reshape_and_cache, keys, values, key_cache, value_cache, slots, isa
            ),
        )
        row = []
        for call in calls:
            for count in (pool, 1):
                threads.set(count)
                try:
                    row.append(median_us(call))
                finally:
                    threads.set(pool)
        print(f"{n:6d} | {row[0]:8.1f} {row[1]:8.1f} | {row[2]:8.1f} {row[3]:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
