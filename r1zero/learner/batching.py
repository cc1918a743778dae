"""Packed micro-batches: the G responses to one prompt share a single copy of it.

A group (one prompt, its responses r_1..r_G) is laid out as `prompt, r_1[:-1], ..., r_G[:-1]` (a response's last
token predicts nothing), and the groups of a micro-batch follow each other in one unpadded row, or, for short
sequences, each in a right-padded row of its own (whichever attention attends fewer pairs:
r1zero.learner.attention.use_group_rows). Prompt tokens get positions 0..P-1, each response's tokens P..P+R-2
again; each response attends to its prompt and its own earlier tokens only (r1zero.learner.attention, from the
batch's GroupedLayout: no mask over the whole micro-batch), and the hidden state at the prompt's last position
predicts every response's first token. Mathematically this is the same forward and backward as G separate
(prompt + response) sequences, with the prompt computed once instead of G times (the prompt is often longer than
the responses: 72 vs 20 tokens in the CPU default run).

Per-step tensors use the response layout [N, T]: row i holds completion i's response tokens left-aligned, T the
longest response, response_mask marking real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from r1zero.learner.attention import GroupedLayout, grouped_layout, use_group_rows

TokenSequence = tuple[list[int], list[int]]  # (prompt_ids, response_ids)


@dataclass
class PackedBatch:
    """One micro-batch, packed into R rows of S tokens (R = 1: one unpadded row; or one padded row per group).

    rows:           indices of its sequences in the step's list (length n).
    input_ids:      [R, S] the packed tokens (rows shorter than S end in padding).
    position_ids:   [R, S] each token's position within its own (prompt + response) sequence.
    layout:         how r1zero.learner.attention attends the rows: response rows (R = 1, no padding) or group
                    rows (one padded row per group, a small per-group mask).
    target_pos:     [M] flat positions (row * S + column) whose hidden state predicts a response token
                    (M = response tokens).
    labels:         [M] those response tokens.
    target_row:     [M] local row (0..n-1) of each target; target_col: [M] its index within its response.
    response_len:   [n] response lengths.
    num_tokens:     real (not padding) tokens in input_ids.
    row_index:      [n] rows as a tensor.
    """

    rows: list[int]
    input_ids: Tensor
    position_ids: Tensor
    layout: GroupedLayout
    target_pos: Tensor
    labels: Tensor
    target_row: Tensor
    target_col: Tensor
    response_len: Tensor
    num_tokens: int = -1
    row_index: Tensor | None = None  # [n] `rows` as a tensor, moved with the batch

    def __post_init__(self) -> None:
        if self.num_tokens < 0:
            self.num_tokens = int(self.input_ids.numel())
        if self.row_index is None:
            self.row_index = torch.tensor(self.rows, dtype=torch.long)

    @property
    def num_padding(self) -> int:
        """Padding tokens: computed like real ones, then thrown away."""
        return int(self.input_ids.numel()) - self.num_tokens

    def to(self, device: torch.device | str) -> PackedBatch:
        fields: dict[str, Any] = {
            k: (v.to(device) if isinstance(v, (Tensor, GroupedLayout)) else v)
            for k, v in self.__dict__.items()
        }
        return PackedBatch(**fields)

    def unpack(self, values: Tensor, width: int) -> Tensor:
        """Scatter per-target values [M] into the response layout [n, width] (zeros on padding)."""
        out = values.new_zeros((len(self.rows), width))  # [n, width]
        return out.index_put((self.target_row, self.target_col), values)  # [n, width]


def _groups(sequences: Sequence[TokenSequence], rows: Sequence[int], share_prompts: bool) -> list[list[int]]:
    """Local indices (into `rows`) of each prompt group, in first-seen order; unshared: one group per row."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for local, row in enumerate(rows):
        prompt_key = tuple(sequences[row][0])
        if not prompt_key:
            raise ValueError(
                f"sequence {row} has an empty prompt; a response needs at least one prompt token"
            )
        key = prompt_key if share_prompts else (*prompt_key, -1 - local)  # unshared: every row its own group
        groups.setdefault(key, []).append(local)
    return list(groups.values())


