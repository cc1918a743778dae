"""Evaluation with fewer problems than learner ranks in disaggregated mode (issue 34, item 6): 2 learner ranks,
2 rollout workers, 1 eval problem. Learner rank 1's share is empty; it must still join the engine's collective
generate, or its records gather pairs with rank 0's gather inside `submit` (it failed: "learner rank 1 failed
in phase eval at step 0: TypeError")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dist_helpers import TINY, run_checked, torchrun, train_module

pytestmark = pytest.mark.distributed


def test_one_eval_problem_over_two_learner_ranks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [*torchrun("--standalone", "--nproc_per_node", "4"), *train_module(), *TINY, "roles.mode=disaggregated",
           "roles.rollout_workers=2", "roles.max_staleness=0", "steps=1", "task.num_eval=1", "dist.timeout_s=60",
           "checkpoint.save_final_model=false", f"run_dir={run_dir}"]  # fmt: skip
    log = tmp_path / "run.log"
    run_checked(cmd, log, timeout=600)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/num_problems" in row]
    assert [(row["step"], row["eval/num_problems"]) for row in evals] == [(0, 1.0), (1, 1.0)]
    # the one problem went to replica 0 (start, step 1's round, end); replica 1 sampled its half of step 1 only
    assert "rollout worker 0 (rank 2): 3 generate" in log.read_text()
    assert "rollout worker 1 (rank 3): 1 generate" in log.read_text()
