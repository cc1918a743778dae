"""r1zero-sft as the README launches it on several devices: torchrun, 2 processes, DeepSpeed ZeRO-2 through the HF
Trainer, on the tiny model. It must finish, write one final model, and log the steps once (rank 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dist_helpers import run_checked, torchrun

pytestmark = pytest.mark.distributed


def test_sft_under_torchrun_with_zero2(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    rows = [{"prompt": f"What is {a} + {a}?", "completion": f" {2 * a}"} for a in range(1, 17)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["model=tiny", f"data_path={data}", "steps=2", "batch_size=2", "zero_stage=2", "save_every=0"]
    cmd = [*torchrun("--standalone", "--nproc_per_node", "2"), "-m", "r1zero.distill.sft", *args]
    run_checked([*cmd, f"run_dir={tmp_path / 'sft'}"], tmp_path / "sft.log", timeout=600)
    logged = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in logged if "sft/loss" in r]
    assert steps == [1, 2]  # once per optimizer step, by rank 0 only
    assert all(r["sft/loss"] == r["sft/loss"] and r["sft/loss"] > 0 for r in logged if "sft/loss" in r)
    assert (tmp_path / "sft" / "final_model" / "config.json").exists()
