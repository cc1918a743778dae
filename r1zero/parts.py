"""Small, tested parts of the training loop: the prompt sampler, scoring, per-step statistics, phase timers."""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from r1zero.config import TaskConfig
from r1zero.rewards.registry import score
from r1zero.types import Completion, Prompt


@dataclass
class PromptSampler:
    """Endless, resumable sampling without replacement: each epoch is a seeded permutation of the examples.

    The whole state is (epoch, position), saved in checkpoints so a resumed run sees the same prompts.
    Example: 5 examples, batch 2 -> epoch 0 gives perm0[0:2], perm0[2:4], then perm0[4] + perm1[0], ...
    """

    num_examples: int
    seed: int
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.num_examples < 1:
            raise ValueError("the training split is empty")
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.num_examples))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            if self.position >= self.num_examples:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            out.append(self._order[self.position])
            self.position += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)


@dataclass
class Scored:
    """Rewards of one step's N completions, with the text the reward saw (prefill re-attached)."""

    texts: list[str]
    totals: list[float]
    components: dict[str, list[float]]


def score_completions(
    task: TaskConfig, prompts: Sequence[Prompt], completions: Sequence[Completion]
) -> Scored:
    """Score every completion against its prompt's example (`score` never raises; failures count in 'error')."""
    texts, totals = [], []
    components: dict[str, list[float]] = {}
    for completion in completions:
        prompt = prompts[completion.prompt_index]
        text = prompt.prefill + completion.text
        result = score(
            task.name,
            text,
            prompt.example,
            correct_weight=task.correct_weight,
            format_weight=task.format_weight,
            format_kind=task.format_kind,
        )
        texts.append(text)
        totals.append(result.total)
        for name, value in result.components.items():
            components.setdefault(name, []).append(value)
    return Scored(texts, totals, components)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def rollout_metrics(completions: Sequence[Completion], scored: Scored, group_size: int) -> dict[str, float]:
    """reward/* and rollout/* statistics of one step (length distributions: r1zero.aha.aha_step_metrics).

    rollout/zero_std_group_frac: groups whose TASK rewards are all equal (what the policy solved, before any
    overlong penalty; the loop logs algo/zero_std_group_frac on the final rewards the advantages use).

    Example: rewards [1, 0, 1, 1] with G = 2 -> reward/mean 0.75, rollout/zero_std_group_frac 0.5.
    """
    lengths = [len(c.token_ids) for c in completions]
    correct = scored.components.get("correct", [])
    groups = [scored.totals[i : i + group_size] for i in range(0, len(scored.totals), group_size)]
    metrics = {
        "reward/mean": _mean(scored.totals),
        "reward/std": statistics.pstdev(scored.totals) if len(scored.totals) > 1 else 0.0,
        # mean / percentiles / max / truncated fraction of lengths: r1zero.aha.length_stats
        "rollout/length/min": float(min(lengths, default=0)),
        "rollout/zero_std_group_frac": _mean([1.0 if max(g) == min(g) else 0.0 for g in groups]),
        "rollout/num_completions": float(len(completions)),
        "rollout/policy_version_lag": float(
            max(completions[0].policy_version - c.policy_version for c in completions) if completions else 0
        ),
    }
    for name, values in scored.components.items():
        metrics[f"reward/{name}_mean"] = _mean(values)
    if correct:
        metrics["reward/accuracy"] = _mean([1.0 if v >= 1.0 else 0.0 for v in correct])
    return metrics


def sample_rows(
    prompts: Sequence[Prompt], completions: Sequence[Completion], scored: Scored, count: int
) -> list[dict[str, Any]]:
    """A few (prompt, completion, reward) rows for the sample table, spread over the step's groups."""
    if count <= 0 or not completions:
        return []
    stride = max(1, len(completions) // count)
    rows = []
    for i in range(0, len(completions), stride)[:count]:
        c = completions[i]
        rows.append(
            {
                "prompt": prompts[c.prompt_index].text,
                "completion": scored.texts[i],
                "answer": prompts[c.prompt_index].example.answer,
                "reward": scored.totals[i],
                "correct": scored.components.get("correct", [0.0] * len(completions))[i],
                "length": len(c.token_ids),
                "finish_reason": c.finish_reason,
            }
        )
    return rows


class PhaseTimer:
    """Wall time per named phase: `with timer("rollout"): ...` then `timer.metrics()` -> {"perf/rollout_s": ...}."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        out = {f"perf/{name}_s": value for name, value in self.seconds.items()}
        out["perf/step_s"] = sum(self.seconds.values())
        return out
