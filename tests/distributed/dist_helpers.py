"""Helpers for the multi-process tests (imported by them as `dist_helpers`): a clean environment for child
processes, launch commands, metrics comparison."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import LAUNCHER_VARS

ROOT = Path(__file__).resolve().parents[2]
FAULT_HOOK = Path(__file__).resolve().parent / "fault_hook"

# The tiny random-init model scores reward 0 on everything, so its advantages are 0 and the policy loss carries no
# gradient. The k1 KL term to the reference model has a non-zero gradient (that of the sampled tokens' logprob)
# from step 1 on: weights move, the sync and the next steps' sampling depend on the learner's exact result.
TINY = [
    "model=tiny",
    "task=countdown",
    "rollout.prompts_per_step=4",
    "rollout.group_size=4",
    "rollout.max_new_tokens=24",
    "task.num_train=64",
    "task.num_eval=4",
    "learner.lr=1e-3",
    "algo.kl_coef=0.1",
    "algo.kl_kind=k1",
    "log.samples_every=1",
    "cpu_threads=1",
    "checkpoint.save_final_model=false",
]

# What must agree between a W-process run and a 1-process run of the same global batch and seed: everything
# computed from the sampled tokens and rewards exactly; the learner's figures up to float summation order
# (gradients are all-reduced in another order; measured: up to 1.5e-5 relative, on loss/kl at step 2).
EXACT = ("reward/", "rollout/", "aha/", "algo/", "eval/")
LOSS_REL, LOSS_ABS = 1e-4, 1e-7


def child_env(**extra: str) -> dict[str, str]:
    """This environment minus any launcher variables (an in-process run may have set RANK=0 here), plus extra."""
    drop = (*LAUNCHER_VARS, "R1ZERO_FAULT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_", "SUBMITIT_"))}
    # fault_hook/sitecustomize.py: the R1ZERO_FAULT hook, active in a child only when extra sets R1ZERO_FAULT
    env["PYTHONPATH"] = os.pathsep.join([str(FAULT_HOOK), str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    env.setdefault("PYTHONFAULTHANDLER", "1")  # a native abort (SIGABRT) prints every thread's Python stack
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def train_module() -> list[str]:
    return ["-m", "r1zero.train"]


def run_checked(cmd: Sequence[str], log: Path, timeout: float = 300, **env: str) -> float:
    """Run `cmd` (cwd = repo root) to completion; fail with the log's tail if it fails. Returns seconds."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=child_env(**env), stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}; log tail:\n{log.read_text()[-4000:]}")
    return time.perf_counter() - start


def metrics_of(run_dir: Path) -> dict[int, dict]:
    """Step -> the step's training metrics; eval rows under key -step - 1 (eval at 0 -> -1)."""
    out: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "reward/mean" in row:
            out[row["step"]] = row
        elif "eval/accuracy" in row:
            out[-row["step"] - 1] = row
    return out


def samples_of(run_dir: Path) -> dict[int, list[str]]:
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    out: dict[int, list[str]] = {}
    for row in rows:
        out.setdefault(row["step"], []).append(row["completion"])
    return out


def compare_runs(reference: Path, other: Path, steps: Sequence[int]) -> dict[str, tuple[float, float]]:
    """Assert that `other` agrees with `reference` on `steps` (-1: the eval before step 1; see EXACT / LOSS_*),
    and sampled the same completions (samples.jsonl); returns the largest
    (abs, rel) difference per metric, for the record."""
    ref, got = metrics_of(reference), metrics_of(other)
    ref_samples, got_samples = samples_of(reference), samples_of(other)
    worst: dict[str, tuple[float, float]] = {}
    for step in steps:
        assert step in got, f"step {step} missing in {other}"
        if step > 0:
            assert got_samples[step] == ref_samples[step], f"step {step}: other completions were sampled"
        for key, value in ref[step].items():
            if not key.startswith((*EXACT, "loss/")) or key.startswith("eval/n"):
                continue
            assert key in got[step], (step, key)
            if key.startswith("loss/"):
                assert got[step][key] == pytest.approx(value, rel=LOSS_REL, abs=LOSS_ABS), (step, key)
            else:
                assert got[step][key] == value, (step, key)
            diff = abs(got[step][key] - value)
            rel = diff / abs(value) if value else 0.0
            old = worst.get(key, (0.0, 0.0))
            worst[key] = (max(old[0], diff), max(old[1], rel))
    return worst


def report(name: str, worst: dict[str, tuple[float, float]]) -> None:
    """Print the agreement figures (visible with pytest -s, and in the test's captured output on failure)."""
    nonzero = {k: v for k, v in sorted(worst.items()) if v[0] > 0}
    print(f"\n[{name}] exact on {len(worst) - len(nonzero)} metrics; differing:")
    for key, (diff, rel) in nonzero.items():
        print(f"  {key:40s} max abs {diff:.3g}  max rel {rel:.3g}")
