"""A step's samples (issue 12, items 5, 7, 9): DAPO dynamic sampling refills the batch with groups whose rewards
vary, within algo.max_sampling_rounds; the sampler's position stays exact for resume; mask_truncated and the
algo/* metrics. A fake engine and a fake reward make every expected value countable by hand."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

import r1zero.collect as collect_module
from r1zero import dp
from r1zero.collect import Collector
from r1zero.config import AlgoConfig, RolloutConfig, RunConfig, TaskConfig
from r1zero.parts import PhaseTimer, PromptSampler, Scored
from r1zero.types import Completion, Example

B, G = 4, 4
# |advantage| in a varied group [0, 1, 0, 1]: (1 - 0.5) / unbiased std sqrt(1/3) = sqrt(3) / 2
A = 3**0.5 / 2


class FakeEngine:
    """Sample j of every prompt: tokens [5 + j % 2, 7]; sample 0 is length-truncated, the others stop."""

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts, sampling) -> list[Completion]:
        self.calls += 1
        return [
            Completion(i, [1, 2, 3], [5 + j % 2, 7], [-1.0, -1.0], f"s{j}", "length" if j == 0 else "stop", 0)
            for i in range(len(prompts))
            for j in range(sampling.n)
        ]


def fake_score(task, prompts, completions) -> Scored:
    """Reward: 1 for every sample of a prompt whose answer is even (a constant group); else 1 for samples with
    first token 6 (odd j) and 0 otherwise (a varied group)."""
    totals = []
    for c in completions:
        even = int(prompts[c.prompt_index].example.answer) % 2 == 0
        totals.append(1.0 if even else float(c.token_ids[0] == 6))
    return Scored([c.text for c in completions], totals, {"correct": list(totals)})


@pytest.fixture
def examples() -> list[Example]:
    # answers alternate even / odd, so half of the prompts give constant groups
    return [Example(f"q{i}", str(i), f"u{i}") for i in range(200)]


@pytest.fixture
def tokenizer(tiny_model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def make(examples, tokenizer, monkeypatch, **algo) -> tuple[Collector, PromptSampler, FakeEngine]:
    monkeypatch.setattr(collect_module, "score_completions", fake_score)
    cfg = RunConfig(
        task=TaskConfig(name="arithmetic"), rollout=RolloutConfig(prompts_per_step=B, group_size=G),
        algo=AlgoConfig(**algo),
    )  # fmt: skip
    sampler = PromptSampler(len(examples), seed=3)
    engine = FakeEngine()
    return Collector(cfg, engine, sampler, examples, tokenizer, dp.Shard()), sampler, engine


def group_rewards(samples) -> list[list[float]]:
    return [samples.rewards[i * G : (i + 1) * G].tolist() for i in range(len(samples.prompts))]


def test_dynamic_sampling_fills_the_batch_with_varied_groups(examples, tokenizer, monkeypatch) -> None:
    collector, sampler, engine = make(
        examples, tokenizer, monkeypatch, dynamic_sampling=True, max_sampling_rounds=9
    )
    order = PromptSampler(len(examples), seed=3)  # what the sampler will hand out, to count by hand
    samples = collector.collect(1, PhaseTimer())
    assert len(samples.prompts) == B and len(samples.completions) == B * G
    for rewards in group_rewards(samples):
        assert max(rewards) > min(rewards)  # every trained group carries a gradient
    assert all(int(p.example.answer) % 2 == 1 for p in samples.prompts)
    # Rounds needed, counted from the sampler's own order: until B odd answers have been drawn.
    drawn, rounds = [], 0
    while sum(int(examples[i].answer) % 2 for i in drawn) < B:
        drawn += order.next(B)
        rounds += 1
    assert engine.calls == rounds == samples.metrics["algo/sampling_rounds"]
    assert samples.metrics["algo/prompts_sampled"] == B * rounds
    assert samples.metrics["algo/trained_groups"] == B
    # The first B odd-answer prompts drawn, in order (DAPO keeps the first B and drops the surplus).
    assert [p.example.uid for p in samples.prompts] == [examples[i].uid for i in drawn if i % 2 == 1][:B]
    assert sampler.state() == order.state()  # exact position: a resume continues here
    assert all(c.prompt_index == i // G for i, c in enumerate(samples.completions))
    assert samples.own == samples.completions and bool(samples.own_keep.all())
    # Advantages of a group [0, 1, 0, 1]: mean 0.5, unbiased std sqrt(1/3) -> +-sqrt(3)/2 (up to the epsilon).
    assert torch.allclose(samples.advantages, torch.tensor([-A, A] * (B * G // 2)), atol=1e-3)


def test_out_of_rounds_trains_on_what_was_found(examples, tokenizer, monkeypatch, caplog) -> None:
    collector, _, engine = make(
        examples, tokenizer, monkeypatch, dynamic_sampling=True, max_sampling_rounds=0
    )
    order = PromptSampler(len(examples), seed=3)
    odd = [i for i in order.next(B) if i % 2 == 1]
    with caplog.at_level(logging.WARNING, logger="r1zero"):
        samples = collector.collect(1, PhaseTimer())
    assert engine.calls == 1
    assert [p.example.uid for p in samples.prompts] == [examples[i].uid for i in odd]
    assert samples.metrics["algo/trained_groups"] == len(odd) < B
    assert samples.metrics["algo/dropped_groups"] == B - len(odd)
    assert "dynamic sampling found" in caplog.text


def test_without_dynamic_sampling_every_group_trains(examples, tokenizer, monkeypatch) -> None:
    collector, _, engine = make(examples, tokenizer, monkeypatch)
    samples = collector.collect(1, PhaseTimer())
    assert engine.calls == 1 and len(samples.prompts) == B
    assert bool(samples.keep.all())
    odd = sum(int(p.example.answer) % 2 for p in samples.prompts)
    # Constant groups have advantage 0; varied ones |A| = sqrt(3)/2: the mean over the B * G rows is A * odd / B.
    assert samples.metrics["algo/advantage_abs_mean"] == pytest.approx(A * odd / B, abs=1e-3)
    assert samples.metrics["algo/zero_std_group_frac"] == pytest.approx((B - odd) / B)


def test_mask_truncated_removes_the_truncated_rows_from_the_loss(examples, tokenizer, monkeypatch) -> None:
    collector, _, _ = make(examples, tokenizer, monkeypatch, mask_truncated=True)
    samples = collector.collect(1, PhaseTimer())
    assert samples.keep.tolist() == [j != 0 for _ in range(B) for j in range(G)]  # sample 0 is truncated
    assert samples.metrics["algo/loss_rows"] == B * (G - 1)
    # advantage_abs_mean covers the loss rows only (3 per group): varied groups give 3 rows of |A|, constant 0.
    odd = sum(int(p.example.answer) % 2 for p in samples.prompts)
    assert samples.metrics["algo/advantage_abs_mean"] == pytest.approx(A * odd * 3 / (B * 3), abs=1e-3)


def test_resumed_sampler_continues_with_the_same_prompts(examples, tokenizer, monkeypatch) -> None:
    straight, sampler, _ = make(examples, tokenizer, monkeypatch, dynamic_sampling=True)
    straight.collect(1, PhaseTimer())
    saved = sampler.state()
    expected = straight.collect(2, PhaseTimer())
    resumed, resumed_sampler, _ = make(examples, tokenizer, monkeypatch, dynamic_sampling=True)
    resumed_sampler.load_state(saved)
    got = resumed.collect(2, PhaseTimer())
    assert [p.example.uid for p in got.prompts] == [p.example.uid for p in expected.prompts]


class AheadEngine(FakeEngine):
    """A disaggregated engine (submit / fetch, like r1zero.rollout.remote.RemoteEngine): a request is sampled with
    the weights the engine holds when it is submitted, and its completions carry that policy version."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.policy_version = version
        self.submitted: list[tuple[int, int]] = []  # (step, policy version at submission)

    def submit(self, prompts, sampling, label: str = "", step: int = 0):
        self.submitted.append((step, self.policy_version))
        return [replace(c, policy_version=self.policy_version) for c in self.generate(prompts, sampling)]

    def fetch(self, ticket) -> list[Completion]:
        return ticket


