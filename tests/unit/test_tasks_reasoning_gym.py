"""reasoning-gym adapter: an ImportError with a hint when missing; Examples and a binary reward when present."""

import importlib.util

import pytest

from r1zero.rewards.registry import score
from r1zero.tasks.registry import assert_disjoint, load_examples

HAS_RG = importlib.util.find_spec("reasoning_gym") is not None


@pytest.mark.skipif(HAS_RG, reason="reasoning-gym is installed")
def test_missing_package_raises_on_use_with_hint() -> None:
    with pytest.raises(ImportError, match="pip install reasoning-gym"):
        load_examples("reasoning_gym", split="train", n=2, seed=0)


def test_reasoning_gym_examples_and_binary_reward() -> None:
    pytest.importorskip("reasoning_gym")
    train = load_examples("reasoning_gym", split="train", n=20, seed=0, name="chain_sum")
    test = load_examples("reasoning_gym", split="test", n=5, seed=0, name="chain_sum")
    assert len(train) == 20 and len(test) == 5
    assert_disjoint(train, test)
    assert load_examples("reasoning_gym", split="test", n=5, seed=0, name="chain_sum") == test
    ex = train[0]
    right = score("reasoning_gym", f"<think>t</think> <answer>{ex.answer}</answer>", ex)
    wrong = score("reasoning_gym", "<think>t</think> <answer>not a number</answer>", ex)
    assert right.components == {"correct": 1.0, "format": 1.0, "error": 0.0}
    assert wrong.components["correct"] == 0.0  # partial credit from reasoning-gym is dropped
