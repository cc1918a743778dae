"""Padding-free micro-batches: the sequences of a micro-batch are packed into one row.

A sequence is (prompt_ids [P], response_ids [R]). Packed, it contributes P + R - 1 input tokens (its last token
predicts nothing) with position ids 0..P+R-2, so attention never crosses sequences (transformers builds a
block-diagonal causal mask from position ids that restart at 0 when no attention mask is given). The hidden
state at position P - 1 + j predicts response token j.

Per-step tensors use the response layout [N, T]: row i holds completion i's response tokens left-aligned, T the
longest response, response_mask marking real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

TokenSequence = tuple[list[int], list[int]]  # (prompt_ids, response_ids)


@dataclass
class PackedBatch:
    """One micro-batch, packed.

    rows:         indices of its sequences in the step's list (length n).
    input_ids:    [1, S] all sequences' tokens, concatenated (each without its last token).
    position_ids: [1, S] restarting at 0 for each sequence.
    target_pos:   [M] packed positions whose hidden state predicts a response token (M = response tokens).
    labels:       [M] those response tokens.
    target_row:   [M] local row (0..n-1) of each target; target_col: [M] its index within its response.
    response_len: [n] response lengths; max_len: T of this micro-batch's response layout.
    """

    rows: list[int]
    input_ids: Tensor
    position_ids: Tensor
    target_pos: Tensor
    labels: Tensor
    target_row: Tensor
    target_col: Tensor
    response_len: Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device: torch.device | str) -> PackedBatch:
        fields = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return PackedBatch(**fields)

    def unpack(self, values: Tensor, width: int) -> Tensor:
        """Scatter per-target values [M] into the response layout [n, width] (zeros on padding)."""
        out = values.new_zeros((len(self.rows), width))  # [n, width]
        return out.index_put((self.target_row, self.target_col), values)  # [n, width]


def pack(sequences: Sequence[TokenSequence], rows: Sequence[int]) -> PackedBatch:
    """Pack `sequences[r] for r in rows` into one row.

    Example: rows [0], sequence ([5, 6], [7, 8]) -> input_ids [[5, 6, 7]], position_ids [[0, 1, 2]],
             target_pos [1, 2] (hidden states after 6 and after 7), labels [7, 8].
    """
    ids: list[int] = []
    positions: list[int] = []
    target_pos: list[int] = []
    labels: list[int] = []
    target_row: list[int] = []
    target_col: list[int] = []
    lengths: list[int] = []
    for local, row in enumerate(rows):
        prompt, response = sequences[row]
        if not prompt:
            raise ValueError(
                f"sequence {row} has an empty prompt; a response needs at least one prompt token"
            )
        full = list(prompt) + list(response)
        start = len(ids)
        ids.extend(full[:-1])
        positions.extend(range(len(full) - 1))
        for j, token in enumerate(response):
            target_pos.append(start + len(prompt) - 1 + j)
            labels.append(token)
            target_row.append(local)
            target_col.append(j)
        lengths.append(len(response))
    long = torch.long
    return PackedBatch(
        rows=list(rows),
        input_ids=torch.tensor([ids], dtype=long),  # [1, S]
        position_ids=torch.tensor([positions], dtype=long),  # [1, S]
        target_pos=torch.tensor(target_pos, dtype=long),  # [M]
        labels=torch.tensor(labels, dtype=long),  # [M]
        target_row=torch.tensor(target_row, dtype=long),  # [M]
        target_col=torch.tensor(target_col, dtype=long),  # [M]
        response_len=torch.tensor(lengths, dtype=long),  # [n]
    )


def plan_micro_batches(
    lengths: Sequence[int], max_sequences: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Split rows 0..N-1 into micro-batches of at most `max_sequences` rows (and `max_tokens` packed tokens).

    Rows are sorted by length (longest first) so micro-batches have similar cost; every row appears exactly once.
    Example: lengths [3, 9, 5, 1], max_sequences 2 -> [[1, 2], [0, 3]].
    """
    if max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1; got {max_sequences}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for row in order:
        over_tokens = max_tokens is not None and current and tokens + lengths[row] > max_tokens
        if len(current) >= max_sequences or over_tokens:
            batches.append(current)
            current, tokens = [], 0
        current.append(row)
        tokens += lengths[row]
    if current:
        batches.append(current)
    return batches


def response_layout(
    values: Sequence[Sequence[float]], dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Per-completion lists -> ([N, T] values, [N, T] mask), left-aligned, zero-padded.

    Example: [[1.0, 2.0], [3.0]] -> values [[1, 2], [3, 0]], mask [[1, 1], [1, 0]].
    """
    width = max((len(v) for v in values), default=0)
    out = torch.zeros((len(values), width), dtype=dtype)  # [N, T]
    mask = torch.zeros((len(values), width), dtype=torch.bool)  # [N, T]
    for i, row in enumerate(values):
        if len(row):
            out[i, : len(row)] = torch.tensor(list(row), dtype=dtype)
            mask[i, : len(row)] = True
    return out, mask
