"""Train/test splits for generated tasks, disjoint by construction.

Two mechanisms, both needed:
1. Disjoint seeds: split "train" of seed s draws from the stream `2*s`, split "test" from `2*s + 1`; no
   (seed, split) pair shares a stream with another, so uids (which carry the stream) never collide.
2. A held-out partition of the question space: a question belongs to "test" iff the first 8 bytes of its SHA-256,
   as an integer, modulo 100, are below HELDOUT_PERCENT (10); otherwise to "train". Train keeps only train-bucket
   questions and test only test-bucket ones, so no test question can appear in any train set, for any n and any
   seed. This is the "drop any test example whose question also appears in train" rule, made independent of how
   many train examples another run draws. Test also drops its own duplicates (train keeps them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from r1zero.types import Example

SPLITS = ("train", "test")
HELDOUT_PERCENT = 10


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; generated tasks have {list(SPLITS)}")


def split_seed(seed: int, split: str) -> int:
    """Seed of a split's stream. `split_seed(3, "train") -> 6`, `split_seed(3, "test") -> 7`."""
    check_split(split)
    return 2 * seed + SPLITS.index(split)


def split_of(question: str) -> str:
    """ "test" for ~HELDOUT_PERCENT% of question texts (by SHA-256), "train" for the rest. Deterministic."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT else "train"


def take_split(
    stream: Iterable[Example], split: str, n: int, *, max_draws: int | None = None
) -> list[Example]:
    """The first n examples of `stream` whose question falls in `split` (test: distinct questions only).

    Raises ValueError after `max_draws` (default 50*n + 1000) draws without n examples: the problem space is
    too small for that many held-out questions (e.g. 1-digit sums have 81 questions, ~8 of them held out).
    """
    check_split(split)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    max_draws = 50 * n + 1000 if max_draws is None else max_draws
    taken: list[Example] = []
    seen: set[str] = set()
    draws = 0
    for example in stream:
        if len(taken) >= n or draws >= max_draws:
            break
        draws += 1
        if split_of(example.question) != split or (split == "test" and example.question in seen):
            continue
        seen.add(example.question)
        taken.append(example)
    if len(taken) < n:
        raise ValueError(
            f"found only {len(taken)} of {n} {split!r} examples in {draws} draws: the problem space is too small; "
            "widen the task's ranges or ask for fewer"
        )
    return taken


def assert_disjoint(train: Sequence[Example], test: Sequence[Example]) -> None:
    """Raise ValueError if any test question text (or uid) also occurs in train. O(len(train) + len(test))."""
    train_questions = {ex.question for ex in train}
    train_uids = {ex.uid for ex in train}
    overlap = [ex for ex in test if ex.question in train_questions or ex.uid in train_uids]
    if overlap:
        raise ValueError(
            f"{len(overlap)} of {len(test)} test examples also occur in train, e.g. uid {overlap[0].uid!r}: "
            f"{overlap[0].question[:120]!r}"
        )
