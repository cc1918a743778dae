"""The end of a run destroys the process groups: on success, Ctrl-C and error (NCCL warns about, and may leak,
groups left to the interpreter's exit)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from r1zero import distributed


def test_shutdown_destroys_the_groups_and_a_new_run_can_start_again() -> None:
    was_initialized = distributed.is_initialized()
    distributed.init_process_group()
    distributed._object_group()  # the side group for pickled objects goes too
    assert distributed.is_initialized()
    distributed.shutdown()
    assert not distributed.is_initialized()
    distributed.shutdown()  # nothing left: a no-op
    distributed.init_process_group()  # the next run in this process starts a fresh world
    assert distributed.all_gather_object("x") == ["x"]
    if not was_initialized:
        distributed.shutdown()


@pytest.mark.parametrize("outcome", ["success", "ctrl-c", "error"])
def test_the_train_entry_point_shuts_down_whatever_the_run_does(
    outcome: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from r1zero import train

    def fake_run(cfg: object) -> dict[str, float]:
        if outcome == "ctrl-c":
            raise KeyboardInterrupt
        if outcome == "error":
            raise ValueError("the run failed")
        return {}

    calls: list[str] = []
    monkeypatch.setattr(train, "run", fake_run)
    monkeypatch.setattr(distributed, "shutdown", lambda clean=True: calls.append(f"shutdown clean={clean}"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys, "argv", ["r1zero-train", "model=tiny", f"run_dir={tmp_path / 'run'}", "hydra.output_subdir=null"]
    )
    if outcome == "success":
        train.main()
    else:
        with pytest.raises((KeyboardInterrupt, ValueError, SystemExit)):
            train.main()
    # Only a run that returned normally waits for its peers (a barrier) before tearing the groups down.
    assert calls == [f"shutdown clean={outcome == 'success'}"]
