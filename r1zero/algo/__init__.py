"""Pure RL math for GRPO-style training: advantages, losses, chunked log-probabilities.

Tensors and plain scalars in, tensors out; no config objects, no model forward, no `.item()`. Shapes follow the
glossary in `r1zero.types` (N = B * G rows, T tokens, V vocabulary, H hidden).
"""

from r1zero.algo.advantages import NORMALIZERS, filter_zero_variance_groups, group_advantages
from r1zero.algo.logprobs import hidden_to_logprobs
from r1zero.algo.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate,
    aggregate_micro,
    kl_estimate,
    kl_penalty_loss,
    loss_normalizer,
    masked_mean,
    overlong_penalty,
    policy_loss,
    truncated_is_weights,
)
from r1zero.algo.objective import MicroBatchLoss, micro_batch_loss

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "NORMALIZERS",
    "MicroBatchLoss",
    "aggregate",
    "aggregate_micro",
    "filter_zero_variance_groups",
    "group_advantages",
    "hidden_to_logprobs",
    "kl_estimate",
    "kl_penalty_loss",
    "loss_normalizer",
    "masked_mean",
    "micro_batch_loss",
    "overlong_penalty",
    "policy_loss",
    "truncated_is_weights",
]
