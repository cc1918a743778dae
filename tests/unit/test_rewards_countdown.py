"""countdown_reward and its expression evaluator: hand-derived values and the known hacks."""

import time
from fractions import Fraction

import pytest

from r1zero.rewards.countdown import countdown_reward, evaluate, tokenize

NUMS, TARGET = [44, 19, 35], 98  # 44 + 19 + 35 = 98


def ans(expr: str) -> str:
    return f"<think>work</think> <answer>{expr}</answer>"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("44 + 19 + 35", 1.0),  # 44 + 19 = 63, 63 + 35 = 98
        ("35 + 44 + 19", 1.0),  # order of use is free
        ("(44 + 19) + 35", 1.0),
        ("  44+19+35  ", 1.0),  # whitespace anywhere
        ("44 + 19 + 35 = 98", 1.0),  # one trailing "= target" is allowed
        ("44 + 19 + 35 = 97", 0.0),  # ... but it must be the target
        ("98 = 44 + 19 + 35", 0.0),  # only the trailing form
        ("44 + 19 + 35 = 98 = 98", 0.0),  # one "=" at most
        ("44 + 19 - 35", 0.0),  # 44 + 19 - 35 = 28 != 98
        ("44 + 19", 0.0),  # 35 missing
        ("44 + 19 + 35 + 0", 0.0),  # extra number
        ("44 + 44 + 10", 0.0),  # 44 reused (= 98 but wrong multiset)
        ("44 + 54", 0.0),  # 54 = 19 + 35 precomputed: wrong multiset
        ("-(44 - 19 - 35) + 88", 0.0),  # unary minus
        ("44 + 19 + 35.0", 0.0),  # decimals
        ("044 + 19 + 35", 0.0),  # leading zero
        ("44 + 19 + 35)", 0.0),  # unbalanced
        ("(44 + 19 + 35", 0.0),
        ("44 19 35", 0.0),  # no operators
        ("44 + 19 * + 35", 0.0),
        ("", 0.0),
    ],
)
def test_countdown_reward(expr: str, expected: float) -> None:
    assert countdown_reward(ans(expr), NUMS, TARGET) == expected


def test_division_is_exact_rational() -> None:
    # 6 / 4 = 3/2, 3/2 * 2 = 3: exact Fraction arithmetic, no float rounding.
    assert countdown_reward(ans("6 / 4 * 2"), [6, 4, 2], 3) == 1.0
    # (1 / 3) * 3 = 1 exactly (a float would give 1.0 too, but 1/3 + 1/3 + 1/3 would not be exact in floats).
    assert countdown_reward(ans("(1 / 3) * 3"), [1, 3, 3], 1) == 1.0
    # 7 / 2 = 3.5, not the integer target 3 (integer division would say 3).
    assert countdown_reward(ans("7 / 2"), [7, 2], 3) == 0.0


def test_division_by_zero_scores_zero() -> None:
    assert countdown_reward(ans("5 / (3 - 3)"), [5, 3, 3], 5) == 0.0
    assert evaluate("5 / (3 - 3)") is None


def test_duplicate_numbers_form_a_multiset() -> None:
    # numbers [3, 3, 2]: 3 * 3 - 2 = 7 uses 3 twice, which is allowed because 3 appears twice.
    assert countdown_reward(ans("3 * 3 - 2"), [3, 3, 2], 7) == 1.0
    assert countdown_reward(ans("3 * 2 + 1"), [3, 3, 2], 7) == 0.0  # 1 is not in the numbers


