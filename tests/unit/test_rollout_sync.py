"""r1zero.sync without a model: the probe choice, streaming, and the verifier's decisions and messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
import torch

from r1zero.sync import SyncVerificationError, make_probe, push_weights, verify_sync
from r1zero.types import Completion


def _completion(prompt_index: int, tokens: list[int]) -> Completion:
    return Completion(
        prompt_index=prompt_index,
        prompt_token_ids=[100 + prompt_index, 7],
        token_ids=tokens,
        logprobs=[-1.0] * len(tokens),
        text="",
        finish_reason="stop",
        policy_version=0,
    )


class FakeEngine:
    """Scores every response token with fixed values; records what update_weights saw."""

    def __init__(self, scores: list[list[float]] | None = None) -> None:
        self.scores = scores
        self.policy_version = 0
        self.tokenizer = None

    def score(self, sequences: Sequence[tuple[list[int], list[int]]]) -> list[list[float]]:
        return self.scores if self.scores is not None else [[-1.0] * len(r) for _, r in sequences]

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        for _ in named_tensors:
            pass
        self.policy_version = version


def test_make_probe_prefers_non_empty_evenly_spaced_and_deterministic() -> None:
    # 8 rows, G = 4: rows 0-3 prompt 0, rows 4-7 prompt 1; row 0 is empty.
    rows = [_completion(i // 4, [] if i == 0 else [i, i]) for i in range(8)]
    probe = make_probe(rows, size=2)
    # non-empty rows 1..7 (7 of them): picks positions 0 and 7 // 2 = 3 -> rows 1 and 4 (both prompts covered).
    assert probe == [([100, 7], [1, 1]), ([101, 7], [4, 4])]
    assert make_probe(rows, size=2) == probe
    assert len(make_probe(rows, size=50)) == 7
    assert make_probe([_completion(0, [])], size=2) == [([100, 7], [])]


def test_push_weights_streams_without_collecting() -> None:
    produced = []

    def tensors():
        for i in range(3):
            produced.append(i)
            yield f"w{i}", torch.zeros(2)

    class Recorder(FakeEngine):
        def update_weights(self, named_tensors, version):
            for k, _ in enumerate(named_tensors):
                # The learner has produced exactly one tensor more than the engine consumed before it.
                assert len(produced) == k + 1
            self.policy_version = version

    engine = Recorder()
    seconds = push_weights(engine, tensors(), version=4)
    assert seconds >= 0 and engine.policy_version == 4 and produced == [0, 1, 2]


def test_verify_sync_passes_and_reports_metrics() -> None:
    probe = [([1, 2], [3, 4]), ([5], [6])]
    engine = FakeEngine([[-1.0, -2.0], [-0.5]])
    learner = lambda p: [torch.tensor([-1.0, -2.1]), torch.tensor([-0.5])]  # noqa: E731
    metrics = verify_sync(engine, learner, probe, max_abs_diff=0.2)
    assert set(metrics) == {"sync/max_abs_logprob_diff", "sync/mean_abs_logprob_diff", "sync/verify_seconds"}
    assert metrics["sync/max_abs_logprob_diff"] == pytest.approx(0.1)
    assert metrics["sync/mean_abs_logprob_diff"] == pytest.approx(0.1 / 3)


def test_verify_sync_names_the_worst_token_and_the_likely_causes() -> None:
    probe = [([1], [3, 4]), ([5], [6, 7, 8])]
    engine = FakeEngine([[-1.0, -1.0], [-1.0, -9.0, -1.0]])
    learner = lambda p: [torch.tensor([-1.0, -1.0]), torch.tensor([-1.0, -1.0, -1.0])]  # noqa: E731
    with pytest.raises(SyncVerificationError) as err:
        verify_sync(engine, learner, probe, max_abs_diff=1.0)
    message = str(err.value)
    assert "8" in message and "probe sequence 1, response token position 1 (token id 7)" in message
    assert "tied lm_head" in message and "dtype" in message and "not pushed" in message
    assert isinstance(err.value, RuntimeError)


def test_verify_sync_treats_nan_as_a_failure() -> None:
    engine = FakeEngine([[float("nan")]])
    with pytest.raises(SyncVerificationError, match="inf"):
        verify_sync(engine, lambda p: [torch.tensor([-1.0])], [([1], [2])], max_abs_diff=1.0)


def test_verify_sync_rejects_length_mismatch_and_accepts_empty_responses() -> None:
    with pytest.raises(ValueError, match="probe sequence 0 has 2 response tokens"):
        verify_sync(FakeEngine([[-1.0]]), lambda p: [torch.tensor([-1.0])], [([1], [2, 3])], max_abs_diff=1.0)
    metrics = verify_sync(FakeEngine(), lambda p: [torch.zeros(0)], [([1], [])], max_abs_diff=1.0)
    assert metrics["sync/max_abs_logprob_diff"] == 0.0


def test_make_probe_cuts_long_sequences() -> None:
    row = Completion(0, list(range(1, 11)), list(range(11, 41)), None, "", "length", policy_version=0)
    # max_tokens 8: the prompt's last 8 // 4 = 2 tokens, then the response's first 6.
    assert make_probe([row], size=1, max_tokens=8) == [([9, 10], [11, 12, 13, 14, 15, 16])]
    assert make_probe([row], size=1, max_tokens=None) == [(list(range(1, 11)), list(range(11, 41)))]
    short = Completion(0, [5], [6, 7], None, "", "stop", policy_version=0)
    assert make_probe([short], size=1, max_tokens=8) == [([5], [6, 7])]  # already short: unchanged
    with pytest.raises(ValueError, match="max_tokens"):
        make_probe([row], size=1, max_tokens=1)