def pack(
    sequences: Sequence[TokenSequence],
    rows: Sequence[int],
    *,
    share_prompts: bool = True,
) -> PackedBatch:
    """Pack `sequences[r] for r in rows`; rows with identical prompts share one prompt copy.

    The groups follow each other in one unpadded row, attended as response rows, or, when that attends fewer
    pairs (short sequences: r1zero.learner.attention.use_group_rows), one right-padded row per group attended
    through a small per-group mask (batch.layout either way).
    Example: rows [0, 1], sequences ([5, 6], [7, 8]) and ([5, 6], [9]), shared ->
             input_ids [[5, 6, 7]] (prompt once, then 7; the last tokens 8 and 9 are never inputs),
             position_ids [[0, 1, 2]], target_pos [1, 2, 1], labels [7, 8, 9].
    """
    members = _groups(sequences, rows, share_prompts)
    prompt_lengths = [len(sequences[rows[m[0]]][0]) for m in members]
    inputs = [[max(0, len(sequences[rows[local]][1]) - 1) for local in m] for m in members]
    group_rows = use_group_rows(prompt_lengths, inputs)
    width = max(p + sum(i) for p, i in zip(prompt_lengths, inputs)) if group_rows else 0
    prompt_spans: list[tuple[int, int]] = []  # (start, length) of each group's prompt in the row
    response_spans: list[tuple[int, int, int]] = []  # (start, input tokens, group) of each response
    ids: list[int] = []
    positions: list[int] = []
    owner: list[int] = []  # -1 for prompt tokens, -2 for padding, else the local row of the response token
    target_pos: list[int] = []
    labels: list[int] = []
    target_row: list[int] = []
    target_col: list[int] = []
    lengths = [0] * len(rows)
    for group_index, locals_ in enumerate(members):
        prompt = sequences[rows[locals_[0]]][0]
        prompt_spans.append((len(ids), len(prompt)))
        ids.extend(prompt)
        positions.extend(range(len(prompt)))
        owner.extend([-1] * len(prompt))
        previous = len(ids) - 1  # the prompt's last token predicts each response's first token
        for local in locals_:
            response = sequences[rows[local]][1]
            lengths[local] = len(response)
            if len(response) > 1:
                response_spans.append((len(ids), len(response) - 1, group_index))
            predictor = previous
            for j, token in enumerate(response):
                target_pos.append(predictor)
                labels.append(token)
                target_row.append(local)
                target_col.append(j)
                if j < len(response) - 1:  # the response token becomes the input that predicts the next
                    ids.append(token)
                    positions.append(len(prompt) + j)
                    owner.append(local)
                    predictor = len(ids) - 1
        if group_rows:  # pad the group's row; padding is a sequence of its own to the positions
            pad = -len(ids) % width
            ids.extend([0] * pad)
            positions.extend(range(pad))
            owner.extend([-2] * pad)
    long = torch.long
    row_width = width or len(ids)
    if group_rows:
        layout = GroupedLayout(owner=torch.tensor(owner, dtype=long).view(-1, width))  # [Gr, S]
    else:
        layout = grouped_layout(prompt_spans, response_spans)
    return PackedBatch(
        rows=list(rows),
        input_ids=torch.tensor(ids, dtype=long).view(-1, row_width),  # [R, S]
        position_ids=torch.tensor(positions, dtype=long).view(-1, row_width),  # [R, S]
        layout=layout,
        target_pos=torch.tensor(target_pos, dtype=long),  # [M]
        labels=torch.tensor(labels, dtype=long),  # [M]
        target_row=torch.tensor(target_row, dtype=long),  # [M]
        target_col=torch.tensor(target_col, dtype=long),  # [M]
        response_len=torch.tensor(lengths, dtype=long),  # [n]
        num_tokens=len(ids) - owner.count(-2),
    )


def packed_lengths(
    sequences: Sequence[TokenSequence], rows: Sequence[int], share_prompts: bool = True
) -> list[int]:
    """Tokens each of `rows` adds to a packed row: its response's input tokens, plus its prompt unless it shares
    the previous row's (the prompt is packed once per group; a group split over two micro-batches is counted
    once, so the second part is under-counted by its prompt).
    Example: ([5, 6], [7, 8]), ([5, 6], [9]), ([1], [2, 3]) -> [3, 0, 2]."""
    out = []
    for i, row in enumerate(rows):
        prompt, response = sequences[row]
        shared = share_prompts and i > 0 and sequences[rows[i - 1]][0] == prompt
        out.append(max(0, len(response) - 1) + (0 if shared else len(prompt)))
    return out


def plan_micro_batches(
    lengths: Sequence[int], max_sequences: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Split rows 0..N-1 into micro-batches of at most `max_sequences` consecutive rows (and at most
    `max_tokens` tokens, counted as sum of `lengths`). Consecutive, so that a prompt's group stays together and
    its prompt is packed once; every row appears exactly once.
    Example: lengths [3, 9, 5, 1], max_sequences 2 -> [[0, 1], [2, 3]]; max_tokens 10 -> [[0], [1], [2, 3]].
    """
    if max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1; got {max_sequences}")
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for row, length in enumerate(lengths):
        over_tokens = max_tokens is not None and current and tokens + length > max_tokens
        if len(current) >= max_sequences or over_tokens:
            batches.append(current)
            current, tokens = [], 0
        current.append(row)
        tokens += length
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
