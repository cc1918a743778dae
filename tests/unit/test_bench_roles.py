"""r1zero-bench --roles (r1zero_bench.roles): the launches it makes, and its medians and table against values
worked out by hand. The launches themselves run in tests/distributed/test_disaggregated.py (k0 equals colocated)
and, end to end through the bench, in the slow test at the bottom."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1zero_bench.roles import command, merge, render, summarize


def test_command_per_mode(tmp_path: Path) -> None:
    colocated = command("colocated", tmp_path, 5, False, ["model=tiny"])
    assert colocated[1:3] == ["-m", "r1zero.train"]
    assert "cpu_threads=2" in colocated and "steps=5" in colocated and "model=tiny" in colocated
    assert "eval.at_start_and_end=false" in colocated and "checkpoint.every=0" in colocated
    k1 = command("k1+roles.read_ahead_mb=0", tmp_path, 5, True, [], threads=4)
    assert k1[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node" in k1
    assert "roles.max_staleness=1" in k1 and "roles.mode=disaggregated" in k1 and "cpu_threads=2" in k1
    assert k1[-1] == "roles.read_ahead_mb=0"  # the mode's own override comes last, so it wins
    assert not any(a.startswith("eval.") for a in k1)  # --eval keeps the config's evaluation
    with pytest.raises(ValueError, match="unknown mode"):
        command("overlapped", tmp_path, 5, False, [])


def _rows(step_s: list[float], rewards: list[float]) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = [{"step": 0, "eval/accuracy": 0.25}]
    for i, (s, r) in enumerate(zip(step_s, rewards, strict=True), start=1):
        rows.append({"step": i, "perf/step_s": s, "perf/rollout_s": s / 2, "perf/learner_s": s / 4,
                     "perf/sync_s": 0.1, "reward/mean": r, "rollout/policy_version_lag": i % 2})  # fmt: skip
    rows.append({"step": len(step_s), "eval/accuracy": 0.5})
    return rows


def test_summarize_leaves_out_step_one() -> None:
    out = summarize("k1", _rows([50.0, 4.0, 2.0, 3.0], [0.0, 0.5, 1.0, 0.5]), wall_s=60.0)
    assert out["step_s"] == 3.0  # median of 4, 2, 3: the 50 s start-up step is left out
    assert out["rollout_s"] == 1.5 and out["learner_s"] == 0.75 and out["sync_s"] == 0.1
    assert out["lag"] == 0.5  # lags 1, 0, 1, 0 over all four steps
    assert out["reward_last10"] == 0.5  # mean of 0, 0.5, 1, 0.5
    assert (out["eval_first"], out["eval_last"], out["steps"]) == (0.25, 0.5, 4)
    assert summarize("k0", _rows([7.0], [1.0]), 8.0)["step_s"] == 7.0  # one step: it is all there is
    with pytest.raises(ValueError, match="no step"):
        summarize("k0", [{"eval/accuracy": 0.1}], 1.0)


def test_merge_and_render() -> None:
    a = summarize("colocated", _rows([9.0, 4.0, 4.0], [0.0, 0.5, 1.0]), 30.0)
    b = summarize("colocated", _rows([9.0, 6.0, 6.0], [0.0, 0.5, 1.0]), 40.0)
    c = summarize("colocated", _rows([9.0, 5.0, 5.0], [0.0, 0.5, 1.0]), 35.0)
    colocated = merge([a, b, c])
    assert (
        colocated["step_s"] == 5.0 and colocated["wall_s"] == 35.0 and colocated["rounds"] == [4.0, 6.0, 5.0]
    )
    k0 = merge([summarize("k0", _rows([9.0, 10.0, 10.0], [0.0, 0.5, 1.0]), 50.0)])
    k1 = merge([summarize("k1", _rows([9.0, 4.0, 4.0], [0.0, 0.25, 1.0]), 30.0)])
    table = render([colocated, k0, k1]).splitlines()
    assert table[2].startswith("| colocated | 5.00 (4.00/6.00/5.00) |") and table[2].endswith("| - |")
    assert table[3].startswith("| k0 | 10.00 (2.00x) (10.00) |") and table[3].endswith("| yes |")
    assert table[4].startswith("| k1 | 4.00 (0.80x) (4.00) |") and table[4].endswith("| no |")
    assert "0.250 -> 0.500" in table[2]


@pytest.mark.slow
@pytest.mark.distributed
def test_bench_roles_end_to_end(tmp_path: Path) -> None:
    """The subcommand as a user runs it, on the tiny model: k0's rewards equal colocated's, step by step."""
    out = tmp_path / "roles.json"
    argv = [sys.executable, "-m", "r1zero_bench", "--roles", "--modes", "colocated,k0", "--steps", "3",
            "--override", "model=tiny", "--override", "task=countdown", "--out", str(out),
            "--workdir", str(tmp_path / "w")]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    roles = json.loads(out.read_text())["roles"]
    assert [r["mode"] for r in roles] == ["colocated", "k0"] and all(r["steps"] == 3 for r in roles)
    assert roles[0]["rewards"] == roles[1]["rewards"]
    assert "| k0 |" in proc.stdout and "| yes |" in proc.stdout
