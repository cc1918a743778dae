"""Seeing the "aha moment": reflection words, response lengths and repetition of a step's completions.

Pure functions over completion texts, token lengths and correctness (no torch). The loop calls
`aha_step_metrics` every step; `FirstSeenTracker` remembers the step each reflection phrase first appeared
(checkpointed, so it survives a resume); `aha_candidates` scans the logged history for steps where reflection and
accuracy rise together; `r1zero.report` plots it all from metrics.jsonl.

Where words are counted: inside the think block only (`think_span`), because a reflection word in the answer
("the answer is however ...") is not reflection:
    "<think> a </think> b"  -> " a "  (between the first <think> and the first </think> after it)
    " a </think> b"          -> " a "  (the "<think>" prefill was not re-attached: from the start to </think>)
    "<think> a b"            -> " a b" (unfinished, e.g. truncated: from <think> to the end)
    "a b"                    -> "a b"  (no tag at all: the whole text)
Matches are whole words (`\\b`), case-insensitive. Work is bounded on hostile input: at most MAX_SCAN_CHARS
characters of a think block are scanned, and every pattern is an alternation of literals (no nested
quantifiers), so matching is linear in the scanned length.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Characters of a think block scanned for reflection words (~30k tokens); the rest is ignored.
MAX_SCAN_CHARS = 120_000
# Words of a text considered by `repetition_score`.
MAX_REPETITION_WORDS = 20_000

# phrase name -> regex (whole words, case-insensitive). Names become metric names `aha/count/<name>`.
DEFAULT_LEXICON: dict[str, str] = {
    "wait": r"wait",
    "recheck": r"re-?check",
    "verify": r"let\s+me\s+(?:check|verify)|verify",
    "retry": r"retry|try\s+again",
    "alternatively": r"alternatively",
    "however": r"however",
    "mistake": r"mistakes?",
    "aha": r"aha",
}

COUNT_PREFIX = "aha/count/"


# ---------------------------------------------------------------------------------------------- counting


@functools.lru_cache(maxsize=16)
def _compile(items: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """One alternation `\\b(?:(?P<g0>...)|(?P<g1>...))\\b` over the lexicon; group gi is phrase names[i]
    (`match.lastgroup` is "g<i>")."""
    names = tuple(name for name, _ in items)
    body = "|".join(f"(?P<g{i}>{pattern})" for i, (_, pattern) in enumerate(items))
    return re.compile(rf"\b(?:{body})\b", re.IGNORECASE), names


def think_span(text: str) -> tuple[int, int]:
    """(start, end) of the part of `text` where reflection is counted (the module docstring's four cases).

    `think_span("<think> wait </think> <answer>1</answer>") -> (7, 13)`; `think_span("a b") -> (0, 3)`.
    """
    close = text.find(THINK_CLOSE)
    end = close if close >= 0 else len(text)
    open_ = text.find(THINK_OPEN, 0, end)
    start = open_ + len(THINK_OPEN) if open_ >= 0 else 0
    return start, end


def find_phrases(text: str, lexicon: Mapping[str, str] = DEFAULT_LEXICON) -> list[tuple[int, int, str]]:
    """(start, end, phrase) of every match inside the think block, positions in `text` (for highlighting).

    `find_phrases("<think>Wait.</think>") -> [(7, 11, "wait")]`. Scans at most MAX_SCAN_CHARS characters.
    """
    pattern, names = _compile(tuple(lexicon.items()))
    start, end = think_span(text)
    end = min(end, start + MAX_SCAN_CHARS)
    return [
        (m.start(), m.end(), names[int(str(m.lastgroup)[1:])]) for m in pattern.finditer(text, start, end)
    ]


def count_phrases(text: str, lexicon: Mapping[str, str] = DEFAULT_LEXICON) -> dict[str, int]:
    """Occurrences of each lexicon phrase inside the think block of `text` (every phrase present, maybe 0).

    `count_phrases("<think>Wait, let me verify. WAIT.</think> wait")` -> wait 2, verify 1, others 0 (the third
    "wait" is outside the think block; "let me verify" is one match, not also a bare "verify").
    """
    counts = dict.fromkeys(lexicon, 0)
    for _, _, phrase in find_phrases(text, lexicon):
        counts[phrase] += 1
    return counts


def _is_correct(value: Any) -> bool:
    """Correctness as the loop logs it: the `correct` reward component, 1.0 = right (bools work too)."""
    return float(value) >= 1.0


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def reflection_stats(
    texts: Sequence[str],
    lengths: Sequence[int],
    correct: Sequence[float],
    lexicon: Mapping[str, str] = DEFAULT_LEXICON,
) -> dict[str, float]:
    """Reflection-word statistics of N completions.

    texts [N] (prefill re-attached or not), lengths [N] generated tokens, correct [N] (1.0 = right). Returns
        reflection_per_1k_tokens  1000 * (matches in all think blocks) / (all generated tokens)
        reflection_frac           fraction of completions with at least one match
        both again with suffix _correct / _incorrect over that subset (left out when the subset is empty)
        count/<phrase>            matches of each phrase, summed over the N completions
    Example: texts ["<think>wait wait</think>", "<think>hmm</think>"], lengths [100, 300], correct [1, 0]
    -> reflection_per_1k_tokens 1000 * 2 / 400 = 5.0, reflection_frac 0.5, reflection_frac_correct 1.0,
    reflection_per_1k_tokens_incorrect 0.0, count/wait 2.0.
    """
    if not len(texts) == len(lengths) == len(correct):
        raise ValueError(
            f"texts, lengths, correct differ in length: {len(texts)}, {len(lengths)}, {len(correct)}"
        )
    per_text = [count_phrases(t, lexicon) for t in texts]
    totals = [sum(c.values()) for c in per_text]
    right = [_is_correct(c) for c in correct]
    subsets = {
        "": list(range(len(texts))),
        "_correct": [i for i, r in enumerate(right) if r],
        "_incorrect": [i for i, r in enumerate(right) if not r],
    }
    out: dict[str, float] = {}
    for suffix, rows in subsets.items():
        if suffix and len(rows) == 0:
            continue
        tokens = sum(lengths[i] for i in rows)
        out[f"reflection_per_1k_tokens{suffix}"] = 1000.0 * sum(totals[i] for i in rows) / max(tokens, 1)
        out[f"reflection_frac{suffix}"] = _mean([1.0 if totals[i] > 0 else 0.0 for i in rows])
    for name in lexicon:
        out[f"count/{name}"] = float(sum(c[name] for c in per_text))
    return out


# ---------------------------------------------------------------------------------------------- lengths


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 1] (numpy's default). `percentile([1, 2, 3, 4], 0.5) -> 2.5`."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def length_stats(
    lengths: Sequence[int], correct: Sequence[float], truncated: Sequence[bool]
) -> dict[str, float]:
    """Response-length statistics of N completions (tokens).

    Returns mean, p10, p50, p90 (linear interpolation), max, truncated_frac, and mean_correct / mean_incorrect
    (left out when that subset is empty).
    Example: lengths [10, 20, 30, 40], correct [1, 0, 0, 1], truncated [F, F, F, T] -> mean 25, p10 13
    (10 + 0.3 * 10), p50 25, p90 37, max 40, truncated_frac 0.25, mean_correct 25, mean_incorrect 25.
    """
    if not len(lengths) == len(correct) == len(truncated):
        raise ValueError("lengths, correct, truncated differ in length")
    values = [float(x) for x in lengths]
    out = {
        "mean": _mean(values),
        "p10": percentile(values, 0.1),
        "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "max": max(values, default=0.0),
        "truncated_frac": _mean([1.0 if t else 0.0 for t in truncated]),
    }
    right = [x for x, c in zip(values, correct) if _is_correct(c)]
    wrong = [x for x, c in zip(values, correct) if not _is_correct(c)]
    if right:
        out["mean_correct"] = _mean(right)
    if wrong:
        out["mean_incorrect"] = _mean(wrong)
    return out


def repetition_score(text: str, n: int = 4) -> float:
    """Fraction of the word n-grams of `text` that repeat an earlier one: 1 - distinct / total.

    0.0 for no repeats (or fewer than n words); a degenerate loop tends to 1. Example, n = 4:
    "a b c d a b c d" has 5 4-grams (abcd bcda cdab dabc abcd), 4 distinct -> 1 - 4/5 = 0.2;
    "x x x x x x x x" has 5, 1 distinct -> 0.8. Only the first MAX_REPETITION_WORDS words are read.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    words = text[: MAX_REPETITION_WORDS * 16].split()[:MAX_REPETITION_WORDS]
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(words[i : i + n]) for i in range(total)})
    return 1.0 - distinct / total


