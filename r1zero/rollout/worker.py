"""A rollout worker's side of disaggregated mode (r1zero.roles): run the driver's commands in order.

Commands (r1zero.rollout.remote posts them): generate (a replica's share of a round's prompts; the replica's
first worker posts the completions), score (the sync probe), weights (receive version v and load it), stop.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from r1zero.config import RunConfig
from r1zero.distributed import phase
from r1zero.roles import Bridge, PeerFailure, Role

log = logging.getLogger("r1zero")


def receive_weights(bridge: Bridge, version: int) -> Iterator[tuple[str, Any]]:
    """Worker: the tensors of version `version`, as they arrive (fresh buffers: the engine may keep them).

    On a GPU the calling thread's current device is set to the bridge's first: the read-ahead thread runs this,
    and a new thread starts on GPU 0 whatever the main thread chose (NCCL works on the current device)."""
    import torch

    if bridge.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(bridge.device))
    index = 0
    while True:
        header = bridge.read(f"w/{version}/{index}", f"the learner's weights (version {version})", delete=False,
                             watch=["failed/0"])  # fmt: skip
        if header is None:
            return
        name, shape, dtype = header
        tensor = torch.empty(shape, dtype=dtype, device=bridge.device)
        bridge.broadcast(tensor)
        yield name, tensor
        index += 1


def _fits(held: list[int], size: int, max_bytes: int) -> bool:
    return held[0] == 0 or held[0] + size <= max_bytes


def read_ahead(stream: Iterator[tuple[str, Any]], max_bytes: int) -> Iterator[tuple[str, Any]]:
    """`stream`'s items, received by a background thread up to `max_bytes` ahead of the consumer (at least one
    tensor), so that the sender is not held back by what the consumer does with each item (the engine's reload).
    An error in the thread is raised to the consumer. max_bytes 0: `stream` itself.

    Example: 3 tensors of 4 MB, max_bytes 8 MB: the thread receives two while the engine loads nothing, then one
    more each time the engine takes one."""
    if max_bytes <= 0:
        yield from stream
        return
    items: queue.Queue[Any] = queue.Queue()
    room = threading.Condition()
    held = [0]
    done = object()

    def receive() -> None:
        try:
            for name, tensor in stream:
                size = tensor.numel() * tensor.element_size()
                with room:
                    room.wait_for(partial(_fits, held, size, max_bytes))
                    held[0] += size
                items.put((name, tensor, size))
            items.put(done)
        except BaseException as err:  # handed to the consumer
            items.put(err)

    thread = threading.Thread(target=receive, name="r1zero-weights", daemon=True)
    thread.start()
    while True:
        item = items.get()
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        name, tensor, size = item
        with room:
            held[0] -= size
            room.notify()
        yield name, tensor
    thread.join()


def serve_rollouts(
    cfg: RunConfig, role: Role, bridge: Bridge, release: list[Callable[[], None]]
) -> dict[str, Any]:
    """A rollout worker's life: build the engine, then run the driver's commands in order until "stop"."""
    import torch

    from r1zero.models import resolve_model
    from r1zero.rollout.engines import build_engine

    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    engine = build_engine(
        resolve_model(cfg.model.name),
        cfg.rollout,
        seed=cfg.seed,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    release.append(engine.close)
    served = {"generate": 0, "score": 0, "weights": 0}
    busy = 0.0
    started = time.perf_counter()
    index = 0
    try:
        while True:
            key, waiting_for = f"cmd/{role.worker}/{index}", "learner rank 0's next command"
            command = bridge.read(key, waiting_for, watch=["failed/0"], patient=True)
            index += 1
            op = command["op"]
            if op == "stop":
                break
            if op in ("generate", "score") and _dropped(command, bridge, role):
                continue  # the learner is closing: nobody will read the answer (a stopped run's requests ahead)
            begin = time.perf_counter()
            with phase(f"worker_{op}", int(command.get("step", 0))):
                _execute(command, engine, bridge, role, cfg.roles.read_ahead_mb << 20)
            served[op] += 1
            busy += time.perf_counter() - begin
    except PeerFailure as err:
        bridge.report_failure(f"{type(err).__name__}: {err}")
        raise PeerFailure(f"{role.name()}, after {sum(served.values())} commands: {err}") from err
    except BaseException as err:
        bridge.report_failure(f"{type(err).__name__}: {err}")
        raise
    engine.close()
    # The last use of the store, which the driver may host (srun, submitit): it waits for this before it exits.
    bridge.post(f"stopped/{role.worker}", True)
    wall = time.perf_counter() - started
    log.warning(
        "%s: %d generate, %d weight, %d score commands; busy %.0f%% of %.0f s",
        role.name(), served["generate"], served["weights"], served["score"], 100 * busy / max(wall, 1e-9), wall,
    )  # fmt: skip
    return {"role": "rollout_worker", "served": served, "busy_s": busy, "wall_s": wall}


def _dropped(command: dict[str, Any], bridge: Bridge, role: Role) -> bool:
    """Whether to skip a generate/score request because the learner is closing (`stopping` posted): nobody
    will read the answer. The key appears at any moment, so a replica's tp ranks, reading it at different
    times, could disagree and one would enter the request's tensor-parallel collectives alone (a hang): with
    tp > 1 the replica's first rank to reach the request decides for all, by request id (Bridge.agree)."""
    stopping = bool(bridge.store.check(["stopping"]))
    if role.tp == 1:
        return stopping
    key = f"drop/{command['request']}/{role.replica}"
    return bridge.agree(key, "drop" if stopping else "run", role.tp) == "drop"


def _execute(
    command: dict[str, Any], engine: Any, bridge: Bridge, role: Role, read_ahead_bytes: int = 0
) -> None:
    """One driver command on a worker (the replica's first worker posts the answer)."""
    op, leader = command["op"], role.worker % role.tp == 0
    if op == "generate":
        rows = engine.generate(command["prompts"], command["sampling"])
        rows = [dataclasses.replace(c, prompt_index=c.prompt_index + command["offset"]) for c in rows]
        if leader:
            bridge.post(f"res/{command['request']}/{role.replica}", rows)
    elif op == "score":
        scores = engine.score(command["sequences"])
        if leader:
            bridge.post(f"res/{command['request']}/{role.replica}", scores)
    elif op == "weights":
        stream = read_ahead(receive_weights(bridge, command["version"]), read_ahead_bytes)
        engine.update_weights(stream, command["version"])
        for _ in stream:  # whatever the engine did not consume: every worker joins every broadcast
            pass
    else:
        raise ValueError(f"unknown command {op!r}")
