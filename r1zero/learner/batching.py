"""Packed micro-batches: the G responses to one prompt share a single copy of it, and the groups of a micro-batch
are packed into one row, or into a few rows when that costs less (attention over one long row is mostly masked).

A group (one prompt, its responses r_1..r_G) is laid out as `prompt, r_1[:-1], ..., r_G[:-1]` (a response's last
token predicts nothing). Prompt tokens get positions 0..P-1, each response's tokens P..P+R-2 again, and an
attention mask lets each response see the prompt and its own earlier tokens only; the hidden state at the
prompt's last position predicts every response's first token. Mathematically this is the same forward and
backward as G separate (prompt + response) sequences, with the prompt computed once instead of G times (the
prompt is often longer than the responses: 72 vs 20 tokens in the CPU default run).
When no prompt is shared (one response per prompt), no mask is built: position ids that restart at 0 give the
block-diagonal causal attention (transformers derives it when no attention mask is passed).
Rows: attention over a row of S tokens costs S^2 pairs even though a group only ever looks inside itself, so one
row for a micro-batch of 4 groups of 206 tokens computes 4x the attention it needs (small preset, CPU: attention
was 25% of the learner step). `assign_rows` splits the groups into R rows of S tokens, trading the padding of
uneven rows against the attention saved, by a cost model of the two (`attention_pair_cost`).

Per-step tensors use the response layout [N, T]: row i holds completion i's response tokens left-aligned, T the
longest response, response_mask marking real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

TokenSequence = tuple[list[int], list[int]]  # (prompt_ids, response_ids)


@dataclass
class PackedBatch:
    """One micro-batch, packed into R rows of S tokens (R = 1 unless `pack` was given an attention cost).

    rows:           indices of its sequences in the step's list (length n).
    input_ids:      [R, S] the packed tokens (rows shorter than S end in padding).
    position_ids:   [R, S] each token's position within its own (prompt + response) sequence.
    attention_mask: [R, 1, S, S] bool (True = may attend) when prompts are shared; None otherwise.
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
    attention_mask: Tensor | None
    target_pos: Tensor
    labels: Tensor
    target_row: Tensor
    target_col: Tensor
    response_len: Tensor
    num_tokens: int = -1
    row_index: Tensor | None = (
        None  # [n] `rows` as a tensor (moved with the batch, for slicing on the device)
    )

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
            k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()
        }
        return PackedBatch(**fields)

    def unpack(self, values: Tensor, width: int) -> Tensor:
        """Scatter per-target values [M] into the response layout [n, width] (zeros on padding)."""
        out = values.new_zeros((len(self.rows), width))  # [n, width]
        return out.index_put((self.target_row, self.target_col), values)  # [n, width]


def attention_pair_cost(config: Any, kernel_factor: float = 2.0) -> float:
    """Cost of one (query, key) attention pair in units of one token's matmul cost, for `assign_rows`.

    Attention does 4 * heads * head_dim FLOPs per pair and layer; the matmuls 2 * (weights of a layer) per token.
    `kernel_factor`: how much slower per FLOP attention runs than a plain matmul (~2 measured with sdpa and a
    4D mask on 2 CPU cores, small preset: 335 ms for 5.4 GFLOP of attention vs 638 ms for 128 GFLOP of matmuls).
    Example: Qwen2 hidden 512, 16 heads x 32, 4 KV heads, MLP 1408 -> 4 * 512 / (2 * 2.82M) * 2 = 3.6e-4.
    """
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    weights = (
        2 * hidden * heads * head_dim
        + 2 * hidden * kv_heads * head_dim
        + 3 * hidden * config.intermediate_size
    )
    return kernel_factor * 4 * heads * head_dim / (2 * weights)


