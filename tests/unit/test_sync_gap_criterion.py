"""The sync check's criterion (r1zero.sync.gap_violation, GapLimits) on hand-made gaps: what a bf16 sync looks like
passes, what a broken sync looks like is caught, also by the per-step check (r1zero.sync.check_rollout_gap) on the
tensors train_step hands it; and the precision-based defaults of RunConfig.sync_limits."""

from __future__ import annotations

import math

import pytest
import torch

from r1zero.config import LearnerConfig, RolloutConfig, RunConfig, SyncConfig
from r1zero.sync import GapLimits, SyncVerificationError, as_gap_limits, check_rollout_gap, gap_violation

BF16 = GapLimits(max_abs=1.0, mean_abs=0.03)  # hand-made limits for the hand-made gaps below
# RunConfig.sync_limits with a bf16 side (docs/sync_gap.md): the mean decides, no max limit.
BF16_DEFAULT = GapLimits(max_abs=math.inf, mean_abs=0.05)


def bf16_like_gaps() -> torch.Tensor:
    """[4, 25]: 99 tokens at 0.002 and one at 0.3, the shape of bf16 rounding (a long thin tail).
    max 0.3; mean (99 * 0.002 + 0.3) / 100 = 0.498 / 100 = 0.00498."""
    gap = torch.full((4, 25), 0.002, dtype=torch.float64)
    gap[2, 7] = 0.3
    return gap


def stale_head_like_gaps() -> torch.Tensor:
    """[4, 25]: every token 0.04 or 0.06 off (alternating), the shape of a stale tied head.
    max 0.06; mean (50 * 0.04 + 50 * 0.06) / 100 = 0.05."""
    gap = torch.full((4, 25), 0.04, dtype=torch.float64)
    gap.view(-1)[1::2] = 0.06
    return gap


def test_gap_violation_takes_the_bf16_scatter_and_catches_a_shift_of_every_token() -> None:
    scatter, shift = bf16_like_gaps(), stale_head_like_gaps()
    assert gap_violation(float(scatter.max()), float(scatter.mean()), BF16) is None
    assert float(scatter.mean()) == pytest.approx(0.00498)
    assert gap_violation(float(shift.max()), float(shift.mean()), BF16) == "mean 0.05 > 0.03 (max 0.06)"
    # The old bf16 default (a max limit of 1.0 alone) lets the shifted sync through.
    assert gap_violation(float(shift.max()), float(shift.mean()), as_gap_limits(1.0)) is None
    # One token far off breaks the max whatever the mean.
    assert gap_violation(1.5, 0.004, BF16) == "max 1.5 > 1"


def test_gap_violation_docstring_examples_with_the_bf16_default() -> None:
    assert gap_violation(0.25, 0.006, BF16_DEFAULT) is None
    assert gap_violation(1.09, 0.006, BF16_DEFAULT) is None
    assert gap_violation(0.45, 0.19, BF16_DEFAULT) == "mean 0.19 > 0.05 (max 0.45)"
    assert gap_violation(0.02, 0.001, GapLimits(0.01)) == "max 0.02 > 0.01"
    # Without a max limit a NaN is still caught: it makes the mean NaN too.
    assert gap_violation(float("nan"), float("nan"), BF16_DEFAULT) == "mean inf > 0.05 (max inf)"


def test_gap_violation_edges_and_nan() -> None:
    assert gap_violation(1.0, 0.03, BF16) is None  # a limit itself is allowed
    assert gap_violation(float("nan"), 0.0, BF16) == "max inf > 1"
    assert gap_violation(0.5, float("nan"), BF16) == "mean inf > 0.03 (max 0.5)"
    assert gap_violation(0.02, 0.01, as_gap_limits(0.01)) == "max 0.02 > 0.01"


def test_as_gap_limits_reads_a_number_as_a_max_limit_and_a_pair_as_max_and_mean() -> None:
    assert as_gap_limits(0.01) == GapLimits(0.01, math.inf)
    assert as_gap_limits((1.0, 0.03)) == GapLimits(1.0, 0.03)
    assert as_gap_limits(BF16) == BF16
    assert GapLimits(0.5) == (0.5, math.inf)  # a plain (max, mean) pair


