"""Disaggregated mode's pure parts (issue 15): the role split and its checks, the replica split, the policy-lag
metric, the config defaults, and the Collector's requests ahead with bounded staleness (a fake engine that
stamps each sample with the version it held when the request arrived, as a worker does)."""

from __future__ import annotations

import pytest

import r1zero.collect as collect_module
from r1zero import dp
from r1zero.collect import Collector, policy_lag_metrics
from r1zero.config import (
    OFF_POLICY_TIS_CAP,
    AlgoConfig,
    RolesConfig,
    RolloutConfig,
    RunConfig,
    TaskConfig,
)
from r1zero.parts import PhaseTimer, PromptSampler, Scored
from r1zero.roles import Role, role_counts, split_replicas
from r1zero.types import Completion, Example

B, G = 2, 2


def test_role_counts() -> None:
    assert role_counts(2, 1, 1) == (1, 1)
    assert role_counts(4, 2, 2) == (2, 2)
    assert role_counts(8, 3, 1) == (5, 3)
    with pytest.raises(ValueError, match="at least 2 processes"):
        role_counts(1, 1, 1)
    with pytest.raises(ValueError, match="at least one learner"):
        role_counts(3, 3, 1)
    with pytest.raises(ValueError, match=r"must divide roles\.rollout_workers"):
        role_counts(4, 3, 2)


def test_roles_and_their_names() -> None:
    # 2 learners, 4 workers as 2 replicas of tp 2: ranks 0-1 learn, 2-3 replica 0, 4-5 replica 1
    roles = [Role(r, learners=2, workers=4, tp=2) for r in range(6)]
    assert [r.is_worker for r in roles] == [False, False, True, True, True, True]
    assert [r.bridge_rank for r in roles] == [0, None, 1, 2, 3, 4]
    assert [r.replica for r in roles[2:]] == [0, 0, 1, 1]
    assert roles[0].replicas == 2
    assert roles[5].name() == "rollout worker 3 (rank 5)"
    assert roles[1].name() == "learner rank 1"
    assert roles[0].replica_name(1) == "rollout replica 1 (workers 2-3, ranks 4-5)"
    assert Role(0, 1, 1).replica_name(0) == "rollout replica 0 (worker 0, rank 1)"


@pytest.mark.parametrize("count,replicas", [(5, 2), (4, 4), (3, 5), (17, 3), (0, 2)])
def test_split_replicas_covers_every_prompt_once(count: int, replicas: int) -> None:
    bounds = split_replicas(count, replicas)
    assert len(bounds) == replicas
    assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(count))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_policy_lag_metrics() -> None:
    assert policy_lag_metrics([2, 3], step=4) == {
        "rollout/policy_version_lag": 0.5,
        "rollout/policy_version_lag_max": 1.0,
    }
    assert policy_lag_metrics([0, 0, 0], step=1)["rollout/policy_version_lag_max"] == 0.0


def test_roles_config_checks_and_the_off_policy_default() -> None:
    with pytest.raises(ValueError, match=r"roles\.mode"):
        RolesConfig(mode="async")
    with pytest.raises(ValueError, match="max_staleness"):
        RolesConfig(max_staleness=-1)
    # colocated, or synchronous (k = 0): nothing to correct, tis_cap stays off
    assert RunConfig().algo.tis_cap is None
    assert RunConfig(roles=RolesConfig(mode="disaggregated", max_staleness=0)).algo.tis_cap is None
    # samples may lag: the truncated-IS correction is on by default, a chosen cap is kept
    assert RunConfig(roles=RolesConfig(mode="disaggregated")).algo.tis_cap == OFF_POLICY_TIS_CAP
    chosen = RunConfig(roles=RolesConfig(mode="disaggregated"), algo=AlgoConfig(tis_cap=5.0))
    assert chosen.algo.tis_cap == 5.0


class AheadEngine:
    """Like the workers behind r1zero.roles.RemoteEngine: `submit` queues a request and samples it with the
    version held WHEN IT ARRIVES (a worker runs its commands in order); `fetch` returns it."""

    def __init__(self) -> None:
        self.policy_version = 0
        self.submitted: list[tuple[int, list[str]]] = []  # (step, prompt questions)
        self._results: dict[int, list[Completion]] = {}

    def submit(self, prompts, sampling, label: str = "", step: int = 0) -> int:
        ticket = len(self.submitted)
        self.submitted.append((step, [p.example.question for p in prompts]))
        self._results[ticket] = [
            Completion(i, [1], [5 + j], [-1.0], f"s{j}", "stop", self.policy_version)
            for i in range(len(prompts))
            for j in range(sampling.n)
        ]
        return ticket

    def fetch(self, ticket: int) -> list[Completion]:
        return self._results.pop(ticket)


def varied(task, prompts, completions) -> Scored:
    totals = [float(c.token_ids[0] == 5) for c in completions]
    return Scored([c.text for c in completions], totals, {"correct": totals})


