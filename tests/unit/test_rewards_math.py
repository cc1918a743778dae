"""math_reward (math-verify in checker processes), gsm8k_reward, and their helpers."""

import os
import signal
import threading
import time
from fractions import Fraction

import pytest

from r1zero.rewards import math as rmath
from r1zero.rewards.math import (
    bracket_depth,
    gsm8k_reward,
    last_boxed,
    math_reward,
    normalize_latex,
    parse_number,
)

pytest.importorskip("math_verify")


@pytest.fixture(scope="module", autouse=True)
def checkers():
    rmath.start_math_checkers()  # the one-time start (~1 s) stays out of the timed calls
    yield
    rmath.stop_math_checkers()


def ans(text: str) -> str:
    return f"<think>work</think> <answer>{text}</answer>"


def timed(fn, *args) -> float:
    start = time.perf_counter()
    value = fn(*args)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    return value


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("\\frac{1}{2}", "0.5", 1.0),  # fraction vs decimal
        ("0.5", "\\frac{1}{2}", 1.0),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),  # a boxed answer is unwrapped
        ("x = 3", "3", 1.0),  # an assignment compares its right-hand side
        ("\\{2, 1\\}", "\\{1, 2\\}", 1.0),  # set order does not matter
        ("2x + 1", "1+2x", 1.0),  # plain gold "1+2x" is wrapped in $...$ (unwrapped it parses as 1)
        ("(x+1)^2", "x^2+2x+1", 1.0),  # symbolic equality
        ("\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", 1.0),  # LaTeX vs plain
        ("$\\dfrac{3}{4}$", "\\frac34", 1.0),  # already in $...$, \dfrac, and \frac34 shorthand
        ("4", "3", 0.0),
        ("1+2x", "2x-1", 0.0),
        ("\\frac{1}{3}", "0.33", 0.0),  # 1/3 = 0.3333..., 0.33 differs at the 2nd digit
        ("", "3", 0.0),  # empty answer
        ("$ $", "3", 0.0),  # nothing inside the math delimiters
    ],
)
def test_math_reward_equivalence(answer: str, gold: str, expected: float) -> None:
    assert timed(math_reward, ans(answer), gold) == expected


@pytest.mark.parametrize(
    "completion",
    [
        "<think>x</think> <answer>3</answer></answer>",  # repeated </answer>
        "<think>x</think> <answer>1</answer> <answer>3</answer>",  # two answer blocks
        "<think>the answer is 3</think> 3",  # no answer block
        "<think>x</think> \\boxed{3}",  # a boxed answer outside the answer block does not count
    ],
)
def test_math_reward_structure_hacks(completion: str) -> None:
    assert timed(math_reward, completion, "3") == 0.0


@pytest.mark.parametrize(
    "answer",
    [
        "10^{10^{10^{10}}}",  # a power tower: sympy would try to build the number
        "9^{9^{9}}",
        "9**9**9",
        "(10^{10^{7}})!",
        "\\frac{" * 13 + "1" + "}{2}" * 13,  # 13-deep \frac: over the depth cap (12), rejected before parsing
        "\\frac{" * 300 + "1" + "}{2}" * 300,
        "(" * 12
        + "1"
        + ")" * 12,  # 12 parentheses: allowed, and slow in math-verify's parser (bounded anyway)
        "(" * 10_000 + "3" + ")" * 10_000,  # 10,000 nested parentheses: over the length cap
        "9" * 10_000,  # a 10,000-digit literal: over the length cap
        "\\sum_{i=1}^{10^{10}} i",
        "__import__('os').system('true')",
    ],
)
def test_math_reward_bombs_are_time_bounded(answer: str) -> None:
    assert timed(math_reward, ans(answer), "3") == 0.0


def test_deep_but_allowed_nesting_still_verifies() -> None:
    # 12 nested \frac{...}{2} around 1: 1 / 2^12 = 1/4096.
    assert timed(math_reward, ans("\\frac{" * 12 + "1" + "}{2}" * 12), "\\frac{1}{4096}") == 1.0


def test_math_reward_megabyte_string() -> None:
    assert timed(math_reward, ans("1+" * 500_000 + "1"), "3") == 0.0
    assert timed(math_reward, "x" * 1_000_000, "3") == 0.0


def test_math_reward_from_a_thread_is_bounded() -> None:
    # math-verify's own timeouts (signal.alarm) raise ValueError off the main thread; ours must not.
    results: list[tuple[float, float]] = []

    def work() -> None:
        for answer, gold in [("\\frac{2}{4}", "0.5"), ("10^{10^{10^{10}}}", "3")]:
            start = time.perf_counter()
            results.append((math_reward(ans(answer), gold), time.perf_counter() - start))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [r for r, _ in results].count(1.0) == 2 and [r for r, _ in results].count(0.0) == 2
    # Two threads share two checkers, so no call waits for another: each is bounded on its own.
    assert max(elapsed for _, elapsed in results) < 2.0


