"""Packing by hand: shared prompts, targets, positions, the attention mask, micro-batch planning."""

from __future__ import annotations

import torch

from r1zero.learner.batching import pack, plan_micro_batches, response_layout


def test_pack_shares_the_prompt_of_a_group() -> None:
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
    mask = batch.attention_mask[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0],  # 5
        [1, 1, 0, 0, 0],  # 6
        [1, 1, 1, 0, 0],  # 7 (response 0) sees the prompt and itself
        [0, 0, 0, 1, 0],  # 1 (second group) sees nothing of the first
        [0, 0, 0, 1, 1],  # 2
    ]


def test_pack_unshared_uses_position_ids_only() -> None:
    batch = pack([([5, 6], [7, 8]), ([5, 6], [9])], [0, 1], share_prompts=False)
    assert batch.input_ids.tolist() == [[5, 6, 7, 5, 6]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert batch.attention_mask is None
    assert batch.target_pos.tolist() == [1, 2, 4]


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


def test_assign_rows_trades_padding_against_attention() -> None:
    from r1zero.learner.batching import assign_rows

    # Equal groups: 4 rows cost 4 * 200 + 1e-3 * 4 * 200^2 = 960; one row 800 + 1e-3 * 800^2 = 1440.
    assert assign_rows([200, 200, 200, 200], 1e-3) == [[0], [1], [2], [3]]
    # Three rows of 100 (the two short groups share one): 300 + 1e-2 * 3 * 100^2 = 600; one row 1200.
    assert assign_rows([100, 100, 50, 50], 1e-2) == [[0], [1], [2, 3]]
    assert assign_rows([200, 10, 10], 1e-3) == [[0, 1, 2]]  # 2 rows would pad 180 tokens: 480 vs 268
    assert assign_rows([200, 200, 200], 0.0) == [[0, 1, 2]]  # no attention cost: one row, no padding
    assert assign_rows([], 1.0) == []


def test_pack_in_rows_pads_and_masks_each_row() -> None:
    from r1zero.learner.batching import pack

    sequences = [([5, 6], [7, 8]), ([5, 6], [9]), ([1], [2, 3, 4])]
    batch = pack(sequences, [0, 1, 2], pair_cost=1.0)  # attention dear: one group per row
    # Group [5, 6] -> 5 6 7 (3 tokens); group [1] -> 1 2 3 (3 tokens): two rows, no padding.
    assert batch.input_ids.tolist() == [[5, 6, 7], [1, 2, 3]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert batch.target_pos.tolist() == [1, 2, 1, 3, 4, 5]  # flat: row * 3 + column
    assert batch.num_tokens == 6 and batch.num_padding == 0
    assert batch.attention_mask is not None and batch.attention_mask.shape == (2, 1, 3, 3)
    assert batch.attention_mask[1, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    # Groups of 3 and 2 tokens: two rows 6 + 2 * 9 = 24 beat one row 5 + 25 = 30.
    uneven = pack([([5, 6], [7, 8]), ([5, 6], [9]), ([1], [2, 3])], [0, 1, 2], pair_cost=1.0)
    assert uneven.input_ids.tolist() == [[5, 6, 7], [1, 2, 0]]  # the second row padded
    assert uneven.num_tokens == 5 and uneven.num_padding == 1
    pad_mask = uneven.attention_mask[1, 0].int().tolist()
    assert pad_mask == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]  # real tokens never see padding, nor padding them
