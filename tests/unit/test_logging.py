"""JSONL metrics (round-trip, flush per write, resume truncation), the progress line, rank-0-only fan-out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from r1zero.config import LogConfig
from r1zero.logging import JsonlLogger, MultiLogger, NullLogger, build_loggers, format_progress, to_json_value


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_values_round_trip_and_each_line_is_flushed(tmp_path: Path) -> None:
    lg = JsonlLogger(tmp_path)
    lg.log(
        {
            "reward/mean": 0.25,
            "loss/policy": torch.tensor(-1.5, requires_grad=True),  # 0-d tensor -> float
            "perf/tokens": np.int64(7),
            "kl/mean": np.float32(0.5),
            "loss/nan": float("nan"),  # JSON has no NaN -> null
            "loss/inf": torch.tensor(float("inf")),
        },
        step=3,
    )
    lg.log_samples([{"prompt": "1+1", "completion": "2", "reward": torch.tensor(1.0)}], step=3)
    # Read before close: a crash right now must have lost nothing.
    (m,) = _rows(tmp_path / "metrics.jsonl")
    (s,) = _rows(tmp_path / "samples.jsonl")
    assert m["step"] == 3 and isinstance(m["time"], float)
    assert (
        m["reward/mean"] == 0.25
        and m["loss/policy"] == -1.5
        and m["perf/tokens"] == 7
        and m["kl/mean"] == 0.5
    )
    assert m["loss/nan"] is None and m["loss/inf"] is None
    assert s == {"step": 3, "prompt": "1+1", "completion": "2", "reward": 1.0}
    lg.close()


def test_to_json_value_nested() -> None:
    assert to_json_value({"a": torch.tensor([1.0, float("nan")]), "b": (Path("x"), None)}) == {
        "a": [1.0, None],
        "b": ["x", None],
    }


def test_resume_drops_steps_after_the_checkpoint(tmp_path: Path) -> None:
    lg = JsonlLogger(tmp_path)
    for step in range(1, 6):  # the crashed run logged 1..5, its last checkpoint is step 2
        lg.log({"reward/mean": step / 10}, step)
        lg.log_samples([{"completion": f"c{step}"}], step)
    lg.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "rew')  # a line cut by the crash

    lg = JsonlLogger(tmp_path, resume_step=2)
    assert [r["step"] for r in _rows(tmp_path / "metrics.jsonl")] == [1, 2]
    assert [r["step"] for r in _rows(tmp_path / "samples.jsonl")] == [1, 2]
    lg.log({"reward/mean": 0.3}, 3)  # the resumed run continues; step 3 appears once
    lg.close()
    assert [r["step"] for r in _rows(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic rewrite left no temp file


def test_append_after_a_cut_line_starts_a_new_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "x"')
    lg = JsonlLogger(tmp_path)  # no resume_step: append as is
    lg.log({"a": 1.0}, 3)
    lg.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines[1] == '{"step": 2, "x"' and json.loads(lines[2])["step"] == 3


@pytest.mark.parametrize(
    ("step", "total", "metrics", "expected"),
    [
        (
            12,
            200,
            {
                "reward/mean": 0.412,
                "reward/correct_mean": 0.38,
                "rollout/length/mean": 57.2,
                "perf/step_s": 9.8,
            },
            # eta = (200 - 12) * 9.8 s = 1842 s = 30.7 min
            "step 12/200 | reward 0.41 | correct 0.38 | len 57 | 9.8 s/step | eta 31m",
        ),
        (5, 10, {"reward/mean": torch.tensor(1.0), "other": 3.0}, "step 5/10 | reward 1.00"),
        (1, 1000, {"perf/step_s": 10.0}, "step 1/1000 | 10.0 s/step | eta 2h46m"),  # 9990 s
        (3, None, {}, "step 3"),
    ],
)
def test_format_progress(step: int, total: int | None, metrics: dict, expected: str) -> None:
    assert format_progress(step, total, metrics) == expected


def test_build_loggers_rank0_writes_others_do_not(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = LogConfig(wandb=False, print_every=2)
    other = build_loggers(cfg, tmp_path / "r1", {"steps": 4}, rank=1)
    assert isinstance(other.loggers[0], NullLogger) and not (tmp_path / "r1").exists()

    main = build_loggers(cfg, tmp_path / "r0", {"steps": 3}, rank=0)
    with caplog.at_level(logging.INFO, logger="r1zero.logging"):
        for step in (1, 2, 3):
            main.log({"reward/mean": 0.5}, step)
    main.close()
    assert main.run_id is None
    assert [r["step"] for r in _rows(tmp_path / "r0" / "metrics.jsonl")] == [1, 2, 3]
    # print_every=2: steps 2 and 3 (the last)
    assert [r.getMessage() for r in caplog.records] == ["step 2/3 | reward 0.50", "step 3/3 | reward 0.50"]


def test_multilogger_closes_all_even_if_one_fails() -> None:
    closed = []

    class Failing(NullLogger):
        def close(self) -> None:
            raise RuntimeError("boom")

    class Recording(NullLogger):
        def close(self) -> None:
            closed.append(True)

    with pytest.raises(RuntimeError, match="boom"):
        MultiLogger([Failing(), Recording()]).close()
    assert closed == [True]
