"""Loop parts: the resumable prompt sampler, scoring with the prefill re-attached, step statistics, timers."""

from __future__ import annotations

import pytest

from r1zero.config import TaskConfig
from r1zero.parts import PhaseTimer, PromptSampler, rollout_metrics, sample_rows, score_completions
from r1zero.types import Completion, Example, Prompt


def test_sampler_covers_each_epoch_once_and_resumes_exactly() -> None:
    sampler = PromptSampler(5, seed=3)
    first_epoch = sampler.next(5)
    assert sorted(first_epoch) == [0, 1, 2, 3, 4]
    a = sampler.next(3)
    state = sampler.state()
    assert state == {"epoch": 1, "position": 3}
    rest = sampler.next(4)
    resumed = PromptSampler(5, seed=3)
    resumed.load_state(state)
    assert resumed.next(4) == rest
    assert sorted(a + rest[:2]) == [0, 1, 2, 3, 4]  # epoch 1 is again a permutation
    assert PromptSampler(5, seed=4).next(5) != first_epoch or PromptSampler(5, seed=5).next(5) != first_epoch
    with pytest.raises(ValueError, match="empty"):
        PromptSampler(0, seed=0)


def _completion(index: int, text: str, tokens: int, finish: str = "stop") -> Completion:
    return Completion(index, [1, 2], list(range(tokens)), None, text, finish, policy_version=0)


def test_scoring_reattaches_the_prefill_and_step_metrics() -> None:
    example = Example("Using [1, 2, 3] make 9", "9", "cd/0", {"numbers": [1, 2, 3], "target": 9})
    prompt = Prompt("... Assistant: <think>", example, prefill="<think>")
    good = " 1+2=3, 3*3=9 </think> <answer>(1 + 2) * 3</answer>"
    completions = [
        _completion(0, good, 10),  # correct 1, format 1 (the prefill makes the think block whole)
        _completion(0, " no idea </think> <answer>1 + 2 + 3</answer>", 12),  # format only
        _completion(0, " rambling", 30, "length"),  # nothing
        _completion(0, " rambling", 8),
    ]
    scored = score_completions(TaskConfig(name="countdown"), [prompt], completions)
    assert scored.texts[0] == "<think>" + good
    # countdown total = 1.0 * correct + 0.1 * format (TinyZero's weights).
    assert scored.totals == pytest.approx([1.1, 0.1, 0.0, 0.0])
    metrics = rollout_metrics(completions, scored, group_size=2)
    assert metrics["reward/mean"] == pytest.approx(1.2 / 4)
    assert metrics["reward/accuracy"] == 0.25
    assert metrics["reward/format_mean"] == 0.5
    assert metrics["rollout/length/min"] == 8
    # groups: [1.1, 0.1] has spread, [0, 0] has none -> half the groups carry no signal.
    assert metrics["rollout/zero_std_group_frac"] == 0.5
    rows = sample_rows([prompt], completions, scored, 2)
    assert [r["reward"] for r in rows] == pytest.approx([1.1, 0.0])
    assert rows[1]["finish_reason"] == "length"


def test_phase_timer_sums_phases() -> None:
    timer = PhaseTimer()
    with timer("rollout"):
        pass
    with timer("rollout"):
        pass
    with timer("learner"):
        pass
    metrics = timer.metrics()
    assert set(metrics) == {"perf/rollout_s", "perf/learner_s", "perf/step_s"}
    assert metrics["perf/step_s"] == pytest.approx(metrics["perf/rollout_s"] + metrics["perf/learner_s"])
