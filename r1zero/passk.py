"""pass@k and maj@k from per-problem sample outcomes: pure functions, plain numbers in and out."""

from __future__ import annotations

from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with c correct out of n samples (Chen et al. 2021, "Codex").

    pass@k = 1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i): no huge binomials, no
    overflow. Example: n=5, c=2 -> pass@1 = 2/5 = 0.4; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7.
    n - c < k (every k-subset holds a correct sample) -> 1.0; c = 0 -> 0.0.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def normalize_answer(answer: str | None) -> str | None:
    """The vote key of an extracted answer: all whitespace removed; None (no answer) stays None.

    `normalize_answer(" (1 + 2) * 3 ") -> "(1+2)*3"`. Equal keys are the same vote; no other equivalence
    (for Countdown "1+2" and "2+1" are two different votes).
    """
    return None if answer is None else "".join(answer.split())


def majority_vote(answers: Sequence[str | None], k: int) -> int | None:
    """Index of the sample whose answer wins the vote among the first k samples, or None if none answered.

    The vote counts `normalize_answer` keys; samples without an answer (None) do not vote. Ties go to the
    answer whose FIRST occurrence comes earliest among the k samples; the returned index is that first
    occurrence. Example: ["7", "5", None, "5", "7"], k=5 -> "7" and "5" both have 2 votes, "7" came first -> 0.
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, answer in enumerate(answers[:k]):
        key = normalize_answer(answer)
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return None
    winner = min(counts, key=lambda a: (-counts[a], first[a]))
    return first[winner]


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int) -> float:
    """1.0 if the majority answer of the first k samples is correct, else 0.0 (also when no sample answered).

    The winner's correctness is that of the sample `majority_vote` returns (samples with the same answer key
    get the same reward from every task's checker, which reads only the extracted answer).
    Example: answers ["7", "5", "5"], correct [F, T, T] -> maj@1 = 0.0 ("7"), maj@3 = 1.0 ("5" wins 2-1).
    """
    if not 1 <= k <= len(answers) or len(answers) != len(correct):
        raise ValueError(
            f"need 1 <= k <= len(answers) == len(correct); got k={k}, {len(answers)}, {len(correct)}"
        )
    winner = majority_vote(answers, k)
    return 0.0 if winner is None else float(bool(correct[winner]))
