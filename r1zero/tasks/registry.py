"""Task registry: `load_examples(task, split=, n=, seed=, path=)` -> list[Example].

Generated tasks (countdown without path, arithmetic, reasoning_gym) have splits "train" and "test" that never
overlap (see splits.py); file tasks take the split from the file (or the hub split name). `assert_disjoint`
checks any pair of example lists by question text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from r1zero.tasks import arithmetic, countdown, gsm8k, math, reasoning_gym
from r1zero.tasks.splits import assert_disjoint
from r1zero.types import Example

if TYPE_CHECKING:
    from r1zero.config import TaskConfig

LOADERS: dict[str, Callable[..., list[Example]]] = {
    "countdown": countdown.load,
    "arithmetic": arithmetic.load,
    "gsm8k": gsm8k.load,
    "math": math.load,
    "reasoning_gym": reasoning_gym.load,
}
TASKS: tuple[str, ...] = tuple(LOADERS)

__all__ = ["LOADERS", "TASKS", "assert_disjoint", "load_examples", "training_examples"]


def load_examples(
    task: str, *, split: str, n: int | None, seed: int, path: str | None = None, **task_kwargs
) -> list[Example]:
    """Examples of `task` for `split`. n: how many (None = all rows of a file); seed: generation / subsampling.

    `load_examples("arithmetic", split="train", n=2, seed=0)` -> two "What is a + b?" examples;
    task_kwargs go to the task (countdown: min_numbers, max_numbers, number_range, max_target; arithmetic: kind,
    terms, low, high; gsm8k/math: hub_id, hub_config; reasoning_gym: name, config).
    """
    if task not in LOADERS:
        raise ValueError(f"unknown task {task!r}; known tasks: {list(TASKS)}")
    return LOADERS[task](split, n, seed, path=path, **task_kwargs)


def training_examples(task: TaskConfig, seed: int) -> list[Example]:
    """A run's training examples, the same wherever they are drawn (the training loop, the held-out overlap check,
    the benchmark's prompts): task.num_train generated at `seed`, or every row of task.train_path."""
    return load_examples(
        task.name, split="train", n=task.num_train if not task.train_path else None, seed=seed,
        path=task.train_path, **task.kwargs,
    )  # fmt: skip
