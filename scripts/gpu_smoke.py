"""Check a GPU box before a long run, in minutes: a GPU recipe's settings on the random `small` model under ZeRO-2
(then resumed), ZeRO-3, and the learner check (scripts/gpu_learner_check.py). Writes a JSON summary.

    bash scripts/gpu_smoke.sh                 # on the GPU box; rollout=vllm when vLLM imports, else rollout=hf
    bash scripts/gpu_smoke.sh --quick         # the same steps, shrunk to run on a CPU in a few minutes

Each run is `python -m r1zero.train` in its own process (as a user launches it): its exit code, wall time, last
rewards, worst per-step sync gap, and whether it ended with a process group left alive (NCCL's warning) go into
the summary (--out, default gpu_smoke.json). Exit status 1 when any step failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LEFT_ALIVE = "destroy_process_group() was not called"


def recipe_overrides(engine: str, quick: bool) -> list[str]:
    """The 3B Countdown recipe's settings (bf16, KL to a reference, gradient checkpointing) on a random model."""
    common = ["experiment=countdown_qwen2.5_3b", f"rollout={engine}", "eval.every=0", "log.samples_every=0"]
    if quick:  # CPU: the tiny model, fp32 (CPU bf16 kernels are slow), a few short samples
        return [*common, "model=tiny", "rollout.max_new_tokens=16", "rollout.prompts_per_step=2",
                "rollout.dtype=float32", "learner.precision=fp32", "task.num_eval=4", "eval.max_new_tokens=16",
                "learner.zero3_persistence_threshold=0"]  # fmt: skip
    return [
        *common,
        "model=small",
        "rollout.max_new_tokens=256",
        "task.num_eval=64",
        "eval.max_new_tokens=256",
    ]


def last_metrics(run_dir: Path) -> dict[str, Any]:
    """Steps done, last reward and the worst per-step sync gap from a run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "reward/mean" in r]
    gaps = [r["sync/step_logprob_max_abs_diff"] for r in steps if "sync/step_logprob_max_abs_diff" in r]
    return {
        "steps_logged": len(steps),
        "last_reward_mean": steps[-1]["reward/mean"] if steps else None,
        "max_step_sync_gap": max(gaps) if gaps else None,
    }


def run(name: str, command: list[str], log_dir: Path, run_dir: Path | None = None) -> dict[str, Any]:
    """Run `command`, its output to log_dir/<name>.log; what it did."""
    print(f"[gpu_smoke] {name}: {' '.join(command)}", flush=True)
    log = log_dir / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    text = log.read_text(errors="replace")
    result: dict[str, Any] = {
        "ok": code == 0,
        "exit_code": code,
        "wall_s": round(time.perf_counter() - start, 1),
        "process_group_left_alive": LEFT_ALIVE in text,
        "log": str(log),
    }
    if run_dir is not None:
        result |= last_metrics(run_dir)
    print(f"[gpu_smoke] {name}: {'ok' if code == 0 else f'FAILED (exit {code}), see {log}'} "
          f"in {result['wall_s']} s", flush=True)  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shrunk to run on a CPU (tests, a dry run)")
    parser.add_argument("--engine", choices=["vllm", "hf"], help="default: vllm when it imports, else hf")
    parser.add_argument("--out", default="gpu_smoke.json")
    parser.add_argument("--work-dir", help="run directories and logs (default: a temporary folder)")
    args = parser.parse_args()

    engine = args.engine or ("vllm" if importlib.util.find_spec("vllm") else "hf")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="r1zero-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    train = [sys.executable, "-m", "r1zero.train", *recipe_overrides(engine, args.quick)]
    first, resumed = (2, 3) if args.quick else (4, 6)
    zero2, zero3 = work / "zero2", work / "zero3"
    results: dict[str, Any] = {"engine": engine, "quick": args.quick, "work_dir": str(work), "steps": {}}
    steps = results["steps"]
    steps["zero2"] = run("zero2", [*train, f"steps={first}", f"run_dir={zero2}"], work, zero2)
    steps["zero2_resumed"] = run(
        "zero2_resumed", [*train, f"steps={resumed}", f"run_dir={zero2}"], work, zero2
    )
    steps["zero3"] = run("zero3", [*train, "learner=zero3", "steps=2", f"run_dir={zero3}"], work, zero3)
    check = [sys.executable, "scripts/gpu_learner_check.py", "--out", str(work / "learner_check.json")]
    if args.quick:
        check += ["--shape", "tiny", "--prompts", "2", "--group-size", "4", "--prompt-len", "32",
                  "--response-len", "64", "--steps", "1"]  # fmt: skip
    steps["learner_check"] = run("learner_check", check, work)
    if steps["learner_check"]["ok"]:
        steps["learner_check"]["result"] = json.loads((work / "learner_check.json").read_text())
    results["ok"] = all(s["ok"] and not s["process_group_left_alive"] for s in steps.values())
    results["ok"] = results["ok"] and steps["zero2_resumed"].get("steps_logged") == resumed
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"[gpu_smoke] {'all passed' if results['ok'] else 'FAILED'}; summary in {args.out}", flush=True)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
