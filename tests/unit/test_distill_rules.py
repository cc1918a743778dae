"""Rejection rules on hand-made completions: each rule alone, their order, the per-prompt cap, the summary."""

from __future__ import annotations

from collections import Counter

import pytest

from r1zero.distill.rules import (
    Candidate,
    RejectionRules,
    first_failure,
    normalize_text,
    select_group,
    summarize,
)

GOOD = "<think> 2 + 3 = 5 </think> <answer>5</answer>"


def cand(
    text: str = GOOD, length: int = 10, correct: bool = True, fmt: bool = True, truncated: bool = False
) -> Candidate:
    return Candidate(text, length, correct, fmt, truncated)


def test_each_rule_names_its_reason() -> None:
    rules = RejectionRules(min_length=2, max_length=20)
    assert first_failure(cand(), rules) is None
    assert first_failure(cand(correct=False), rules) == "incorrect"
    assert first_failure(cand(fmt=False), rules) == "bad_format"  # malformed: answer right, tags wrong
    assert first_failure(cand(truncated=True), rules) == "truncated"
    assert first_failure(cand(length=1), rules) == "too_short"
    assert first_failure(cand(text="   "), rules) == "too_short"  # whitespace only
    assert first_failure(cand(length=21), rules) == "too_long"
    assert first_failure(cand(length=20), rules) is None  # bounds are inclusive


def test_first_failing_rule_wins() -> None:
    # incorrect AND malformed AND too long: counted once, as incorrect (the first rule tested)
    kept, reasons = select_group([cand(correct=False, fmt=False, length=999)], RejectionRules(max_length=50))
    assert kept == [] and reasons == Counter({"incorrect": 1})


def test_switching_rules_off_keeps_what_they_would_drop() -> None:
    rules = RejectionRules(require_correct=False, require_format=False, drop_truncated=False, dedupe=False)
    group = [cand(correct=False), cand(fmt=False), cand(truncated=True), cand()]
    assert select_group(group, rules) == ([0, 1, 2, 3], Counter())


def test_duplicates_by_normalised_text() -> None:
    assert normalize_text(" 2 +  3\n= 5 ") == "2 + 3 = 5"
    group = [cand("a  b"), cand("a b\n"), cand("a c"), cand("a b", correct=False)]
    # 1 duplicates 0 (whitespace only); 3 is a duplicate text but fails earlier, as incorrect
    kept, reasons = select_group(group, RejectionRules())
    assert kept == [0, 2]
    assert reasons == Counter({"duplicate": 1, "incorrect": 1})


def test_a_rejected_completion_does_not_block_a_later_identical_good_one() -> None:
    group = [cand("x", truncated=True), cand("x")]
    assert select_group(group, RejectionRules())[0] == [1]


def test_at_most_k_shortest_first() -> None:
    # lengths 9, 3, 5, 3; texts a, b, c, b: 3 duplicates 1; passing [0, 1, 2] by length -> [1, 2, 0]; k = 2
    group = [cand("a", 9), cand("b", 3), cand("c", 5), cand("b", 3)]
    kept, reasons = select_group(group, RejectionRules(max_per_prompt=2, prefer_shortest=True))
    assert kept == [1, 2]
    assert reasons == Counter({"duplicate": 1, "over_k": 1})
    # without prefer_shortest: sampling order
    assert select_group(group, RejectionRules(max_per_prompt=2))[0] == [0, 1]
    # the shortest correct one alone (R1's "shortest correct"): ties keep sampling order
    tie = [cand("p", 4), cand("q", 4), cand("r", 2, correct=False)]
    assert select_group(tie, RejectionRules(max_per_prompt=1, prefer_shortest=True)) == (
        [0],
        Counter({"over_k": 1, "incorrect": 1}),
    )


def test_kept_plus_rejected_is_every_candidate() -> None:
    group = [cand("a"), cand("a"), cand("b", correct=False), cand("c", length=100), cand("d"), cand("e")]
    kept, reasons = select_group(group, RejectionRules(max_length=50, max_per_prompt=2))
    assert kept == [0, 4]
    assert reasons == Counter({"duplicate": 1, "incorrect": 1, "too_long": 1, "over_k": 1})
    assert len(kept) + sum(reasons.values()) == len(group)


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="max_per_prompt"):
        RejectionRules(max_per_prompt=0)
    with pytest.raises(ValueError, match="max_length"):
        RejectionRules(min_length=5, max_length=4)


def test_summary_by_hand() -> None:
    # 3 prompts, 9 candidates; kept 2, 0, 1 -> acceptance 3/9, coverage 2/3, lengths 4, 6, 8 -> mean 6
    s = summarize([2, 0, 1], 9, Counter({"incorrect": 5, "over_k": 1}), [8, 4, 6])
    assert s["kept"] == 3 and s["candidates"] == 9
    assert s["acceptance_rate"] == pytest.approx(1 / 3)
    assert s["coverage"] == pytest.approx(2 / 3)
    assert s["kept_per_prompt_mean"] == pytest.approx(1.0)
    assert (s["length_mean"], s["length_min"], s["length_max"]) == (6.0, 4, 8)
    assert s["rejected"]["incorrect"] == 5 and s["rejected"]["duplicate"] == 0
    empty = summarize([], 0, Counter(), [])
    assert empty["acceptance_rate"] == 0.0 and empty["coverage"] == 0.0