@pytest.mark.parametrize(
    ("k", "lags"),
    [
        (3, [0, 1, 2, 3]),  # same k: steps 3-5 requested at resume with version 2 lag 0, 1, 2; step 6 lags 3
        (1, [0, 1, 1, 1]),  # step 3 at resume (v2); 4 at collect(3) (v2, lag 1); 5 at collect(4) (v3), ...
        (0, [0, 0, 0, 0]),  # each step requested when it is collected, with the weights of the step before
    ],
)
def test_resume_with_a_smaller_max_staleness_keeps_the_bound(
    examples, tokenizer, monkeypatch, k, lags
) -> None:
    """A k=3 run checkpointed after step 2 had steps 3, 4, 5 in flight. Resumed with k, each of them is requested
    only when it enters the window of k steps ahead (the checkpoint's prompts, none skipped or repeated), so no
    sample lags more than k versions; the checkpoint keeps the steps not requested yet."""
    monkeypatch.setattr(collect_module, "score_completions", fake_score)
    cfg = RunConfig(
        task=TaskConfig(name="arithmetic"), rollout=RolloutConfig(prompts_per_step=B, group_size=G)
    )
    sampler = PromptSampler(len(examples), seed=3)
    in_flight = {str(step): sampler.next(B) for step in (3, 4, 5)}  # what the k=3 run had requested
    after = sampler.state()
    engine = AheadEngine(version=2)  # resume pushed the step-2 weights
    collector = Collector(cfg, engine, sampler, examples, tokenizer, dp.Shard(), max_staleness=k)
    collector.load_pending(in_flight, step=2)
    assert collector.pending_state() == in_flight  # requested or not, every one is in the next checkpoint
    got_lags, uids = [], []
    for step in (3, 4, 5, 6):
        samples = collector.collect(step, PhaseTimer())
        got_lags.append(samples.metrics["rollout/policy_version_lag_max"])
        uids.append([p.example.uid for p in samples.prompts])
        engine.policy_version = step  # the learner trains step `step`, then pushes its weights
    assert got_lags == lags
    fresh = PromptSampler(len(examples), seed=3)
    fresh.load_state(after)
    expected = [in_flight[s] for s in ("3", "4", "5")] + [fresh.next(B)]  # then the sampler goes on
    assert uids == [[examples[i].uid for i in indices] for indices in expected]


