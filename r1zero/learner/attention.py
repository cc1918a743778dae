"""Attention of a packed micro-batch without a [S, S] mask: each prompt once, its responses against it.

A packed micro-batch is one unpadded row of T tokens: per group, its prompt, then each response's input tokens
(r1zero.learner.batching). A dense boolean mask over that row costs T^2 pairs, most of them masked away, and keeps
sdpa off its fast kernels (H200, one micro-batch of 2 groups x 8 at 256-1,024 tokens: 9.0 ms against 0.67 ms for
the padded batch's causal flash attention). Here each layer's attention is two sdpa calls on gathered tokens:
  prompts:   [Gr, H, Pm, D] each group's prompt, right-padded, causal (`is_causal`: no mask; padded queries are
             dropped and padded keys come after every real query's);
  responses: [Nr, H, Rm, D] each response's queries against [its prompt's K/V, gathered; its own K/V], right-padded:
             a key is seen if it is one of the prompt's real tokens or one of the response's earlier tokens. When
             every prompt of the micro-batch has the same length, that is causal attention aligned to the bottom
             right (torch's `causal_lower_right`: flash kernels, no mask); otherwise a small [Nr, 1, Rm, Pm + Rm]
             mask.
The outputs are put back in the row's order by one gather. The cost is that of the padded batch's attention on the
responses (the prompt's keys are gathered, not recomputed) plus each prompt's own causal attention once, while the
projections and MLPs run on the T real tokens only.

`grouped_attention` is registered with transformers as the attention implementation "r1zero_grouped"; a model
forward that passes `layout=` (a GroupedLayout) uses it, one that does not falls back to transformers' sdpa.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ATTENTION_NAME = "r1zero_grouped"


@dataclass
class GroupedLayout:
    """Where the T tokens of one packed row go in the two attention calls (build with `grouped_layout`).

    prompt_index:      [Gr, Pm] row position of each group's prompt tokens, right-padded (padding: 0).
    prompt_keep:       [Tp] flat indices into [Gr * Pm] of the real prompt tokens, in row order.
    response_index:    [Nr, Rm] row position of each response's input tokens, right-padded (padding: 0).
    response_keep:     [Tr] flat indices into [Nr * Rm] of the real response tokens.
    response_group:    [Nr] the group of each response.
    response_prompt:   [Nr] its group's prompt length.
    inverse:           [T] where each row token sits in cat(prompt outputs[prompt_keep], response outputs[...]).
    uniform_prompts:   every prompt as long as the widest (then the response attention is bottom-right causal).
    Tp + Tr = T; responses of one token have no input token and no entry here (Nr counts the others).
    """

    prompt_index: Tensor
    prompt_keep: Tensor
    response_index: Tensor
    response_keep: Tensor
    response_group: Tensor
    response_prompt: Tensor
    inverse: Tensor
    uniform_prompts: bool
    _mask: Tensor | None = field(default=None, repr=False)

    def response_mask(self) -> Tensor | None:
        """[Nr, 1, Rm, Pm + Rm] bool (True = attend), built on the layout's device on first use and kept for the
        micro-batch's other layers; None when the prompts share one length (no mask needed)."""
        if self.uniform_prompts or not self.response_index.numel():
            return None
        if self._mask is None:
            self._mask = response_attention_mask(
                self.response_prompt, self.prompt_index.shape[1], self.response_index.shape[1]
            )
        return self._mask

    def to(self, device: torch.device | str) -> GroupedLayout:
        """The layout's tensors on `device` (the mask is built there when first needed, never copied)."""
        moved: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name != "_mask":
                moved[item.name] = value.to(device) if isinstance(value, Tensor) else value
        return GroupedLayout(**moved)


def response_attention_mask(prompt_lengths: Tensor, prompt_width: int, response_width: int) -> Tensor:
    """[Nr, 1, Rm, Pm + Rm] bool: response token i sees its prompt's real tokens and its own tokens 0..i.

    prompt_lengths: [Nr]. Example: prompt_lengths [1], widths 2, 2 -> [[1, 0, 1, 0], [1, 0, 1, 1]].
    """
    device = prompt_lengths.device
    prompt = torch.arange(prompt_width, device=device) < prompt_lengths[:, None]  # [Nr, Pm]
    own = torch.ones(response_width, response_width, dtype=torch.bool, device=device).tril()  # [Rm, Rm]
    rows = prompt_lengths.shape[0]
    return torch.cat(
        [prompt[:, None, :].expand(rows, response_width, prompt_width), own.expand(rows, -1, -1)], dim=2
    )[:, None]  # [Nr, 1, Rm, Pm + Rm]


