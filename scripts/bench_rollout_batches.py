"""Rollout speed of the CPU engine's scheduler settings, side by side: the CPU default batch and a 32x8 batch.

    .venv/bin/python scripts/bench_rollout_batches.py            # ~10-20 min on 2 busy cores
    .venv/bin/python scripts/bench_rollout_batches.py --rounds 1 --large-reps 1

Compares vLLM's default scheduler (chunked prefill on, 4096 batched tokens: what r1zero used before issue #18)
with r1zero's CPU settings (`r1zero.rollout.vllm_engine.cpu_scheduler_settings`: chunked prefill off). Each
setting runs in a fresh process, alternating A B / B A over the rounds. Timed: `VLLMEngine.generate` on the CPU
default run's prompts (SmolLM2-135M, arithmetic_chat, fp32, 32 new tokens), 4 prompts x 4 samples and 32 x 8.
The chunked setting cannot sample a seeded 32x8 batch (the crash of #18), so both settings also time that batch
unseeded, which is the like-for-like comparison; the seeded time of the fix is reported next to it.
Prints one JSON line per process and summary tables (medians) of wall and CPU seconds: on a machine shared with
other jobs the process's CPU time (all its threads) moves much less than its wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

SETTINGS = {
    "chunked": {"enable_chunked_prefill": True, "max_num_batched_tokens": 4096},  # vLLM's CPU default
    "fix": {},  # the engine's own CPU settings
}


def _digest(rows: list[Any]) -> str:
    return hashlib.sha256(json.dumps([c.token_ids for c in rows]).encode()).hexdigest()[:12]


def child(setting: str, small_reps: int, large_reps: int) -> dict[str, Any]:
    from r1zero.env import setup_environment

    setup_environment()
    from transformers import AutoTokenizer

    from r1zero.bench.loops import compose_config, step_prompts
    from r1zero.models import resolve_model
    from r1zero.rollout.base import SamplingSettings, tokenize_prompts
    from r1zero.rollout.engines import build_engine

    cfg = compose_config(["rollout.prompts_per_step=32"])  # the CPU default experiment, 32 prompts drawn
    model_path = resolve_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompts = step_prompts(cfg, tokenizer, 1)[0]
    lengths = [len(ids) for ids in tokenize_prompts(tokenizer, prompts)]
    engine = build_engine(model_path, cfg.rollout, seed=cfg.seed, **SETTINGS[setting])
    llm = engine._llm  # type: ignore[attr-defined]
    sched = llm.llm_engine.vllm_config.scheduler_config
    batches = {
        "4x4_seeded": (prompts[:4], 4, 7),
        "32x8_unseeded": (prompts, 8, None),
        "32x8_seeded": (prompts, 8, 7),
    }
    if setting == "chunked":
        del batches["32x8_seeded"]  # RuntimeError: CPU Generator does not use offset
    out: dict[str, Any] = {
        "setting": setting,
        "chunked_prefill": sched.enable_chunked_prefill,
        "max_num_batched_tokens": sched.max_num_batched_tokens,
        "prompt_tokens_mean": statistics.mean(lengths),
        "prompt_tokens_32x8": 8 * sum(lengths),
    }
    engine.generate(prompts[:4], SamplingSettings(n=4, max_new_tokens=32, seed=1))  # warm-up
    for name, (batch, group, seed) in batches.items():
        times, cpu, digests, tokens = [], [], set(), 0
        for _ in range(small_reps if name.startswith("4x4") else large_reps):
            llm.reset_prefix_cache()  # every repetition starts cold, as a training step after a weight push
            start, cpu_start = time.perf_counter(), time.process_time()
            rows = engine.generate(batch, SamplingSettings(n=group, max_new_tokens=32, seed=seed))
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
            digests.add(_digest(rows))
            tokens = sum(len(c.token_ids) for c in rows)
        out[name] = {
            "s": times,
            "cpu_s": cpu,
            "tokens": tokens,
            "digest": sorted(digests) if seed is not None else None,
        }
    engine.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--small-reps", type=int, default=3)
    parser.add_argument("--large-reps", type=int, default=2)
    parser.add_argument("--child", choices=sorted(SETTINGS))
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.small_reps, args.large_reps)), flush=True)
        return
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        for setting in ("chunked", "fix") if r % 2 == 0 else ("fix", "chunked"):
            cmd = [sys.executable, __file__, "--child", setting, "--small-reps", str(args.small_reps)]
            cmd += ["--large-reps", str(args.large_reps)]
            load = os.getloadavg()[0]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.exit(f"{setting} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
            row = json.loads(lines[-1][len("RESULT ") :]) | {"round": r, "load_before": load}
            print(json.dumps(row), flush=True)
            results[setting].append(row)
    print(f"\nload average now: {os.getloadavg()}")
    print("| batch | " + " | ".join(f"{s} median s (all)" for s in SETTINGS) + " |")
    for batch in ("4x4_seeded", "32x8_unseeded", "32x8_seeded"):
        cells = []
        for setting in SETTINGS:
            times = [t for row in results[setting] if batch in row for t in row[batch]["s"]]
            cells.append(
                f"{statistics.median(times):.2f} ({', '.join(f'{t:.2f}' for t in times)})"
                if times
                else "crash"
            )
        print(f"| {batch} | " + " | ".join(cells) + " |")
    same = {s: {json.dumps(row["4x4_seeded"]["digest"]) for row in results[s]} for s in SETTINGS}
    print(f"4x4 seeded samples: {same}")


if __name__ == "__main__":
    main()
