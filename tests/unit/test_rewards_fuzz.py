"""Property tests: any string, random or adversarial, never raises, stays under 2 s, never earns an undeserved 1.0."""

import importlib.util
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1zero.rewards.countdown import countdown_reward, evaluate
from r1zero.rewards.format import answer_tag_reward, extract_answer, format_reward
from r1zero.rewards.math import gsm8k_reward, math_reward, parse_number, start_math_checkers


@pytest.fixture(scope="module", autouse=True)
def checkers():
    if importlib.util.find_spec("math_verify") is not None:
        start_math_checkers()  # the one-time start stays out of the timed calls
    yield


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
# Pieces that make structure-aware strings: tags, arithmetic, code, unicode digits, LaTeX.
_PIECE_TEXT = (
    "0 1 2 3 44 + - * / ( ) = ** // x $ 9**9**9 __import__('os') \u0664 \uff14 \\frac{ } { \\boxed{ ^{"
)
PIECES = [*TAGS, " ", "\n", *_PIECE_TEXT.split()]
structured = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
texts = st.one_of(st.text(max_size=200), structured)


def bounded(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    assert time.perf_counter() - start < 2.0
    assert value in (0.0, 1.0)
    return value


@FAST
@given(texts)
def test_format_rewards_total(text: str) -> None:
    f, a = bounded(format_reward, text), bounded(answer_tag_reward, text)
    if f == 1.0:  # the think/answer format implies exactly one answer block
        assert a == 1.0
        assert text.strip().startswith("<think>") and text.strip().endswith("</answer>")
    if a == 1.0:
        assert text.count("<answer>") == 1 and text.count("</answer>") == 1
    assert (extract_answer(text) is not None) == (a == 1.0)


@FAST
@given(texts, st.lists(st.integers(0, 60), min_size=1, max_size=4), st.integers(0, 100))
def test_countdown_never_wrongly_correct(text: str, numbers: list[int], target: int) -> None:
    if bounded(countdown_reward, text, numbers, target) == 1.0:
        # Re-derive the verdict independently: the answer, minus an optional "= target", evaluates to target
        # and uses exactly the numbers.
        answer = extract_answer(text)
        assert answer is not None
        expr = answer.split("=")[0]
        value, literals = evaluate(expr)
        assert value == target and sorted(literals) == sorted(numbers)


@FAST
@given(st.lists(st.integers(1, 20), min_size=2, max_size=4), st.data())
def test_countdown_accepts_what_it_should(numbers: list[int], data: st.DataObject) -> None:
    # Build a random valid expression over the numbers; its exact value as target must score 1.0.
    expr, value = str(numbers[0]), Fraction(numbers[0])
    for x in numbers[1:]:
        op = data.draw(st.sampled_from("+-*"))
        expr, value = f"({expr}) {op} {x}", {"+": value + x, "-": value - x, "*": value * x}[op]
    if value >= 0:
        assert countdown_reward(f"<think>t</think><answer>{expr}</answer>", numbers, int(value)) == 1.0


@FAST
@given(texts, st.integers(-1000, 1000))
def test_gsm8k_never_wrongly_correct(text: str, gold: int) -> None:
    if bounded(gsm8k_reward, text, str(gold)) == 1.0:
        answer = extract_answer(text)
        assert answer is not None and parse_number(answer.replace("\\boxed{", "").replace("}", "")) == gold


@SLOW
@given(texts)
def test_math_reward_total_and_bounded(text: str) -> None:
    pytest.importorskip("math_verify")
    # Gold 7/13 does not appear in any generated piece, so a 1.0 would be a false positive.
    assert bounded(math_reward, text, "\\frac{7}{13}") == 0.0


@SLOW
@given(st.integers(-(10**6), 10**6), st.integers(1, 999))
def test_math_reward_accepts_equal_fractions(p: int, q: int) -> None:
    pytest.importorskip("math_verify")
    # p/q written as a LaTeX fraction is equivalent to the reduced gold fraction.
    gold = Fraction(p, q)
    gold_text = (
        f"\\frac{{{gold.numerator}}}{{{gold.denominator}}}" if gold.denominator != 1 else str(gold.numerator)
    )
    assert bounded(math_reward, f"<answer>\\frac{{{p}}}{{{q}}}</answer>", gold_text) == 1.0
