"""The learner's engine settings: the LR schedule, the DeepSpeed config, the optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from r1zero.config import LearnerConfig
from r1zero.learner.engine import deepspeed_config, effective_zero_stage, lr_lambda, make_adamw


def test_lr_schedule_by_hand() -> None:
    cosine = lr_lambda("cosine", warmup_steps=2, total_steps=10)
    assert [cosine(s) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert cosine(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert cosine(10) == pytest.approx(0.0)
    linear = lr_lambda("linear", warmup_steps=0, total_steps=4)
    assert [linear(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_lambda("constant", 0, 3)(100) == 1.0


@pytest.mark.parametrize(
    "stage,world,expected", [(0, 1, 0), (1, 1, 0), (2, 1, 0), (3, 1, 3), (1, 2, 1), (2, 8, 2), (3, 8, 3)]
)
def test_one_rank_has_nothing_to_partition(stage: int, world: int, expected: int) -> None:
    assert effective_zero_stage(stage, world) == expected
    config = deepspeed_config(LearnerConfig(zero_stage=stage), world_size=world)
    assert config["zero_optimization"]["stage"] == expected
    assert config["train_batch_size"] == world
    assert "optimizer" not in config  # torch's AdamW is handed over as a client optimizer


def test_who_clips() -> None:
    from r1zero.learner.engine import learner_clips

    # fp32 at stage 0 (also ZeRO-2 on one rank): the learner clips, DeepSpeed's clipping is off.
    assert learner_clips(LearnerConfig(zero_stage=2, max_grad_norm=1.0), world_size=1)
    assert (
        deepspeed_config(LearnerConfig(zero_stage=2, max_grad_norm=1.0), world_size=1)["gradient_clipping"]
        == 0
    )
    for cfg, world in ((LearnerConfig(zero_stage=2), 2), (LearnerConfig(precision="bf16"), 1),
                       (LearnerConfig(zero_stage=3), 1), (LearnerConfig(backend="torch"), 1)):  # fmt: skip
        assert not learner_clips(cfg, world)
        if cfg.backend == "deepspeed":
            assert deepspeed_config(cfg, world_size=world)["gradient_clipping"] == cfg.max_grad_norm


def test_clip_gradients_by_hand() -> None:
    from r1zero.learner.engine import clip_gradients

    layer = torch.nn.Linear(2, 1, bias=False)
    layer.weight.grad = torch.tensor([[3.0, 4.0]])
    assert clip_gradients(layer, 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(layer.weight.grad, torch.tensor([[0.6, 0.8]]))
    assert clip_gradients(layer, 0.0) == pytest.approx(1.0)  # 0: the norm only
    torch.testing.assert_close(layer.weight.grad, torch.tensor([[0.6, 0.8]]))


def test_deepspeed_fused_adam_only_when_asked() -> None:
    config = deepspeed_config(LearnerConfig(fused_optimizer=True, lr=3e-6, weight_decay=0.1), world_size=1)
    assert (
        config["optimizer"]["params"]["lr"] == 3e-6 and config["optimizer"]["params"]["weight_decay"] == 0.1
    )


def test_adamw_is_fused_and_takes_the_textbook_first_step() -> None:
    # First AdamW step (bias-corrected): m_hat = g, v_hat = g^2, so p <- p * (1 - lr * wd) - lr * g / (|g| + eps).
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    param.grad = torch.tensor([0.5, -0.25, 0.0], dtype=torch.float64)
    cfg = LearnerConfig(lr=0.1, weight_decay=0.01, adam_eps=1e-8)
    optimizer = make_adamw([param], cfg)
    assert optimizer.defaults["fused"] is True
    before, grad = param.detach().clone(), param.grad.clone()
    optimizer.step()
    expected = before * (1 - 0.1 * 0.01) - 0.1 * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-9, atol=1e-12)


def test_lr_schedules_registry_drives_lr_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    """lr_lambda decays through LR_SCHEDULES (the list learner.lr_schedule is checked against): a schedule
    added there works at once; an unknown name is an error instead of a silent linear decay."""
    from r1zero.learner import engine

    monkeypatch.setitem(engine.LR_SCHEDULES, "half", lambda p: 0.5)
    # warmup 1 of 5 steps: step 0 warms up to 1/1 = 1.0, after that the schedule's 0.5 whatever the progress
    assert [lr_lambda("half", 1, 5)(s) for s in range(3)] == [1.0, 0.5, 0.5]
    with pytest.raises(
        ValueError, match=r"learner\.lr_schedule must be one of constant, cosine, linear, half"
    ):
        lr_lambda("step", 0, 5)