def grouped_layout(
    prompts: Sequence[tuple[int, int]], responses: Sequence[tuple[int, int, int]]
) -> GroupedLayout:
    """The layout of a row from its spans: prompts [(start, length)] per group, responses [(start, length, group)]
    of input tokens (length >= 1). Every row position must be in exactly one span.

    Example: prompts [(0, 2)], responses [(2, 1, 0), (3, 2, 0)] (a 5-token row: prompt, r1, r2) ->
    prompt_index [[0, 1]], response_index [[2, 0], [3, 4]], response_keep [0, 2, 3], inverse [0, 1, 2, 3, 4].
    """
    total = sum(n for _, n in prompts) + sum(n for _, n, _ in responses)
    prompt_width = max(n for _, n in prompts)
    response_width = max((n for _, n, _ in responses), default=0)

    def padded(spans: Sequence[tuple[int, int]], width: int) -> tuple[Tensor, Tensor, list[int]]:
        index = torch.zeros(len(spans), width, dtype=torch.long)  # [rows, width]
        keep: list[int] = []
        order: list[int] = []
        for row, (start, length) in enumerate(spans):
            index[row, :length] = torch.arange(start, start + length)
            keep.extend(range(row * width, row * width + length))
            order.extend(range(start, start + length))
        return index, torch.tensor(keep, dtype=torch.long), order

    prompt_index, prompt_keep, prompt_order = padded(prompts, prompt_width)
    response_index, response_keep, response_order = padded([(s, n) for s, n, _ in responses], response_width)
    order = torch.tensor(prompt_order + response_order, dtype=torch.long)  # [T] row position of each output
    if sorted(prompt_order + response_order) != list(range(total)):
        raise ValueError("grouped_layout: the spans must cover every row position exactly once")
    inverse = torch.empty(total, dtype=torch.long)
    inverse[order] = torch.arange(total)
    return GroupedLayout(
        uniform_prompts=all(n == prompt_width for _, n in prompts),
        prompt_index=prompt_index,
        prompt_keep=prompt_keep,
        response_index=response_index,
        response_keep=response_keep,
        response_group=torch.tensor([g for _, _, g in responses], dtype=torch.long),
        response_prompt=torch.tensor([prompts[g][1] for _, _, g in responses], dtype=torch.long),
        inverse=inverse,
    )


def _heads_first(tokens: Tensor, index: Tensor, heads: int) -> Tensor:
    """tokens [T, h, D] gathered at index [rows, width] -> [rows, heads, width, D] (K/V heads repeated to
    `heads`, so every sdpa kernel serves grouped-query models: some lack a GQA mode with masks or biases)."""
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
    with torch.profiler.record_function("r1zero::attention"):
        heads = query.shape[1]
        q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [T, H or h, D]
        prompt_k = _heads_first(k, layout.prompt_index, heads)  # [Gr, H, Pm, D]
        prompt_v = _heads_first(v, layout.prompt_index, heads)
        prompt_out = F.scaled_dot_product_attention(
            _heads_first(q, layout.prompt_index, heads), prompt_k, prompt_v, is_causal=True, scale=scaling
        )  # [Gr, H, Pm, D]
        pieces = [prompt_out.transpose(1, 2).flatten(0, 1)[layout.prompt_keep]]  # [Tp, H, D]
        if layout.response_index.numel():
            own = layout.response_index
            keys = torch.cat([prompt_k[layout.response_group], _heads_first(k, own, heads)], dim=2)
            values = torch.cat([prompt_v[layout.response_group], _heads_first(v, own, heads)], dim=2)
            response_q = _heads_first(q, own, heads)  # [Nr, H, Rm, D]; keys, values [Nr, H, Pm + Rm, D]
            mask: Any = layout.response_mask()
            if mask is None:  # every prompt as long as the widest: the mask is bottom-right causal
                from torch.nn.attention.bias import causal_lower_right

                mask = causal_lower_right(own.shape[1], keys.shape[2])
            response_out = F.scaled_dot_product_attention(
                response_q, keys, values, attn_mask=mask, scale=scaling
            )
            pieces.append(response_out.transpose(1, 2).flatten(0, 1)[layout.response_keep])  # [Tr, H, D]
        return torch.cat(pieces)[layout.inverse].unsqueeze(0), None  # [1, T, H, D]


def register() -> str:
    """Register `grouped_attention` with transformers (idempotent); returns its implementation name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, grouped_attention)
    return ATTENTION_NAME
