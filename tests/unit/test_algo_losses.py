"""r1zero.algo.losses: hand-derived values for KL estimators, aggregation modes and the clipped surrogate."""

from __future__ import annotations

import math

import pytest
import torch

from r1zero.algo import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate,
    kl_estimate,
    kl_penalty_loss,
    loss_normalizer,
    masked_mean,
    overlong_penalty,
    policy_loss,
    truncated_is_weights,
)

F64 = torch.float64


def t(values: object) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# ---------------------------------------------------------------------------------------------- KL
def test_kl_estimators_by_hand() -> None:
    # r = ref - logprobs: token 0: -2 - (-1) = -1; token 1: -1 - (-2) = +1
    logprobs, ref = t([-1.0, -2.0]), t([-2.0, -1.0])
    # k1 = -r -> [1, -1]
    torch.testing.assert_close(kl_estimate(logprobs, ref, "k1"), t([1.0, -1.0]))
    # k2 = r^2 / 2 -> [.5, .5]
    torch.testing.assert_close(kl_estimate(logprobs, ref, "k2"), t([0.5, 0.5]))
    # k3 = e^r - 1 - r -> [e^-1 - 1 + 1, e - 1 - 1] = [.367879, .718282]
    torch.testing.assert_close(kl_estimate(logprobs, ref, "k3"), t([math.exp(-1), math.e - 2]))


def test_kl_zero_when_equal_and_unknown_kind_lists_names() -> None:
    x = t([[-0.3, -2.0]])
    for kind in KL_ESTIMATORS:
        assert kl_estimate(x, x, kind).abs().max().item() == 0.0
    with pytest.raises(ValueError, match=r"\['k1', 'k2', 'k3'\]"):
        kl_estimate(x, x, "k4")


# ---------------------------------------------------------------------------------------------- aggregation
VALUES = [[1.0, 2.0, 9.0], [4.0, 9.0, 9.0]]
MASK = [[1, 1, 0], [1, 0, 0]]


def test_aggregate_by_hand() -> None:
    values, mask = t(VALUES), torch.tensor(MASK)
    # token_mean: (1 + 2 + 4) / 3 tokens = 2.3333
    assert aggregate(values, mask, "token_mean").item() == pytest.approx(7 / 3)
    # seq_mean_token_mean: row means 1.5 and 4 -> (1.5 + 4) / 2 = 2.75
    assert aggregate(values, mask, "seq_mean_token_mean").item() == pytest.approx(2.75)
    # seq_mean_token_sum_norm: 7 / (N * max_response_len) = 7 / (2 * 4) = .875
    assert aggregate(values, mask, "seq_mean_token_sum_norm", 4).item() == pytest.approx(0.875)


def test_loss_normalizer_by_hand() -> None:
    mask = torch.tensor(MASK)
    assert loss_normalizer(mask, "token_mean").item() == 3.0  # real tokens
    assert loss_normalizer(mask, "seq_mean_token_mean").item() == 2.0  # rows
    assert loss_normalizer(mask, "seq_mean_token_sum_norm", 4).item() == 8.0  # 2 rows x 4


def test_aggregate_ignores_nan_and_inf_in_padding() -> None:
    values = t([[1.0, float("nan")], [float("inf"), 3.0]])
    mask = torch.tensor([[True, False], [False, True]])
    for mode in AGGREGATIONS:
        out = aggregate(values, mask, mode, 2)
        assert torch.isfinite(out)
    assert aggregate(values, mask, "token_mean").item() == 2.0  # (1 + 3) / 2


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
def test_all_zero_mask_gives_zero_loss_and_zero_grad(mode: str) -> None:
    # defined as 0: the normalizer is clamped to >= 1 and no token contributes
    values = t([[1.0, 2.0], [3.0, 4.0]]).requires_grad_()
    out = aggregate(values, torch.zeros(2, 2, dtype=torch.bool), mode, 2)
    out.backward()
    assert out.item() == 0.0
    assert values.grad is not None and values.grad.abs().max().item() == 0.0
    # also with no rows at all
    assert aggregate(t([]).view(0, 3), torch.zeros(0, 3), mode, 3).item() == 0.0


def test_aggregate_errors() -> None:
    with pytest.raises(ValueError, match="needs max_response_len"):
        aggregate(t(VALUES), torch.tensor(MASK), "seq_mean_token_sum_norm")
    with pytest.raises(
        ValueError, match=r"valid: \['seq_mean_token_mean', 'seq_mean_token_sum_norm', 'token_mean'\]"
    ):
        aggregate(t(VALUES), torch.tensor(MASK), "sum")


def test_masked_mean_is_detached_metric() -> None:
    values = t([[2.0, 100.0]]).requires_grad_()
    out = masked_mean(values, torch.tensor([[1, 0]]))
    assert out.item() == 2.0 and not out.requires_grad
    assert masked_mean(values, torch.zeros(1, 2)).item() == 0.0


