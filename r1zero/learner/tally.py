"""What one learner step carries between its micro-batches: the per-row tensors (moved to the device once per
step) and the running sums of its metrics (kept on the device until the step ends: no host sync between
micro-batches)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from r1zero.algo import MicroBatchLoss
from r1zero.learner.batching import PackedBatch, response_layout


@dataclass
class StepTensors:
    """The step's inputs in the response layout [N, T], on the learner's device.

    advantages: [N]; response_mask: [N, T] the loss tokens; real_mask: [N, T] every response token;
    old / rollout / ref: [N, T] old-policy, engine-sampling and reference logprobs, or None when unused;
    loss_tokens: [N] loss tokens per row, on the host (token counts need no device sync);
    normalizer: [] the step's global loss normaliser; world: ranks the engine averages gradients over.
    """

    advantages: Tensor
    response_mask: Tensor
    real_mask: Tensor
    loss_tokens: list[int]
    normalizer: Tensor
    old: Tensor | None
    rollout: Tensor | None
    ref: Tensor | None
    world: int


@dataclass
class StepTally:
    """Running sums of one step: losses and token-weighted metrics (device scalars), token counts (host), and
    the first pass's gap to the engine's logprobs (row_gap [N]: each row's max |gap|; gap_sum: the sum)."""

    device: torch.device
    rows: int
    sums: dict[str, Tensor | float] = field(default_factory=dict)
    tokens: int = 0
    packed_tokens: int = 0
    pad_tokens: int = 0
    gap_tokens: float = 0.0
    last_loss: Tensor = field(default_factory=lambda: torch.zeros(()))
    row_gap: Tensor = field(init=False)
    gap_sum: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.row_gap = torch.zeros(self.rows, device=self.device)  # [N]
        self.gap_sum = torch.zeros((), device=self.device)

    def add(self, out: MicroBatchLoss, entropy_sum: Tensor, weight: int, batch: PackedBatch | None) -> None:
        """One micro-batch's loss parts, its entropy sum over loss tokens and its metrics (token means, weighted
        by its `weight` loss tokens). batch: its packing counts, or None for a filler pass."""
        self.last_loss = out.total
        self.tokens += weight
        if batch is not None:
            self.packed_tokens += batch.num_tokens
            self.pad_tokens += batch.num_padding
        parts = {"policy": out.policy, "kl": out.kl, "total": out.total.detach(), "entropy": entropy_sum}
        parts |= {name: value * weight for name, value in out.metrics.items()}
        for name, value in parts.items():
            self.sums[name] = self.sums.get(name, 0.0) + value


def checked_rollout_logprobs(
    rollout_logprobs: Sequence[Sequence[float]] | None,
    resp_lens: list[int],
    tis_cap: float | None,
    old_logprobs_source: str,
) -> Tensor | None:
    """The engine's sampling logprobs as [N, T] (zero-padded), or None when not given / incomplete. An option that
    needs them (algo.tis_cap set, algo.old_logprobs_source=rollout) fails here with a message naming it.
    Example: ([[-1.0], [-0.5, -2.0]], [1, 2], None, "policy") -> [[-1.0, 0.0], [-0.5, -2.0]];
    (None, [1], 2.0, "policy") -> ValueError naming algo.tis_cap=2.0."""
    complete = rollout_logprobs is not None and [len(x) for x in rollout_logprobs] == resp_lens
    needs = [
        name
        for name, on in (
            (f"algo.tis_cap={tis_cap}", tis_cap is not None),
            ("algo.old_logprobs_source=rollout", old_logprobs_source == "rollout"),
        )
        if on
    ]
    if needs and not complete:
        if rollout_logprobs is None:
            detail = "none were given"
        else:
            row = next(i for i, (x, n) in enumerate(zip(rollout_logprobs, resp_lens)) if len(x) != n)
            detail = f"completion {row} has {len(rollout_logprobs[row])} for its {resp_lens[row]} tokens"
        raise ValueError(
            f"{' and '.join(needs)} needs the rollout engine's per-token sampling logprobs, but {detail}. "
            "Use an engine that reports them (rollout.engine=vllm or hf both do), or turn the option off."
        )
    return response_layout(rollout_logprobs)[0] if complete and rollout_logprobs is not None else None
