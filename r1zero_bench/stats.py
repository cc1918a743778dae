"""Pure helpers of the benchmark: medians, ratios, token/FLOP accounting, targets and the results table.

No torch, no timing: everything here takes plain numbers (measured elsewhere) and is unit-tested by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def median(values: Sequence[float]) -> float:
    """Median of the measured repetitions; NaN when there are none. [3, 1, 2] -> 2; [1, 2, 3, 10] -> 2.5."""
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(min, max) of the repetitions, to show how noisy a median is. [] -> (nan, nan)."""
    return (float(min(values)), float(max(values))) if values else (float("nan"), float("nan"))


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is 0 or missing. ratio(6, 2) -> 3.0."""
    if not denominator or denominator != denominator:
        return float("nan")
    return float(numerator) / float(denominator)


def step_intervals(end_times: Sequence[float], warmup: int) -> list[float]:
    """Seconds per step from the wall-clock time at which each step ended, dropping the first `warmup` steps.

    Step k's duration is end[k] - end[k-1], so the first step has none (it needs a start time) and counts as
    warm-up. Example: ends [10, 13, 15, 18], warmup 2 -> steps 3 and 4 -> [2, 3]. warmup < 1 counts as 1.
    """
    first = max(1, warmup)
    return [float(end_times[k] - end_times[k - 1]) for k in range(first, len(end_times))]


# ---------------------------------------------------------------------------------------------- learner tokens


@dataclass(frozen=True)
class TokenCounts:
    """Tokens of one learner step over N (prompt, response) sequences, in three layouts.

    naive:   sum of (P_i + R_i): every sequence fed whole, each with its own copy of the prompt (the reference).
    packed:  what our packed micro-batches feed: each distinct prompt once per micro-batch, each response without
             its last token (it predicts nothing). No padding.
    padded:  a padded batch per micro-batch (n rows x the longest P_i + R_i): what a padded trainer feeds.
    targets: response tokens whose logprob is needed (sum of R_i).
    """

    naive: int
    packed: int
    padded: int
    targets: int

    @property
    def padded_waste(self) -> float:
        """Fraction of a padded layout's tokens that are padding."""
        return 1.0 - ratio(self.naive, self.padded) if self.padded else 0.0

    @property
    def sharing_saving(self) -> float:
        """Fraction of the naive tokens the packed layout does not compute (prompt sharing + no last token)."""
        return 1.0 - ratio(self.packed, self.naive) if self.naive else 0.0


def count_tokens(
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    micro_batch_size: int,
    share_prompts: bool = True,
) -> TokenCounts:
    """Token counts of a step split into micro-batches of `micro_batch_size` consecutive rows (as the learner
    does). Mirrors `r1zero.learner.batching.pack`: a group's prompt once (per micro-batch), then each response
    without its last token.

    Example: prompts [1, 2] shared by responses [3, 4] and [5]; one micro-batch:
             naive (2+2) + (2+1) = 7; packed 2 + 1 + 0 = 3; padded 2 rows x 4 = 8; targets 3.
    """
    naive = packed = padded = targets = 0
    for start in range(0, len(sequences), micro_batch_size):
        rows = sequences[start : start + micro_batch_size]
        seen: set[tuple[int, ...]] = set()
        for i, (prompt, response) in enumerate(rows):
            key = tuple(prompt) if share_prompts else (*prompt, -1 - i)
            if key not in seen:
                seen.add(key)
                packed += len(prompt)
            packed += max(0, len(response) - 1)
            naive += len(prompt) + len(response)
            targets += len(response)
        padded += len(rows) * max((len(p) + len(r) for p, r in rows), default=0)
    return TokenCounts(naive=naive, packed=packed, padded=padded, targets=targets)


# ---------------------------------------------------------------------------------------------- FLOPs


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP estimate needs from a decoder-only config (Llama/Qwen style, SwiGLU MLP)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """From a Hugging Face config.json dict."""
        heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
        return cls(
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            vocab=int(config["vocab_size"]),
        )

    @property
    def body_params(self) -> int:
        """Weights of the matmuls every token goes through (attention projections + MLP), all layers."""
        q_o = 2 * self.hidden * self.heads * self.head_dim
        k_v = 2 * self.hidden * self.kv_heads * self.head_dim
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (q_o + k_v + mlp)


def learner_flops(shape: ModelShape, *, tokens: int, head_rows: int, head_passes: int = 3) -> float:
    """Matmul FLOPs of one forward + backward: 6 x body params per input token (2 forward, 4 backward), plus
    2 x V x H per lm-head row and pass. Attention scores (which grow with context) are left out: at these
    lengths they are a few percent, and how much of a masked S x S product a kernel skips is not ours to count.

    head_passes: 3 for a plain lm_head (forward, two backward matmuls); 4 for our chunked head, which recomputes
    each chunk's logits in backward instead of keeping them.
    Example: body params 10, V x H = 4, 5 tokens, 2 head rows, 3 passes -> 6*10*5 + 2*4*2*3 = 348.
    """
    return 6.0 * shape.body_params * tokens + 2.0 * shape.vocab * shape.hidden * head_rows * head_passes


# ---------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A goal for one summary number: `value >= limit` (at_least) or `value <= limit`."""

    key: str
    limit: float
    at_least: bool
    label: str

    def met(self, value: float) -> bool | None:
        """True / False, or None when the number was not measured (NaN)."""
        if value != value:
            return None
        return value >= self.limit if self.at_least else value <= self.limit


TARGETS = (
    Target("speedup_vs_trl", 2.0, True, "r1zero >= 2x faster per step than TRL"),
    Target("rollout_efficiency", 0.95, True, "rollout efficiency >= 0.95"),
    Target("learner_efficiency", 0.9, True, "learner efficiency >= 0.9"),
    Target("sync_fraction", 0.05, False, "sync <= 5% of a step"),
    Target("logprob_memory_ratio", 0.25, False, "logprob peak memory <= 25% of naive"),
)


def check_targets(
    summary: Mapping[str, float], targets: Sequence[Target] = TARGETS
) -> dict[str, bool | None]:
    """{key: met?} for every target whose key is in `summary` (None: not measured)."""
    return {t.key: t.met(float(summary[t.key])) for t in targets if t.key in summary}


# ---------------------------------------------------------------------------------------------- table


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant figures, NaN/None as '-', anything else as str."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        value = float(value)
        if value != value:
            return "-"
        if value == int(value) and abs(value) >= 1000:
            return f"{int(value)}"
        return f"{value:.{digits}g}"
    return str(value)


def render_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (it also reads fine in a terminal). Cells go through `fmt`.

    Example: render_table(["a", "b"], [[1.0, "x"]]) -> "| a | b |\\n| --- | --- |\\n| 1 | x |".
    """
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
