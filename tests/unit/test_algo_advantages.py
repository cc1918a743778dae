"""r1zero.algo.advantages: hand-derived values and properties of group-relative advantages."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1zero.algo import NORMALIZERS, filter_zero_variance_groups, group_advantages


def close(actual: torch.Tensor, expected: list[float], tol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=tol, rtol=0)


# ---------------------------------------------------------------------------------------------- hand values
def test_one_correct_of_four_group() -> None:
    # mean = .25; Bessel std = sqrt((.75^2 + 3 * .25^2) / 3) = sqrt((.5625 + .1875) / 3) = sqrt(.25) = .5
    # advantages = [.75, -.25, -.25, -.25] / .5 = [1.5, -.5, -.5, -.5]
    close(group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, eps=0.0), [1.5, -0.5, -0.5, -0.5], 1e-7)
    # eps = 1e-6 shrinks them by the factor .5 / (.5 + 1e-6): 1.5 -> 1.499997
    close(
        group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4), [1.499997, -0.499999, -0.499999, -0.499999]
    )


def test_docstring_example_two_constant_groups() -> None:
    # [0, 0 | 1, 1], G=2: each group is constant -> centred values are 0 -> [0, 0, 0, 0] exactly
    assert group_advantages(torch.tensor([0.0, 0.0, 1.0, 1.0]), 2).tolist() == [0.0, 0.0, 0.0, 0.0]
    # same rewards as one group of 4: mean .5, std sqrt(4 * .25 / 3) = .57735 -> +-.5 / .57735 = +-.866025
    close(
        group_advantages(torch.tensor([0.0, 0.0, 1.0, 1.0]), 4, eps=0.0),
        [-0.866025, -0.866025, 0.866025, 0.866025],
    )


def test_none_is_dr_grpo_centring_only() -> None:
    # mean .25 -> [1 - .25, -.25, -.25, -.25]; no division
    close(
        group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, normalize="none"), [0.75, -0.25, -0.25, -0.25]
    )


def test_batch_divides_by_one_std_of_all_rewards() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    # batch mean 3/8 = .375; squared deviations: 3 x .625^2 = 1.171875, 5 x .375^2 = .703125; sum 1.875
    # Bessel std = sqrt(1.875 / 7) = .5175492
    # centred per group: [.75, -.25, -.25, -.25] (mean .25) and [.5, .5, -.5, -.5] (mean .5)
    std = math.sqrt(1.875 / 7)
    expected = [v / std for v in [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]]
    close(group_advantages(rewards, 4, normalize="batch", eps=0.0), expected)


def test_group_of_one_gives_zero_not_nan() -> None:
    # a single sample has no spread: centred 0, std defined as 0 -> 0 / (0 + eps) = 0 (torch.std would give NaN)
    for normalize in NORMALIZERS:
        assert group_advantages(torch.tensor([3.0, 1.0]), 1, normalize=normalize).tolist() == [0.0, 0.0]


def test_integer_rewards_become_float() -> None:
    out = group_advantages(torch.tensor([1, 0]), 2, normalize="none")
    assert out.dtype == torch.float32
    close(out, [0.5, -0.5])


@pytest.mark.parametrize(
    ("rewards", "group_size", "normalize", "match"),
    [
        (torch.zeros(6), 4, "group", "not divisible by group_size=4"),
        (torch.zeros(4), 0, "group", "group_size must be >= 1"),
        (torch.zeros(4), 2, "std", "unknown normalize='std'"),
        (torch.zeros(2, 2), 2, "group", "1-D"),
    ],
)
def test_bad_arguments_raise(rewards: torch.Tensor, group_size: int, normalize: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, group_size, normalize=normalize)


def test_unknown_normalize_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"\['batch', 'group', 'none'\]"):
        group_advantages(torch.zeros(2), 2, normalize="zscore")


# ---------------------------------------------------------------------------------------------- properties
def _rewards_for(g: int) -> st.SearchStrategy[tuple[list[float], int]]:
    """1 to 4 groups of size g: rewards [B * g] (ties and round values likely) and g."""
    value = st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.1, -1.0, 3.7]) | st.floats(-10, 10)
    groups = st.lists(st.lists(value, min_size=g, max_size=g), min_size=1, max_size=4)
    return st.tuples(groups.map(lambda rows: [x for row in rows for x in row]), st.just(g))


rewards_and_group = st.integers(1, 6).flatmap(_rewards_for)


@settings(deadline=None, max_examples=60)
@given(rewards_and_group, st.sampled_from(sorted(NORMALIZERS)))
def test_each_group_sums_to_zero(data: tuple[list[float], int], normalize: str) -> None:
    values, g = data
    adv = group_advantages(torch.tensor(values, dtype=torch.float64), g, normalize=normalize)  # [N]
    sums = adv.view(-1, g).sum(dim=1)  # [B]
    scale = max(1.0, adv.abs().max().item() if adv.numel() else 0.0)
    assert torch.all(sums.abs() <= 1e-9 * g * scale)


@settings(deadline=None, max_examples=60)
@given(
    st.sampled_from([0.0, 0.1, 1.0, 1 / 3, -2.7, 1e6]) | st.floats(-1e3, 1e3),
    st.integers(1, 8),
    st.sampled_from(sorted(NORMALIZERS)),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_constant_group_gives_exactly_zero(value: float, g: int, normalize: str, dtype: torch.dtype) -> None:
    # a constant group next to a varied one; the constant one must be exactly 0, not 1e-17
    rewards = torch.tensor([value] * g + [float(i) for i in range(g)], dtype=dtype)  # [2G]
    adv = group_advantages(rewards, g, normalize=normalize)  # [2G]
    assert adv[:g].tolist() == [0.0] * g


@settings(deadline=None, max_examples=60)
@given(rewards_and_group)
def test_group_normalize_gives_unit_std(data: tuple[list[float], int]) -> None:
    values, g = data
    rewards = torch.tensor(values, dtype=torch.float64).view(-1, g)  # [B, G]
    adv = group_advantages(rewards.reshape(-1), g, normalize="group", eps=1e-6).view(-1, g)  # [B, G]
    for row_rewards, row_adv in zip(rewards, adv):
        std = row_rewards.std().item() if g > 1 else 0.0
        if std > 1e-3:  # eps = 1e-6 is then a relative error of at most 1e-3
            assert row_adv.std().item() == pytest.approx(std / (std + 1e-6), rel=1e-9)


# ---------------------------------------------------------------------------------------------- DAPO filter
def test_filter_zero_variance_groups_hand_example() -> None:
    # groups [1, 1] (constant: dropped) and [0, 1] (kept)
    keep, dropped = filter_zero_variance_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2)
    assert keep.tolist() == [False, False, True, True]
    assert keep.dtype == torch.bool
    assert dropped.dim() == 0 and dropped.dtype == torch.long and dropped.item() == 1


@settings(deadline=None, max_examples=40)
@given(rewards_and_group)
def test_filter_keeps_exactly_the_groups_with_nonzero_advantages(data: tuple[list[float], int]) -> None:
    values, g = data
    rewards = torch.tensor(values, dtype=torch.float64)  # [N]
    keep, dropped = filter_zero_variance_groups(rewards, g)  # [N], 0-dim
    adv = group_advantages(rewards, g, normalize="none").view(-1, g)  # [B, G]
    has_signal = (adv != 0).any(dim=1)  # [B]
    assert keep.view(-1, g).all(dim=1).tolist() == has_signal.tolist()
    assert dropped.item() == int((~has_signal).sum())


def test_filter_bad_group_size_raises() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        filter_zero_variance_groups(torch.zeros(5), 2)
