"""cost/* arithmetic, every expected value computed by hand in the comments."""

from __future__ import annotations

import pytest

from r1zero.config import CostConfig, RunConfig
from r1zero.cost import (
    accumulate,
    cost_from_totals,
    cost_metrics,
    deepseek_comparison,
    devices_used,
    format_cost,
    phase_rows,
)


def test_gpu_run_per_phase_hours_and_money() -> None:
    # 8 GPUs: rollout 1800 s = 0.5 h x 8 = 4 GPU-h ($8); learner 5400 s = 1.5 h x 8 = 12 GPU-h ($24);
    # wall 7920 s leaves 720 s of other = 0.2 h x 8 = 1.6 GPU-h ($3.20). Total 17.6 GPU-h, $35.20.
    cost = cost_metrics(
        {"rollout": 1800, "learner": 5400}, gpu=True, devices=8, tokens_generated=4e6, tokens_trained=3e6,
        wall_s=7920,
    )  # fmt: skip
    assert cost["cost/rollout_device_hours"] == pytest.approx(4.0)
    assert cost["cost/learner_device_hours"] == pytest.approx(12.0)
    assert cost["cost/other_device_hours"] == pytest.approx(1.6)
    assert cost["cost/device_hours"] == pytest.approx(17.6)
    assert cost["cost/rollout_usd"] == pytest.approx(8.0)
    assert cost["cost/learner_usd"] == pytest.approx(24.0)
    assert cost["cost/other_usd"] == pytest.approx(3.2)
    assert cost["cost/usd"] == pytest.approx(35.2)
    assert cost["cost/usd_per_device_hour"] == 2.0
    assert cost["cost/wall_s"] == pytest.approx(7920)
    assert cost["cost/gpu"] == 1.0 and cost["cost/devices"] == 8.0
    # $35.20 / 4M tokens = $8.80 per million; 35.2 / 5,576,000 = 6.3127e-6 of DeepSeek-V3's figure
    assert cost["cost/usd_per_million_tokens_generated"] == pytest.approx(8.8)
    assert cost["cost/deepseek_v3_fraction"] == pytest.approx(6.3127e-6, rel=1e-4)
    assert cost["cost/tokens_generated"] == 4e6 and cost["cost/tokens_trained"] == 3e6


def test_cpu_run_uses_the_core_hour_rate() -> None:
    # 2 cores, 900 s: 0.25 h x 2 = 0.5 core-hours; at $0.05 -> $0.025; at $0.10 -> $0.05
    phases = {"rollout": 300.0, "learner": 600.0}
    cost = cost_metrics(phases, gpu=False, devices=2, tokens_generated=0, tokens_trained=0)
    assert cost["cost/device_hours"] == pytest.approx(0.5)
    assert cost["cost/usd"] == pytest.approx(0.025)
    assert cost["cost/gpu"] == 0.0
    assert "cost/usd_per_million_tokens_generated" not in cost  # no tokens: no per-token price
    assert "cost/other_device_hours" not in cost  # wall time unknown: no "other" phase
    dearer = cost_metrics(
        phases, gpu=False, devices=2, tokens_generated=0, tokens_trained=0, usd_per_cpu_core_hour=0.1
    )
    assert dearer["cost/usd"] == pytest.approx(0.05)


def test_wall_time_shorter_than_the_phases_adds_no_negative_phase() -> None:
    cost = cost_metrics(
        {"rollout": 100.0}, gpu=True, devices=1, tokens_generated=1, tokens_trained=1, wall_s=50
    )
    assert "cost/other_device_hours" not in cost
    assert cost["cost/wall_s"] == 100.0  # 100 s / 3600 x $2 = $0.0556
    assert cost["cost/usd"] == pytest.approx(100 / 3600 * 2)


