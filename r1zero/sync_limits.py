"""What counts as a broken weight sync: the limits on the per-token |logprob gap| between the rollout engine and
the learner, and the test of a check's gap against them (the sync itself: `r1zero.sync`).

Its own module, importing nothing of r1zero, so that `r1zero.config` (the precision-based defaults,
`RunConfig.sync_limits`) can import it without reaching the rollout package through `r1zero.sync`.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class GapLimits(NamedTuple):
    """How far the engine's per-token logprobs may be from the learner's (nats) before a sync counts as broken.

    max_abs bounds any single token; mean_abs bounds the mean |gap| over the tokens one check compares (the
    probe, or one rank's tokens of a step). A plain (max, mean) pair of floats, so code that must not import
    this module can take it as `tuple[float, float]`. Defaults by precision: `RunConfig.sync_limits`.
    """

    max_abs: float
    mean_abs: float = math.inf


def as_gap_limits(limit: float | tuple[float, float]) -> GapLimits:
    """A (max, mean) pair as GapLimits; a bare number is a max limit alone (what `max_abs_diff` always meant).

    Example: 0.01 -> GapLimits(max_abs=0.01, mean_abs=inf); (1.0, 0.03) -> GapLimits(max_abs=1.0, mean_abs=0.03).
    """
    if isinstance(limit, tuple):
        return GapLimits(float(limit[0]), float(limit[1]))
    return GapLimits(float(limit))


def gap_violation(max_abs: float, mean_abs: float, limits: GapLimits) -> str | None:
    """Which limit a check's gap breaks, as a phrase for the error message; None when it is within both.

    max_abs / mean_abs: the max and the mean of the check's per-token |gap|. NaN counts as breaking.
    Example, the bf16 default (no max limit, mean 0.05):
        max 0.25, mean 0.006 -> None                          (a correct bf16 sync: a few tokens scatter)
        max 1.09, mean 0.006 -> None                          (step 29 of the CPU default in bf16: a far tail)
        max 0.45, mean 0.19  -> "mean 0.19 > 0.05 (max 0.45)"  (many tokens off: a stale tied head)
    and the fp32 default (max 0.01, no mean limit): max 0.02, mean 0.001 -> "max 0.02 > 0.01".
    Why the mean: bf16 rounding scatters single tokens with a long tail but averages out over a step's tokens,
    while a broken sync moves many tokens at once; a max limit must sit above the tail, which grows with the
    tokens checked, and so lets such faults through (docs/sync_gap.md).
    """
    max_abs = math.inf if math.isnan(max_abs) else max_abs
    mean_abs = math.inf if math.isnan(mean_abs) else mean_abs
    if max_abs > limits.max_abs:
        return f"max {max_abs:.4g} > {limits.max_abs:g}"
    if mean_abs > limits.mean_abs:
        return f"mean {mean_abs:.4g} > {limits.mean_abs:g} (max {max_abs:.4g})"
    return None
