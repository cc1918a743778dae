"""Rejection rules: which of a prompt's sampled completions become SFT data. Pure functions, no model.

A prompt's n candidates pass, in order: correct (the task reward's "correct" component is 1), format valid
(its "format" component is 1), not truncated, length bounds (tokens), duplicates removed (whitespace-normalised
text), then at most k per prompt, the shortest first when `prefer_shortest` (R1 keeps the readable ones; the
shortest correct trace is the cheapest to imitate). Every candidate is either kept or counted under the first
rule it fails, so kept + sum(rejected) = candidates.

    rules = RejectionRules(max_per_prompt=1, prefer_shortest=True)
    select_group([Candidate("<answer>5</answer>", 4, True, True), Candidate("x", 1, False, False)], rules)
    -> kept [0], reasons {"incorrect": 1}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# The reasons a candidate is rejected, in the order the rules test them.
REASONS = ("incorrect", "bad_format", "truncated", "too_short", "too_long", "duplicate", "over_k")


@dataclass(frozen=True)
class Candidate:
    """One sampled completion as the rules see it.

    text: the completion the reward scored (prefill re-attached); length: its generated tokens (L);
    correct / format_ok: the reward's verdicts; truncated: it hit max_new_tokens.
    """

    text: str
    length: int
    correct: bool
    format_ok: bool
    truncated: bool = False


@dataclass
class RejectionRules:
    """What a completion needs to be kept (scalars only, so the rules test without a config tree)."""

    # Keep only completions the reward marks correct.
    require_correct: bool = True
    # Keep only completions whose format check passed (R1's "readable" filter, as far as a rule can tell).
    require_format: bool = True
    # Drop completions that hit the token limit (their reasoning is cut off).
    drop_truncated: bool = True
    # Length bounds in generated tokens, inclusive (max_length None: no upper bound).
    min_length: int = 1
    max_length: int | None = None
    # Drop a completion whose whitespace-normalised text equals an earlier kept one of the same prompt.
    dedupe: bool = True
    # At most this many kept completions per prompt (None: all that pass).
    max_per_prompt: int | None = None
    # Among those that pass, keep the shortest first (ties: sampling order); False keeps sampling order.
    prefer_shortest: bool = False

    def __post_init__(self) -> None:
        if self.min_length < 0:
            raise ValueError(f"min_length must be >= 0; got {self.min_length}")
        if self.max_length is not None and self.max_length < self.min_length:
            raise ValueError(f"max_length ({self.max_length}) must be >= min_length ({self.min_length})")
        if self.max_per_prompt is not None and self.max_per_prompt < 1:
            raise ValueError(f"max_per_prompt must be None or >= 1; got {self.max_per_prompt}")


def normalize_text(text: str) -> str:
    """Whitespace-insensitive key for duplicate detection: `" 2 +  3\\n= 5 "` -> `"2 + 3 = 5"`."""
    return " ".join(text.split())


def first_failure(candidate: Candidate, rules: RejectionRules) -> str | None:
    """The first per-candidate rule `candidate` breaks (a REASONS entry), or None when it passes them all.

    Duplicates and the per-prompt cap need the whole group: see `select_group`.
    """
    if rules.require_correct and not candidate.correct:
        return "incorrect"
    if rules.require_format and not candidate.format_ok:
        return "bad_format"
    if rules.drop_truncated and candidate.truncated:
        return "truncated"
    if candidate.length < rules.min_length or not candidate.text.strip():
        return "too_short"
    if rules.max_length is not None and candidate.length > rules.max_length:
        return "too_long"
    return None


def select_group(candidates: Sequence[Candidate], rules: RejectionRules) -> tuple[list[int], Counter[str]]:
    """Indices of the kept candidates of ONE prompt (in keeping order) and the rejection count per reason.

    Example: lengths [9, 3, 5, 3], all correct, texts "a", "b", "c", "b", max_per_prompt 2, prefer_shortest:
    -> candidate 3 is a duplicate of 1; shortest first among [0, 1, 2] is [1, 2, 0]; the cap keeps [1, 2]
    -> kept [1, 2], reasons {"duplicate": 1, "over_k": 1}.
    """
    reasons: Counter[str] = Counter()
    passing: list[int] = []
    seen: set[str] = set()
    for i, candidate in enumerate(candidates):
        failure = first_failure(candidate, rules)
        if failure is None and rules.dedupe:
            key = normalize_text(candidate.text)
            if key in seen:
                failure = "duplicate"
            seen.add(key)
        if failure is None:
            passing.append(i)
        else:
            reasons[failure] += 1
    if rules.prefer_shortest:
        passing.sort(key=lambda i: candidates[i].length)  # stable: ties keep sampling order
    cap = len(passing) if rules.max_per_prompt is None else rules.max_per_prompt
    reasons["over_k"] += max(0, len(passing) - cap)
    return passing[:cap], +reasons  # unary + drops zero counts


def summarize(
    kept_per_prompt: Sequence[int], candidates: int, reasons: Counter[str], kept_lengths: Sequence[int]
) -> dict:
    """The sampled set's summary: acceptance rate, per-prompt coverage, kept lengths, rejections by reason.

    Example: kept per prompt [2, 0, 1] of 9 candidates, kept lengths [4, 6, 8] -> acceptance_rate 1/3,
    coverage 2/3 (prompts with at least one kept completion), length_mean 6.0.
    """
    prompts = len(kept_per_prompt)
    kept = sum(kept_per_prompt)
    lengths = sorted(kept_lengths)
    return {
        "prompts": prompts,
        "candidates": candidates,
        "kept": kept,
        "acceptance_rate": kept / candidates if candidates else 0.0,
        "coverage": sum(k > 0 for k in kept_per_prompt) / prompts if prompts else 0.0,
        "kept_per_prompt_mean": kept / prompts if prompts else 0.0,
        "length_mean": sum(lengths) / len(lengths) if lengths else 0.0,
        "length_min": lengths[0] if lengths else 0,
        "length_max": lengths[-1] if lengths else 0,
        "rejected": {reason: int(reasons.get(reason, 0)) for reason in REASONS},
    }