# ---------------------------------------------------------------------------------------------- policy loss
def _three_tokens() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # three rows of one token: ratios 1, 1.5, .5; advantages 2, 2, -1
    old = t([[-1.0], [-1.0], [-1.0]])
    logprobs = (old + t([[0.0], [math.log(1.5)], [math.log(0.5)]])).requires_grad_()
    return logprobs, old, t([2.0, 2.0, -1.0]), torch.ones(3, 1, dtype=torch.bool)


def test_policy_loss_by_hand() -> None:
    logprobs, old, adv, mask = _three_tokens()
    loss, metrics = policy_loss(logprobs, old, adv, mask)
    # row 0: ratio 1,   A 2:  -min(1 * 2, 1 * 2) = -2
    # row 1: ratio 1.5, A 2:  -min(1.5 * 2, clip(1.5, .8, 1.2) * 2 = 2.4) = -2.4   (upper clip active)
    # row 2: ratio .5,  A -1: -min(-.5, clip(.5) = .8 * -1 = -.8) = .8              (lower clip active)
    # token_mean: (-2 - 2.4 + .8) / 3 = -1.2
    assert loss.item() == pytest.approx(-1.2)
    assert metrics["clip_frac_low"].item() == pytest.approx(1 / 3)
    assert metrics["clip_frac_high"].item() == pytest.approx(1 / 3)
    assert metrics["ratio_mean"].item() == pytest.approx(1.0)  # (1 + 1.5 + .5) / 3
    # k3 with r = old - new = -log ratio: row 0: 0; row 1: 1/1.5 - 1 + ln 1.5 = .0721318; row 2: 2 - 1 - ln 2
    k3 = [0.0, 1 / 1.5 - 1 + math.log(1.5), 1 - math.log(2)]
    assert metrics["approx_kl_old"].item() == pytest.approx(sum(k3) / 3)
    assert all(not m.requires_grad and m.dim() == 0 for m in metrics.values())
    # gradient: d(-ratio * A / 3)/d logprob = -ratio * A / 3 on row 0 (-2/3); clipped rows get 0
    loss.backward()
    assert logprobs.grad is not None
    torch.testing.assert_close(logprobs.grad, t([[-2 / 3], [0.0], [0.0]]))


def test_clip_higher_and_pessimistic_branch() -> None:
    logprobs, old, adv, mask = _three_tokens()
    # DAPO clip-higher .6: row 1 ratio 1.5 < 1.6 stays unclipped -> -3; total (-2 - 3 + .8) / 3 = -1.4
    loss, metrics = policy_loss(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.6)
    assert loss.item() == pytest.approx(-1.4)
    assert metrics["clip_frac_high"].item() == 0.0
    # ratio 1.5 with a negative advantage -1: -min(-1.5, -1.2) = 1.5, the unclipped branch: not a clip
    loss, metrics = policy_loss(logprobs[1:2], old[1:2], t([-1.0]), mask[1:2])
    assert loss.item() == pytest.approx(1.5)
    assert metrics["clip_frac_low"].item() == 0.0 and metrics["clip_frac_high"].item() == 0.0


def test_policy_loss_is_weights_and_padding() -> None:
    logprobs, old, adv, mask = _three_tokens()
    # TIS weights [2, 1, .5] scale each token: (-2 * 2 - 2.4 * 1 + .8 * .5) / 3 = -2
    loss, _ = policy_loss(logprobs, old, adv, mask, is_weights=t([[2.0], [1.0], [0.5]]))
    assert loss.item() == pytest.approx(-2.0)
    # a padded second column with absurd values must change nothing, and give no NaN gradient
    lp2 = torch.cat([logprobs.detach(), t([[1e4], [-1e4], [float("nan")]])], dim=1).requires_grad_()
    old2 = torch.cat([old, t([[-1e4], [1e4], [0.0]])], dim=1)
    mask2 = torch.cat([mask, torch.zeros(3, 1, dtype=torch.bool)], dim=1)
    # inf weights on padding only
    is_weights = torch.cat([torch.ones(3, 1), torch.full((3, 1), float("inf"))], dim=1).double()
    loss3, metrics3 = policy_loss(lp2, old2, adv, mask2, is_weights=is_weights)
    assert loss3.item() == pytest.approx(-1.2)
    assert metrics3["ratio_mean"].item() == pytest.approx(1.0)
    loss3.backward()
    assert lp2.grad is not None and torch.isfinite(lp2.grad).all()
    assert lp2.grad[:, 1].abs().max().item() == 0.0


