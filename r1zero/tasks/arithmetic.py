"""Easy seeded arithmetic, for CPU runs where a small model must earn reward early.

Kinds:
    "sum":     `terms` integers in [low, high] added:           "What is 12 + 9?"        -> "21"
    "chain":   `terms` integers joined by random + and -:        "What is 12 - 9 + 4?"    -> "7"
    "product": two integers in [low, high] multiplied:           "What is 7 * 8?"         -> "56"
The gold answer is the exact integer as a string (scored by the exact-number reward, as GSM8K).
STACK_NOTES: SmolLM2-135M-Instruct learns "sum" with 2 terms in 1..99 by GRPO on 2 CPU cores in ~10 minutes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from r1zero.tasks.splits import split_seed, take_split
from r1zero.types import Example

KINDS = ("sum", "chain", "product")


def iter_arithmetic(
    seed: int,
    *,
    kind: str = "sum",
    terms: int = 2,
    low: int = 1,
    high: int = 99,
    uid_prefix: str = "arithmetic",
) -> Iterator[Example]:
    """Endless seeded stream of arithmetic questions (uid `{uid_prefix}/{seed}/{i}`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown arithmetic kind {kind!r}; known: {list(KINDS)}")
    if terms < 2 or low > high:
        raise ValueError(f"need terms >= 2 and low <= high, got terms={terms}, low={low}, high={high}")
    rng = random.Random(seed)
    i = 0
    while True:
        if kind == "product":
            operands, ops = [rng.randint(low, high), rng.randint(low, high)], ["*"]
            value = operands[0] * operands[1]
        else:
            operands = [rng.randint(low, high) for _ in range(terms)]
            ops = [rng.choice("+-") if kind == "chain" else "+" for _ in range(terms - 1)]
            value = operands[0] + sum(x if op == "+" else -x for op, x in zip(ops, operands[1:]))
        text = str(operands[0]) + "".join(f" {op} {x}" for op, x in zip(ops, operands[1:]))
        meta = {"operands": operands, "ops": ops}
        yield Example(
            question=f"What is {text}?", answer=str(value), uid=f"{uid_prefix}/{seed}/{i}", meta=meta
        )
        i += 1


def load(split: str, n: int | None, seed: int, path: str | None = None, **kwargs) -> list[Example]:
    """n generated examples of `split` (disjoint seeds and held-out questions, see splits.py); no files."""
    if path is not None:
        raise ValueError("the arithmetic task is generated; it takes no path")
    if n is None:
        raise ValueError("generated arithmetic needs n (the number of examples)")
    stream = iter_arithmetic(split_seed(seed, split), uid_prefix=f"arithmetic/{split}", **kwargs)
    return take_split(stream, split, n)
