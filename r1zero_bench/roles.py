"""r1zero-bench --roles: colocated against disaggregated training, side by side on this machine.

    r1zero-bench --roles                                  # CPU default settings, 12 steps per mode, no eval
    r1zero-bench --roles --steps 60 --eval                # the whole CPU default run per mode, held-out accuracy
    r1zero-bench --roles --modes colocated,k1 --override model=tiny --override task=countdown

Modes, each a fresh launch, one after the other, with the same seed and settings:
  colocated  one process with every thread (sampling and learning take turns on all cores);
  kN         torchrun with 2 processes, learner rank 0 and rollout worker rank 1, half the threads each,
             roles.max_staleness=N (k0 is synchronous, k1 generates the next step while this one trains).
A mode may carry its own overrides after "+", e.g. `k1+roles.read_ahead_mb=0`.

The table gives, per mode: the median step (step 1, start-up, left out), the learner's wait for samples, the
learner, the sync, the wall time, the mean policy lag, the training reward of the last 10 steps, the held-out
accuracy (with --eval), and whether every step's rewards equal the colocated run's (k0's must).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1zero.report import read_jsonl

# Settings every mode shares: no checkpoints (the final one is ~1.6 GB for SmolLM2), no sample tables.
_QUIET = ("checkpoint.every=0", "checkpoint.save_final_model=false", "log.samples_every=0")


def command(mode: str, run_dir: Path, steps: int, evaluate: bool, overrides: Sequence[str], threads: int = 2
            ) -> list[str]:  # fmt: skip
    """The launch of one mode. `mode`: "colocated" or "k<N>", optionally "+override+override..."."""
    name, *own = mode.split("+")
    args = [f"steps={steps}", f"run_dir={run_dir}", *_QUIET, *overrides]
    if not evaluate:
        args += ["eval.at_start_and_end=false", "eval.every=0"]
    args += own
    if name == "colocated":
        return [sys.executable, "-m", "r1zero.train", f"cpu_threads={threads}", *args]
    if not re.fullmatch(r"k\d+", name):
        raise ValueError(f"unknown mode {name!r}: use colocated or k<max_staleness> (k0, k1, ...)")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "r1zero.train", "roles.mode=disaggregated", "roles.rollout_workers=1",
            f"roles.max_staleness={name[1:]}", f"cpu_threads={max(1, threads // 2)}", *args]  # fmt: skip


def summarize(mode: str, rows: Sequence[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """One run's metrics.jsonl rows -> medians over steps 2.. (all steps if there is one), means and rewards."""
    steps = [r for r in rows if "perf/step_s" in r]
    if not steps:
        raise ValueError(f"{mode}: the run logged no step")
    timed = steps[1:] or steps

    def median(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in timed)

    evals = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
    return {
        "mode": mode, "steps": len(steps), "wall_s": wall_s,
        "step_s": median("perf/step_s"), "rollout_s": median("perf/rollout_s"),
        "learner_s": median("perf/learner_s"), "sync_s": median("perf/sync_s"),
        "lag": statistics.mean(r.get("rollout/policy_version_lag", 0.0) for r in steps),
        "reward_last10": statistics.mean(r["reward/mean"] for r in steps[-10:]),
        "eval_first": evals[0] if evals else None, "eval_last": evals[-1] if evals else None,
        "rewards": [r["reward/mean"] for r in steps],
    }  # fmt: skip


def merge(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One mode's rounds: the median of each time over the rounds; rewards, lag and accuracies from round 1."""
    out = dict(runs[0])
    for key in ("step_s", "rollout_s", "learner_s", "sync_s", "wall_s"):
        out[key] = statistics.median(r[key] for r in runs)
    out["rounds"] = [r["step_s"] for r in runs]
    return out


def render(results: Sequence[dict[str, Any]]) -> str:
    """The markdown table, with each mode's step against colocated's when colocated ran."""
    reference = next((r for r in results if r["mode"] == "colocated"), None)
    lines = [
        "| mode | median step s (per round) | rollout wait | learner | sync | wall s | mean lag | "
        "reward, last 10 steps | held-out | rewards = colocated |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        held = f"{r['eval_first']:.3f} -> {r['eval_last']:.3f}" if r["eval_first"] is not None else "-"
        other = reference is not None and r is not reference
        same = ("yes" if r["rewards"] == reference["rewards"] else "no") if other and reference else "-"
        ratio = f" ({r['step_s'] / reference['step_s']:.2f}x)" if other and reference else ""
        rounds = "/".join(f"{x:.2f}" for x in r["rounds"])
        lines.append(
            f"| {r['mode']} | {r['step_s']:.2f}{ratio} ({rounds}) | {r['rollout_s']:.2f} | {r['learner_s']:.2f} | "
            f"{r['sync_s']:.2f} | {r['wall_s']:.0f} | {r['lag']:.2f} | {r['reward_last10']:.3f} | {held} | {same} |"
        )
    return "\n".join(lines)


def compare_roles(modes: Sequence[str], *, steps: int, evaluate: bool, rounds: int, overrides: Sequence[str],
                  workdir: Path, threads: int = 2) -> list[dict[str, Any]]:  # fmt: skip
    """Run every mode `rounds` times (the order reversed every other round, so a drift in machine speed hits all
    alike), printing a JSON line per run; returns one merged result per mode, in `modes` order."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    for mode in modes:
        command(mode, workdir, steps, evaluate, overrides)  # an unknown mode fails before any run
    runs: list[dict[str, Any]] = []
    order = [(k, m) for k in range(rounds) for m in (modes if k % 2 == 0 else list(reversed(modes)))]
    for k, mode in order:
        # a folder name Hydra takes as run_dir (no "=")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", mode) + f"-r{k}"
        run_dir, log = workdir / name, workdir / f"{name}.log"
        print(f"[bench] roles: {mode}, round {k + 1} of {rounds} (log: {log})", flush=True)
        started = time.perf_counter()
        with open(log, "w") as out:
            argv = command(mode, run_dir, steps, evaluate, overrides, threads)
            proc = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} failed (exit {proc.returncode}); see {log}")
        rows = read_jsonl(run_dir / "metrics.jsonl")  # none: summarize says the run logged no step
        runs.append(summarize(mode, rows, time.perf_counter() - started))
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "rewards"}), flush=True)
    return [merge([r for r in runs if r["mode"] == mode]) for mode in modes]