def test_tokens_and_rollout_rate_count_every_round_sampled(examples, tokenizer, monkeypatch) -> None:
    """Dynamic sampling: the throughput and the cost's tokens count each round generated, not only the kept
    batch. FakeEngine's samples are 2 tokens each, so `rounds` rounds of B x G samples are rounds * B * G * 2."""
    collector, _, engine = make(
        examples, tokenizer, monkeypatch, dynamic_sampling=True, max_sampling_rounds=9
    )
    timer = PhaseTimer()
    samples = collector.collect(1, timer)
    assert engine.calls > 1  # more than one round, or the test shows nothing
    assert samples.tokens_generated == engine.calls * B * G * 2
    assert sum(len(c.token_ids) for c in samples.completions) == B * G * 2  # the kept batch alone: 1 round
    rate = samples.metrics["perf/rollout_tokens_per_s"]
    assert rate == pytest.approx(engine.calls * B * G * 2 / timer.seconds["rollout"])


def test_with_requests_ahead_the_rollout_phase_is_labelled_the_learners_wait(
    examples, tokenizer, monkeypatch
) -> None:
    """k >= 1: the samples were generated while the learner trained the step before, so the rollout phase only
    times the learner waiting for them: it is logged as that wait, and no tokens/s is made of it."""
    monkeypatch.setattr(collect_module, "score_completions", fake_score)
    cfg = RunConfig(
        task=TaskConfig(name="arithmetic"), rollout=RolloutConfig(prompts_per_step=B, group_size=G)
    )
    sampler = PromptSampler(len(examples), seed=3)
    collector = Collector(
        cfg, AheadEngine(version=0), sampler, examples, tokenizer, dp.Shard(), max_staleness=1
    )
    for step in (1, 2):
        timer = PhaseTimer()
        metrics = collector.collect(step, timer).metrics
        assert "perf/rollout_tokens_per_s" not in metrics
        assert metrics["perf/rollout_wait_s"] == timer.seconds["rollout"]