def assign_rows(lengths: Sequence[int], pair_cost: float) -> list[list[int]]:
    """Split groups (of `lengths` tokens) into rows, minimising R * S + pair_cost * R * S^2 (matmuls over the
    padded R x S tokens plus masked attention over R rows of S x S pairs; S = the fullest row).

    One row is the least padding but the most attention (every pair of the micro-batch, most of them masked);
    more rows cut attention and add padding. For each R the groups are balanced longest first (each to the
    emptiest row). Rows keep their groups in order. pair_cost 0 -> one row.
    Example: lengths [200, 200, 200, 200], pair_cost 1e-3 -> 4 rows (4 * 200 + 1e-3 * 4 * 200^2 = 960 vs one
    row 800 + 1e-3 * 800^2 = 1440); lengths [100, 100, 50, 50], pair_cost 1e-2 -> [[0], [1], [2, 3]] (600 vs
    1200 for one row, 750 for two, 800 for four).
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda g: -lengths[g])
    best: tuple[float, list[list[int]]] | None = None
    for count in range(1, len(lengths) + 1):
        loads = [0] * count
        rows: list[list[int]] = [[] for _ in range(count)]
        for g in order:
            emptiest = min(range(count), key=loads.__getitem__)
            rows[emptiest].append(g)
            loads[emptiest] += lengths[g]
        width = max(loads)
        cost = count * width + pair_cost * count * width * width
        if best is None or cost < best[0]:
            best = (cost, rows)
    assert best is not None
    return sorted(sorted(row) for row in best[1] if row)


def pack(
    sequences: Sequence[TokenSequence],
    rows: Sequence[int],
    *,
    share_prompts: bool = True,
    pair_cost: float = 0.0,
) -> PackedBatch:
    """Pack `sequences[r] for r in rows`; rows with identical prompts share one prompt copy.

    The groups are laid out in one row, or in several padded rows when `pair_cost` > 0 (see `assign_rows`).
    Example: rows [0, 1], sequences ([5, 6], [7, 8]) and ([5, 6], [9]), shared ->
             input_ids [[5, 6, 7]] (prompt once, then 7; the last tokens 8 and 9 are never inputs),
             position_ids [[0, 1, 2]], target_pos [1, 2, 1], labels [7, 8, 9].
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for local, row in enumerate(rows):
        prompt_key = tuple(sequences[row][0])
        if not prompt_key:
            raise ValueError(
                f"sequence {row} has an empty prompt; a response needs at least one prompt token"
            )
        key = prompt_key if share_prompts else (*prompt_key, -1 - local)  # unshared: every row its own group
        groups.setdefault(key, []).append(local)
    members = list(groups.values())
    sizes = [
        len(sequences[rows[m[0]]][0]) + sum(max(0, len(sequences[rows[i]][1]) - 1) for i in m)
        for m in members
    ]
    layout = assign_rows(sizes, pair_cost)
    width = max(sum(sizes[g] for g in row) for row in layout)
    ids: list[int] = []
    positions: list[int] = []
    segment: list[int] = []  # group index of each packed token; -1 for padding
    owner: list[int] = []  # -1 for prompt tokens, -2 for padding, else the local row of the response token
    target_pos: list[int] = []
    labels: list[int] = []
    target_row: list[int] = []
    target_col: list[int] = []
    lengths = [0] * len(rows)
    for row_groups in layout:
        for group_index in row_groups:
            locals_ = members[group_index]
            prompt = sequences[rows[locals_[0]]][0]
            ids.extend(prompt)
            positions.extend(range(len(prompt)))
            segment.extend([group_index] * len(prompt))
            owner.extend([-1] * len(prompt))
            previous = len(ids) - 1  # the prompt's last token predicts each response's first token
            for local in locals_:
                response = sequences[rows[local]][1]
                lengths[local] = len(response)
                predictor = previous
                for j, token in enumerate(response):
                    target_pos.append(predictor)
                    labels.append(token)
                    target_row.append(local)
                    target_col.append(j)
                    if j < len(response) - 1:  # the response token becomes the input that predicts the next
                        ids.append(token)
                        positions.append(len(prompt) + j)
                        segment.append(group_index)
                        owner.append(local)
                        predictor = len(ids) - 1
        pad = -len(ids) % width
        ids.extend([0] * pad)
        positions.extend(range(pad))  # a separate sequence to transformers (positions restart)
        segment.extend([-1] * pad)
        owner.extend([-2] * pad)
    real = len(ids) - segment.count(-1)
    long = torch.long
    mask = None
    if any(len(g) > 1 for g in members):
        seg = torch.tensor(segment).view(-1, width)  # [R, S]
        own = torch.tensor(owner).view(-1, width)  # [R, S]
        index = torch.arange(width)  # [S]
        mask = (
            (index[None, None, :] <= index[None, :, None])  # causal
            & (seg[:, None, :] == seg[:, :, None])  # same prompt group (padding: only padding)
            & ((own[:, None, :] == -1) | (own[:, None, :] == own[:, :, None]))  # the prompt, or same response
        )[:, None]  # [R, 1, S, S]
    return PackedBatch(
        rows=list(rows),
        input_ids=torch.tensor(ids, dtype=long).view(-1, width),  # [R, S]
        position_ids=torch.tensor(positions, dtype=long).view(-1, width),  # [R, S]
        attention_mask=mask,
        target_pos=torch.tensor(target_pos, dtype=long),  # [M]
        labels=torch.tensor(labels, dtype=long),  # [M]
        target_row=torch.tensor(target_row, dtype=long),  # [M]
        target_col=torch.tensor(target_col, dtype=long),  # [M]
        response_len=torch.tensor(lengths, dtype=long),  # [n]
        num_tokens=real,
    )


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
