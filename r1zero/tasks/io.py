"""Reading data rows: local JSONL / JSON / parquet files, or the hub through `datasets` when it is installed.

A bad row (unparsable JSON, not an object, a missing field, a wrong type) raises ValueError naming the file and
the 1-based row number, e.g. `data/cd.jsonl: row 3: missing field 'target'`. In JSONL the row number is the line
number (blank lines are skipped but counted).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from r1zero.types import Example

Row = dict[str, Any]


def read_rows(path: str | Path) -> Iterator[tuple[int, Row]]:
    """Yield (row number from 1, row dict) from a .jsonl / .json (JSON lines or one array) / .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix in (".jsonl", ".json"):
        yield from _read_json(path)
    else:
        raise ValueError(f"{path}: unsupported data file type {suffix!r} (use .jsonl, .json or .parquet)")


def _read_json(path: Path) -> Iterator[tuple[int, Row]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):  # one JSON array of objects
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON: {exc}") from exc
        numbered: Iterator[tuple[int, Any]] = enumerate(rows, start=1)
    else:
        numbered = ((i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip())
    for row_no, item in numbered:
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: row {row_no}: invalid JSON: {exc}") from exc
        if not isinstance(item, dict):
            raise ValueError(f"{path}: row {row_no}: expected a JSON object, got {type(item).__name__}")
        yield row_no, item


def _read_parquet(path: Path) -> Iterator[tuple[int, Row]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from exc
    yield from enumerate(pq.read_table(path).to_pylist(), start=1)


def read_hub_rows(hub_id: str, config: str | None, split: str) -> Iterator[tuple[int, Row]]:
    """Rows of a hub dataset via `datasets.load_dataset` (imported here, never at module import)."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            f"loading {hub_id} without path= needs the `datasets` package; or pass path= a local JSONL/parquet file"
        ) from exc
    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:
        raise RuntimeError(
            f"could not load {hub_id} ({config}, {split}) from the hub: {exc}. "
            "Offline? Pass path= a local JSONL/parquet file instead."
        ) from exc
    for row_no, row in enumerate(ds, start=1):
        yield row_no, dict(row)


def convert_rows(
    rows: Iterator[tuple[int, Row]], source: str, convert: Callable[[Row, str], Example]
) -> list[Example]:
    """`convert(row, uid)` each row; its KeyError/TypeError/ValueError becomes ValueError("source: row N: ...").

    The uid passed is `{file name}#{row number}`, e.g. "train.jsonl#3" (the caller prefixes the task name).
    """
    name = Path(source).name
    examples = []
    for row_no, row in rows:
        try:
            examples.append(convert(row, f"{name}#{row_no}"))
        except KeyError as exc:
            field = exc.args[0] if exc.args else "?"
            raise ValueError(f"{source}: row {row_no}: missing field {field!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: row {row_no}: {exc}") from exc
    return examples


def get_str(row: Row, *names: str) -> str:
    """The first of `names` present in `row`, which must be a non-empty string. `get_str(r, "problem", "question")`."""
    for name in names:
        if name in row and row[name] is not None:
            value = row[name]
            if not isinstance(value, str) or not value.strip():
                raise TypeError(f"field {name!r} must be a non-empty string, got {type(value).__name__}")
            return value
    raise ValueError("missing field " + " or ".join(repr(n) for n in names))


def get_int(row: Row, name: str) -> int:
    """row[name] as an int (bool and float rejected)."""
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"field {name!r} must be an integer, got {type(value).__name__}: {value!r}")
    return value


def subsample(examples: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """All examples if n is None or >= len, else a seeded random n of them, kept in file order."""
    if n is None or n >= len(examples):
        return list(examples)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def load_file_or_hub(
    path: str | None,
    split: str,
    n: int | None,
    seed: int,
    from_row: Callable[[Row, str], Example],
    *,
    hub_id: str,
    hub_config: str | None,
) -> list[Example]:
    """Examples from `path` (the split is the file) or the hub's `split`, converted row by row with
    `from_row(row, uid)`; n = a seeded subset, None = all. Shared by the file/hub tasks (gsm8k, math)."""
    if path is not None:
        examples = convert_rows(read_rows(path), str(path), from_row)
    else:
        examples = convert_rows(read_hub_rows(hub_id, hub_config, split), f"{hub_id}:{split}", from_row)
    return subsample(examples, n, seed)
