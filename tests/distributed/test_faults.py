"""A rank that dies or hangs must not leave the others waiting forever: they fail within dist.timeout_s, and the
error names the rank, the phase and the step. Faults are injected with the R1ZERO_FAULT test hook
(tests/distributed/fault_hook/sitecustomize.py, which wraps r1zero.distributed.phase in the launched processes).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from dist_helpers import ROOT, child_env, free_port, train_module

pytestmark = pytest.mark.distributed

SMALL = [
    "model=tiny", "task=countdown", "rollout.prompts_per_step=2", "rollout.group_size=2",
    "rollout.max_new_tokens=8", "task.num_train=16", "task.num_eval=0", "steps=2", "cpu_threads=1",
    "checkpoint.save_final_model=false",
]  # fmt: skip
MARGIN_S = 30  # process exit, logging, a loaded CI machine

FAKE_SRUN = """#!/usr/bin/env bash
# Stand-in for srun: start $SLURM_NTASKS copies of the command with Slurm's per-task variables, record each
# task's exit status and time, return the worst status.
while [[ "$1" == --* ]]; do shift; done
for ((i = 0; i < SLURM_NTASKS; i++)); do
  ( SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_ID=0 "$@" > "$FAKE_DIR/task$i.log" 2>&1
    echo "$? $(date +%s.%N)" > "$FAKE_DIR/task$i.exit" ) &
done
wait
exit "$(cut -d' ' -f1 "$FAKE_DIR"/task*.exit | sort -n | tail -n 1)"
"""


def test_killed_rank_fails_the_others_through_the_sbatch_script(tmp_path: Path) -> None:
    """scripts/slurm/train.sbatch under a stand-in srun/scontrol, 2 tasks; rank 1 exits (os._exit(1)) on entering
    the learner phase of step 1. Rank 0 must exit non-zero within dist.timeout_s, naming itself and the phase."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho 127.0.0.1\n")
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    timeout_s = 20
    env = child_env(
        PATH=f"{bin_dir}:{child_env()['PATH']}", FAKE_DIR=str(tmp_path), R1ZERO_PYTHON=sys.executable,
        SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_JOB_NODELIST="127.0.0.1", SLURM_SUBMIT_DIR=str(ROOT),
        MASTER_PORT=str(free_port()), R1ZERO_FAULT="1:learner:1",
    )  # fmt: skip
    cmd = [
        "bash",
        "scripts/slurm/train.sbatch",
        *SMALL,
        f"dist.timeout_s={timeout_s}",
        f"run_dir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    (rc0, end0), (rc1, end1) = (map(float, (tmp_path / f"task{i}.exit").read_text().split()) for i in (0, 1))
    log0 = (tmp_path / "task0.log").read_text()
    assert rc1 == 1, (tmp_path / "task1.log").read_text()[-3000:]
    assert rc0 != 0
    assert "rank 0 failed in phase learner at step 1" in log0, log0[-3000:]
    assert end0 - end1 < timeout_s + MARGIN_S
    print(f"\n[killed rank] rank 0 exited {end0 - end1:.1f} s after rank 1 died")


def test_hung_rank_times_out(tmp_path: Path) -> None:
    """Two bare processes with Slurm task variables (r1zero.distributed maps them); rank 1 hangs in the learner
    phase of step 1. Rank 0 must fail after about dist.timeout_s, naming itself and the phase."""
    timeout_s = 6
    port = str(free_port())
    procs, logs = [], []
    for rank in (0, 1):
        env = child_env(
            SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS="2", SLURM_STEP_ID="0",
            SLURM_JOB_ID="4243", SLURM_JOB_NODELIST="127.0.0.1", MASTER_PORT=port,
            R1ZERO_FAULT="1:learner:1:hang",
        )  # fmt: skip
        logs.append(tmp_path / f"rank{rank}.log")
        cmd = [
            sys.executable,
            *train_module(),
            *SMALL,
            f"dist.timeout_s={timeout_s}",
            f"run_dir={tmp_path / 'run'}",
        ]
        with open(logs[-1], "w") as out:
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 240
        while "hangs in phase learner" not in logs[1].read_text():
            assert procs[1].poll() is None and time.monotonic() < deadline, logs[1].read_text()[-3000:]
            time.sleep(0.2)
        hung_at = time.monotonic()
        procs[0].wait(timeout=timeout_s + MARGIN_S)
        waited = time.monotonic() - hung_at
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log0 = logs[0].read_text()
    assert procs[0].returncode != 0
    assert "rank 0 failed in phase learner at step 1" in log0, log0[-3000:]
    assert waited >= timeout_s * 0.5  # it was the configured timeout that ended the wait
    print(f"\n[hung rank] rank 0 failed {waited:.1f} s after rank 1 hung (dist.timeout_s={timeout_s})")
