"""Per-token clipped surrogate, KL estimators and the aggregation modes that turn [N, T] into a scalar.

Shapes (see `r1zero.types`): N completions (rows), T response tokens (padded), response_mask [N, T] bool or 0/1
marks real tokens. Advantages are per completion [N] and broadcast over its tokens.

Gradient accumulation is exact by construction: every aggregation is `numerator / normalizer`, where the
numerator is a sum over rows (so per-micro-batch numerators add up) and the normalizer depends only on the whole
step's response mask. Compute `loss_normalizer` once on the step's full mask, pass it as `normalizer=` to every
micro-batch's loss, and the micro-batch losses (and their gradients) sum to exactly the full-batch loss. With
data parallelism, the normalizer is additive over rows too: all-reduce (sum) it across ranks, and multiply each
rank's loss by the world size when the engine averages gradients across ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor


# ---------------------------------------------------------------------------------------------- KL estimators
def _k1(log_ratio: Tensor) -> Tensor:
    """k1 = -r; unbiased, high variance, can be negative. log_ratio r [...] -> [...]."""
    return -log_ratio


def _k2(log_ratio: Tensor) -> Tensor:
    """k2 = r^2 / 2; low variance, biased. [...] -> [...]."""
    return 0.5 * log_ratio.square()


def _k3(log_ratio: Tensor) -> Tensor:
    """k3 = exp(r) - 1 - r >= 0; unbiased, low variance (GRPO's choice). [...] -> [...]."""
    return torch.expm1(log_ratio) - log_ratio  # expm1: exact near r = 0


# kind -> (r = ref_logprobs - logprobs, any shape) -> per-token estimate, same shape (Schulman, "Approximating KL")
KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) for tokens sampled from pi, with r = ref_logprobs - logprobs.

    logprobs, ref_logprobs: [...] (e.g. [N, T]) -> [...]. k1 = -r, k2 = r^2 / 2, k3 = exp(r) - 1 - r.
    Example: logprobs -1, ref_logprobs -2 -> r = -1: k1 = 1, k2 = 0.5, k3 = e^-1 - 1 + 1 = 0.3679.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL kind {kind!r}; valid: {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[kind](ref_logprobs - logprobs)  # [...]


# ---------------------------------------------------------------------------------------------- aggregation
def _token_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum of values over real tokens. values [N, T], mask [N, T] -> 0-dim."""
    return torch.where(mask.bool(), values, 0.0).sum()  # where, not *: a NaN/inf in padding stays out


def _seq_token_mean_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum over rows of each row's token mean (a row without tokens adds 0). [N, T], [N, T] -> 0-dim."""
    per_row = torch.where(mask.bool(), values, 0.0).sum(dim=1)  # [N]
    counts = mask.to(per_row.dtype).sum(dim=1).clamp(min=1.0)  # [N]
    return (per_row / counts).sum()  # 0-dim


def _count_tokens(mask: Tensor, max_response_len: int | None) -> Tensor:
    """token_mean normalizer: the number of real tokens. mask [N, T] -> 0-dim float."""
    return mask.to(torch.float32).sum()  # 0-dim


def _rows_with_tokens(mask: Tensor) -> Tensor:
    """How many rows carry at least one real token. mask [N, T] -> 0-dim float.

    A row the loss mask removed entirely (dynamic sampling, `mask_truncated`) contributes nothing to the
    numerator, so it must not count in the denominator either (else the step's gradient shrinks by the kept
    fraction). Example: [[1, 1], [0, 0], [1, 0]] -> 2."""
    return mask.bool().any(dim=1).to(torch.float32).sum()  # 0-dim


def _count_rows(mask: Tensor, max_response_len: int | None) -> Tensor:
    """seq_mean_token_mean normalizer: the number of sequences that carry loss tokens. [N, T] -> 0-dim float."""
    return _rows_with_tokens(mask)  # 0-dim


def _count_row_slots(mask: Tensor, max_response_len: int | None) -> Tensor:
    """seq_mean_token_sum_norm normalizer: (sequences with loss tokens) * max_response_len (Dr. GRPO's constant
    per-sequence denominator). [N, T] -> 0-dim float."""
    if max_response_len is None or max_response_len < 1:
        raise ValueError(
            f"aggregation 'seq_mean_token_sum_norm' needs max_response_len >= 1, got {max_response_len}"
        )
    return _rows_with_tokens(mask) * float(max_response_len)  # 0-dim


class _Mode(NamedTuple):
    numerator: Callable[[Tensor, Tensor], Tensor]  # (values [N, T], mask [N, T]) -> 0-dim, additive over rows
    normalizer: Callable[[Tensor, int | None], Tensor]  # (step's full mask [N, T], max_response_len) -> 0-dim


# mode -> how [N, T] becomes a scalar: numerator(values, mask) / normalizer(full step's mask)
AGGREGATIONS: dict[str, _Mode] = {
    "token_mean": _Mode(_token_sum, _count_tokens),  # DAPO: every token of the batch weighs the same
    "seq_mean_token_mean": _Mode(_seq_token_mean_sum, _count_rows),  # original GRPO: every sequence the same
    "seq_mean_token_sum_norm": _Mode(_token_sum, _count_row_slots),  # Dr. GRPO: constant denominator
}


def _mode(mode: str) -> _Mode:
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; valid: {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[mode]


def loss_normalizer(response_mask: Tensor, mode: str, max_response_len: int | None = None) -> Tensor:
    """The denominator of `aggregate`, computed once on the WHOLE step's mask so micro-batches sum exactly.

    response_mask: [N, T] of the full step (all micro-batches; pad to a common T or add per-micro-batch values:
    every normalizer is additive over rows). Returns a 0-dim float32 tensor, at least 1 (so an all-zero mask
    gives a loss of 0, not NaN).
    Only rows with at least one real token count, in every mode: a row removed by the loss mask adds nothing.
    Example: mask [[1, 1, 0], [1, 0, 0]]: token_mean -> 3; seq_mean_token_mean -> 2;
             seq_mean_token_sum_norm with max_response_len 4 -> 2 * 4 = 8. Adding a row [0, 0, 0] changes none.
    """
    return _mode(mode).normalizer(response_mask, max_response_len).clamp(min=1.0)  # 0-dim


def aggregate_micro(values: Tensor, mask: Tensor, mode: str, normalizer: Tensor) -> Tensor:
    """One micro-batch's share of the step loss: numerator(values, mask) / normalizer (from `loss_normalizer`).

    values, mask: [n, T] of this micro-batch; normalizer: 0-dim from the full step's mask. Summing the results
    over the micro-batches of a step gives exactly `aggregate` of the full batch.
    Example (token_mean): values [[1, 3]] mask [[1, 1]] and values [[5, 9]] mask [[1, 0]], normalizer 3
             -> (1 + 3) / 3 + 5 / 3 = 3 = aggregate of the stacked batch.
    """
    numerator = _mode(mode).numerator(values, mask)  # 0-dim
    return numerator / normalizer.to(device=numerator.device, dtype=numerator.dtype)  # 0-dim


def aggregate(
    values: Tensor,
    mask: Tensor,
    mode: str,
    max_response_len: int | None = None,
    *,
    normalizer: Tensor | None = None,
) -> Tensor:
    """Reduce per-token values [N, T] to a scalar over the real tokens marked by mask [N, T].

    mode: "token_mean" (sum / number of real tokens in the batch; DAPO), "seq_mean_token_mean" (mean over rows
    of each row's token mean; original GRPO), "seq_mean_token_sum_norm" (sum / (N * max_response_len);
    Dr. GRPO, needs max_response_len). normalizer: pass `loss_normalizer` of the full step when `values` is one
    micro-batch (then the results over micro-batches sum to the full-batch value); None = this batch's own.
    A row without tokens counts nowhere (numerator or normalizer); all-zero mask: 0 (normalizer clamped to >= 1).
    Example: values [[1, 2, 9], [4, 9, 9]], mask [[1, 1, 0], [1, 0, 0]]:
             token_mean (1 + 2 + 4) / 3 = 2.333; seq_mean_token_mean ((1 + 2) / 2 + 4 / 1) / 2 = 2.75;
             seq_mean_token_sum_norm, max_response_len 4: 7 / (2 * 4) = 0.875.
             values [[1, 1], [3, 3]], mask [[1, 1], [0, 0]], seq_mean_token_mean: 1.0 (the masked row is gone).
    """
    if normalizer is None:
        normalizer = loss_normalizer(mask, mode, max_response_len)  # 0-dim
    return aggregate_micro(values, mask, mode, normalizer)  # 0-dim


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values over real tokens (0 for an all-zero mask), detached: a metric. [N, T], [N, T] -> 0-dim."""
    with torch.no_grad():
        total = torch.where(mask.bool(), values.float(), 0.0).sum()  # 0-dim
        return total / mask.to(torch.float32).sum().clamp(min=1.0)  # 0-dim


# ---------------------------------------------------------------------------------------------- losses
def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token_mean",
    max_response_len: int | None = None,
    is_weights: Tensor | None = None,
    normalizer: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO/GRPO clipped surrogate: -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A), aggregated.

    logprobs: [N, T] under the policy being trained (with grad); old_logprobs: [N, T] under the policy that
    sampled (learner's recomputation; no grad); advantages: [N]; response_mask: [N, T].
    clip_high > clip_low is DAPO's clip-higher. is_weights: [N, T] truncated importance-sampling weights for the
    rollout-engine vs learner mismatch (`truncated_is_weights`), multiplied into the per-token loss, detached.
    aggregation / max_response_len / normalizer: as in `aggregate`.
    Returns (loss 0-dim, metrics: detached 0-dim masked means over real tokens):
        clip_frac_low   fraction where the lower clip is active: ratio < 1 - clip_low and A < 0 (zero gradient)
        clip_frac_high  fraction where the upper clip is active: ratio > 1 + clip_high and A > 0 (zero gradient)
        ratio_mean      mean of ratio = exp(logprobs - old_logprobs)
        approx_kl_old   mean k3 estimate between old and current policy (r = old_logprobs - logprobs)
    Example: one token, logprobs = old_logprobs -> ratio 1, loss -A: A = 2 -> -2. ratio 1.5, A = 2, clip .2
             -> -min(3, 1.2 * 2) = -2.4 and clip_frac_high 1; ratio .5, A = -1 -> -min(-.5, -.8) = .8,
             clip_frac_low 1.
    """
    mask = response_mask.bool()  # [N, T]
    # Zero the log-ratio on padding before exp: a huge padded value would give inf there and NaN gradients.
    log_ratio = torch.where(mask, logprobs - old_logprobs.detach(), 0.0)  # [N, T]
    ratio = torch.exp(log_ratio)  # [N, T]
    adv = advantages.detach().unsqueeze(-1)  # [N, 1]
    clipped_ratio = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [N, T]
    per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)  # [N, T]
    if is_weights is not None:
        per_token = per_token * torch.where(mask, is_weights.detach(), 0.0)  # [N, T]
    loss = aggregate(per_token, mask, aggregation, max_response_len, normalizer=normalizer)  # 0-dim

    with torch.no_grad():
        low = (ratio < 1.0 - clip_low) & (adv < 0)  # [N, T]
        high = (ratio > 1.0 + clip_high) & (adv > 0)  # [N, T]
        metrics = {
            "clip_frac_low": masked_mean(low, mask),
            "clip_frac_high": masked_mean(high, mask),
            "ratio_mean": masked_mean(ratio, mask),
            "approx_kl_old": masked_mean(_k3(-log_ratio), mask),  # r = old - new
        }
    return loss, metrics


def kl_penalty_loss(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    response_mask: Tensor,
    *,
    kind: str = "k3",
    aggregation: str = "token_mean",
    max_response_len: int | None = None,
    normalizer: Tensor | None = None,
) -> Tensor:
    """The aggregated KL(pi || pi_ref) term; add it to the policy loss with a coefficient beta.

    logprobs: [N, T] (with grad), ref_logprobs: [N, T] (reference model, detached), response_mask: [N, T].
    Padding positions contribute exactly 0 (and no gradient). Returns 0-dim.
    Example: one token, logprobs -1, ref -2, k3, token_mean -> e^-1 - 1 + 1 = 0.3679.
    """
    mask = response_mask.bool()  # [N, T]
    ref = ref_logprobs.detach()  # [N, T]
    current = torch.where(mask, logprobs, ref)  # [N, T]; r = 0 on padding -> estimate 0 there
    per_token = kl_estimate(current, ref, kind)  # [N, T]
    return aggregate(per_token, mask, aggregation, max_response_len, normalizer=normalizer)  # 0-dim


def truncated_is_weights(learner_old_logprobs: Tensor, rollout_logprobs: Tensor, cap: float) -> Tensor:
    """Truncated importance-sampling weights min(pi_learner / pi_rollout, cap), detached.

    The rollout engine (vLLM, bf16, other kernels) samples from a slightly different distribution than the
    learner computes; weighting each token by this ratio corrects the policy gradient (Yao et al. 2025, "Your
    efficient RL framework secretly brings you off-policy RL training"), and the cap bounds the variance.
    learner_old_logprobs, rollout_logprobs: [N, T] -> [N, T]. Padding gets whatever its inputs give: mask it.
    Example: learner -1.0, rollout -1.1 -> exp(0.1) = 1.105; with cap 1.05 -> 1.05.
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    with torch.no_grad():
        return torch.exp(learner_old_logprobs - rollout_logprobs).clamp(max=cap)  # [N, T]


def overlong_penalty(lengths: Tensor, max_len: int, buffer_len: int, penalty: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment, a reward term: 0 up to max_len - buffer_len, then linear to -penalty.

    lengths: [N] response lengths in tokens -> [N] float: 0 if length <= max_len - buffer_len;
    ((max_len - buffer_len) - length) / buffer_len * penalty up to max_len; -penalty beyond max_len.
    Example: max_len 10, buffer_len 4, penalty 1: lengths [6, 8, 10, 12] -> [0, -0.5, -1, -1].
    """
    if buffer_len < 0 or buffer_len > max_len:
        raise ValueError(f"need 0 <= buffer_len <= max_len, got buffer_len={buffer_len}, max_len={max_len}")
    dtype = lengths.dtype if lengths.is_floating_point() else torch.float32
    length = lengths.to(dtype)  # [N]
    start = max_len - buffer_len
    ramp = (start - length) / max(buffer_len, 1) * penalty  # [N]; unused when buffer_len == 0
    beyond = torch.full_like(length, -penalty)  # [N]
    return torch.where(length <= start, 0.0, torch.where(length <= max_len, ramp, beyond))  # [N]
