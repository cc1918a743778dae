"""The GRPO objective of one micro-batch: clipped surrogate, optional truncated-IS correction, optional KL to a
reference model, aggregated with the step's global normaliser. The learner calls this once per micro-batch and
pass; everything here is tensors in, tensors out (no model, no config).

Shapes: n rows of this micro-batch, t response tokens (padded). Every per-token input is [n, t].
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from r1zero.algo.losses import kl_penalty_loss, masked_mean, policy_loss, truncated_is_weights


class MicroBatchLoss(NamedTuple):
    """total = policy + kl_coef * kl, each this micro-batch's share of the step's value (divided by the global
    normaliser), so the shares of all micro-batches (and ranks) of a step add up to the step's loss.
    metrics: detached 0-dim token means over this micro-batch's loss tokens (clip fractions, ratio, ...)."""

    total: Tensor
    policy: Tensor
    kl: Tensor
    metrics: dict[str, Tensor]


def micro_batch_loss(
    logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    normalizer: Tensor,
    *,
    old_logprobs: Tensor | None = None,
    rollout_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    tis_cap: float | None = None,
    kl_coef: float = 0.0,
    kl_kind: str = "k3",
    aggregation: str = "token_mean",
    max_response_len: int | None = None,
) -> MicroBatchLoss:
    """One micro-batch's share of the GRPO loss.

    logprobs [n, t]: the policy's logprobs of the sampled tokens (with grad), at the sampling temperature.
    advantages [n]; response_mask [n, t]: the loss tokens (rows removed from the loss are all zero).
    normalizer: 0-dim, `loss_normalizer` of the whole step's loss mask (all micro-batches and ranks).
    old_logprobs [n, t]: the policy that sampled, for the PPO ratio; None = on-policy single pass (this pass's own
        logprobs, detached: ratio 1, no extra forward).
    rollout_logprobs [n, t]: the engine's sampling logprobs; with tis_cap, each token's loss is weighted by
        min(exp(old - rollout), tis_cap) (truncated importance sampling for the engine/learner mismatch).
    ref_logprobs [n, t]: the reference model's, for the KL term (used when kl_coef > 0).
    Example (one token, on-policy, A = 2, token_mean, normaliser 1, kl_coef 0.1, logprobs -1, ref -2, k3):
        policy = -2 (ratio 1), kl = e^-1 - 1 + 1 = 0.3679, total = -2 + 0.1 * 0.3679 = -1.9632.
    """
    old = logprobs.detach() if old_logprobs is None else old_logprobs  # [n, t]
    is_weights = None
    tis_metrics: dict[str, Tensor] = {}
    if tis_cap is not None:
        if rollout_logprobs is None:
            raise ValueError("algo.tis_cap needs the rollout engine's sampling logprobs (rollout_logprobs)")
        is_weights = truncated_is_weights(old, rollout_logprobs, tis_cap)  # [n, t]
        tis_metrics = {
            "tis_clipped_frac": masked_mean(is_weights >= tis_cap, response_mask),  # weights at the cap
            "tis_weight_mean": masked_mean(is_weights, response_mask),
        }
    policy, metrics = policy_loss(
        logprobs,
        old,
        advantages,
        response_mask,
        clip_low=clip_low,
        clip_high=clip_high,
        aggregation=aggregation,
        max_response_len=max_response_len,
        is_weights=is_weights,
        normalizer=normalizer,
    )  # 0-dim
    metrics |= tis_metrics
    kl = torch.zeros((), device=logprobs.device, dtype=policy.dtype)  # 0-dim
    total = policy
    if kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("algo.kl_coef > 0 needs the reference model's logprobs (ref_logprobs)")
        kl = kl_penalty_loss(
            logprobs,
            ref_logprobs,
            response_mask,
            kind=kl_kind,
            aggregation=aggregation,
            max_response_len=max_response_len,
            normalizer=normalizer,
        )  # 0-dim
        total = policy + kl_coef * kl
    return MicroBatchLoss(total, policy.detach(), kl.detach(), metrics)
