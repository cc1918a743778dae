"""Agreement with TRL 1.16.0, the peer implementation, where the definitions coincide.

The loss is TRL's own code: `trl/trainer/grpo_trainer.py`, `GRPOTrainer._compute_loss`, called unbound with a
`SimpleNamespace` standing in for the trainer (its model forward, `_get_per_token_logps_and_entropies`, is replaced
by a function returning our tensors), so no model or trainer is built. Mapping:
    TRL loss_type "grpo"    <-> aggregation "seq_mean_token_mean"
    TRL loss_type "dr_grpo" <-> aggregation "seq_mean_token_sum_norm" (max_response_len = max_completion_length)
    TRL loss_type "dapo"    <-> aggregation "token_mean" with the step's normalizer (num_items_in_batch)
    TRL loss_type "bnpo"    <-> aggregation "token_mean" for one micro-batch (bnpo normalizes per micro-batch)
TRL divides "grpo" / "dr_grpo" by the number of accumulation steps, which equals our global normalizer only for
equal-size micro-batches (that is what the accumulation case uses). Advantages and TIS weights are computed in
`_generate_and_score_completions`, which needs a model and rollouts; those two formulas are transcribed below
(file, function and lines cited), calling TRL's own `nanstd`.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from r1zero.algo import group_advantages, kl_penalty_loss, loss_normalizer, policy_loss, truncated_is_weights

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # TRL warns about the vLLM version on import
    grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    trl_utils = pytest.importorskip("trl.trainer.utils")

F64 = torch.float64
N, T = 8, 6
LOSS_TYPES = {"grpo": "seq_mean_token_mean", "dr_grpo": "seq_mean_token_sum_norm", "dapo": "token_mean"}


def trl_compute_loss(
    loss_type: str,
    logprobs: torch.Tensor,
    inputs: dict[str, torch.Tensor],
    *,
    beta: float,
    eps_low: float,
    eps_high: float,
    use_is: bool,
    accumulation_steps: int = 1,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Call TRL's `GRPOTrainer._compute_loss` with a stand-in trainer; logprobs [n, T] play the model's output."""
    metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
    entropies = torch.rand_like(logprobs)  # [n, T]: only logged by TRL
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logprobs, entropies, None),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=use_is,
        vllm_importance_sampling_correction=use_is,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=accumulation_steps,
        max_completion_length=T,
        accelerator=SimpleNamespace(
            num_processes=1,
            gather=lambda x: x,
            gather_for_metrics=lambda x: x,
            reduce=lambda x, reduction: x,
        ),
        args=SimpleNamespace(
            delta=None, use_bias_correction_kl=False, steps_per_generation=accumulation_steps
        ),
        _entropy_bonus_enabled=False,
        _metrics=metrics,
    )
    loss = grpo_trainer.GRPOTrainer._compute_loss(fake, None, inputs)
    return loss, metrics["train"]


def random_batch(seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    # ragged; every row has a token (TRL's per-sequence mean needs one)
    lengths = torch.tensor([6, 1, 3, 6, 2, 5, 4, 1])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # [N, T]
    current = -torch.rand(N, T, generator=gen, dtype=F64) * 3  # [N, T]
    return {
        "mask": mask,
        "logprobs": current,
        "old": current + 0.3 * torch.randn(N, T, generator=gen, dtype=F64),  # ratios both sides of the clip
        "ref": current + 0.2 * torch.randn(N, T, generator=gen, dtype=F64),
        "advantages": torch.randn(N, generator=gen, dtype=F64),
        "is_ratio": torch.exp(0.1 * torch.randn(N, T, generator=gen, dtype=F64)).clamp(max=1.5),
    }


def trl_inputs(b: dict[str, Any], rows: slice) -> dict[str, torch.Tensor]:
    n = b["mask"][rows].shape[0]
    return {
        "prompt_ids": torch.zeros(n, 2, dtype=torch.long),
        "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.zeros(n, T, dtype=torch.long),
        "completion_mask": b["mask"][rows],
        "advantages": b["advantages"][rows],
        "old_per_token_logps": b["old"][rows],
        "ref_per_token_logps": b["ref"][rows],
        "importance_sampling_ratio": b["is_ratio"][rows],
        # TRL: tokens of the whole generation batch (all micro-batches)
        "num_items_in_batch": b["mask"].sum(),
    }


def ours(b: dict[str, Any], logprobs: torch.Tensor, rows: slice, mode: str, *, beta: float, use_is: bool):
    normalizer = loss_normalizer(b["mask"], mode, T)  # the whole step's
    loss, metrics = policy_loss(
        logprobs,
        b["old"][rows],
        b["advantages"][rows],
        b["mask"][rows],
        clip_low=0.2,
        clip_high=0.28,
        aggregation=mode,
        max_response_len=T,
        is_weights=b["is_ratio"][rows] if use_is else None,
        normalizer=normalizer,
    )
    kl = kl_penalty_loss(logprobs, b["ref"][rows], b["mask"][rows], aggregation=mode, max_response_len=T,
                         normalizer=normalizer)  # fmt: skip
    return loss + beta * kl, metrics


@pytest.mark.parametrize("loss_type", [*sorted(LOSS_TYPES), "bnpo"])
@pytest.mark.parametrize(("beta", "use_is"), [(0.0, False), (0.04, True)])
def test_policy_loss_equals_trl_full_batch(loss_type: str, beta: float, use_is: bool) -> None:
    b = random_batch(seed=len(loss_type))
    mode = LOSS_TYPES.get(loss_type, "token_mean")
    everything = slice(None)
    lp_trl = b["logprobs"].clone().requires_grad_()
    lp_ours = b["logprobs"].clone().requires_grad_()
    trl_loss, trl_metrics = trl_compute_loss(
        loss_type, lp_trl, trl_inputs(b, everything), beta=beta, eps_low=0.2, eps_high=0.28, use_is=use_is
    )
    our_loss, our_metrics = ours(b, lp_ours, everything, mode, beta=beta, use_is=use_is)
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-12, atol=1e-12)
    trl_loss.backward()
    our_loss.backward()
    torch.testing.assert_close(lp_ours.grad, lp_trl.grad, rtol=1e-12, atol=1e-12)
    # the clip metrics mean the same thing (TRL: clip_ratio/low_mean, clip_ratio/high_mean)
    assert our_metrics["clip_frac_low"].item() == pytest.approx(
        trl_metrics["clip_ratio/low_mean"][0], abs=1e-7
    )
    assert our_metrics["clip_frac_high"].item() == pytest.approx(
        trl_metrics["clip_ratio/high_mean"][0], abs=1e-7
    )
    assert our_metrics["clip_frac_low"].item() > 0 and our_metrics["clip_frac_high"].item() > 0


