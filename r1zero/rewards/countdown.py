"""Countdown reward: is the answer an arithmetic expression that uses the given numbers once each and hits the target?

The expression is read by a small hand-written parser (never `eval`, never `ast`):

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := INTEGER | "(" expr ")"
    INTEGER:= ASCII digits, no leading zero ("0" alone is fine)

and evaluated exactly with `fractions.Fraction`. Unary minus, `**`, `//`, names, calls, decimals, unicode digits or
any other character do not parse. One trailing `= N` is allowed when N is the target written as an integer
(models often write the whole equation, `55 + 36 - 7 - 19 = 65`); any other `=` gives 0.0.

Bounds, checked before any parsing: answer at most 512 characters, parentheses nested at most 32 deep, each
literal at most 18 digits, and the literals must already be the multiset `numbers` (so the tree has
len(numbers) leaves and evaluation is a handful of Fraction operations).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

from r1zero.rewards.format import extract_answer

MAX_EXPR_CHARS = 512
MAX_PAREN_DEPTH = 32
MAX_LITERAL_DIGITS = 18
_ALLOWED = frozenset("0123456789+-*/() \t\r\n")
_DIGITS = frozenset("0123456789")


def tokenize(expr: str) -> list[str] | None:
    """Split an expression into integer literals and the characters `+ - * / ( )`; None on anything else.

    `tokenize("(12+3) / 5") -> ["(", "12", "+", "3", ")", "/", "5"]`; `tokenize("2**3")` -> 5 tokens (the
    parser rejects `* *`); `tokenize("x+1") -> None`; literals longer than 18 digits or with a leading zero -> None.
    """
    if len(expr) > MAX_EXPR_CHARS or not set(expr) <= _ALLOWED:
        return None
    tokens: list[str] = []
    depth = i = 0
    while i < len(expr):
        ch = expr[i]
        if ch in _DIGITS:
            j = i
            while j < len(expr) and expr[j] in _DIGITS:
                j += 1
            literal = expr[i:j]
            if j - i > MAX_LITERAL_DIGITS or (literal[0] == "0" and len(literal) > 1):
                return None
            tokens.append(literal)
            i = j
            continue
        if ch == "(":
            depth += 1
            if depth > MAX_PAREN_DEPTH:
                return None
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return None
        if not ch.isspace():
            tokens.append(ch)
        i += 1
    return tokens


_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


class _Parser:
    """Recursive descent over `tokenize` output; depth is bounded by MAX_PAREN_DEPTH (checked in tokenize)."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.pos = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def expr(self) -> Fraction | None:
        value = self.term()
        while value is not None and self.peek() in ("+", "-"):
            op, rhs = str(self.take()), self.term()
            value = None if rhs is None else _OPS[op](value, rhs)
        return value

    def term(self) -> Fraction | None:
        value = self.factor()
        while value is not None and self.peek() in ("*", "/"):
            op, rhs = str(self.take()), self.factor()
            if rhs is None or (op == "/" and rhs == 0):
                return None
            value = _OPS[op](value, rhs)
        return value

    def factor(self) -> Fraction | None:
        tok = self.take()
        if tok is None:
            return None
        if tok.isdigit():  # tokenize only emits ASCII-digit literals
            return Fraction(int(tok))
        if tok == "(":
            value = self.expr()
            return value if self.take() == ")" else None
        return None


def evaluate(expr: str) -> tuple[Fraction, list[int]] | None:
    """Exact value and literals of a `+ - * / ( )` integer expression, or None if it does not parse or divides by 0.

    `evaluate("(1 + 2) / 3") -> (Fraction(1), [1, 2, 3])`; `evaluate("4/(2-2)") -> None`; `evaluate("-1+2") -> None`.
    """
    tokens = tokenize(expr)
    if not tokens:
        return None
    parser = _Parser(tokens)
    value = parser.expr()
    if value is None or parser.pos != len(tokens):
        return None
    return value, [int(t) for t in tokens if t.isdigit()]


def _split_equation(answer: str, target: int) -> str | None:
    """Drop one trailing `= target`; None if the `=` part is anything else. `"1+2 = 3", 3 -> "1+2 "`."""
    if "=" not in answer:
        return answer
    lhs, _, rhs = answer.partition("=")
    rhs = rhs.strip()
    if "=" in rhs or not rhs.isascii() or not rhs.isdigit() or len(rhs) > MAX_LITERAL_DIGITS:
        return None
    return lhs if int(rhs) == target else None


def countdown_reward(completion: str, numbers: Sequence[int], target: int) -> float:
    """1.0 iff the single `<answer>` block is an expression over exactly the multiset `numbers` equal to `target`.

    `countdown_reward("<answer>(1 + 2) * 3</answer>", [1, 2, 3], 9) -> 1.0` ((1+2)*3 = 9, each number once);
    `countdown_reward("<answer>3 * 3</answer>", [1, 2, 3], 9) -> 0.0` (3 reused, 1 and 2 missing).
    Raises TypeError only if `numbers`/`target` are not integers (a data bug, not a completion problem).
    """
    wanted = Counter(operator.index(x) for x in numbers)
    target = operator.index(target)
    answer = extract_answer(completion)
    if answer is None or len(answer) > MAX_EXPR_CHARS:
        return 0.0
    expr = _split_equation(answer, target)
    if expr is None:
        return 0.0
    tokens = tokenize(expr)
    if tokens is None or Counter(int(t) for t in tokens if t.isdigit()) != wanted:
        return 0.0
    result = evaluate(expr)
    return 1.0 if result is not None and result[0] == target else 0.0
