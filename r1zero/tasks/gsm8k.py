"""GSM8K: grade-school word problems with a numeric answer.

Rows: `{"question": ..., "answer": ...}` where answer is either the full GSM8K solution ending in `#### 72`, or an
already extracted number. From local JSONL/parquet (`path=`), or from the hub (`openai/gsm8k`, config "main") when
`datasets` is installed and a hub is reachable.
"""

from __future__ import annotations

from r1zero.rewards.math import parse_number
from r1zero.tasks.io import Row, get_str, load_file_or_hub
from r1zero.types import Example

HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"


def extract_gsm8k_answer(answer: str) -> str:
    """The gold number: text after the last `####` (or the whole string), commas and `$` removed.

    `extract_gsm8k_answer("... so 48 + 24 = 72.\\n#### 72") -> "72"`; `extract_gsm8k_answer("1,000") -> "1000"`.
    Raises ValueError when that is not a number.
    """
    tail = answer.rsplit("####", 1)[-1].strip()
    if parse_number(tail) is None:
        raise ValueError(f"answer is not a number: {tail[:80]!r}")
    return tail.replace(",", "").replace("$", "").strip()


def _from_row(row: Row, uid: str) -> Example:
    question = get_str(row, "question")
    answer = row["answer"]
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str):
        raise TypeError(f"field 'answer' must be a string or number, got {type(answer).__name__}")
    return Example(question=question, answer=extract_gsm8k_answer(answer), uid=f"gsm8k/{uid}")


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
