"""Math rewards: math-verify equivalence (MATH-style answers) and exact numbers (GSM8K-style answers).

`math_reward` runs math-verify in a small pool of long-lived checker processes (`_math_worker.py`), because
math-verify bounds its time with `signal.alarm`, which only works in the main thread and cannot interrupt C code.
A checker answers within `timeout_s` or is killed and replaced, and the call returns 0.0: a hard bound that holds
from any thread. The checkers start on first use (about a second to import sympy); call `start_math_checkers()`
ahead of time to keep that out of the first step. Cheap checks run first, in the caller: the answer must be at most
1,000 characters with brackets nested at most 12 deep, else 0.0 without asking a checker.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from r1zero.rewards._checker_pool import CheckerPool
from r1zero.rewards.format import extract_answer

MAX_ANSWER_CHARS = 1000
MAX_BRACKET_DEPTH = 12
MAX_NUMBER_CHARS = 64
DEFAULT_TIMEOUT_S = 1.5

_POOL = CheckerPool(workers=2)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces, else None.

    `last_boxed("so $\\boxed{\\frac{1}{2}}$") -> "\\frac{1}{2}"`; `last_boxed("\\boxed 5") -> "5"`;
    an unclosed `\\boxed{1` -> None. Linear in len(text).
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = j = start + (6 if text.startswith("\\boxed", start) else 5)
    while j < len(text) and text[j] == " ":
        j += 1
    if j < len(text) and text[j] == "{":
        depth = 0
        for k in range(j, len(text)):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    return text[j + 1 : k]
        return None
    if j > i:  # `\boxed 5`: one token, up to whitespace or `$`
        m = re.match(r"[^\s$]+", text[j : j + MAX_ANSWER_CHARS])
        return m.group(0) if m else None
    return None


def bracket_depth(text: str) -> int:
    """Deepest nesting of `{[(` brackets (unbalanced closers ignored). `bracket_depth("\\frac{(1)}{2}") -> 2`."""
    depth = deepest = 0
    for ch in text:
        if ch in "{[(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}])" and depth > 0:
            depth -= 1
    return deepest


def normalize_latex(answer: str) -> str:
    """Unwrap a `\\boxed{}` and wrap in `$...$` unless already math-delimited, so math-verify reads it as LaTeX.

    `normalize_latex("1+2x") -> "$1+2x$"` (unwrapped, math-verify reads `1+2x` as `1`);
    `normalize_latex("\\boxed{3}") -> "$3$"`; `normalize_latex("$x$") -> "$x$"`.
    """
    boxed = last_boxed(answer)
    text = (boxed if boxed is not None else answer).strip()
    if "$" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


def math_reward(completion: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """1.0 iff the single `<answer>` block is equivalent to `gold` per math-verify, else 0.0.

    `math_reward("<answer>\\boxed{0.5}</answer>", "\\frac{1}{2}") -> 1.0`;
    `math_reward("<answer>x = 3</answer>", "3") -> 1.0`; `math_reward("<answer>\\{2,1\\}</answer>", "\\{1,2\\}") -> 1.0`.
    A checker that takes longer than `timeout_s` is killed and the answer scores 0.0. Safe from any thread.
    """
    answer = extract_answer(completion)
    if not answer or len(answer) > MAX_ANSWER_CHARS or bracket_depth(answer) > MAX_BRACKET_DEPTH:
        return 0.0
    pred = normalize_latex(answer)
    if not pred.strip("$ "):
        return 0.0
    return 1.0 if _POOL.check(pred, normalize_latex(str(gold)), timeout_s=timeout_s) else 0.0


def start_math_checkers() -> None:
    """Start the math-verify checker processes now and wait until they are ready (else: on first use)."""
    _POOL.start(wait=True)


def stop_math_checkers() -> None:
    """Stop the checker processes (they also stop at interpreter exit, or when this process dies)."""
    _POOL.close()


_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def parse_number(text: str) -> Fraction | None:
    """A plain decimal number as an exact Fraction; `$`, spaces and thousands separators are dropped.

    `parse_number("$1,234.50") -> Fraction(2469, 2)`; `parse_number("-3") -> Fraction(-3)`;
    `parse_number("1,2") -> None` (not a thousands separator); `parse_number("1e9")`, `"½"`, `"3 apples"` -> None.
    """
    if not isinstance(text, str) or len(text) > MAX_NUMBER_CHARS:
        return None
    s = text.replace("\\$", "").replace("$", "").replace(" ", "").strip()
    if s.endswith("."):
        s = s[:-1]
    if "," in s:
        if not _THOUSANDS.fullmatch(s):
            return None
        s = s.replace(",", "")
    if not s or not s.isascii() or not all(c.isdigit() or c in "+-." for c in s):
        return None
    try:
        return Fraction(Decimal(s))
    except (InvalidOperation, ValueError):
        return None


def gsm8k_reward(completion: str, gold: str) -> float:
    """1.0 iff the single `<answer>` block (a `\\boxed{}` inside unwrapped) is the number `gold`, exactly.

    `gsm8k_reward("<answer>$1,000</answer>", "1000") -> 1.0`; `gsm8k_reward("<answer>72.0</answer>", "72") -> 1.0`
    (72.0 == 72 as a Fraction); `gsm8k_reward("<answer>72 apples</answer>", "72") -> 0.0`.
    Raises ValueError if `gold` itself is not a number (a data bug; loaders validate gold at load time).
    """
    gold_value = parse_number(str(gold))
    if gold_value is None:
        raise ValueError(f"gold answer is not a number: {str(gold)[:80]!r}")
    answer = extract_answer(completion)
    if answer is None or len(answer) > MAX_NUMBER_CHARS:
        return 0.0
    boxed = last_boxed(answer)
    value = parse_number(boxed if boxed is not None else answer)
    return 1.0 if value is not None and value == gold_value else 0.0
