"""`bash scripts/gpu_smoke.sh`, shrunk to a CPU (--quick): every step runs in its own process as on a GPU box, the
resumed run carries on from the first one's checkpoint, and the summary says what happened."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_smoke_quick_runs_every_step_and_writes_its_summary(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    done = subprocess.run(
        ["bash", "scripts/gpu_smoke.sh", "--quick", "--engine", "hf", "--out", str(out),
         "--work-dir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["ok"] and summary["engine"] == "hf"
    steps = summary["steps"]
    assert list(steps) == ["zero2", "zero2_resumed", "zero3", "learner_check"]
    assert steps["zero2"]["steps_logged"] == 2 and steps["zero2_resumed"]["steps_logged"] == 3  # resumed at 2
    assert steps["zero3"]["steps_logged"] == 2
    for name in ("zero2", "zero2_resumed", "zero3"):
        assert steps[name]["max_step_sync_gap"] < 1e-3  # fp32 on both sides
        assert not steps[name]["process_group_left_alive"]
    runs = steps["learner_check"]["result"]["runs"]
    assert {"packed", "padded"} == set(runs[0]["learners"]) and runs[0]["packed_over_padded"] > 0
