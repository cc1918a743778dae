"""r1zero.aha on hand-built completions: every expected count is derived in the comments."""

from __future__ import annotations

import json
import time

import pytest

from r1zero.aha import (
    DEFAULT_LEXICON,
    MAX_SCAN_CHARS,
    FirstSeenTracker,
    aha_candidates,
    aha_step_metrics,
    count_phrases,
    find_phrases,
    first_seen_from_history,
    length_stats,
    percentile,
    reflection_stats,
    repetition_score,
    think_span,
)


@pytest.mark.parametrize(
    ("text", "block"),
    [
        ("<think> a </think> b", " a "),  # both tags
        (" a </think> b", " a "),  # prefill missing: start to </think>
        ("<think> a b", " a b"),  # unfinished (truncated): <think> to the end
        ("a b", "a b"),  # no tag: everything
        ("x </think> <think> y", "x "),  # a stray <think> after the first </think> is not the start
        ("", ""),
    ],
)
def test_think_block_cases(text: str, block: str) -> None:
    start, end = think_span(text)
    assert text[start:end] == block


def test_count_phrases_inside_think_only_whole_words_case_insensitive() -> None:
    text = (
        "<think>Wait, 3+4=7. wait... let me verify: RE-CHECK and recheck. waiting is not wait-ing? "
        "Alternatively, however. A mistake, two mistakes. Aha! Let me  check. try again</think> "
        "<answer>Wait however</answer>"
    )
    counts = count_phrases(text)
    # wait: "Wait," "wait..." and the "wait" of "wait-ing" ("-" is a word boundary); "waiting" is not a word match;
    # "Wait" inside <answer> is outside the think block -> 3
    assert counts["wait"] == 3
    assert counts["verify"] == 2  # "let me verify" (one match, not also "verify") + "Let me  check"
    assert counts["recheck"] == 2  # "RE-CHECK", "recheck"
    assert counts["alternatively"] == 1
    assert counts["however"] == 1  # the one in <answer> does not count
    assert counts["mistake"] == 2  # "mistake", "mistakes"
    assert counts["aha"] == 1
    assert counts["retry"] == 1  # "try again"
    assert set(counts) == set(DEFAULT_LEXICON)


def test_custom_lexicon_and_positions() -> None:
    text = "<think>Hmm, hmm. wait</think>"
    assert count_phrases(text, {"hmm": "hmm"}) == {"hmm": 2}
    # positions index the raw text: "<think>" is 7 characters, so "Hmm" spans 7..10
    assert find_phrases(text, {"hmm": "hmm"}) == [(7, 10, "hmm"), (12, 15, "hmm")]


def test_reflection_stats_hand_counts() -> None:
    texts = [
        "<think>wait, wait. let me check</think><answer>1</answer>",  # 3 matches, correct
        "<think>so 1 + 2 = 3</think><answer>3</answer>",  # 0 matches, correct
        "<think>however</think>",  # 1 match, incorrect
        "<think>nothing</think> wait",  # 0 matches (wait outside), incorrect
    ]
    lengths = [100, 100, 200, 600]
    correct = [1.0, 1.0, 0.0, 0.0]
    s = reflection_stats(texts, lengths, correct)
    assert s["reflection_per_1k_tokens"] == pytest.approx(1000 * 4 / 1000)  # 4 matches / 1000 tokens
    assert s["reflection_frac"] == pytest.approx(2 / 4)  # texts 0 and 2
    assert s["reflection_per_1k_tokens_correct"] == pytest.approx(1000 * 3 / 200)  # 15
    assert s["reflection_frac_correct"] == pytest.approx(1 / 2)
    assert s["reflection_per_1k_tokens_incorrect"] == pytest.approx(1000 * 1 / 800)  # 1.25
    assert s["reflection_frac_incorrect"] == pytest.approx(1 / 2)
    assert s["count/wait"] == 2 and s["count/verify"] == 1 and s["count/however"] == 1 and s["count/aha"] == 0


