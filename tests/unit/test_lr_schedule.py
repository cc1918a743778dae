"""The LR schedule is defined per RL step (issue 12, item 2): with num_iterations = k, all k optimizer updates of
RL step s use the LR of step s, and warmup/decay end where the config says, whatever k is. Expected values are
the closed forms, written out here independently of r1zero.learner.engine.lr_lambda."""

from __future__ import annotations

import math

import pytest
import torch

from r1zero.config import LearnerConfig
from r1zero.learner.engine import build_engine

BASE_LR, WARMUP, STEPS = 0.1, 2, 7


def closed_form(schedule: str, s: int) -> float:
    """LR at RL step s (0-based) for warmup 2 over 7 steps: warmup (s + 1) / 2, then constant 1, linear
    1 - (s - 2) / 5, cosine (1 + cos(pi (s - 2) / 5)) / 2."""
    if s < WARMUP:
        return BASE_LR * (s + 1) / WARMUP
    progress = (s - WARMUP) / (STEPS - WARMUP)
    factor = {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}
    return BASE_LR * factor[schedule]


@pytest.mark.parametrize("updates_per_step", [1, 2])
@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_of_every_update_is_the_closed_form_of_its_rl_step(schedule: str, updates_per_step: int) -> None:
    model = torch.nn.Linear(2, 1)
    cfg = LearnerConfig(backend="torch", lr=BASE_LR, lr_schedule=schedule, warmup_steps=WARMUP)
    engine = build_engine(model, cfg, total_steps=STEPS, world_size=1, updates_per_step=updates_per_step)
    for s in range(STEPS):
        for _ in range(updates_per_step):
            model(torch.ones(1, 2)).sum().backward()
            assert engine.optimizer.param_groups[0]["lr"] == pytest.approx(
                closed_form(schedule, s), abs=1e-12
            )
            engine.step()


def test_decay_does_not_end_early_with_several_updates_per_step() -> None:
    # linear, k = 2: the last RL step (s = 6) still has 1 - 4/5 = 0.2 of the base LR in both of its updates;
    # a schedule counted in optimizer updates would have reached 0 at update 7 (RL step 3).
    model = torch.nn.Linear(2, 1)
    cfg = LearnerConfig(backend="torch", lr=BASE_LR, lr_schedule="linear", warmup_steps=WARMUP)
    engine = build_engine(model, cfg, total_steps=STEPS, world_size=1, updates_per_step=2)
    seen = []
    for _ in range(2 * STEPS):
        seen.append(engine.optimizer.param_groups[0]["lr"])
        engine.step()
    assert seen[-1] == seen[-2] == pytest.approx(0.2 * BASE_LR, abs=1e-12)
    assert min(seen) > 0
