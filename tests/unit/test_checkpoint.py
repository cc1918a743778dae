"""Checkpoints: pruning, corruption fallback, failed writes, same-step replacement, RNG round-trip."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from r1zero.checkpoint import (
    atomic_write_json,
    find_latest_checkpoint,
    load_meta,
    load_rng_state,
    save_checkpoint,
    save_rng_state,
    staging_dir,
)


def _writer(step: int):
    def write(d: Path) -> None:
        (d / "model.bin").write_bytes(bytes([step % 256]) * 1000)
        (d / "shards").mkdir()
        (d / "shards" / "rank0.txt").write_text(f"step {step}")

    return write


def _save(run_dir: Path, step: int, keep_last: int = 2) -> Path:
    return save_checkpoint(
        run_dir, step, _writer(step), extra={"wandb_run_id": "abc", "step": step}, keep_last=keep_last
    )


def _steps(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_save_writes_meta_and_keeps_the_newest(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _save(tmp_path, step)
    assert _steps(tmp_path) == ["step_000020", "step_000030"]
    meta = load_meta(tmp_path / "checkpoints" / "step_000030")
    assert meta["step"] == 30 and meta["extra"] == {"wandb_run_id": "abc", "step": 30}
    assert meta["files"]["model.bin"]["size"] == 1000
    assert meta["files"]["shards/rank0.txt"]["sha256"] is not None
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000030"


def test_no_checkpoint(tmp_path: Path) -> None:
    assert find_latest_checkpoint(tmp_path) is None


def _truncate(ckpt: Path) -> None:
    with open(ckpt / "model.bin", "r+b") as f:
        f.truncate(10)


def _flip_byte(ckpt: Path) -> None:
    data = bytearray((ckpt / "model.bin").read_bytes())
    data[500] ^= 0xFF
    (ckpt / "model.bin").write_bytes(data)


def _delete_meta(ckpt: Path) -> None:
    (ckpt / "meta.json").unlink()


def _garble_meta(ckpt: Path) -> None:
    (ckpt / "meta.json").write_text('{"step": 20, "fil')


def _delete_file(ckpt: Path) -> None:
    (ckpt / "shards" / "rank0.txt").unlink()


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (_truncate, "has 10 bytes"),
        (_flip_byte, "sha256"),
        (_delete_meta, "missing"),
        (_garble_meta, "unreadable"),
        (_delete_file, "rank0.txt is missing"),
    ],
)
def test_corrupt_newest_falls_back_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, corrupt, reason: str
) -> None:
    _save(tmp_path, 10)
    newest = _save(tmp_path, 20)
    corrupt(newest)
    with caplog.at_level(logging.WARNING, logger="r1zero.checkpoint"):
        assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000010"
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "step_000020" in msg and reason in msg


def test_killed_mid_write_leaves_a_tmp_dir_that_is_ignored_and_cleaned(tmp_path: Path) -> None:
    _save(tmp_path, 10)
    staged = staging_dir(tmp_path, 20, tag="12345")  # as if the process died inside write_fn
    staged.mkdir(parents=True)
    _writer(20)(staged)
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000010"
    assert _steps(tmp_path) == ["step_000010"]


def test_failing_writer_leaves_no_partial_checkpoint(tmp_path: Path) -> None:
    _save(tmp_path, 10)

    def broken(d: Path) -> None:
        (d / "model.bin").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 20, broken, extra={}, keep_last=1)
    assert _steps(tmp_path) == ["step_000010"]
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000010"

    with pytest.raises(TypeError):  # extra that is not JSON fails before the commit, too
        save_checkpoint(tmp_path, 20, _writer(20), extra={"x": object()}, keep_last=1)
    assert _steps(tmp_path) == ["step_000010"]


def test_same_step_is_replaced_and_later_steps_are_dropped(tmp_path: Path) -> None:
    _save(tmp_path, 10, keep_last=3)
    _save(tmp_path, 20, keep_last=3)
    _save(tmp_path, 30, keep_last=3)

    # Resumed from 20 (say 30 was bad), then saved 20 again: 30 is from the abandoned timeline.
    def write_v2(d: Path) -> None:
        (d / "new.txt").write_text("v2")

    save_checkpoint(tmp_path, 20, write_v2, keep_last=3)
    assert _steps(tmp_path) == ["step_000010", "step_000020"]
    assert (tmp_path / "checkpoints" / "step_000020" / "new.txt").read_text() == "v2"
    assert not (tmp_path / "checkpoints" / "step_000020" / "model.bin").exists()


def test_atomic_write_json(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 2}  # the old file survives a failed write
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]


def _draws() -> tuple:
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_rng_state_round_trip(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    _draws()
    save_rng_state(tmp_path / "rng.pt")
    expected = _draws()
    _draws()  # move every generator on
    load_rng_state(tmp_path / "rng.pt")
    assert _draws() == expected