@pytest.mark.parametrize(
    "completion",
    [
        "<think>x</think> <answer>44 + 19 + 35</answer></answer>",  # repeated </answer>
        "<think>x</think> <answer>1</answer> <answer>44 + 19 + 35</answer>",  # two answer blocks
        "<think>x</think> 44 + 19 + 35",  # no answer block
        ans("__import__('os').system('true')"),  # code
        ans("2**10"),
        ans("44 // 19 + 35"),
        ans("abs(44) + 19 + 35"),
        ans("\u0664\u0664 + 19 + 35"),  # Arabic-Indic digits for 44
        ans("\uff14\uff14 + 19 + 35"),  # fullwidth digits for 44
        ans("44 +\u00a019 + 35"),  # a no-break space inside is not ASCII whitespace
        ans("44 + 19 + 35 # comment"),
        ans("9**9**9"),
        ans("9" * 10_000),  # a 10,000-digit literal
        ans("(" * 10_000 + "44 + 19 + 35" + ")" * 10_000),  # 10,000 nested parentheses
        ans("(" * 40 + "44 + 19 + 35" + ")" * 40),  # deeper than MAX_PAREN_DEPTH (32), under the length cap
        "<answer>" + "1+" * 500_000 + "1</answer>",  # a megabyte answer
    ],
)
def test_hacks_score_zero_fast(completion: str) -> None:
    start = time.perf_counter()
    assert countdown_reward(completion, NUMS, TARGET) == 0.0
    assert time.perf_counter() - start < 2.0


def test_answer_inside_think_counts_as_correct_but_not_format() -> None:
    # Correctness reads the single answer block wherever it is; the format reward is what punishes the layout.
    from r1zero.rewards.format import format_reward

    completion = "<think>so <answer>44 + 19 + 35</answer></think>"
    assert countdown_reward(completion, NUMS, TARGET) == 1.0
    assert format_reward(completion) == 0.0


def test_evaluate_and_tokenize() -> None:
    assert evaluate("(1 + 2) / 3") == (Fraction(1), [1, 2, 3])
    assert evaluate("2 * 3 + 4") == (Fraction(10), [2, 3, 4])  # precedence: (2*3)+4
    assert evaluate("2 * (3 + 4)") == (Fraction(14), [2, 3, 4])
    assert evaluate("8 - 3 - 2") == (Fraction(3), [8, 3, 2])  # left-associative: (8-3)-2
    assert evaluate("8 / 4 / 2") == (Fraction(1), [8, 4, 2])  # (8/4)/2
    assert evaluate("-1 + 2") is None
    assert evaluate("2 ** 3") is None
    assert tokenize("(12+3) / 5") == ["(", "12", "+", "3", ")", "/", "5"]
    assert tokenize("x + 1") is None


def test_numpy_like_integers_are_accepted_and_bad_gold_raises() -> None:
    class IntLike:  # what parquet/numpy hands over: has __index__
        def __init__(self, v: int) -> None:
            self.v = v

        def __index__(self) -> int:
            return self.v

    assert countdown_reward(ans("44 + 19 + 35"), [IntLike(44), IntLike(19), IntLike(35)], IntLike(98)) == 1.0
    with pytest.raises(TypeError):
        countdown_reward(ans("1"), [1.5], 1)  # a float number is a data bug, not a completion problem


@pytest.mark.parametrize(
    ("expr", "numbers", "target"),
    [
        ("-2 + 5", [2, 5], 3),  # unary minus: -2 + 5 = 3 in Python, not allowed
        ("2**10", [2, 10], 1024),  # power: 2**10 = 1024 in Python
        ("9 // 2", [9, 2], 4),  # floor division: 9 // 2 = 4 in Python
        ("9 % 5", [9, 5], 4),  # modulo
        ("(5, 3)[0] - 3 + 3", [5, 3, 3], 5),  # tuples and indexing
        ("\u0665 - 2", [5, 2], 3),  # Arabic-Indic 5: int("\u0665") == 5 in Python
        ("\uff15 - 2", [5, 2], 3),  # fullwidth 5: int("\uff15") == 5 in Python
        ("5 - 2.0", [5, 2], 3),
        ("0x5 - 2", [5, 2], 3),
        ("5_0 - 47", [50, 47], 3),  # digit separators
    ],
)
def test_hacks_that_python_would_accept_score_zero(expr: str, numbers: list[int], target: int) -> None:
    assert countdown_reward(ans(expr), numbers, target) == 0.0
