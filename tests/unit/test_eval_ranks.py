"""Evaluation with fewer problems than learner ranks (issue 34, item 6).

In disaggregated mode the engine is collective over the learner ranks (r1zero.rollout.remote.RemoteEngine: its
`submit` all-gathers every rank's prompts, its `fetch` broadcasts the samples). A rank whose share of the eval
problems is empty must still take part, or its next collective (the gather of the eval records) pairs with the
other ranks' gather inside `submit`. Here two ranks run as threads over an in-memory all-gather that names each
collective, so a mismatched pairing is seen, not hung on.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

import r1zero.eval as eval_module
from r1zero import distributed, dp
from r1zero.config import RunConfig, TaskConfig
from r1zero.parts import Scored
from r1zero.session import evaluate
from r1zero.types import Completion, Example, Prompt

WORLD = 2


class ThreadCollectives:
    """all_gather_object / broadcast_object between threads (one per rank), each call tagged with the function
    that made it: rank r's i-th collective must be every rank's i-th, of the same kind."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.barrier = threading.Barrier(world, timeout=10)
        self.slots: list[Any] = [None] * world
        self.local = threading.local()
        self.mismatches: list[str] = []

    def _exchange(self, tag: str, obj: Any) -> list[Any]:
        rank = self.local.rank
        self.slots[rank] = (tag, obj)
        self.barrier.wait()
        got = list(self.slots)
        self.barrier.wait()
        tags = [t for t, _ in got]
        if len(set(tags)) > 1:
            self.mismatches.append(f"rank {rank} paired different collectives: {tags}")
        return [o for _, o in got]

    def all_gather_object(self, obj: Any, tag: str = "gather") -> list[Any]:
        return self._exchange(tag, obj)

    def broadcast_object(self, obj: Any, src: int = 0, tag: str = "broadcast") -> Any:
        return self._exchange(tag, obj)[src]


class CollectiveEngine:
    """The collectives of RemoteEngine.generate (submit: gather every rank's prompts; fetch: broadcast the
    samples), with one sample per prompt whose text is the prompt's question."""

    def __init__(self, comm: ThreadCollectives) -> None:
        self.comm = comm
        self.generate_calls = 0

    def submit(self, prompts, sampling, label: str = "", step: int = 0) -> Any:
        return self.comm.all_gather_object(list(prompts), tag="submit")

    def fetch(self, ticket: Any) -> list[Completion]:
        rank = self.comm.local.rank
        everything = [p for part in ticket for p in part]
        samples = self.comm.broadcast_object(
            [Completion(i, [1], [2], None, p.example.question, "stop", 0) for i, p in enumerate(everything)],
            tag="fetch",
        )
        lo = sum(len(part) for part in ticket[:rank])
        mine = [c for c in samples if lo <= c.prompt_index < lo + len(ticket[rank])]
        return [replace(c, prompt_index=c.prompt_index - lo) for c in mine]  # local, as RemoteEngine's

    def generate(self, prompts, sampling) -> list[Completion]:
        self.generate_calls += 1
        return self.fetch(self.submit(prompts, sampling))


def answer_is_text(task, prompts, completions) -> Scored:
    """Correct when the sample's text equals the prompt's answer (here: always, text = question = answer)."""
    correct = [float(c.text == prompts[c.prompt_index].example.answer) for c in completions]
    return Scored([c.text for c in completions], correct, {"correct": correct, "format": correct})


@pytest.mark.parametrize("problems", [1, 3])
def test_every_learner_rank_joins_the_eval_generate(problems: int, monkeypatch) -> None:
    comm = ThreadCollectives(WORLD)
    monkeypatch.setattr(distributed, "all_gather_object", comm.all_gather_object)
    monkeypatch.setattr(eval_module, "score_completions", answer_is_text)
    cfg = RunConfig(task=TaskConfig(name="arithmetic"))
    cfg.eval.n, cfg.eval.temperature = 1, 0.0
    prompts = [Prompt(f"p{i}", Example(f"a{i}", f"a{i}", f"u{i}")) for i in range(problems)]
    results: dict[int, dict[str, float]] = {}
    errors: list[BaseException] = []
    engines: list[CollectiveEngine] = []

    def rank_main(rank: int) -> None:
        comm.local.rank = rank
        engine = CollectiveEngine(comm)
        engines.append(engine)
        session = SimpleNamespace(
            cfg=cfg, shard=dp.Shard(rank, WORLD, 1), eval_prompts=prompts, engine=engine, history={}
        )
        try:
            results[rank] = evaluate(session, step=0)  # type: ignore[arg-type]
        except BaseException as err:  # a broken pairing surfaces as an error (or a barrier timeout)
            errors.append(err)
            comm.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(WORLD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not comm.mismatches and not errors, (comm.mismatches, errors)
    assert [e.generate_calls for e in engines] == [1, 1]  # the rank without problems joined too
    # every problem evaluated once, on both ranks: all correct
    for rank in range(WORLD):
        assert results[rank]["eval/num_problems"] == problems
        assert results[rank]["eval/accuracy"] == 1.0
