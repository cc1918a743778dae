"""Held-out evaluation with the rollout engine: accuracy, format rate and length on a fixed problem set."""

from __future__ import annotations

from collections.abc import Sequence

from r1zero.config import TaskConfig
from r1zero.parts import score_completions
from r1zero.rollout.base import RolloutEngine, SamplingSettings
from r1zero.types import Completion, Prompt


def evaluate(
    engine: RolloutEngine,
    prompts: Sequence[Prompt],
    task: TaskConfig,
    *,
    n: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> tuple[dict[str, float], list[Completion], list[str]]:
    """Sample n completions per held-out prompt; returns (eval/* metrics, completions, scored texts).

    eval/accuracy is the mean over all samples of correct (1.0 = exactly right), i.e. pass@1 estimated with n
    samples; temperature 0 with n = 1 is greedy accuracy.
    """
    if not prompts:
        return {}, [], []
    sampling = SamplingSettings(n=n, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    completions = engine.generate(prompts, sampling)
    scored = score_completions(task, prompts, completions)
    correct = scored.components.get("correct", [0.0] * len(completions))
    fmt = scored.components.get("format", [0.0] * len(completions))
    count = len(completions)
    metrics = {
        "eval/accuracy": sum(1.0 for v in correct if v >= 1.0) / count,
        "eval/format_rate": sum(1.0 for v in fmt if v >= 1.0) / count,
        "eval/reward_mean": sum(scored.totals) / count,
        "eval/length_mean": sum(len(c.token_ids) for c in completions) / count,
        "eval/truncated_frac": sum(1.0 for c in completions if c.truncated) / count,
        "eval/num_problems": float(len(prompts)),
    }
    return metrics, completions, scored.texts
