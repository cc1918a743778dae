"""pass@k and maj@k (r1zero.passk) against hand-computed values."""

from __future__ import annotations

import itertools
import math

import pytest

from r1zero.passk import maj_at_k, majority_vote, normalize_answer, pass_at_k


def test_pass_at_k_hand_values() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # c / n = 2/5
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(5, 2, 4) == 1.0  # n - c = 3 < 4: every 4-subset holds a correct sample
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0


def test_pass_at_k_equals_subset_enumeration() -> None:
    # The estimator is the fraction of k-subsets of the n samples holding at least one correct sample.
    for n, c in [(6, 1), (6, 3), (7, 2)]:
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))
            assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_is_stable_for_large_n() -> None:
    # C(1000, 500) overflows a float; the product form does not.
    value = pass_at_k(1000, 3, 500)
    assert value == pytest.approx(1 - math.comb(997, 500) / math.comb(1000, 500))
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_majority_vote_ties_and_missing_answers() -> None:
    answers = ["7", "5", None, " 5", "7"]
    # k=5: "7" x2 (first at 0), "5" x2 (" 5" normalises to "5", first at 1) -> tie, "7" came first -> index 0
    assert majority_vote(answers, 5) == 0
    # k=4: "7" x1, "5" x2 -> "5", returned at its first occurrence, index 1
    assert majority_vote(answers, 4) == 1
    assert majority_vote([None, None], 2) is None
    assert normalize_answer(" (1 + 2) * 3 ") == "(1+2)*3"


def test_maj_at_k_hand_values() -> None:
    answers = ["7", "5", "5", None]
    correct = [False, True, True, False]
    assert maj_at_k(answers, correct, 1) == 0.0  # only "7"
    assert maj_at_k(answers, correct, 2) == 0.0  # "7" vs "5" tie -> "7" (first)
    assert maj_at_k(answers, correct, 3) == 1.0  # "5" wins 2-1
    assert maj_at_k(answers, correct, 4) == 1.0  # None does not vote
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    with pytest.raises(ValueError):
        maj_at_k(answers, correct, 5)
