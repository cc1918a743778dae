"""reasoning-gym reward: the generator's own `score_answer` on the `<answer>` block, made binary.

reasoning-gym is optional (`pip install reasoning-gym`); it is imported on first use, never at import time.
Its scorers give partial credit (countdown: 0.05 for a well-formed wrong equation, 0.01 for any text); only a
score >= 1.0 counts as correct here, so every task keeps the same 0/1 correctness scale.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from r1zero.rewards.format import extract_answer

MAX_ANSWER_CHARS = 4000
INSTALL_HINT = "the reasoning_gym task needs the optional package reasoning-gym: pip install reasoning-gym"


def import_reasoning_gym() -> Any:
    """The `reasoning_gym` module, or ImportError with an install hint."""
    try:
        import reasoning_gym
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return reasoning_gym


@lru_cache(maxsize=64)
def _scorer(dataset: str, config_json: str) -> Any:
    """A dataset object whose `score_answer(answer, entry)` scores entries of `dataset` (built once per config)."""
    import json

    rg = import_reasoning_gym()
    return rg.create_dataset(dataset, **{**json.loads(config_json), "size": 1, "seed": 0})


def reasoning_gym_reward(completion: str, meta: dict[str, Any]) -> float:
    """1.0 iff reasoning-gym scores the single `<answer>` block >= 1.0 for `meta["rg_entry"]`, else 0.0.

    `meta` is what `r1zero.tasks.reasoning_gym` stores: {"rg_dataset": "chain_sum", "rg_config": "{...}" (JSON),
    "rg_entry": {"question": ..., "answer": ..., "metadata": ...}}. A scorer that raises on a bad answer (some do,
    e.g. on non-numeric text) counts as 0.0.
    """
    answer = extract_answer(completion)
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return 0.0
    scorer = _scorer(meta["rg_dataset"], meta.get("rg_config", "{}"))
    try:
        score = float(scorer.score_answer(answer, meta["rg_entry"]))
    except Exception:
        return 0.0
    return 1.0 if score >= 1.0 else 0.0
