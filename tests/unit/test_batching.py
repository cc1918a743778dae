"""Packing by hand: shared prompts, targets, positions, the grouped layout, micro-batch planning."""

from __future__ import annotations

import pytest
import torch

from r1zero.learner.batching import pack, plan_micro_batches, response_layout


def test_pack_shares_the_prompt_of_a_group(monkeypatch) -> None:
    from r1zero.learner import attention

    monkeypatch.setattr(attention, "GROUP_ROWS_PAIR_RATIO", 0.0)  # response rows: one unpadded row
    sequences = [([5, 6], [7, 8]), ([5, 6], [9]), ([1], [2, 3])]
    batch = pack(sequences, [0, 1, 2])
    # group [5, 6]: prompt once, then 7 (the input of response 0; its last token 8 is never an input); response
    # 1 ([9]) adds no input. Group [1]: prompt 1, then 2.
    assert batch.input_ids.tolist() == [[5, 6, 7, 1, 2]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    # 7 <- hidden after 6 (pos 1); 8 <- after 7 (pos 2); 9 <- after 6 (pos 1); 2 <- after 1 (pos 3); 3 <- pos 4.
    assert batch.target_pos.tolist() == [1, 2, 1, 3, 4]
    assert batch.labels.tolist() == [7, 8, 9, 2, 3]
    assert batch.target_row.tolist() == [0, 0, 1, 2, 2]
    assert batch.target_col.tolist() == [0, 1, 0, 0, 1]
    assert batch.response_len.tolist() == [2, 1, 2]
    assert batch.num_padding == 0
    # The grouped attention's layout: one causal attention row per response with an input token, its prompt
    # first: [5, 6, 7] (group 0, response 0) and [1, 2] (group 1), right-padded to 3; response 1 ([9]) has no
    # input token and its group already has a row. Outputs: 5, 6, 7 from row 0 (flat 0, 1, 2), 1, 2 from row 1
    # (flat 3, 4).
    layout = batch.layout
    assert layout is not None
    assert layout.index.tolist() == [[0, 1, 2], [3, 4, 0]]
    assert layout.source.tolist() == [0, 1, 2, 3, 4]


def test_pack_unshared_gives_each_sequence_its_own_group(monkeypatch) -> None:
    from r1zero.learner import attention

    monkeypatch.setattr(attention, "GROUP_ROWS_PAIR_RATIO", 0.0)  # response rows: one unpadded row
    batch = pack([([5, 6], [7, 8]), ([5, 6], [9])], [0, 1], share_prompts=False)
    assert batch.input_ids.tolist() == [[5, 6, 7, 5, 6]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert batch.target_pos.tolist() == [1, 2, 4]
    # Two groups: [5, 6, 7] and the second prompt alone ([9] has no input token), right-padded to 3.
    assert batch.layout is not None and batch.layout.index.tolist() == [[0, 1, 2], [3, 4, 0]]
    assert batch.layout.source.tolist() == [0, 1, 2, 3, 4]


def test_grouped_layout_copies_the_prompt_into_each_responses_row() -> None:
    from r1zero.learner.attention import grouped_layout

    # Row: prompt p0 p1 (0-1), response a (2), response b b' (3-4). Attention rows [p0 p1 a] and [p0 p1 b b'];
    # the prompt's outputs come from the first row, each response's from its own.
    layout = grouped_layout([(0, 2)], [(2, 1, 0), (3, 2, 0)])
    assert layout.index is not None and layout.index.tolist() == [[0, 1, 2, 0], [0, 1, 3, 4]]
    assert layout.source is not None and layout.source.tolist() == [0, 1, 2, 6, 7]
    assert layout.owner is None and layout.mask() is None  # plain causal attention


def test_pack_in_group_rows_pads_each_group_and_masks_its_responses_apart(monkeypatch) -> None:
    from r1zero.learner import attention

    monkeypatch.setattr(attention, "GROUP_ROWS_PAIR_RATIO", float("inf"))
    # Groups: prompt [5, 6] + response inputs 7 | 8, 9 (responses [7, 1], [8, 9, 2]); prompt [1] + input 2.
    sequences = [([5, 6], [7, 1]), ([5, 6], [8, 9, 2]), ([1], [2, 3])]
    batch = pack(sequences, [0, 1, 2])
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]  # one row per group, padded to 5
    assert batch.position_ids.tolist() == [[0, 1, 2, 2, 3], [0, 1, 0, 1, 2]]
    assert batch.num_tokens == 7 and batch.num_padding == 3
    # 7 <- after 6 (1); 1 <- after 7 (2); 8 <- after 6 (1); 9 <- after 8 (3); 2 <- after 9 (4); 2 <- after
    # 1 (flat 5); 3 <- after 2 (flat 6).
    assert batch.target_pos.tolist() == [1, 2, 1, 3, 4, 5, 6]
    layout = batch.layout
    assert layout is not None and layout.index is None
    assert layout.owner is not None and layout.owner.tolist() == [[-1, -1, 0, 1, 1], [-1, 2, -2, -2, -2]]
    mask = layout.mask()
    assert mask is not None and mask.shape == (2, 1, 5, 5)
    assert mask[0, 0].int().tolist() == [
        [1, 0, 0, 0, 0],  # 5
        [1, 1, 0, 0, 0],  # 6
        [1, 1, 1, 0, 0],  # 7: the prompt and itself
        [1, 1, 0, 1, 0],  # 8: the prompt and itself, not 7
        [1, 1, 0, 1, 1],  # 9
    ]
    assert mask[1, 0].int().tolist()[2] == [
        1,
        0,
        0,
        0,
        0,
    ]  # a padded query sees the prompt only (never empty)


def test_the_cheaper_layout_is_chosen() -> None:
    from r1zero.learner.attention import use_group_rows

    # A prompt of 4 and 4 responses of 3 input tokens: group rows 16^2 = 256 pairs, response rows 4 x 7^2 / 2 =
    # 98 (x 2 = 196): response rows. One response of 12: 16^2 either way: group rows.
    assert not use_group_rows([4], [[3, 3, 3, 3]])
    assert use_group_rows([4], [[12]])
    # The CPU default's shape: 4 groups of 72 + 4 x ~20 -> group rows; 2 groups of 256 + 8 x ~640 -> response rows.
    assert use_group_rows([72] * 4, [[20, 25, 15, 30]] * 4)
    assert not use_group_rows([256] * 2, [[640, 300, 1000, 500, 700, 800, 256, 900]] * 2)


def test_grouped_layout_rejects_spans_that_miss_a_token() -> None:
    import pytest

    from r1zero.learner.attention import grouped_layout

    with pytest.raises(ValueError, match="grouped_layout: "):
        grouped_layout([(0, 2)], [(3, 1, 0)])  # position 2 belongs to no span


def test_unpack_to_response_layout() -> None:
    batch = pack([([5], [7, 8]), ([5], [9])], [0, 1])
    values = torch.tensor([1.0, 2.0, 3.0])  # per target, in target order
    assert batch.unpack(values, 3).tolist() == [[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]


def test_plan_micro_batches_keeps_rows_in_order_and_bounds_them() -> None:
    assert plan_micro_batches([3, 9, 5, 1], 2) == [[0, 1], [2, 3]]
    assert plan_micro_batches([3, 9, 5, 1], 4, max_tokens=10) == [[0], [1], [2, 3]]
    plan = plan_micro_batches(list(range(1, 18)), 5)
    assert sorted(r for mb in plan for r in mb) == list(range(17))
    assert max(len(mb) for mb in plan) <= 5


def test_response_layout() -> None:
    values, mask = response_layout([[1.0, 2.0], [3.0], []])
    assert values.tolist() == [[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]]
    assert mask.tolist() == [[True, True], [True, False], [False, False]]


def test_micro_batches_are_bounded_by_packed_tokens() -> None:
    from r1zero.learner.batching import packed_lengths

    sequences = [([5, 6], [7, 8]), ([5, 6], [9]), ([1], [2, 3])]
    # 5 6 7 | (9 adds no input) | 1 2: a shared prompt counts once, a response's last token is never an input.
    assert packed_lengths(sequences, [0, 1, 2]) == [3, 0, 2]
    assert packed_lengths(sequences, [0, 1, 2], share_prompts=False) == [3, 2, 2]
    # One long response among short ones (prompt 4): 16 sequences would fit 16 short ones, the budget of 20
    # tokens gives the long one a micro-batch of its own and packs the short ones 4 + 3 + 3 + ... at a time.
    prompt = [1, 2, 3, 4]
    long_first = [(prompt, list(range(10, 40)))] + [(prompt, [7, 8, 9, 10]) for _ in range(6)]
    lengths = packed_lengths(long_first, range(7))
    assert lengths == [33, 3, 3, 3, 3, 3, 3]
    assert plan_micro_batches(lengths, 16, max_tokens=20) == [[0], [1, 2, 3, 4, 5, 6]]
    assert plan_micro_batches([33, 3, 3, 3, 3, 3, 3], 16, max_tokens=10) == [[0], [1, 2, 3], [4, 5, 6]]


def test_masked_attention_copies_of_the_kv_heads_give_the_same_result() -> None:
    # On CUDA the K/V heads are copied up to the query heads (the masked kernel has no GQA mode); the result must
    # equal sdpa's own grouped-query attention, and a float64 reference with explicitly repeated heads.
    from r1zero.learner.attention import masked_attention

    torch.manual_seed(0)
    query, key, value = torch.randn(2, 6, 5, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    mask = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 1, 5, 5)
    copied = masked_attention(query, key, value, mask, None, copy_kv=True)
    shared = masked_attention(query, key, value, mask, None, copy_kv=False)
    scores = query.double() @ key.double().repeat_interleave(3, 1).transpose(-1, -2) / 2.0  # [2, 6, 5, 5]
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    reference = (weights @ value.double().repeat_interleave(3, 1)).transpose(1, 2)  # [2, 5, 6, 4]
    assert copied.shape == (2, 5, 6, 4)
    assert torch.allclose(copied.double(), reference, atol=1e-5)
    assert torch.allclose(shared.double(), reference, atol=1e-5)


def test_grouped_attention_refuses_a_call_without_a_layout() -> None:
    # Without a GroupedLayout it would not know which tokens may attend which: no causal fallback over the row.
    from r1zero.learner.attention import grouped_attention

    query = key = value = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match="GroupedLayout"):
        grouped_attention(None, query, key, value, None, layout=None)
