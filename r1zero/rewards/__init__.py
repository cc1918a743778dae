"""Rewards: pure functions from a completion string (and gold data) to a float; `score` is the entry point.

Imports only the standard library (math-verify runs in checker processes; reasoning-gym is imported on use).
"""

from r1zero.rewards.countdown import countdown_reward
from r1zero.rewards.format import answer_tag_reward, extract_answer, format_reward
from r1zero.rewards.math import gsm8k_reward, math_reward, start_math_checkers, stop_math_checkers
from r1zero.rewards.reasoning_gym import reasoning_gym_reward
from r1zero.rewards.registry import DEFAULT_FORMAT_WEIGHTS, FORMATS, REWARDS, RewardResult, score

__all__ = [
    "DEFAULT_FORMAT_WEIGHTS",
    "FORMATS",
    "REWARDS",
    "RewardResult",
    "answer_tag_reward",
    "countdown_reward",
    "extract_answer",
    "format_reward",
    "gsm8k_reward",
    "math_reward",
    "reasoning_gym_reward",
    "score",
    "start_math_checkers",
    "stop_math_checkers",
]
