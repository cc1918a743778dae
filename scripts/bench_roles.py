"""Colocated vs disaggregated (issue 15), side by side on this machine: step times, phases, and what was learned.

    .venv/bin/python scripts/bench_roles.py                      # CPU default settings, 12 steps per mode, no eval
    .venv/bin/python scripts/bench_roles.py --steps 60 --eval    # the full CPU default run per mode (held-out acc)
    .venv/bin/python scripts/bench_roles.py --modes colocated,k1 -- model=tiny task=countdown

Modes (each a fresh launch, one after the other, same seed and settings):
  colocated  one process, cpu_threads=2 (sampling and learning alternate on both cores);
  k0, k1...  torchrun with 2 processes: learner rank 0 + rollout worker rank 1, one thread each,
             roles.max_staleness=k (k0 is synchronous, k1 overlaps the next step's generation with training).
Prints a JSON line per run and a table: median step, rollout (the learner's wait for samples), learner, sync,
wall, mean policy lag, train reward of the last 10 steps, held-out accuracy (with --eval), and whether each
step's rewards equal the colocated run's (they must for k0). Step 1 (start-up effects) is left out of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def command(mode: str, run_dir: Path, steps: int, evaluate: bool, extra: list[str]) -> list[str]:
    overrides = [f"steps={steps}", f"run_dir={run_dir}", "checkpoint.every=0", "checkpoint.save_final_model=false",
                 "log.samples_every=0", *extra]  # fmt: skip
    if not evaluate:
        overrides += ["eval.at_start_and_end=false", "eval.every=0"]
    mode, *own = mode.split("+")  # e.g. k1+roles.read_ahead_mb=0: that mode's own overrides
    overrides += own
    if mode == "colocated":
        return [sys.executable, "-m", "r1zero.train", "cpu_threads=2", *overrides]
    k = int(mode.removeprefix("k"))
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "r1zero.train", "roles.mode=disaggregated", "roles.rollout_workers=1",
            f"roles.max_staleness={k}", "cpu_threads=1", *overrides]  # fmt: skip


def summarize(mode: str, run_dir: Path, wall: float) -> dict[str, Any]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "perf/step_s" in r]
    timed = steps[1:] or steps

    def median(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in timed)

    evals = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
    last = steps[-10:]
    return {
        "mode": mode, "steps": len(steps), "wall_s": round(wall, 1),
        "step_s": median("perf/step_s"), "rollout_s": median("perf/rollout_s"),
        "learner_s": median("perf/learner_s"), "sync_s": median("perf/sync_s"),
        "lag": statistics.mean(r.get("rollout/policy_version_lag", 0.0) for r in steps),
        "reward_last10": statistics.mean(r["reward/mean"] for r in last),
        "eval_first": evals[0] if evals else None, "eval_last": evals[-1] if evals else None,
        "rewards": [r["reward/mean"] for r in steps],
    }  # fmt: skip


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's rounds: medians of the per-run medians (a run's rewards, lag and accuracies are the same
    across rounds for a deterministic mode; the first round's are kept)."""
    out = dict(runs[0])
    for key in ("step_s", "rollout_s", "learner_s", "sync_s", "wall_s"):
        out[key] = statistics.median(r[key] for r in runs)
    out["rounds"] = [round(r["step_s"], 2) for r in runs]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", default="colocated,k0,k1")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--eval", action="store_true", help="held-out accuracy before and after (eval settings)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the modes this many times, alternating order"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every mode (after --)")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench_roles_"))
    base.mkdir(parents=True, exist_ok=True)
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    results = []
    modes = args.modes.split(",")
    order = [(r, m) for r in range(args.rounds) for m in (modes if r % 2 == 0 else modes[::-1])]
    for round_index, mode in order:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", mode)  # a folder name Hydra can take as run_dir (no "=")
        run_dir = base / f"{name}-r{round_index}"
        log = base / f"{name}-r{round_index}.log"
        started = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.run(command(mode, run_dir, args.steps, args.eval, args.overrides), cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, check=False)  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"{mode} failed ({proc.returncode}); see {log}")
        result = summarize(mode, run_dir, time.perf_counter() - started)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the final step's (~1.6 GB for SmolLM2)
        print(json.dumps(result), flush=True)
        results.append(result)
    results = [merge([r for r in results if r["mode"] == mode]) for mode in modes]
    reference = next((r for r in results if r["mode"] == "colocated"), None)
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()[0]
    where = f"; runs in {base}" if args.keep else ""
    print(f"\n{os.cpu_count()} CPUs, load average (1 min) at the end {load:.2f}{where}")
    print("| mode | median step s (per round) | rollout wait | learner | sync | wall s | mean lag | reward, last 10 steps | "
          "held-out | rewards = colocated |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        held = f"{r['eval_first']:.3f} -> {r['eval_last']:.3f}" if r["eval_first"] is not None else "-"
        same = (
            "-"
            if reference is None or r is reference
            else ("yes" if r["rewards"] == reference["rewards"] else "no")
        )
        ratio = f" ({r['step_s'] / reference['step_s']:.2f}x)" if reference and r is not reference else ""
        rounds = "/".join(f"{x:.2f}" for x in r["rounds"])
        print(f"| {r['mode']} | {r['step_s']:.2f}{ratio} ({rounds}) | {r['rollout_s']:.2f} | {r['learner_s']:.2f} | "
              f"{r['sync_s']:.2f} | {r['wall_s']:.0f} | {r['lag']:.2f} | {r['reward_last10']:.3f} | {held} | {same} |")  # fmt: skip


if __name__ == "__main__":
    main()
