"""Ctrl-C during a run: the current step finishes, a checkpoint is written, the process exits 0 with a message,
and the same command resumes from that checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _steps_logged(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def test_sigint_checkpoints_and_exits_zero(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "r1zero.train",
        "model=tiny",
        "task=countdown",
        "learner=torch",
        "steps=200",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "rollout.max_new_tokens=16",
        "eval.at_start_and_end=false",
        "checkpoint.every=1000",
        f"run_dir={run_dir}",
    ]
    log_file = (tmp_path / "out.log").open("w+")
    proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, text=True, env=os.environ)
    try:
        deadline = time.time() + 420
        while time.time() < deadline and len(_steps_logged(run_dir)) < 2:
            time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "out.log").read_text()
        assert len(_steps_logged(run_dir)) >= 2, "the run did not reach step 2 in time"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = (tmp_path / "out.log").read_text()
    assert proc.returncode == 0, output
    assert "stop requested" in output and "rerun the same command to resume" in output
    stopped_at = max(_steps_logged(run_dir))
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert checkpoints == [f"step_{stopped_at:06d}"]
    assert stopped_at < 200
    assert not (run_dir / "final_model").exists()  # the run is not finished: no export
