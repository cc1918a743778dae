"""The bridge between the driver and the rollout workers at its edges (issue 34, items 7-9), in one process: the
driver (learner rank 0) in the test's main thread, each worker's `serve_rollouts` in a thread of its own with a
fake engine, all through one in-memory store. Only the weights' process group is faked (not used here).

- tp ranks of one replica decide alike whether to drop a request when the learner closes (item 7);
- a worker waits for a driver that is busy (a long checkpoint) as long as its heartbeat goes on, and still gives
  up on a driver that hangs in a step or stops beating (item 8);
- the driver's close returns only once every worker is done with the store it may host (item 9).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch.distributed as dist

from r1zero import distributed
from r1zero.config import RunConfig
from r1zero.roles import Bridge, PeerFailure, Role
from r1zero.rollout.remote import RemoteEngine


class NoGroup:
    def __init__(self, *args: Any) -> None:
        pass


class FakeEngine:
    """Records the requests it serves; `hold` makes generate wait for the test; `slow` adds a delay."""

    def __init__(self, slow: float = 0.0) -> None:
        self.served: list[int] = []
        self.started = threading.Event()
        self.hold = threading.Event()
        self.hold.set()
        self.slow = slow

    def generate(self, prompts: Any, sampling: Any) -> list[Any]:
        self.started.set()
        self.hold.wait(10)
        time.sleep(self.slow)
        self.served.append(len(self.served))
        return []

    def close(self) -> None:
        pass


class Worker(threading.Thread):
    """serve_rollouts on its own thread; keeps its result or its exception."""

    def __init__(self, bridge: Bridge, role: Role, engine: FakeEngine) -> None:
        super().__init__(daemon=True)
        self.bridge, self.role, self.engine = bridge, role, engine
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from r1zero.rollout.worker import serve_rollouts

        try:
            self.result = serve_rollouts(RunConfig(cpu_threads=0), self.role, self.bridge, [])
        except BaseException as err:
            self.error = err


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch):
    """make(workers, tp, timeout_s) -> (driver bridge, worker bridges, roles); each Worker thread's
    serve_rollouts builds that thread's own fake engine."""
    monkeypatch.setattr(dist, "ProcessGroupGloo", NoGroup)
    monkeypatch.setattr("r1zero.models.resolve_model", lambda name: name)
    monkeypatch.setattr(
        "r1zero.rollout.engines.build_engine", lambda *a, **k: threading.current_thread().engine
    )
    made: list[Bridge] = []

    def make(workers: int, tp: int, timeout_s: float):
        store = dist.HashStore()
        roles = [Role(rank, learners=1, workers=workers, tp=tp) for rank in range(1 + workers)]
        bridges = [Bridge(store, role, timeout_s, "gloo") for role in roles]
        made.extend(bridges)
        return bridges[0], bridges[1:], roles

    yield make
    for bridge in made:
        getattr(bridge, "close", lambda: None)()


GENERATE = {"op": "generate", "request": 0, "prompts": [], "sampling": None, "offset": 0, "step": 1}


def test_tp_ranks_drop_a_request_alike_when_stopping_appears_between_them(world) -> None:
    """A tp-2 replica, request 0 queued on both ranks. Rank A starts it before the driver posts `stopping`, rank B
    reaches it after: in a real replica A now waits in a tensor-parallel collective for B, so B must run it too.
    Expected: both served request 0 (A decided first, before `stopping`)."""
    engines = [FakeEngine(), FakeEngine()]
    driver, (bridge_a, bridge_b), roles = world(2, 2, 5.0)
    a = Worker(bridge_a, roles[1], engines[0])
    b = Worker(bridge_b, roles[2], engines[1])
    engines[0].hold.clear()  # A stays inside request 0 until the test lets it go
    a.start()
    b.start()
    driver.post("cmd/0/0", GENERATE)
    assert engines[0].started.wait(10)
    driver.post("stopping", True)  # Ctrl-C on the learner: it closes now
    driver.post("cmd/1/0", GENERATE)  # B reaches request 0 only now
    for worker in (0, 1):
        driver.post(f"cmd/{worker}/1", {"op": "stop"})
    engines[0].hold.set()
    a.join(10)
    b.join(10)
    assert a.error is None and b.error is None, (a.error, b.error)
    assert engines[0].served == engines[1].served == [0]


