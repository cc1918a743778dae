"""score(): weights, defaults, format kinds, error handling."""

import logging

import pytest

from r1zero.rewards import registry
from r1zero.rewards.registry import DEFAULT_FORMAT_WEIGHTS, REWARDS, RewardResult, score
from r1zero.types import Example

CD = Example(question="q", answer="9", uid="cd/0", meta={"numbers": [1, 2, 3], "target": 9})
ARITH = Example(question="What is 12 + 9?", answer="21", uid="ar/0")


def test_registry_names() -> None:
    assert set(REWARDS) == {"countdown", "arithmetic", "gsm8k", "math", "reasoning_gym"}
    assert set(DEFAULT_FORMAT_WEIGHTS) == set(REWARDS)


def test_countdown_correct_and_formatted() -> None:
    # correct 1, format 1, default countdown format weight 0.1: total = 1.0*1 + 0.1*1 = 1.1
    result = score("countdown", "<think>(1+2)*3</think> <answer>(1 + 2) * 3</answer>", CD)
    assert result == RewardResult(1.1, {"correct": 1.0, "format": 1.0, "error": 0.0})


def test_countdown_formatted_but_wrong() -> None:
    # (1+2)+3 = 6 != 9: correct 0, format 1: total = 0.1
    result = score("countdown", "<think>t</think> <answer>(1 + 2) + 3</answer>", CD)
    assert result.total == pytest.approx(0.1)
    assert result.components["correct"] == 0.0


def test_correct_without_think_format() -> None:
    # correct 1, format 0 (no think block): total = 1.0
    assert score("countdown", "<answer>(1 + 2) * 3</answer>", CD).total == 1.0


def test_weights_and_answer_only_format() -> None:
    # answer_only: one answer block is enough for the format. total = 2.0*1 + 0.5*1 = 2.5
    result = score(
        "arithmetic",
        "12 + 9 = 21 <answer>21</answer>",
        ARITH,
        correct_weight=2.0,
        format_weight=0.5,
        format_kind="answer_only",
    )
    assert result.total == 2.5
    # The same text under think_answer has no format: total = 2.0*1 + 0.5*0 = 2.0
    assert (
        score(
            "arithmetic", "12 + 9 = 21 <answer>21</answer>", ARITH, correct_weight=2.0, format_weight=0.5
        ).total
        == 2.0
    )


def test_math_and_gsm8k_default_to_no_format_weight() -> None:
    gsm = Example(question="q", answer="72", uid="g/0")
    # format 1 but weight 0.0 and the answer is wrong: total 0.0
    result = score("gsm8k", "<think>t</think> <answer>71</answer>", gsm)
    assert result.total == 0.0 and result.components["format"] == 1.0


def test_unknown_task_and_format_kind_raise() -> None:
    with pytest.raises(ValueError, match="known tasks"):
        score("countdwn", "x", CD)
    with pytest.raises(ValueError, match="format_kind"):
        score("countdown", "x", CD, format_kind="xml")


def test_reward_bug_is_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    # A countdown example without meta["numbers"]: the reward raises KeyError; score reports error 1.0.
    registry._warned.discard("countdown")
    broken = Example(question="q", answer="9", uid="cd/bad")
    with caplog.at_level(logging.WARNING, logger="r1zero.rewards.registry"):
        first = score("countdown", "<answer>1</answer>", broken)
        second = score("countdown", "<answer>1</answer>", broken)
    assert first == second == RewardResult(0.0, {"correct": 0.0, "format": 0.0, "error": 1.0})
    assert sum("raised KeyError" in r.message for r in caplog.records) == 1  # warned once


def test_gsm8k_bad_gold_is_an_error_component() -> None:
    result = score("gsm8k", "<answer>72</answer>", Example(question="q", answer="many", uid="g/1"))
    assert result.components["error"] == 1.0 and result.total == 0.0


def test_math_through_registry() -> None:
    pytest.importorskip("math_verify")
    ex = Example(question="q", answer="\\frac{1}{2}", uid="m/0")
    result = score("math", "<think>t</think> <answer>0.5</answer>", ex)
    assert result == RewardResult(1.0, {"correct": 1.0, "format": 1.0, "error": 0.0})  # format weight 0.0


def test_result_is_frozen() -> None:
    result = score("arithmetic", "<answer>21</answer>", ARITH)
    with pytest.raises(AttributeError):
        result.total = 5.0  # type: ignore[misc]