def test_stuck_checker_is_killed_and_replaced() -> None:
    # A checker stuck where no signal handler runs (simulated with SIGSTOP) is killed at the deadline.
    pool = rmath._POOL
    pool.start(wait=True)
    with pool._cond:
        checkers = list(pool._idle)
    for checker in checkers:
        os.kill(checker.proc.pid, signal.SIGSTOP)
    start = time.perf_counter()
    assert math_reward(ans("3"), "3", timeout_s=0.5) == 0.0  # the right answer, but no verdict in time
    assert time.perf_counter() - start < 1.0
    assert [checker.proc.poll() is not None for checker in checkers].count(True) == 1  # the one asked: killed
    for checker in checkers:
        if checker.proc.poll() is None:
            os.kill(checker.proc.pid, signal.SIGCONT)
    pool.start(wait=True)
    assert math_reward(ans("3"), "3") == 1.0  # the replacement works


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last one
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # nested braces balanced
        ("\\boxed {7}", "7"),
        ("\\boxed 5$", "5"),
        ("\\fbox{4}", "4"),
        ("\\boxed{1", None),  # unclosed
        ("no box", None),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_normalize_and_depth() -> None:
    assert normalize_latex("1+2x") == "$1+2x$"
    assert normalize_latex("\\boxed{3}") == "$3$"
    assert normalize_latex("$x$") == "$x$"
    assert bracket_depth("\\frac{(1)}{2}") == 2  # { then ( inside it
    assert bracket_depth("a)b(") == 1  # a stray closer is ignored


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72", Fraction(72)),
        ("$1,234.50", Fraction(2469, 2)),  # 1234.5 = 2469/2
        ("-3", Fraction(-3)),
        ("72.", Fraction(72)),  # a sentence-final period
        ("0.1", Fraction(1, 10)),  # exact: Decimal, not float
        ("1,2", None),  # not a thousands separator
        ("1e9", None),
        ("\u0667\u0662", None),  # Arabic-Indic 72
        ("3 apples", None),
        ("", None),
        ("9" * 100, None),  # longer than MAX_NUMBER_CHARS
    ],
)
def test_parse_number(text: str, expected: Fraction | None) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("72", "72", 1.0),
        ("$1,000", "1000", 1.0),
        ("72.0", "72", 1.0),  # 72.0 == 72 exactly
        ("\\boxed{72}", "72", 1.0),
        ("72 apples", "72", 0.0),
        ("73", "72", 0.0),
        ("0.30000000000000004", "0.3", 0.0),  # exact, not float-close
    ],
)
def test_gsm8k_reward(answer: str, gold: str, expected: float) -> None:
    assert gsm8k_reward(ans(answer), gold) == expected


def test_gsm8k_reward_hacks_and_bad_gold() -> None:
    assert gsm8k_reward("<answer>72</answer></answer>", "72") == 0.0
    assert gsm8k_reward("<answer>1</answer><answer>72</answer>", "72") == 0.0
    assert gsm8k_reward(ans("9" * 10_000), "72") == 0.0
    assert gsm8k_reward("x" * 1_000_000, "72") == 0.0
    with pytest.raises(ValueError, match="not a number"):
        gsm8k_reward(ans("72"), "seventy-two")


def test_power_tower_is_stopped_inside_the_checker() -> None:
    # The checker's own interval timer interrupts sympy at 0.8 * timeout_s: a 0.0 without killing the process.
    rmath._POOL.start(wait=True)
    with rmath._POOL._cond:
        checkers = list(rmath._POOL._idle)
    assert timed(math_reward, ans("10^{10^{10^{10}}}"), "3") == 0.0
    assert checkers and all(checker.proc.poll() is None for checker in checkers)  # none killed


def test_checker_that_cannot_start_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # What happens without math-verify: the checker exits at start; the call raises (score() turns that into
    # an "error" component), and after 3 failed starts the pool stops spawning and raises at once.
    from r1zero.rewards import _checker_pool

    monkeypatch.setattr(_checker_pool, "_WORKER_CMD", "raise SystemExit(3)")
    pool = _checker_pool.CheckerPool(workers=1, startup_timeout_s=30)
    for _ in range(3):
        with pytest.raises(_checker_pool.CheckerDied):
            pool.check("$1$", "$1$", timeout_s=1.0)
    start = time.perf_counter()
    with pytest.raises(_checker_pool.CheckerDied, match="3 times"):
        pool.check("$1$", "$1$", timeout_s=1.0)
    assert time.perf_counter() - start < 0.5
    pool.close()