def test_accumulate_running_totals() -> None:
    step = {"rollout": 2.0, "learner": 3.0}
    once = accumulate({}, step, tokens_generated=100, tokens_trained=80)
    assert once == {"rollout_s": 2.0, "learner_s": 3.0, "tokens_generated": 100.0, "tokens_trained": 80.0}
    twice = accumulate(once, {**step, "sync": 0.5}, tokens_generated=50, tokens_trained=40)
    assert twice == {
        "rollout_s": 4.0,
        "learner_s": 6.0,
        "sync_s": 0.5,
        "tokens_generated": 150.0,
        "tokens_trained": 120.0,
    }
    assert once["rollout_s"] == 2.0  # the input is not modified
    # 10.5 s on 4 GPUs at $3: 10.5 / 3600 x 4 = 0.011667 GPU-h, x 3 = $0.035
    cost = cost_from_totals(twice, gpu=True, devices=4, usd_per_gpu_hour=3.0)
    assert cost["cost/device_hours"] == pytest.approx(10.5 / 3600 * 4)
    assert cost["cost/usd"] == pytest.approx(0.035)
    assert cost["cost/sync_device_hours"] == pytest.approx(0.5 / 3600 * 4)
    assert cost["cost/tokens_generated"] == 150.0


@pytest.mark.parametrize(
    "gpu,world,threads,cores,expected",
    [
        (False, 1, 2, 2, 2),
        (False, 2, 2, 2, 2),
        (False, 1, 1, 16, 1),
        (False, 2, 4, 16, 8),
        (True, 8, 2, 64, 8),
    ],
)
def test_devices_used(gpu: bool, world: int, threads: int, cores: int, expected: int) -> None:
    assert devices_used(gpu, world, threads, cores) == expected


def test_text_forms() -> None:
    # 2 cores: rollout 156 s (0.08667 core-h), learner 252 s (0.14), other 493 - 408 = 85 s (0.04722)
    cost = cost_metrics(
        {"rollout": 156.0, "learner": 252.0}, gpu=False, devices=2, tokens_generated=1000, tokens_trained=900,
        wall_s=493.0,
    )  # fmt: skip
    assert [name for name, *_ in phase_rows(cost)] == ["learner", "rollout", "other"]
    _name, hours, _usd, share = phase_rows(cost)[0]
    assert (hours, share) == (pytest.approx(0.14), pytest.approx(252 / 493))
    lines = format_cost(cost)
    # 493 / 3600 x 2 = 0.27389 core-h x $0.05 = $0.013694
    assert (
        lines[0]
        == "  cost  0.274 CPU core-hours x $0.05 = $0.01369  (learner 0.14, rollout 0.0867, other 0.0472)"
    )
    assert lines[1] == "  tokens  1,000 generated, 900 trained"
    # $35.20: 5,576,000 / 35.2 = 158,409 runs
    big = cost_metrics(
        {"a": 1800, "b": 5400}, gpu=True, devices=8, tokens_generated=1, tokens_trained=1, wall_s=7920
    )
    assert deepseek_comparison(big).startswith("$35.20 is 6.3e-06 of DeepSeek-V3's published $5.576M")
    assert "158,409 such runs" in deepseek_comparison(big)
    # $0.013694: 2.5e-09 of $5.576M; 5,576,000 / 0.013694 = 407,172,414 runs
    assert deepseek_comparison(cost).startswith("$0.0137 is 2.5e-09 of DeepSeek-V3's")
    assert "407,172,414 such runs" in deepseek_comparison(cost)
    assert format_cost({}) == []


def test_cost_config_defaults_and_validation() -> None:
    assert RunConfig().cost == CostConfig(usd_per_gpu_hour=2.0, usd_per_cpu_core_hour=0.05, devices=0)
    for bad in ({"usd_per_gpu_hour": -1.0}, {"usd_per_cpu_core_hour": -0.01}, {"devices": -1}):
        with pytest.raises(ValueError, match="cost\\."):
            CostConfig(**bad)  # type: ignore[arg-type]
