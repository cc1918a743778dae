"""reasoning-gym adapter (optional): Examples from `reasoning_gym.create_dataset(name, size=, seed=)`.

reasoning-gym is imported when this task is used, never at import; without it, ImportError with an install hint.
Entries are built by index (`dataset[i]`), which is deterministic; the scorer is the dataset's own `score_answer`,
made binary by `r1zero.rewards.reasoning_gym`. Splits: disjoint seeds and held-out questions, as in splits.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from r1zero.rewards.reasoning_gym import import_reasoning_gym
from r1zero.tasks.splits import split_seed, take_split
from r1zero.types import Example


def iter_reasoning_gym(
    name: str, seed: int, size: int, config: dict[str, Any], uid_prefix: str
) -> Iterator[Example]:
    """Examples 0..size-1 of dataset `name` built with `seed` and `config` (its generator's keyword arguments)."""
    rg = import_reasoning_gym()
    dataset = rg.create_dataset(name, **config, size=size, seed=seed)
    config_json = json.dumps(config, sort_keys=True)
    for i in range(size):
        entry = dataset[i]
        yield Example(
            question=entry["question"],
            answer=str(entry["answer"]),
            uid=f"{uid_prefix}/{seed}/{i}",
            meta={"rg_dataset": name, "rg_config": config_json, "rg_entry": entry},
        )


def load(
    split: str,
    n: int | None,
    seed: int,
    path: str | None = None,
    name: str = "chain_sum",
    config: dict[str, Any] | None = None,
) -> list[Example]:
    """n examples of reasoning-gym dataset `name` for `split`. `config`: the generator's options (JSON-able)."""
    if path is not None:
        raise ValueError("the reasoning_gym task is generated; it takes no path")
    if n is None:
        raise ValueError("reasoning_gym needs n (the number of examples)")
    config = dict(config or {})
    # Enough draws for the held-out bucket (~10% of questions) with room for duplicates.
    size = 30 * n + 100
    stream = iter_reasoning_gym(name, split_seed(seed, split), size, config, f"reasoning_gym/{name}/{split}")
    return take_split(stream, split, n, max_draws=size)