def aha_step_metrics(
    texts: Sequence[str],
    lengths: Sequence[int],
    correct: Sequence[float],
    truncated: Sequence[bool],
    lexicon: Mapping[str, str] = DEFAULT_LEXICON,
) -> dict[str, float]:
    """Everything above for one step, as flat metric names.

    aha/reflection_per_1k_tokens[_correct|_incorrect], aha/reflection_frac[_correct|_incorrect],
    aha/count/<phrase>, aha/repetition_mean, aha/repetition_max,
    rollout/length/{mean,p10,p50,p90,max,truncated_frac,mean_correct,mean_incorrect}.
    Keys of an empty correct/incorrect subset are left out (no NaN in the logs). rollout/length/mean and /max
    equal `r1zero.parts.rollout_metrics`' values; /p50 here is interpolated (theirs is nearest-rank), so merge
    this dict after theirs. About 0.4 s for 512 completions of 1,000 words on one CPU core.
    """
    out = {f"aha/{k}": v for k, v in reflection_stats(texts, lengths, correct, lexicon).items()}
    reps = [repetition_score(t) for t in texts]
    out["aha/repetition_mean"] = _mean(reps)
    out["aha/repetition_max"] = max(reps, default=0.0)
    out |= {f"rollout/length/{k}": v for k, v in length_stats(lengths, correct, truncated).items()}
    return out


# ---------------------------------------------------------------------------------------------- over steps


