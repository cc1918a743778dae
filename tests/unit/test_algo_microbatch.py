"""Gradient accumulation is exact: with the step's normalizer, micro-batch losses sum to the full-batch loss.

TRL's invariant tests check the same property on a trainer (1 micro-batch x 8 == 8 x 1); here it is a property of
the pure loss functions, then of real gradients through a tiny Qwen2 model with ragged responses.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1zero.algo import (
    AGGREGATIONS,
    aggregate,
    aggregate_micro,
    kl_penalty_loss,
    loss_normalizer,
    policy_loss,
)

F64 = torch.float64
SPLITS = [1, 2, 4, 8]  # number of micro-batches for N = 8 rows: 1x8, 2x4, 4x2, 8x1


def micro_slices(rows: int, parts: int) -> list[slice]:
    size = rows // parts
    return [slice(i * size, (i + 1) * size) for i in range(parts)]


def trim(mask: torch.Tensor) -> int:
    """Columns a micro-batch really has: its longest response (it is padded only to that). mask [n, T]."""
    return max(int(mask.sum(dim=1).max()), 1)


# ---------------------------------------------------------------------------------------------- pure aggregation
@settings(deadline=None, max_examples=40)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=8, max_size=8),
    mode=st.sampled_from(sorted(AGGREGATIONS)),
    parts=st.sampled_from(SPLITS),
    seed=st.integers(0, 2**16),
)
def test_aggregate_is_invariant_to_micro_batching(
    lengths: list[int], mode: str, parts: int, seed: int
) -> None:
    values = torch.randn(8, 6, dtype=F64, generator=torch.Generator().manual_seed(seed))  # [N, T]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]  # [N, T] ragged, right-padded
    full = aggregate(values, mask, mode, max_response_len=6)  # 0-dim
    normalizer = loss_normalizer(mask, mode, max_response_len=6)  # 0-dim, from the whole step
    total = torch.zeros((), dtype=F64)
    for sl in micro_slices(8, parts):
        cols = trim(mask[sl])  # each micro-batch padded only to its own longest response
        total = total + aggregate_micro(values[sl, :cols], mask[sl, :cols], mode, normalizer)
    torch.testing.assert_close(total, full, rtol=1e-12, atol=1e-12)


def test_per_micro_batch_means_would_not_be_exact() -> None:
    # why the global normalizer matters: token_mean of [1 token: 4] and [3 tokens: 0, 0, 0]
    values = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    full = aggregate(values, mask, "token_mean")  # 4 / 4 tokens = 1
    averaged = (
        aggregate(values[:1], mask[:1], "token_mean") + aggregate(values[1:], mask[1:], "token_mean")
    ) / 2
    assert full.item() == 1.0 and averaged.item() == 2.0  # (4/1 + 0/3) / 2: biased towards short sequences
    normalizer = loss_normalizer(mask, "token_mean")
    first = aggregate(values[:1], mask[:1], "token_mean", normalizer=normalizer)  # 4 / 4
    second = aggregate(values[1:], mask[1:], "token_mean", normalizer=normalizer)  # 0 / 4
    assert (first + second).item() == 1.0


# ---------------------------------------------------------------------------------------------- real gradients
PROMPT, MAX_RESP, VOCAB = 3, 5, 64
RESP_LENGTHS = [5, 1, 3, 0, 2, 5, 4, 1]  # ragged, one empty response (all-padding row)


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config).to(F64).eval()  # eval: no dropout


def response_logprobs(model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Log-probs of the response tokens. ids, attn [n, P + L] -> [n, L]."""
    logits = model(input_ids=ids, attention_mask=attn).logits  # [n, P + L, V]
    resp_logits = logits[:, PROMPT - 1 : -1]  # [n, L, V]: position t predicts token t + 1
    return resp_logits.log_softmax(-1).gather(-1, ids[:, PROMPT:, None]).squeeze(-1)  # [n, L]


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
def test_accumulated_gradients_equal_full_batch(tiny_model: torch.nn.Module, mode: str) -> None:
    model = tiny_model
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (8, PROMPT + MAX_RESP), generator=gen)  # [N, P + T]
    mask = torch.arange(MAX_RESP)[None, :] < torch.tensor(RESP_LENGTHS)[:, None]  # [N, T]
    attn = torch.cat([torch.ones(8, PROMPT, dtype=torch.long), mask.long()], dim=1)  # [N, P + T]
    advantages = torch.randn(8, generator=gen, dtype=F64)  # [N]
    with torch.no_grad():
        current = response_logprobs(model, ids, attn)  # [N, T]
    # old / ref logprobs away from the current policy so that both clip branches and the KL are active
    old = current + 0.3 * torch.randn(8, MAX_RESP, generator=gen, dtype=F64)  # [N, T]
    ref = current + 0.2 * torch.randn(8, MAX_RESP, generator=gen, dtype=F64)  # [N, T]

    def step_grads(parts: int) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        normalizer = loss_normalizer(mask, mode, MAX_RESP)  # once, on the whole step's mask
        for sl in micro_slices(8, parts):
            cols = trim(mask[sl])  # micro-batch padded only to its longest response
            span = slice(0, PROMPT + cols)
            logprobs = response_logprobs(model, ids[sl, span], attn[sl, span])  # [n, cols]
            loss, _ = policy_loss(
                logprobs, old[sl, :cols], advantages[sl], mask[sl, :cols], clip_low=0.2, clip_high=0.28,
                aggregation=mode, max_response_len=MAX_RESP, normalizer=normalizer,
            )  # fmt: skip
            kl = kl_penalty_loss(
                logprobs, ref[sl, :cols], mask[sl, :cols], aggregation=mode, max_response_len=MAX_RESP,
                normalizer=normalizer,
            )  # fmt: skip
            (loss + 0.05 * kl).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    full = step_grads(1)
    assert any(g.abs().max() > 0 for g in full)
    for parts in (2, 8):
        for got, expected in zip(step_grads(parts), full):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
