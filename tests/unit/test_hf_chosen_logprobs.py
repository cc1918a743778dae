"""ChosenTokenLogprobs (r1zero.rollout.hf_engine, issue 34 item 12) fed by hand: each step's logprob is picked
by the token the next forward receives, the last step's from the finished sequences."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from r1zero.rollout.hf_engine import ChosenTokenLogprobs


def forward(hook: ChosenTokenLogprobs, input_ids: list[list[int]], last_logits: list[list[float]]) -> None:
    logits = torch.tensor(last_logits).unsqueeze(1)  # [N, 1, V]
    hook(None, (), {"input_ids": torch.tensor(input_ids)}, SimpleNamespace(logits=logits))


def test_each_step_keeps_the_chosen_tokens_logprob_at_the_temperature() -> None:
    ln2 = math.log(2)
    hook = ChosenTokenLogprobs(scale=0.5)
    forward(hook, [[7, 8], [7, 9]], [[0, 0, ln2 / 2], [0, 0, 0]])  # prefill; logits / 0.5 -> [0, 0, ln 2]
    forward(hook, [[2], [0]], [[0, ln2 / 2, 0], [ln2 / 2, 0, 0]])  # step 0 chose 2 and 0; step 1's logits
    logprobs = hook.per_step(torch.tensor([[2, 1], [0, 2]]))  # step 1 chose 1 and 2
    # step 0: row 0 softmax [1, 1, 2] / 4 at 2 -> log 1/2; row 1 uniform -> log 1/3
    # step 1: row 0 [1, 2, 1] / 4 at 1 -> log 1/2; row 1 [2, 1, 1] / 4 at 2 -> log 1/4
    expected = [[math.log(1 / 2), math.log(1 / 2)], [math.log(1 / 3), math.log(1 / 4)]]
    assert logprobs.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    assert hook.pending is None  # the last [N, V] is let go


def test_steps_generated_beyond_the_kept_tokens_are_dropped() -> None:
    hook = ChosenTokenLogprobs(scale=1.0)
    forward(hook, [[5]], [[0.0, 0.0]])
    forward(hook, [[1]], [[0.0, 0.0]])
    forward(hook, [[0]], [[0.0, 0.0]])  # a step transformers ran ahead and then undid
    assert hook.per_step(torch.tensor([[1]])).tolist() == [[pytest.approx(math.log(1 / 2))]]