def test_reflection_stats_leaves_out_empty_subsets_and_handles_no_rows() -> None:
    s = reflection_stats(["<think>wait</think>"], [10], [0.0])
    assert "reflection_frac_correct" not in s and s["reflection_frac_incorrect"] == 1.0
    empty = reflection_stats([], [], [])
    assert empty["reflection_per_1k_tokens"] == 0.0 and empty["count/wait"] == 0.0
    with pytest.raises(ValueError):
        reflection_stats(["a"], [1, 2], [0.0])


def test_percentile_and_length_stats() -> None:
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([5], 0.9) == 5.0 and percentile([], 0.5) == 0.0
    s = length_stats([10, 20, 30, 40], [1.0, 0.0, 0.0, 1.0], [False, False, False, True])
    assert s["mean"] == 25.0
    assert s["p10"] == pytest.approx(13.0)  # position 0.1 * 3 = 0.3 -> 10 + 0.3 * 10
    assert s["p50"] == pytest.approx(25.0)  # position 1.5 -> 20 + 0.5 * 10
    assert s["p90"] == pytest.approx(37.0)  # position 2.7 -> 30 + 0.7 * 10
    assert s["max"] == 40.0 and s["truncated_frac"] == 0.25
    assert s["mean_correct"] == 25.0  # (10 + 40) / 2
    assert s["mean_incorrect"] == 25.0  # (20 + 30) / 2
    assert "mean_correct" not in length_stats([3], [0.0], [False])


def test_repetition_score() -> None:
    assert repetition_score("a b c d a b c d") == pytest.approx(0.2)  # 5 4-grams, 4 distinct
    assert repetition_score("x x x x x x x x") == pytest.approx(0.8)  # 5 4-grams, 1 distinct
    assert repetition_score("one two three four five six") == 0.0  # 3 distinct 4-grams
    assert repetition_score("too short") == 0.0
    assert repetition_score("a b a b", n=2) == pytest.approx(1 - 2 / 3)  # ab ba ab: 3, 2 distinct
    assert repetition_score("loop " * 5000) > 0.99  # a degenerate loop -> near 1


def test_aha_step_metrics_names_and_values() -> None:
    texts = ["<think>wait</think><answer>1</answer>", "<think>ok ok ok ok ok</think>"]
    m = aha_step_metrics(texts, [10, 30], [1.0, 0.0], [False, True])
    assert m["aha/reflection_per_1k_tokens"] == pytest.approx(1000 * 1 / 40)
    assert m["aha/reflection_frac"] == 0.5
    assert m["aha/reflection_frac_correct"] == 1.0 and m["aha/reflection_frac_incorrect"] == 0.0
    assert m["aha/count/wait"] == 1.0
    # text 0 has 2 words -> 0; text 1 "<think>ok ok ok ok ok</think>" splits to 3 words -> 0
    assert m["aha/repetition_mean"] == 0.0
    assert m["rollout/length/mean"] == 20.0 and m["rollout/length/truncated_frac"] == 0.5
    assert m["rollout/length/mean_correct"] == 10.0 and m["rollout/length/mean_incorrect"] == 30.0
    assert all(isinstance(v, float) for v in m.values())


def test_hostile_input_is_bounded() -> None:
    # 5 MB of near-matches: "let me " followed by whitespace runs, "wai" fragments, and a late real "wait"
    hostile = "<think>" + ("let me     x wai re-chec " * 200_000) + "</think>"
    start = time.perf_counter()
    counts = count_phrases(hostile)
    score = repetition_score(hostile)
    assert time.perf_counter() - start < 5.0
    assert sum(counts.values()) == 0 and 0.9 < score <= 1.0
    beyond = "<think>" + "x " * MAX_SCAN_CHARS + "wait</think>"  # the match sits past the scanned prefix
    assert count_phrases(beyond)["wait"] == 0


