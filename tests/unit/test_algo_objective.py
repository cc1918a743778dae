"""The micro-batch objective and the loss normaliser under a loss mask (issue 12, items 1, 7, 10): hand-derived
values and float64 references; every option branch on tensors, without a model."""

from __future__ import annotations

import math

import pytest
import torch

from r1zero.algo import loss_normalizer, micro_batch_loss

MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def _loss_and_grad(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, mode: str):
    lp = logprobs.clone().requires_grad_(True)
    norm = loss_normalizer(mask, mode, 4)
    out = micro_batch_loss(lp, advantages, mask, norm, aggregation=mode, max_response_len=4)
    out.total.backward()
    return out.total.item(), lp.grad


@pytest.mark.parametrize("mode", MODES)
def test_half_the_rows_masked_gives_the_gradient_of_the_kept_rows_alone(mode: str) -> None:
    torch.manual_seed(1)
    logprobs = -torch.rand(4, 4, dtype=torch.float64)
    advantages = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    kept = torch.tensor([True, False, True, False])
    loss_masked, grad_masked = _loss_and_grad(logprobs, advantages, mask & kept[:, None], mode)
    loss_kept, grad_kept = _loss_and_grad(logprobs[kept], advantages[kept], mask[kept], mode)
    assert loss_masked == pytest.approx(loss_kept, rel=1e-12)
    assert torch.allclose(grad_masked[kept], grad_kept, rtol=1e-12, atol=0)
    assert torch.count_nonzero(grad_masked[~kept]) == 0


def test_worked_example_policy_kl_total() -> None:
    # One token, on-policy (ratio 1), A = 2, normaliser 1, kl_coef 0.1, logprob -1, reference -2, k3:
    # policy = -2, kl = e^-1 - 1 + 1 = 0.36788, total = -2 + 0.036788.
    lp = torch.tensor([[-1.0]], dtype=torch.float64, requires_grad=True)
    out = micro_batch_loss(
        lp, torch.tensor([2.0], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool), torch.tensor(1.0),
        ref_logprobs=torch.tensor([[-2.0]], dtype=torch.float64), kl_coef=0.1,
    )  # fmt: skip
    assert out.policy.item() == pytest.approx(-2.0)
    assert out.kl.item() == pytest.approx(math.exp(-1))
    assert out.total.item() == pytest.approx(-2.0 + 0.1 * math.exp(-1))
    assert not out.policy.requires_grad and out.total.requires_grad


def test_kl_is_aggregated_like_the_loss_not_as_a_token_mean() -> None:
    # seq_mean_token_mean over rows [k, k, k] and [K]: mean of row means (k + K) / 2, not (3k + K) / 4.
    lp = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    ref = torch.tensor([[-2.0, -2.0, -2.0], [-3.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    k_small, k_big = math.exp(-1) - 1 + 1, math.exp(-2) - 1 + 2
    out = micro_batch_loss(
        lp, torch.zeros(2, dtype=torch.float64), mask, loss_normalizer(mask, "seq_mean_token_mean"),
        ref_logprobs=ref, kl_coef=1.0, aggregation="seq_mean_token_mean",
    )  # fmt: skip
    assert out.kl.item() == pytest.approx((k_small + k_big) / 2)


def test_truncated_is_weights_scale_each_token_and_are_reported() -> None:
    # Rollout logprobs below the learner's by 0.1 and 1.0: weights exp(0.1) = 1.105 and exp(1) -> capped at 1.2.
    lp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    rollout = torch.tensor([[-1.1, -3.0]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = micro_batch_loss(lp, torch.tensor([1.0], dtype=torch.float64), mask, torch.tensor(2.0),
                           rollout_logprobs=rollout, tis_cap=1.2)  # fmt: skip
    assert out.total.item() == pytest.approx(-(math.exp(0.1) + 1.2) / 2)
    assert out.metrics["tis_clipped_frac"].item() == pytest.approx(0.5)
    assert out.metrics["tis_weight_mean"].item() == pytest.approx((math.exp(0.1) + 1.2) / 2)


def test_old_logprobs_set_the_ratio() -> None:
    # old = current + 0.5 on every token: ratio exp(-0.5) = 0.6065 (inside the clip range [0.8, 1.2]? no: below
    # 0.8, and A > 0, so the unclipped 0.6065 * A is the minimum and no clip is reported).
    lp = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    out = micro_batch_loss(lp, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool),
                           torch.tensor(2.0), old_logprobs=lp + 0.5)  # fmt: skip
    assert out.metrics["ratio_mean"].item() == pytest.approx(math.exp(-0.5))
    assert out.policy.item() == pytest.approx(-math.exp(-0.5))
    assert out.metrics["clip_frac_low"].item() == 0.0


def test_missing_inputs_name_the_option() -> None:
    lp, mask = torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"algo\.tis_cap"):
        micro_batch_loss(lp, torch.ones(1), mask, torch.tensor(1.0), tis_cap=2.0)
    with pytest.raises(ValueError, match=r"algo\.kl_coef"):
        micro_batch_loss(lp, torch.ones(1), mask, torch.tensor(1.0), kl_coef=0.1)