class FirstSeenTracker:
    """The first step at which each reflection phrase appeared in a step's completions.

    `update(step, metrics)` reads the `aha/count/<phrase>` entries of `aha_step_metrics`'s output and returns
    the phrases seen for the first time. The state is a plain dict (checkpoint it; `load_state_dict` restores).
    """

    def __init__(self) -> None:
        self.first_seen: dict[str, int] = {}

    def update(self, step: int, metrics: Mapping[str, Any]) -> list[str]:
        new = []
        for key, value in metrics.items():
            if not key.startswith(COUNT_PREFIX) or not isinstance(value, (int, float)) or not value > 0:
                continue
            phrase = key[len(COUNT_PREFIX) :]
            if phrase not in self.first_seen:
                new.append(phrase)
                self.first_seen[phrase] = int(step)
            else:  # an out-of-order replay keeps the earliest step
                self.first_seen[phrase] = min(self.first_seen[phrase], int(step))
        return new

    def state_dict(self) -> dict[str, Any]:
        return {"first_seen": dict(self.first_seen)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.first_seen = {str(k): int(v) for k, v in state.get("first_seen", {}).items()}


def first_seen_from_history(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Replay a FirstSeenTracker over metrics.jsonl rows ({"step", "aha/count/<phrase>", ...})."""
    tracker = FirstSeenTracker()
    for row in sorted((r for r in rows if isinstance(r.get("step"), int)), key=lambda r: r["step"]):
        tracker.update(row["step"], row)
    return tracker.first_seen


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def aha_candidates(
    history_rows: Sequence[Mapping[str, Any]],
    window: int = 10,
    *,
    reflection_key: str = "aha/reflection_frac",
    accuracy_key: str = "reward/accuracy",
    min_reflection_rise: float = 0.05,
    min_accuracy_rise: float = 0.05,
) -> list[dict[str, Any]]:
    """Steps where the reflection rate and the accuracy rise together: one candidate per episode.

    Definition. Keep the rows that have a finite `reflection_key` and `accuracy_key`, sorted by step, one per
    step (the last row of a step wins). For row i with `window` rows before it and `window` rows from it on:
        rise_r(i) = mean(reflection[i : i+window]) - mean(reflection[i-window : i])
        rise_a(i) = mean(accuracy[i : i+window])   - mean(accuracy[i-window : i])
    Row i qualifies when rise_r >= min_reflection_rise and rise_a >= min_accuracy_rise. A run of consecutive
    qualifying rows is one episode; its candidate is the row with the largest
    min(rise_r / min_reflection_rise, rise_a / min_accuracy_rise) (the earliest on ties): for a sudden jump,
    the step of the jump itself, not the first window that overlaps it.
    Returns per candidate: step, episode_start, episode_end (steps), reflection_before/after,
    accuracy_before/after (the two window means at the candidate), and `reason` in words.
    Example, window 2: reflection [0, 0, 0, .5, .5, .5], accuracy [.1, .1, .1, .4, .4, .4] at steps 0-5 ->
    steps 2, 3, 4 qualify (one episode); step 3 has the full rise (0 -> .5, .1 -> .4) and is the candidate.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    by_step: dict[int, Mapping[str, Any]] = {}
    for row in history_rows:
        step = row.get("step")
        if isinstance(step, int) and _finite(row.get(reflection_key)) and _finite(row.get(accuracy_key)):
            by_step[step] = row
    steps = sorted(by_step)
    refl = [float(by_step[s][reflection_key]) for s in steps]
    acc = [float(by_step[s][accuracy_key]) for s in steps]
    episodes: list[list[tuple[float, int, tuple[float, float, float, float]]]] = []
    previous_qualified = False
    for i in range(window, len(steps) - window + 1):
        r0, r1 = _mean(refl[i - window : i]), _mean(refl[i : i + window])
        a0, a1 = _mean(acc[i - window : i]), _mean(acc[i : i + window])
        qualified = r1 - r0 >= min_reflection_rise and a1 - a0 >= min_accuracy_rise
        if qualified:
            strength = min(
                (r1 - r0) / max(min_reflection_rise, 1e-12), (a1 - a0) / max(min_accuracy_rise, 1e-12)
            )
            if not previous_qualified:
                episodes.append([])
            episodes[-1].append((strength, i, (r0, r1, a0, a1)))
        previous_qualified = qualified
    out: list[dict[str, Any]] = []
    for episode in episodes:
        _, i, (r0, r1, a0, a1) = max(episode, key=lambda e: (e[0], -e[1]))
        out.append(
            {
                "step": steps[i],
                "episode_start": steps[episode[0][1]],
                "episode_end": steps[episode[-1][1]],
                "reflection_before": r0,
                "reflection_after": r1,
                "accuracy_before": a0,
                "accuracy_after": a1,
                "reason": (
                    f"{reflection_key} {r0:.3g} -> {r1:.3g} (+{r1 - r0:.3g}) and {accuracy_key} {a0:.3g} -> "
                    f"{a1:.3g} (+{a1 - a0:.3g}): mean of the {window} logged steps before vs from step {steps[i]} "
                    f"(both rising from step {steps[episode[0][1]]} to {steps[episode[-1][1]]})"
                ),
            }
        )
    return out
