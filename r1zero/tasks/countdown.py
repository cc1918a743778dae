"""Countdown (TinyZero): reach a target from a few numbers with + - * /, each number used once.

Generated examples are solvable by construction: the generator combines the numbers into a random expression tree
with exact rational arithmetic and keeps the value as the target only if it is a positive integer <= max_target.
The expression is stored in meta["solution"] (tests score it with `countdown_reward`). Files in the
Countdown-Tasks-3to4 format (rows `{"nums": [...], "target": N}`) load with `load_countdown_file`.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

from r1zero.tasks.io import Row, convert_rows, get_int, read_rows, subsample
from r1zero.tasks.splits import split_seed, take_split
from r1zero.types import Example

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def countdown_question(numbers: Sequence[int], target: int) -> str:
    """The task text (no template). `countdown_question([3, 5, 7], 15)` starts "Using the numbers [3, 5, 7], ..."."""
    return (
        f"Using the numbers {list(numbers)}, create an equation that equals {target}. You can use basic arithmetic "
        "operations (+, -, *, /) and each number exactly once. Put the equation in <answer> </answer> tags, "
        "for example <answer> (1 + 2) / 3 </answer>."
    )


def countdown_example(numbers: Sequence[int], target: int, uid: str, solution: str | None = None) -> Example:
    meta: dict = {"numbers": list(numbers), "target": target}
    if solution is not None:
        meta["solution"] = solution
    return Example(question=countdown_question(numbers, target), answer=str(target), uid=uid, meta=meta)


def random_solution(
    rng: random.Random, numbers: Sequence[int], max_target: int, tries: int = 50
) -> tuple[int, str] | None:
    """(target, expression) from a random tree over `numbers` whose value is an integer in [1, max_target].

    Each try: repeatedly replace two random items by (a op b) until one remains. `tries` trees, else None.
    `random_solution(random.Random(0), [3, 5, 7], 100) -> (4, "(5 + 7) / 3")`; values are exact Fractions.
    """
    for _ in range(tries):
        pool = [(Fraction(x), str(x)) for x in numbers]
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            (a, ea), (b, eb) = pool[i], pool[j]
            op = rng.choice("+-*/")
            if op == "/" and b == 0:
                break
            for k in sorted((i, j), reverse=True):
                pool.pop(k)
            pool.append((_OPS[op](a, b), f"({ea} {op} {eb})"))
        if len(pool) == 1 and pool[0][0].denominator == 1 and 1 <= pool[0][0] <= max_target:
            value, expr = pool[0]
            return int(value), expr[1:-1] if expr.startswith("(") else expr
    return None


def iter_countdown(
    seed: int,
    *,
    min_numbers: int = 3,
    max_numbers: int = 4,
    number_range: tuple[int, int] = (1, 99),
    max_target: int = 100,
    uid_prefix: str = "countdown",
) -> Iterator[Example]:
    """Endless seeded stream of solvable Countdown examples (uid `{uid_prefix}/{seed}/{i}`)."""
    if not 1 <= min_numbers <= max_numbers:
        raise ValueError(f"need 1 <= min_numbers <= max_numbers, got {min_numbers}, {max_numbers}")
    low, high = number_range
    if not 0 <= low <= high or max_target < 1:
        raise ValueError(f"bad number_range {number_range} or max_target {max_target}")
    rng = random.Random(seed)
    i = failures = 0
    while True:
        numbers = [rng.randint(low, high) for _ in range(rng.randint(min_numbers, max_numbers))]
        found = random_solution(rng, numbers, max_target)
        if found is None:
            failures += 1
            if failures > 1000:
                raise ValueError(
                    f"no target in [1, {max_target}] found for 1000 number sets from {number_range}"
                )
            continue
        failures = 0
        target, expr = found
        yield countdown_example(numbers, target, f"{uid_prefix}/{seed}/{i}", solution=expr)
        i += 1


def _from_row(row: Row, uid: str) -> Example:
    nums = row["nums"]
    if not isinstance(nums, list) or not nums:
        raise TypeError(f"field 'nums' must be a non-empty list of integers, got {nums!r}")
    for x in nums:
        if isinstance(x, bool) or not isinstance(x, int):
            raise TypeError(f"field 'nums' must hold integers, got {x!r}")
    return countdown_example(nums, get_int(row, "target"), f"countdown/{uid}")


def load_countdown_file(path: str | Path) -> list[Example]:
    """Examples from a Countdown-Tasks-3to4 style JSONL/parquet file (fields `nums`, `target`)."""
    return convert_rows(read_rows(path), str(path), _from_row)


def load(split: str, n: int | None, seed: int, path: str | None = None, **kwargs) -> list[Example]:
    """A file (any split; n = seeded subset) or, without path, n generated examples of `split` (see splits.py)."""
    if path is not None:
        return subsample(load_countdown_file(path), n, seed)
    if n is None:
        raise ValueError("generated countdown needs n (the number of examples)")
    stream_seed = split_seed(seed, split)
    return take_split(iter_countdown(stream_seed, uid_prefix=f"countdown/{split}", **kwargs), split, n)
