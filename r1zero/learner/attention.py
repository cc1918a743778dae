"""Attention of a packed micro-batch without a mask over all of it: each response with its prompt, causal.

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
Short sequences (the CPU default's 8-32 tokens after 72) are cheaper as group rows: `pack` lays each group out in
a right-padded row of its own, attended through a small [groups, 1, S, S] mask with no gathers; `use_group_rows`
picks, per micro-batch, whichever attends fewer pairs.

`grouped_attention` is registered with transformers as the attention implementation "r1zero_grouped"; a model
forward must pass `layout=` (a GroupedLayout): one without it is refused, never run under another mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ATTENTION_NAME = "r1zero_grouped"


@dataclass
class GroupedLayout:
    """How a packed micro-batch is attended (built by r1zero.learner.batching.pack).

    Response rows (index and source given; the batch is one unpadded row of T tokens):
      index:  [Nr, W] row positions of each attention row: its group's prompt, then one response's input tokens,
              right-padded (padding: 0), attended causally; a group whose responses are all one token long gets
              one row of its prompt alone.
      source: [T] for each row token, the flat index into the [Nr * W] attention outputs that it takes (a prompt
              token from its group's first row).
    Group rows (index and source None; the batch is [Gr, S], one right-padded row per group):
      owner:  [Gr, S] -1 for a prompt token, -2 for padding, else the response it belongs to; attended through
              `mask()`.
    """

    index: Tensor | None = None
    source: Tensor | None = None
    owner: Tensor | None = None
    _mask: Tensor | None = field(default=None, repr=False)

    def mask(self) -> Tensor | None:
        """[Gr, 1, S, S] bool (True = attend) for group rows, built on the layout's device on first use and kept
        for the micro-batch's other layers: causal, and a key is a prompt token or of the query's own response
        (a padded query sees the prompt only, so no row is empty). None for response rows."""
        if self.owner is None:
            return None
        if self._mask is None:
            own = self.owner  # [Gr, S]
            width = own.shape[1]
            causal = torch.ones(width, width, dtype=torch.bool, device=own.device).tril()  # [S, S]
            key, query = own[:, None, :], own[:, :, None]  # [Gr, 1, S], [Gr, S, 1]
            self._mask = (causal & ((key == -1) | ((key == query) & (key != -2))))[:, None]  # [Gr, 1, S, S]
        return self._mask

    def to(self, device: torch.device | str) -> GroupedLayout:
        def moved(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.to(device)

        return GroupedLayout(moved(self.index), moved(self.source), moved(self.owner))


# Group rows go through a masked kernel that cannot skip the blocks above the diagonal and pad each group to the
# longest, response rows through a causal one that gathers each prompt once per response. Group rows are used
# while their attention pairs are at most this many times the response rows' (CPU default micro-batch, 4 groups
# of 4 x 8-32 tokens after 72, one layer fwd+bwd: group rows 117k pairs, 6.2 ms; response rows 85k pairs and
# their gathers, 12.4 ms; at 1,024-token responses response rows need 4x fewer pairs and win).
GROUP_ROWS_PAIR_RATIO = 2.0


def use_group_rows(prompt_lengths: Sequence[int], inputs: Sequence[Sequence[int]]) -> bool:
    """Attend a micro-batch as group rows (else response rows)? prompt_lengths [groups]; inputs: each group's
    responses' input-token counts. Example: one prompt of 4 with inputs [3, 3, 3, 3]: group rows 16^2 = 256
    pairs, response rows 4 x 7^2 / 2 = 98 -> 256 > 2 x 98: response rows."""
    spans = [p + sum(i) for p, i in zip(prompt_lengths, inputs)]
    rows = [(p, n) for p, i in zip(prompt_lengths, inputs) for n in ([n for n in i if n] or [0])]
    width = max(p + n for p, n in rows)
    return len(spans) * max(spans) ** 2 <= GROUP_ROWS_PAIR_RATIO * len(rows) * width**2 / 2


def grouped_layout(
    prompts: Sequence[tuple[int, int]], responses: Sequence[tuple[int, int, int]]
) -> GroupedLayout:
    """Response rows of one unpadded row from its spans: prompts [(start, length)] per group, responses
    [(start, length, group)] of input tokens (length >= 1). Every row position must be in exactly one span.

    Example: prompts [(0, 2)], responses [(2, 1, 0), (3, 2, 0)] (a 5-token row: prompt p0 p1, r1, r2 r2') ->
    index [[0, 1, 2, 0], [0, 1, 3, 4]], source [0, 1, 2, 6, 7] (p0, p1 from row 0; r1 at row 0 column 2;
    r2, r2' at row 1 columns 2, 3).
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
    if bool((source < 0).any()):
        raise ValueError("grouped_layout: the spans must cover every row position exactly once")
    return GroupedLayout(index, source)


def _rows(tokens: Tensor, index: Tensor) -> Tensor:
    """tokens [T, h, D] gathered at index [rows, width] -> [rows, h, width, D]. index_select, whose backward is
    one index_add (a 2-D `tokens[index]` backs through index_put with accumulation, slower on CPU)."""
    rows, width = index.shape
    return tokens.index_select(0, index.flatten()).view(rows, width, *tokens.shape[1:]).transpose(1, 2)


def masked_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scaling: float | None,
    *,
    copy_kv: bool | None = None,
) -> Tensor:
    """sdpa of query [R, H, S, D] against key / value [R, h, S, D] under a bool mask [R, 1, S, S] -> [R, S, H, D].
    copy_kv (default: on CUDA): repeat the K/V heads up to H instead of sdpa's enable_gqa, which CUDA's
    mem-efficient kernel (the masked one) lacks: without the copies a masked GQA call falls back to the math
    kernel and its [R, H, S, S] scores. On CPU the flash kernel takes masks and GQA together."""
    grouped_query = query.shape[1] != key.shape[1]
    if copy_kv is None:
        copy_kv = query.device.type == "cuda"
    if grouped_query and copy_kv:
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
        grouped_query = False
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling, enable_gqa=grouped_query
    )
    return out.transpose(1, 2)  # [R, S, H, D]


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
    """transformers' attention interface: query [R, H, S, D], key / value [R, h, S, D] -> ([R, S, H, D], None);
    R = 1 (one unpadded row, S = T) for response rows, R = Gr for group rows. Only a packed micro-batch's
    forward (r1zero.learner.engine.attach_packed_forward) calls it, with its layout; it never builds or reads an
    [S, S] mask."""
    if layout is None:
        raise ValueError(
            "r1zero's grouped attention runs packed micro-batches only: it needs their GroupedLayout"
        )
    grouped_query = query.shape[1] != key.shape[1]  # K/V heads shared by query heads, without copying them
    if layout.index is None or layout.source is None:  # group rows: the batch is already laid out in them
        return masked_attention(query, key, value, layout.mask(), scaling), None  # [Gr, S, H, D]
    q, k, v = (_rows(x[0].transpose(0, 1), layout.index) for x in (query, key, value))  # [Nr, H or h, W, D]
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=grouped_query)
    return out.transpose(1, 2).flatten(0, 1).index_select(0, layout.source).unsqueeze(0), None  # [1, T, H, D]


def register() -> str:
    """Register `grouped_attention` with transformers (idempotent); returns its implementation name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, grouped_attention)
    return ATTENTION_NAME
