"""The reward registry and `score`, the one call the training loop makes per completion.

REWARDS[task](completion, example) -> correctness in {0.0, 1.0}
FORMATS[format_kind](completion)   -> format in {0.0, 1.0}
score(task, completion, example)   -> RewardResult(total, {"correct", "format", "error"})
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from r1zero.rewards.countdown import countdown_reward
from r1zero.rewards.format import answer_tag_reward, format_reward
from r1zero.rewards.math import gsm8k_reward, math_reward
from r1zero.rewards.reasoning_gym import reasoning_gym_reward
from r1zero.types import Example

logger = logging.getLogger(__name__)

RewardFn = Callable[[str, Example], float]

REWARDS: dict[str, RewardFn] = {
    "countdown": lambda c, ex: countdown_reward(c, ex.meta["numbers"], ex.meta["target"]),
    "arithmetic": lambda c, ex: gsm8k_reward(c, ex.answer),  # exact number, like GSM8K
    "gsm8k": lambda c, ex: gsm8k_reward(c, ex.answer),
    "math": lambda c, ex: math_reward(c, ex.answer),
    "reasoning_gym": lambda c, ex: reasoning_gym_reward(c, ex.meta),
}

FORMATS: dict[str, Callable[[str], float]] = {
    "think_answer": format_reward,  # R1-Zero template: <think>...</think> <answer>...</answer>
    "answer_only": answer_tag_reward,  # chat template without a think block: one <answer> block
}

# Format weight when `score(format_weight=None)`: 0.0 for math and gsm8k, where Dr. GRPO and SimpleRL-Zoo reward
# correctness only; 0.1 for countdown and arithmetic, TinyZero's format score; 0.0 for reasoning_gym.
DEFAULT_FORMAT_WEIGHTS: dict[str, float] = {
    "countdown": 0.1,
    "arithmetic": 0.1,
    "gsm8k": 0.0,
    "math": 0.0,
    "reasoning_gym": 0.0,
}


@dataclass(frozen=True)
class RewardResult:
    """total = correct_weight * components["correct"] + format_weight * components["format"].

    components also holds "error": 1.0 when the reward function itself failed (then total is 0.0).
    """

    total: float
    components: dict[str, float]


_warned: set[str] = set()


def score(
    task_name: str,
    completion: str,
    example: Example,
    *,
    correct_weight: float = 1.0,
    format_weight: float | None = None,
    format_kind: str = "think_answer",
) -> RewardResult:
    """Score one completion (prefill re-attached, EOS text removed) for `example` of `task_name`.

    `score("countdown", "<think>1+2=3</think> <answer>(1+2)*3</answer>", ex)` with numbers [1, 2, 3], target 9
    -> RewardResult(total=1.1, components={"correct": 1.0, "format": 1.0, "error": 0.0}) (1.0*1 + 0.1*1).
    format_weight None takes DEFAULT_FORMAT_WEIGHTS[task_name]. An unknown task or format kind is a config error:
    ValueError. Any exception inside a reward function is caught: total 0.0, components["error"] = 1.0, and one
    warning per task is logged, so a reward bug shows up as a metric instead of killing a run.
    """
    if task_name not in REWARDS:
        raise ValueError(f"unknown task {task_name!r}; known tasks: {sorted(REWARDS)}")
    if format_kind not in FORMATS:
        raise ValueError(f"unknown format_kind {format_kind!r}; known: {sorted(FORMATS)}")
    weight = DEFAULT_FORMAT_WEIGHTS[task_name] if format_weight is None else format_weight
    try:
        correct = float(REWARDS[task_name](completion, example))
        fmt = float(FORMATS[format_kind](completion))
    except Exception as exc:
        if task_name not in _warned:
            _warned.add(task_name)
            logger.warning(
                "reward %r raised %s: %s (scored 0.0, counted in 'error')", task_name, type(exc).__name__, exc
            )
        return RewardResult(0.0, {"correct": 0.0, "format": 0.0, "error": 1.0})
    return RewardResult(
        correct_weight * correct + weight * fmt, {"correct": correct, "format": fmt, "error": 0.0}
    )
