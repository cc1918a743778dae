"""A/B of `r1zero.rollout.serial_kernels` on the CPU default's rollout, in pairs (issue #16, item 1).

    .venv/bin/python scripts/ab_serial_kernels.py            # 16 steps
    .venv/bin/python scripts/ab_serial_kernels.py --steps 8 -- rollout.group_size=8

One eager engine samples each step's prompts (seeded as the training loop seeds them) twice, back to back: with
rotary embedding and KV-cache writes on one OpenMP thread (r1zero's default) and on the whole pool, the order
alternating from step to step and the prefix cache emptied before each, so both halves of a pair compute the
same tokens on the same machine state. Checks that the two samples are identical and prints the per-step
seconds, their medians and the per-pair ratios. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config (after --)")
    args = parser.parse_args(argv)

    from r1zero.env import setup_environment

    setup_environment()
    import torch

    from r1zero.bench.loops import compose_config, step_prompts
    from r1zero.models import resolve_model
    from r1zero.rollout.base import SamplingSettings
    from r1zero.rollout.serial_kernels import restore_kernels, serialize_small_kernels
    from r1zero.rollout.vllm_engine import VLLMEngine

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
        sampling = SamplingSettings.from_config(cfg.rollout, seed=cfg.seed * 1_000_003 + step)
        started = time.perf_counter()
        rows = engine.generate(prompts[step], sampling)
        return time.perf_counter() - started, [row.token_ids for row in rows]

    sample(0, True), sample(0, False)  # warm-up
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


if __name__ == "__main__":
    sys.exit(main())
