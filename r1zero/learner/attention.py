"""Attention of a packed micro-batch without a [S, S] mask: each response with its prompt, causal, no mask.

A packed micro-batch is one unpadded row of T tokens: per group, its prompt, then each response's input tokens
(r1zero.learner.batching). A dense boolean mask over that row costs T^2 pairs, most of them masked away, and keeps
sdpa off its fast kernels (H200, one micro-batch of 2 groups x 8 at 256-1,024 tokens: 9.0 ms against 0.67 ms for
the padded batch's causal flash attention). Here each layer gathers, for every response, its prompt's and its own
queries, keys and values into one right-padded [Nr, H, P + R, D] batch and runs sdpa with `is_causal` (no mask:
flash kernels, and the kernels skip the blocks above the diagonal); padded queries come after every real one and
are dropped. The prompt tokens' outputs are taken from their group's first row. So attention costs what the
padded batch's does, while the projections and MLPs, most of the compute, run on the T real tokens only, each
prompt once. Exact prompt sharing inside attention (the responses' queries against one copy of the prompt's keys)
was measured slower on CPU: a [R, P + R] mask stops the kernel from skipping blocks (tiny shape, 16 x 1,024-token
responses after a 256-token prompt, one layer fwd+bwd: 0.135 s masked vs 0.099 s causal over P + R).

`grouped_attention` is registered with transformers as the attention implementation "r1zero_grouped"; a model
forward that passes `layout=` (a GroupedLayout) uses it, one that does not falls back to transformers' sdpa.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ATTENTION_NAME = "r1zero_grouped"


@dataclass
class GroupedLayout:
    """Where the T tokens of one packed row go in the causal attention call (build with `grouped_layout`).

    index:  [Nr, W] row positions of each attention row: its group's prompt, then one response's input tokens,
            right-padded (padding: 0). One attention row per response with input tokens; a group whose
            responses are all one token long (no input token) gets one row of its prompt alone.
    source: [T] for each row token, the flat index into the [Nr * W] attention outputs that it takes: a prompt
            token from its group's first attention row, a response token from its own.
    """

    index: Tensor
    source: Tensor

    def to(self, device: torch.device | str) -> GroupedLayout:
        return GroupedLayout(self.index.to(device), self.source.to(device))


def grouped_layout(
    prompts: Sequence[tuple[int, int]], responses: Sequence[tuple[int, int, int]]
) -> GroupedLayout:
    """The layout of a row from its spans: prompts [(start, length)] per group, responses [(start, length, group)]
    of input tokens (length >= 1). Every row position must be in exactly one span.

    Example: prompts [(0, 2)], responses [(2, 1, 0), (3, 2, 0)] (a 5-token row: prompt p0 p1, r1, r2 r2') ->
    index [[0, 1, 2, 0], [0, 1, 3, 4]], source [0, 1, 2, 6, 7] (p0, p1 from row 0; r1 at row 0 column 2;
    r2, r2' at row 1 columns 2, 3 = flat 6, 7).
    """
    total = sum(n for _, n in prompts) + sum(n for _, n, _ in responses)
    per_group: list[list[tuple[int, int]]] = [[] for _ in prompts]
    for start, length, group in responses:
        per_group[group].append((start, length))
    rows = [(g, span) for g, spans in enumerate(per_group) for span in (spans or [(0, 0)])]
    width = max(prompts[g][1] + span[1] for g, span in rows)
    index = torch.zeros(len(rows), width, dtype=torch.long)  # [Nr, W]
    source = torch.full((total,), -1, dtype=torch.long)  # [T]
    first_row: dict[int, int] = {}
    for r, (g, (start, length)) in enumerate(rows):
        p_start, p_len = prompts[g]
        index[r, :p_len] = torch.arange(p_start, p_start + p_len)
        index[r, p_len : p_len + length] = torch.arange(start, start + length)
        if g not in first_row:  # the prompt's outputs are taken from its group's first row
            first_row[g] = r
            source[p_start : p_start + p_len] = torch.arange(r * width, r * width + p_len)
        source[start : start + length] = torch.arange(r * width + p_len, r * width + p_len + length)
    covered = sum(n for _, n in prompts) + sum(n for _, n, _ in responses)
    if bool((source < 0).any()) or covered != total or len(set(source.tolist())) != total:
        raise ValueError("grouped_layout: the spans must cover every row position exactly once")
    return GroupedLayout(index, source)


def _heads_first(tokens: Tensor, index: Tensor, heads: int) -> Tensor:
    """tokens [T, h, D] gathered at index [rows, width] -> [rows, heads, width, D] (K/V heads repeated to
    `heads`, so every sdpa kernel serves grouped-query models)."""
    gathered = tokens[index].transpose(1, 2)  # [rows, h, width, D]
    repeat = heads // gathered.shape[1]
    return gathered.repeat_interleave(repeat, dim=1) if repeat > 1 else gathered


def grouped_attention(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    layout: GroupedLayout | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' attention interface: query [1, H, T, D], key / value [1, h, T, D] -> ([1, T, H, D], None).
    Without a layout: transformers' sdpa attention with `attention_mask`."""
    if layout is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    heads = query.shape[1]
    q, k, v = (_heads_first(x[0].transpose(0, 1), layout.index, heads) for x in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling)  # [Nr, H, W, D]
    return out.transpose(1, 2).flatten(0, 1)[layout.source].unsqueeze(0), None  # [1, T, H, D]


def register() -> str:
    """Register `grouped_attention` with transformers (idempotent); returns its implementation name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, grouped_attention)
    return ATTENTION_NAME