def _run_config(rollout_dtype: str, precision: str, **sync: float) -> RunConfig:
    return RunConfig(
        rollout=RolloutConfig(dtype=rollout_dtype),
        learner=LearnerConfig(precision=precision),
        sync=SyncConfig(**sync),  # type: ignore[arg-type]
    )


def test_sync_limits_defaults_by_precision_and_explicit_values_win() -> None:
    assert _run_config("float32", "fp32").sync_limits == GapLimits(0.01, math.inf)
    for dtype, precision in (("bfloat16", "fp32"), ("bfloat16", "bf16"), ("float32", "bf16")):
        limits = _run_config(dtype, precision).sync_limits
        assert limits == BF16_DEFAULT, (dtype, precision)
    # The probe keeps its max limit (sync_threshold): 0.01 fp32, 1.0 with a bf16 side.
    assert _run_config("float32", "fp32").sync_threshold == 0.01
    assert _run_config("bfloat16", "bf16").sync_threshold == 1.0
    explicit = _run_config("bfloat16", "bf16", max_abs_logprob_diff=2.0, mean_abs_logprob_diff=0.1)
    assert explicit.sync_limits == GapLimits(2.0, 0.1)  # an explicit max applies to both checks
    assert explicit.sync_threshold == 2.0
    assert _run_config("float32", "fp32", mean_abs_logprob_diff=1e-4).sync_limits == GapLimits(0.01, 1e-4)
    with pytest.raises(ValueError, match=r"sync\.mean_abs_logprob_diff must be > 0"):
        SyncConfig(mean_abs_logprob_diff=0.0)


def _step_gap_inputs(
    gap: torch.Tensor, lengths: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What train_step hands the check: each row's max [N], the sum of |gap| and the real-token mask [N, T]."""
    mask = torch.arange(gap.shape[1])[None, :] < torch.tensor(lengths)[:, None]  # [N, T]
    gap = gap * mask  # [N, T] padding contributes nothing
    return gap.amax(dim=1), gap.sum(), mask


def test_step_check_uses_the_mean_over_the_ranks_real_tokens() -> None:
    # Stale-head-like gaps, but rows 1 and 3 hold only 5 real tokens: 25 + 5 + 25 + 5 = 60 tokens.
    # Flat index parity decides 0.04 (even) or 0.06 (odd): rows 0 and 2 hold 13 * 0.04 + 12 * 0.06 = 1.24 each,
    # rows 1 and 3 (flat 25-29 and 75-79) 3 * 0.06 + 2 * 0.04 = 0.26 each; sum 3.0, mean 3.0 / 60 = 0.05.
    row_gap, gap_sum, mask = _step_gap_inputs(stale_head_like_gaps(), [25, 5, 25, 5])
    assert float(gap_sum) == pytest.approx(3.0)
    with pytest.raises(
        SyncVerificationError,
        match=r"by mean 0\.05 > 0\.03 \(max 0\.06\).*before the optimizer.*tied lm_head.*prefix",
    ):
        check_rollout_gap(row_gap, gap_sum, mask, BF16)
    # Divided by all 100 slots, padding included, the mean would be 3.0 / 100 = 0.03: the limit, which passes.
    check_rollout_gap(row_gap, gap_sum, torch.ones_like(mask), BF16)
    # The same gaps under the old bf16 default (max 1.0 alone) pass: what the issue reports.
    check_rollout_gap(row_gap, gap_sum, mask, 1.0)
    # A bf16-like scatter passes the new limits; its one far token is what a max limit would see.
    row_gap, gap_sum, mask = _step_gap_inputs(bf16_like_gaps(), [25] * 4)
    check_rollout_gap(row_gap, gap_sum, mask, BF16)
    with pytest.raises(SyncVerificationError, match=r"by max 0\.3 > 0\.1 .*completion 2"):
        check_rollout_gap(row_gap, gap_sum, mask, 0.1)
    # A NaN gap (a NaN logprob on either side) counts as infinitely far, and names its completion.
    gap = bf16_like_gaps()
    gap[3, 0] = float("nan")
    row_gap, gap_sum, mask = _step_gap_inputs(gap, [25] * 4)
    with pytest.raises(SyncVerificationError, match=r"by max inf > 1 .*completion 3"):
        check_rollout_gap(row_gap, gap_sum, mask, BF16)
    # No engine logprobs on this rank: nothing to compare, nothing raised.
    check_rollout_gap(None, torch.zeros(()), mask, BF16)