def test_first_seen_tracker_round_trip_through_json() -> None:
    tracker = FirstSeenTracker()
    assert tracker.update(1, {"aha/count/wait": 0.0, "aha/count/aha": 0.0, "reward/mean": 1.0}) == []
    assert tracker.update(2, {"aha/count/wait": 3.0}) == ["wait"]
    assert tracker.update(5, {"aha/count/wait": 1.0, "aha/count/aha": 1.0}) == ["aha"]
    state = json.loads(json.dumps(tracker.state_dict()))  # what a checkpoint's meta stores
    resumed = FirstSeenTracker()
    resumed.load_state_dict(state)
    assert resumed.first_seen == {"wait": 2, "aha": 5}
    assert resumed.update(6, {"aha/count/wait": 1.0, "aha/count/mistake": 2.0}) == ["mistake"]
    assert resumed.first_seen == {"wait": 2, "aha": 5, "mistake": 6}


def test_first_seen_from_history_ignores_order_and_junk() -> None:
    rows = [
        {"step": 3, "aha/count/wait": 1.0},
        {"step": 1, "aha/count/wait": 0.0},
        {"step": 2, "aha/count/aha": 2.0, "aha/count/wait": None},
        {"no_step": True, "aha/count/retry": 1.0},
    ]
    assert first_seen_from_history(rows) == {"aha": 2, "wait": 3}


def test_aha_candidates_synthetic_history() -> None:
    # window 3. Steps 1-6 flat (reflection 0.1, accuracy 0.2); steps 7-12 both higher (0.4, 0.5);
    # step 13-18 reflection rises again but accuracy falls.
    refl = [0.1] * 6 + [0.4] * 6 + [0.8] * 6
    acc = [0.2] * 6 + [0.5] * 6 + [0.1] * 6
    rows = [
        {"step": i + 1, "aha/reflection_frac": r, "reward/accuracy": a}
        for i, (r, a) in enumerate(zip(refl, acc))
    ]
    rows.append({"step": 3, "loss/policy": 0.0})  # rows without the two metrics are ignored
    found = aha_candidates(rows, window=3)
    # A step qualifies when mean(it and the next 2) - mean(the 3 before) >= 0.05 for both metrics (jump at 7):
    #   step 4: after = steps 4-6, all flat -> no
    #   step 5: after steps 5-7 hold one high row: reflection +0.3/3 = +0.1, accuracy +0.1 -> yes
    #   step 6: two high rows after: +0.2, +0.2; step 7: all 3 after high, all 3 before low: +0.3, +0.3
    #   step 8: before steps 5-7 = .1 .1 .4, after steps 8-10 all .4: +0.2;  step 9: +0.1
    #   step 10: before 7-9 all high -> 0 -> no.  Around step 13 accuracy falls -> never.
    # One episode, steps 5-9; the candidate is its strongest row, step 7.
    assert [(c["step"], c["episode_start"], c["episode_end"]) for c in found] == [(7, 5, 9)]
    c = found[0]
    assert c["reflection_before"] == pytest.approx(0.1) and c["reflection_after"] == pytest.approx(0.4)
    assert c["accuracy_before"] == pytest.approx(0.2) and c["accuracy_after"] == pytest.approx(0.5)
    assert "aha/reflection_frac" in c["reason"] and "reward/accuracy" in c["reason"]


def test_aha_candidates_docstring_example() -> None:
    rows = [
        {"step": s, "aha/reflection_frac": r, "reward/accuracy": a}
        for s, (r, a) in enumerate(zip([0, 0, 0, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.4, 0.4, 0.4]))
    ]
    assert [(c["step"], c["episode_start"], c["episode_end"]) for c in aha_candidates(rows, 2)] == [(3, 2, 4)]


def test_aha_candidates_flat_short_or_missing() -> None:
    flat = [{"step": i, "aha/reflection_frac": 0.3, "reward/accuracy": 0.3} for i in range(40)]
    assert aha_candidates(flat, window=5) == []
    assert aha_candidates(flat[:9], window=5) == []  # fewer than 2 * window rows
    assert aha_candidates([{"step": 1}], window=1) == []
    with pytest.raises(ValueError):
        aha_candidates(flat, window=0)
