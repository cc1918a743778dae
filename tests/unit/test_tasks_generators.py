"""Countdown and arithmetic generators: determinism, solvability, splits."""

from itertools import islice

import pytest

from r1zero.rewards.countdown import countdown_reward
from r1zero.rewards.math import gsm8k_reward
from r1zero.tasks.arithmetic import iter_arithmetic
from r1zero.tasks.countdown import countdown_question, iter_countdown
from r1zero.tasks.registry import TASKS, assert_disjoint, load_examples
from r1zero.tasks.splits import split_of, split_seed
from r1zero.types import Example


def generate_countdown(n: int, *, seed: int, **kwargs) -> list[Example]:
    return list(islice(iter_countdown(seed, **kwargs), n))


def generate_arithmetic(n: int, *, seed: int, **kwargs) -> list[Example]:
    return list(islice(iter_arithmetic(seed, **kwargs), n))


def test_countdown_deterministic_and_seed_dependent() -> None:
    assert generate_countdown(50, seed=3) == generate_countdown(50, seed=3)
    assert generate_countdown(50, seed=3) != generate_countdown(50, seed=4)


def test_countdown_examples_are_solvable() -> None:
    examples = generate_countdown(300, seed=0)
    for ex in examples:
        numbers, target = ex.meta["numbers"], ex.meta["target"]
        assert 3 <= len(numbers) <= 4 and all(1 <= x <= 99 for x in numbers)
        assert 1 <= target <= 100 and ex.answer == str(target)
        # The expression the generator built scores 1.0 with the real reward.
        assert (
            countdown_reward(f"<think>t</think> <answer>{ex.meta['solution']}</answer>", numbers, target)
            == 1.0
        )
        assert ex.question == countdown_question(numbers, target)
    assert len({ex.uid for ex in examples}) == len(examples)


def test_countdown_options() -> None:
    examples = generate_countdown(
        50, seed=1, min_numbers=5, max_numbers=5, number_range=(1, 9), max_target=500
    )
    assert all(len(ex.meta["numbers"]) == 5 and ex.meta["target"] <= 500 for ex in examples)
    with pytest.raises(ValueError):
        generate_countdown(1, seed=0, min_numbers=4, max_numbers=3)


def test_countdown_question_text() -> None:
    q = countdown_question([3, 5, 7], 15)
    assert q.startswith("Using the numbers [3, 5, 7], create an equation that equals 15.")
    assert "each number exactly once" in q and "<answer>" in q


def test_arithmetic_values() -> None:
    for ex in generate_arithmetic(100, seed=0):
        a, b = ex.meta["operands"]
        assert ex.question == f"What is {a} + {b}?" and ex.answer == str(a + b)
        assert gsm8k_reward(f"<answer>{a + b}</answer>", ex.answer) == 1.0
    for ex in generate_arithmetic(50, seed=0, kind="chain", terms=3, low=1, high=9):
        (a, b, c), (o1, o2) = ex.meta["operands"], ex.meta["ops"]
        # e.g. "What is 5 - 2 + 7?" -> 5 - 2 + 7 = 10, evaluated left to right
        value = a + (b if o1 == "+" else -b) + (c if o2 == "+" else -c)
        assert ex.question == f"What is {a} {o1} {b} {o2} {c}?" and ex.answer == str(value)
    for ex in generate_arithmetic(20, seed=0, kind="product", low=2, high=9):
        a, b = ex.meta["operands"]
        assert ex.question == f"What is {a} * {b}?" and ex.answer == str(a * b)
    assert generate_arithmetic(10, seed=5) == generate_arithmetic(10, seed=5)
    with pytest.raises(ValueError, match="kind"):
        generate_arithmetic(1, seed=0, kind="power")


def test_split_seeds_are_disjoint() -> None:
    # train streams are even, test streams odd: no (seed, split) pair shares a stream with another.
    assert split_seed(3, "train") == 6 and split_seed(3, "test") == 7
    train = {split_seed(s, "train") for s in range(100)}
    test = {split_seed(s, "test") for s in range(100)}
    assert not train & test
    with pytest.raises(ValueError, match="split"):
        split_seed(0, "validation")


@pytest.mark.parametrize("task", ["countdown", "arithmetic"])
def test_generated_splits_never_overlap(task: str) -> None:
    train = load_examples(task, split="train", n=2000, seed=0)
    test = load_examples(task, split="test", n=100, seed=0)
    other_seed_train = load_examples(task, split="train", n=500, seed=1)
    assert len(train) == 2000 and len(test) == 100
    assert_disjoint(train, test)
    assert_disjoint(other_seed_train, test)  # held-out questions are held out from every seed's train
    assert all(split_of(ex.question) == "test" for ex in test)
    assert len({ex.question for ex in test}) == len(test)  # test has no duplicates
    assert load_examples(task, split="test", n=100, seed=0) == test  # deterministic


def test_small_problem_space_raises_instead_of_looping() -> None:
    # 1-digit sums: 9 * 9 = 81 distinct questions, about 8 of them held out; 50 distinct test questions cannot exist.
    with pytest.raises(ValueError, match="too small"):
        load_examples("arithmetic", split="test", n=50, seed=0, low=1, high=9)


def test_assert_disjoint_detects_overlap() -> None:
    a = Example(question="What is 1 + 1?", answer="2", uid="x/0")
    b = Example(question="What is 1 + 1?", answer="2", uid="y/0")
    c = Example(question="What is 1 + 2?", answer="3", uid="y/1")
    assert_disjoint([a], [c])
    with pytest.raises(ValueError, match="1 of 2 test examples"):
        assert_disjoint([a], [b, c])


def test_registry() -> None:
    assert TASKS == ("countdown", "arithmetic", "gsm8k", "math", "reasoning_gym")
    with pytest.raises(ValueError, match="known tasks"):
        load_examples("countdwn", split="train", n=1, seed=0)
    with pytest.raises(ValueError, match="needs n"):
        load_examples("countdown", split="train", n=None, seed=0)
    assert len(load_examples("arithmetic", split="train", n=3, seed=0, kind="product")) == 3