@pytest.mark.parametrize("loss_type", sorted(LOSS_TYPES))
def test_micro_batches_sum_to_trl_accumulated_loss(loss_type: str) -> None:
    # 2 equal micro-batches of 4 rows, TRL with gradient_accumulation_steps = steps_per_generation = 2
    b = random_batch(seed=7)
    trl_total, our_total = torch.zeros((), dtype=F64), torch.zeros((), dtype=F64)
    for rows in (slice(0, 4), slice(4, 8)):
        lp = b["logprobs"][rows]
        trl_loss, _ = trl_compute_loss(
            loss_type, lp, trl_inputs(b, rows), beta=0.04, eps_low=0.2, eps_high=0.28, use_is=True,
            accumulation_steps=2,
        )  # fmt: skip
        our_loss, _ = ours(b, lp, rows, LOSS_TYPES[loss_type], beta=0.04, use_is=True)
        trl_total, our_total = trl_total + trl_loss, our_total + our_loss
    full, _ = ours(b, b["logprobs"], slice(None), LOSS_TYPES[loss_type], beta=0.04, use_is=True)
    torch.testing.assert_close(our_total, trl_total, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(our_total, full, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- transcribed
def trl_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    """Transcribed from trl 1.16.0 trl/trainer/grpo_trainer.py, GRPOTrainer._generate_and_score_completions,
    lines 2765-2787 (multi_objective_aggregation="sum_then_normalize", one reward function), with TRL's nanstd."""
    mean_grouped = torch.nanmean(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations)
    if scale_rewards in ["group", "none"]:
        std = trl_utils.nanstd(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations)
    else:  # "batch"
        std = trl_utils.nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    return advantages


@pytest.mark.parametrize("normalize", ["group", "batch", "none"])
def test_group_advantages_equal_trl(normalize: str) -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.1, 0.0, 1.0], dtype=F64)
    expected = trl_advantages(rewards, 4, normalize)
    torch.testing.assert_close(group_advantages(rewards, 4, normalize=normalize, eps=1e-4), expected)


def test_truncated_is_weights_equal_trl() -> None:
    """TRL (same file, `_generate_and_score_completions`, lines 2659-2685, mode "token_truncate", clip_min None):
    exp((old_per_token_logps - sampling_per_token_logps) * mask) clamped to max vllm_importance_sampling_clip_max."""
    gen = torch.Generator().manual_seed(3)
    old = -torch.rand(4, 5, generator=gen, dtype=F64)
    sampling = old + 0.2 * torch.randn(4, 5, generator=gen, dtype=F64)
    mask = (torch.rand(4, 5, generator=gen) > 0.3).long()
    expected = torch.clamp(torch.exp((old - sampling) * mask), min=None, max=1.1)
    got = truncated_is_weights(old, sampling, cap=1.1)
    torch.testing.assert_close(got * mask, expected * mask)
    assert float(got.max()) <= 1.1
