"""MATH (Hendrycks) style problems with LaTeX answers, e.g. MATH-500.

Rows: `{"problem" (or "question"): ..., "answer": ...}` or `{"problem": ..., "solution": "... \\boxed{...}"}`;
an `answer` field wins, else the last `\\boxed{}` of the solution (braces balanced). From local JSONL/parquet
(`path=`), or from the hub (default `HuggingFaceH4/MATH-500`, split "test") when `datasets` and a hub are there.
"""

from __future__ import annotations

from typing import Any

from r1zero.rewards.math import last_boxed
from r1zero.tasks.io import Row, get_str, load_file_or_hub
from r1zero.types import Example

HUB_ID, HUB_CONFIG = "HuggingFaceH4/MATH-500", None


def extract_math_answer(solution: str) -> str:
    """The content of the last `\\boxed{}` in a solution. `"... $\\boxed{\\frac{1}{2}}$." -> "\\frac{1}{2}"`.

    Raises ValueError if the solution has no complete `\\boxed{...}`.
    """
    boxed = last_boxed(solution)
    if boxed is None or not boxed.strip():
        raise ValueError("solution has no complete \\boxed{...} answer")
    return boxed.strip()


def _from_row(row: Row, uid: str) -> Example:
    problem = get_str(row, "problem", "question")
    if row.get("answer") is not None:
        answer = get_str(row, "answer").strip()
    else:
        answer = extract_math_answer(get_str(row, "solution"))
    meta: dict[str, Any] = {k: row[k] for k in ("level", "type", "subject") if k in row}
    return Example(question=problem, answer=answer, uid=f"math/{uid}", meta=meta)


def load(
    split: str,
    n: int | None,
    seed: int,
    path: str | None = None,
    hub_id: str = HUB_ID,
    hub_config: str | None = HUB_CONFIG,
) -> list[Example]:
    """Examples from `path` (the split is the file) or the hub's `split`; n = a seeded subset, None = all."""
    return load_file_or_hub(path, split, n, seed, _from_row, hub_id=hub_id, hub_config=hub_config)
