"""W&B offline: a run lands under run_dir, resumes under the same id, logs a samples table. No network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from r1zero.config import LogConfig
from r1zero.logging import WandbLogger, build_loggers

pytest.importorskip("wandb")


def test_wandb_offline_run_resume_and_table(tmp_path: Path) -> None:
    cfg = LogConfig(wandb=True, project="r1zero-test", tags=["unit"])
    lg = WandbLogger(cfg, tmp_path, {"steps": 3, "seed": 0}, run_id=None)
    run_id = lg.run_id
    assert run_id
    lg.log({"reward/mean": 0.5, "loss/policy": torch.tensor(-0.1)}, step=1)
    lg.log_samples(
        [
            {"prompt": "1+1", "completion": "2", "reward": 1.0},
            {"prompt": "2+2", "completion": "5", "reward": 0.0, "extra": [1, 2]},  # a new key, a list value
        ],
        step=1,
    )
    lg.close()
    (first,) = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert (first / f"run-{run_id}.wandb").stat().st_size > 0
    assert list(first.glob("files/media/table/samples/table_*.table.json"))

    # The resumed process continues the same run (the id comes from the checkpoint).
    lg = WandbLogger(cfg, tmp_path, {"steps": 3, "seed": 0}, run_id=run_id)
    assert lg.run_id == run_id
    lg.log({"reward/mean": 0.7}, step=2)
    lg.close()
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))) >= 1


def test_build_loggers_with_wandb_exposes_run_id(tmp_path: Path) -> None:
    # WANDB_MODE=offline comes from tests/conftest.py.
    loggers = build_loggers(LogConfig(wandb=True), tmp_path, {"steps": 2}, rank=0, run_id="fixedid1")
    loggers.log({"reward/mean": 1.0}, 1)
    loggers.close()
    assert loggers.run_id == "fixedid1"
    assert (tmp_path / "metrics.jsonl").exists()