def test_policy_loss_aggregations_differ_as_defined() -> None:
    # row 0 has two tokens with per-token loss -A = -1 each, row 1 one token with -A = -4 (ratio 1 everywhere)
    logprobs = t([[-1.0, -1.0], [-1.0, -1.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = t([1.0, 4.0])
    token_mean, _ = policy_loss(logprobs, logprobs, adv, mask)  # (-1 - 1 - 4) / 3 = -2
    # row means -1 and -4: (-1 - 4) / 2 = -2.5
    seq_mean, _ = policy_loss(logprobs, logprobs, adv, mask, aggregation="seq_mean_token_mean")
    dr, _ = policy_loss(
        logprobs, logprobs, adv, mask, aggregation="seq_mean_token_sum_norm", max_response_len=3
    )
    assert token_mean.item() == pytest.approx(-2.0)
    assert seq_mean.item() == pytest.approx(-2.5)
    assert dr.item() == pytest.approx(-6 / 6)  # -6 / (2 rows * 3)


# ---------------------------------------------------------------------------------------------- KL penalty, TIS, overlong
def test_kl_penalty_loss_by_hand_and_padding() -> None:
    # real tokens: r = ref - lp = -1 (k3 = e^-1 = .367879) and 0 (k3 = 0); padding holds garbage
    logprobs = t([[-1.0, -3.0, 50.0]]).requires_grad_()
    ref = t([[-2.0, -3.0, -50.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss = kl_penalty_loss(logprobs, ref, mask)
    assert loss.item() == pytest.approx(math.exp(-1) / 2)
    loss.backward()
    # d k3 / d lp = d(e^(ref - lp) - 1 - ref + lp)/d lp = 1 - e^(ref - lp) = 1 - e^-1, / 2 tokens; padding 0
    assert logprobs.grad is not None
    torch.testing.assert_close(logprobs.grad, t([[(1 - math.exp(-1)) / 2, 0.0, 0.0]]))
    k1 = kl_penalty_loss(
        logprobs, ref, mask, kind="k1", aggregation="seq_mean_token_sum_norm", max_response_len=4
    )
    assert k1.item() == pytest.approx((1.0 + 0.0) / 4)  # -r summed over real tokens / (1 row * 4)


def test_truncated_is_weights() -> None:
    learner = t([[-1.0, -2.0]]).requires_grad_()
    rollout = t([[-1.1, -1.0]])
    # exp(-1 - (-1.1)) = exp(.1) = 1.105171; exp(-2 + 1) = e^-1 = .367879
    w = truncated_is_weights(learner, rollout, cap=2.0)
    torch.testing.assert_close(w, t([[math.exp(0.1), math.exp(-1)]]))
    assert not w.requires_grad
    torch.testing.assert_close(truncated_is_weights(learner, rollout, cap=1.05), t([[1.05, math.exp(-1)]]))
    with pytest.raises(ValueError, match="cap must be > 0"):
        truncated_is_weights(learner, rollout, cap=0.0)


def test_overlong_penalty_by_hand() -> None:
    # max_len 10, buffer 4: free up to 6; (6 - L) / 4: L=7 -> -.25, L=8 -> -.5, L=10 -> -1; beyond 10 -> -1
    out = overlong_penalty(torch.tensor([3, 6, 7, 8, 10, 12]), max_len=10, buffer_len=4)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0]))
    torch.testing.assert_close(
        overlong_penalty(torch.tensor([8, 11]), max_len=10, buffer_len=4, penalty=0.5),
        torch.tensor([-0.25, -0.5]),
    )
    # buffer 0: a hard cut at max_len
    torch.testing.assert_close(overlong_penalty(torch.tensor([10, 11]), 10, 0), torch.tensor([0.0, -1.0]))
    with pytest.raises(ValueError, match="buffer_len"):
        overlong_penalty(torch.tensor([1]), 4, 5)


# ---- issue 12, item 1: rows the loss mask removed count in no normaliser
MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def test_a_row_without_loss_tokens_counts_nowhere() -> None:
    values = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    mask = torch.tensor([[1, 1], [0, 0]])
    # The example: only row 0 carries tokens, its mean is 1.
    assert aggregate(values, mask, "seq_mean_token_mean").item() == pytest.approx(1.0)
    # Dr. GRPO: sum 2 over (1 row with tokens * max_len 4) = 0.5; token_mean: 2 / 2 tokens = 1.
    assert aggregate(values, mask, "seq_mean_token_sum_norm", 4).item() == pytest.approx(0.5)
    assert aggregate(values, mask, "token_mean").item() == pytest.approx(1.0)
    assert loss_normalizer(mask, "seq_mean_token_mean").item() == 1.0
    assert loss_normalizer(mask, "seq_mean_token_sum_norm", 4).item() == 4.0


@pytest.mark.parametrize("mode", MODES)
def test_appending_masked_rows_changes_no_aggregation(mode: str) -> None:
    torch.manual_seed(0)
    values = torch.randn(3, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    extra = torch.randn(2, 5, dtype=torch.float64) * 100
    padded = aggregate(
        torch.cat([values, extra]), torch.cat([mask, torch.zeros(2, 5, dtype=mask.dtype)]), mode, 5
    )
    assert padded.item() == pytest.approx(aggregate(values, mask, mode, 5).item(), rel=1e-12)