def test_a_busy_driver_is_waited_for_as_long_as_it_beats(world) -> None:
    """timeout 0.5 s; the driver spends 4 timeouts in a checkpoint (its heartbeat goes on), then sends a request
    and, once it is served, stop. Expected: the worker serves the request and stops normally (a fixed 0.5 s deadline on the idle
    wait killed it after 0.5 s)."""
    engine = FakeEngine()
    driver, (bridge,), roles = world(1, 1, 0.5)
    worker = Worker(bridge, roles[1], engine)
    remote = RemoteEngine(roles[0], driver, tokenizer=None)
    remote._command(0, GENERATE)  # the driver's first command: its start-up is over
    worker.start()
    with distributed.phase("checkpoint", 1):
        time.sleep(2.0)
    remote._command(0, GENERATE | {"request": 1})
    deadline = time.monotonic() + 10
    while len(engine.served) < 2 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)  # served before close() (which drops requests still queued)
    remote.close()
    worker.join(10)
    assert worker.error is None, worker.error
    assert worker.result["served"]["generate"] == 2


def test_a_driver_hung_in_a_step_still_fails_the_worker_within_the_timeout(world) -> None:
    """The driver keeps beating but stays in its learner phase: not a busy state, so the worker gives up after
    about dist.timeout_s (0.5 s), naming what it waited for."""
    engine = FakeEngine()
    driver, (bridge,), roles = world(1, 1, 0.5)
    worker = Worker(bridge, roles[1], engine)
    driver.post("cmd/0/0", GENERATE)
    started = time.monotonic()
    worker.start()
    with distributed.phase("learner", 1):
        worker.join(10)
    assert time.monotonic() - started < 3
    assert isinstance(worker.error, PeerFailure), worker.error
    assert "not busy" in str(worker.error) and "learner rank 0's next command" in str(worker.error)


def test_driver_watch_decisions() -> None:
    """Hand-made beat sequences, timeout 10 s (the clock is passed in)."""
    from r1zero.roles import DriverWatch

    watch = DriverWatch(10.0, now=0.0)
    for t in range(0, 41, 2):  # 40 s in a checkpoint, beating every 2 s
        assert watch.give_up((t, "checkpoint"), float(t)) is None
    assert (
        watch.give_up((42, None), 42.0) is None
    )  # out of the checkpoint at 40 s: 10 s of patience from there
    assert watch.give_up((50, None), 50.0) is None
    assert "not busy" in str(watch.give_up((52, None), 52.0))
    frozen = DriverWatch(10.0, now=0.0)
    assert frozen.give_up((7, "checkpoint"), 0.0) is None
    assert frozen.give_up((7, "checkpoint"), 10.0) is None
    assert "heartbeat stopped 11 s ago" in str(frozen.give_up((7, "checkpoint"), 11.0))
    silent = DriverWatch(10.0, now=0.0)  # no beat at all: the old bound
    assert silent.give_up(None, 10.0) is None
    assert "no heartbeat" in str(silent.give_up(None, 10.5))


class DiesWithTheDriver:
    """The worker's view of a store hosted by the driver's process: after `gone` is set, every call fails, as a
    TCPStore client does once its server process has exited (srun, submitit: learner rank 0 hosts it)."""

    def __init__(self, store: Any, gone: threading.Event) -> None:
        self._store, self._gone = store, gone

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._store, name)

        def checked(*args: Any) -> Any:
            if self._gone.is_set():
                raise RuntimeError("Connection reset by peer (the store's host exited)")
            return call(*args)

        return checked


def test_the_driver_exits_only_after_the_worker_is_done_with_its_store(world) -> None:
    """A request in flight (max_staleness 1) when the learner stops: the worker finishes it, posts the samples
    nobody will read, then reads stop. The driver's process (the store's host) exits when close() returns.
    Expected: the worker ends normally (it failed posting to the vanished store when close() returned at once)."""
    engine = FakeEngine(slow=0.3)
    driver, (bridge,), roles = world(1, 1, 5.0)
    gone = threading.Event()
    bridge.store = DiesWithTheDriver(bridge.store, gone)
    worker = Worker(bridge, roles[1], engine)
    remote = RemoteEngine(roles[0], driver, tokenizer=None)
    remote._command(0, GENERATE)
    worker.start()
    assert engine.started.wait(10)
    remote.close()
    gone.set()
    worker.join(10)
    assert worker.error is None, worker.error
    assert worker.result["served"]["generate"] == 1