@pytest.fixture
def tokenizer(tiny_model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


EXAMPLES = [Example(f"q{i}", str(i), f"u{i}") for i in range(50)]


def collector(tokenizer, k: int, steps: int, engine: AheadEngine, sampler_state=None) -> Collector:
    cfg = RunConfig(
        task=TaskConfig(name="arithmetic"), rollout=RolloutConfig(prompts_per_step=B, group_size=G),
        steps=steps,
    )  # fmt: skip
    sampler = PromptSampler(len(EXAMPLES), seed=1)
    if sampler_state is not None:
        sampler.load_state(sampler_state)
    return Collector(cfg, engine, sampler, EXAMPLES, tokenizer, dp.Shard(), max_staleness=k)


def run_steps(coll: Collector, engine: AheadEngine, first: int, last: int) -> list[tuple[list[str], float]]:
    """Collect steps first..last, pushing version s after step s as the loop does: (prompts, max lag) each."""
    out = []
    for step in range(first, last + 1):
        samples = coll.collect(step, PhaseTimer())
        out.append(
            ([p.example.question for p in samples.prompts], samples.metrics["rollout/policy_version_lag_max"])
        )
        engine.policy_version = step
    return out


@pytest.mark.parametrize("k", [0, 1, 2])
def test_requests_ahead_keep_the_prompt_order_and_bound_the_lag(k: int, tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(collect_module, "score_completions", varied)
    sampler = PromptSampler(len(EXAMPLES), seed=1)
    expected_prompts = [[f"q{i}" for i in sampler.next(B)] for _ in range(6)]  # the sampler's own order
    engine = AheadEngine()
    got = run_steps(collector(tokenizer, k, 6, engine), engine, 1, 6)
    assert [prompts for prompts, _ in got] == expected_prompts
    # step 1 is requested when it starts; step t <= k + 1 is requested after step 1 (version 0): lag t - 1;
    # later, step t is requested after step t - k was collected, i.e. with version t - k - 1: lag k.
    assert [lag for _, lag in got] == [float(min(t - 1, k)) for t in range(1, 7)]
    # requested in step order, each once, never beyond the run's last step
    assert [step for step, _ in engine.submitted] == list(range(1, 7))


@pytest.mark.parametrize(
    ("k", "sent_at_once", "lags"),
    [
        (2, [3, 4], [0.0, 1.0, 2.0, 2.0]),  # the same k: both sent again at once, in order
        (1, [3], [0.0, 1.0, 1.0, 1.0]),
        (0, [], [0.0, 0.0, 0.0, 0.0]),  # on-policy: each step requested when it is collected
    ],
)
def test_a_resumed_collector_requests_the_rounds_in_flight_again(
    k: int, sent_at_once: list[int], lags: list[float], tokenizer, monkeypatch
) -> None:
    """Checkpoint after step 2 with k = 2 (steps 3 and 4 in flight), resumed in a new collector with k = 2, 1 or 0:
    the prompts of steps 1-6 are those of the uninterrupted k = 2 run (none skipped, none repeated), and each step
    in flight is requested again only once it is within the new k of the learner. The resent requests are sampled
    with the resumed weights (version 2), so no step lags more than k."""
    monkeypatch.setattr(collect_module, "score_completions", varied)
    engine = AheadEngine()
    whole = run_steps(collector(tokenizer, 2, 6, engine), engine, 1, 6)
    engine = AheadEngine()
    first = collector(tokenizer, 2, 6, engine)
    before = run_steps(first, engine, 1, 2)
    saved_sampler, saved_pending = first.sampler.state(), first.pending_state()
    assert sorted(saved_pending) == ["3", "4"]
    engine = AheadEngine()
    engine.policy_version = 2  # the checkpoint's weights, pushed on resume
    second = collector(tokenizer, k, 6, engine, sampler_state=saved_sampler)
    second.load_pending(saved_pending, step=2)
    assert [step for step, _ in engine.submitted] == sent_at_once
    after = run_steps(second, engine, 3, 6)
    assert [p for p, _ in before + after] == [p for p, _ in whole]
    assert [lag for _, lag in after] == lags
    assert [step for step, _ in engine.submitted] == [3, 4, 5, 6]  # each step requested once, in order


def test_read_ahead_stays_within_its_byte_budget_and_keeps_the_order() -> None:
    """A worker receives pushed tensors ahead of its engine's reload, up to the budget: here 3 tensors of 400
    bytes with a budget of 800 bytes. While the engine loads tensor i, the receiver holds at most 2 (i + 1 and
    i + 2) and has pulled at most one more from the group, waiting for room: 4 produced beyond those loaded."""
    import threading

    import torch

    from r1zero.rollout.worker import read_ahead

    produced: list[int] = []
    lock = threading.Lock()

    def stream():
        for i in range(6):
            with lock:
                produced.append(i)
            yield f"t{i}", torch.full((100,), float(i))  # 400 bytes

    seen = []
    for name, tensor in read_ahead(stream(), max_bytes=800):
        import time

        time.sleep(0.05)  # a slow reload: the receiver runs ahead meanwhile
        with lock:
            ahead = len(produced) - len(seen)
        assert ahead <= 4, ahead  # without the budget, all 6 would be received during the first reload
        seen.append((name, float(tensor[0])))
    assert seen == [(f"t{i}", float(i)) for i in range(6)]


def test_read_ahead_hands_the_receivers_error_over_and_zero_means_in_step() -> None:
    import torch

    from r1zero.rollout.worker import read_ahead

    def broken():
        yield "a", torch.zeros(2)
        raise RuntimeError("the learner went away")

    got = []
    with pytest.raises(RuntimeError, match="went away"):
        for name, _ in read_ahead(broken(), max_bytes=1 << 20):
            got.append(name)
    assert got == ["a"]
    plain = iter([("x", torch.ones(1))])
    assert read_ahead(plain, 0).__next__()[0] == "x"
