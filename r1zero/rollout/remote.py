"""The learner's side of disaggregated mode (r1zero.roles): the rollout workers seen as one rollout engine.

`RemoteEngine` implements the RolloutEngine contract (r1zero.rollout.base) over the bridge, plus `submit` /
`fetch`, so that a request can be sent ahead of its step (r1zero.collect, max_staleness). Only learner rank 0
(the driver) talks to the workers; the other learner ranks take part in the gathers and broadcasts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from r1zero import distributed
from r1zero.roles import Bridge, PeerFailure, Role, split_replicas
from r1zero.rollout.base import SamplingSettings, TokenPair
from r1zero.types import Completion, Prompt

log = logging.getLogger("r1zero")


@dataclass
class Ticket:
    """A generate request in flight: its id, and this learner rank's rows [lo, hi) of the request's prompts."""

    request: int
    lo: int
    hi: int
    label: str
    replicas: list[int] = dataclasses.field(default_factory=list)  # those given prompts (the driver's)


class RemoteEngine:
    """The rollout workers, seen from the learner ranks as one RolloutEngine.

    generate = fetch(submit(...)); `submit` returns at once (the workers sample while the learner trains).
    Every learner rank calls each method in the same order (they are collective over the learners); only the
    driver talks to the workers.
    """

    def __init__(self, role: Role, bridge: Bridge | None, tokenizer: Any) -> None:
        self.role, self.bridge, self.tokenizer = role, bridge, tokenizer
        self.policy_version = 0
        self._sent = [0] * role.workers  # commands posted to each worker
        self._requests = 0
        self._closed = False

    # -- commands
    def _command(self, worker: int, command: dict[str, Any]) -> None:
        assert self.bridge is not None
        self.bridge.post(f"cmd/{worker}/{self._sent[worker]}", command)
        self._sent[worker] += 1

    def _to_replica(self, replica: int, command: dict[str, Any]) -> None:
        for worker in range(replica * self.role.tp, (replica + 1) * self.role.tp):
            self._command(worker, command)

    def _answer(self, key: str, waiting_for: str) -> Any:
        assert self.bridge is not None
        return self.bridge.read(key, waiting_for, watch=self.bridge.worker_failures())

    # -- the RolloutEngine contract
    def submit(
        self, prompts: Sequence[Prompt], sampling: SamplingSettings, label: str = "", step: int = 0
    ) -> Ticket:
        """Send this rank's prompts (every learner rank's, gathered: one request) to the workers, split over the
        replicas; each replica samples with the global prompt index, so seeds do not depend on the split."""
        parts = distributed.all_gather_object((len(prompts), sampling.index_offset))
        every = distributed.all_gather_object(list(prompts)) if len(parts) > 1 else [list(prompts)]
        offsets = [offset for _, offset in parts]
        counts = [count for count, _ in parts]
        if any(offsets[i] + counts[i] != offsets[i + 1] for i in range(len(parts) - 1)):
            raise ValueError(f"learner ranks' prompts are not contiguous: offsets {offsets}, counts {counts}")
        request = self._requests
        self._requests += 1
        busy: list[int] = []
        if self.bridge is not None:
            everything = [p for part in every for p in part]
            for replica, (lo, hi) in enumerate(split_replicas(len(everything), self.role.replicas)):
                if lo == hi:
                    continue  # fewer prompts than replicas
                busy.append(replica)
                sampling_r = dataclasses.replace(sampling, index_offset=offsets[0] + lo)
                command = {"op": "generate", "request": request, "prompts": everything[lo:hi],
                           "sampling": sampling_r, "offset": lo, "step": step}  # fmt: skip
                self._to_replica(replica, command)
        mine = distributed.rank()
        lo = sum(counts[:mine])
        return Ticket(request, lo, lo + counts[mine], label or f"request {request}", busy)

    def fetch(self, ticket: Ticket) -> list[Completion]:
        """The request's completions for this rank (prompt-major, prompt_index local to this rank's prompts)."""
        everything: list[Completion] | None = None
        if self.bridge is not None:
            everything = []
            for replica in ticket.replicas:
                rows = self._answer(
                    f"res/{ticket.request}/{replica}",
                    f"{self.role.replica_name(replica)}: samples of {ticket.label}",
                )
                everything += rows
        everything = distributed.broadcast_object(everything)
        return [
            dataclasses.replace(c, prompt_index=c.prompt_index - ticket.lo)
            for c in everything
            if ticket.lo <= c.prompt_index < ticket.hi
        ]

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingSettings) -> list[Completion]:
        return self.fetch(self.submit(prompts, sampling))

    def score(self, sequences: Sequence[TokenPair]) -> list[list[float]]:
        """Every replica scores the (gathered) probe under the weights it holds now; replica 0's answer comes
        back, and a replica that disagrees with it beyond 1e-3 nats (tp replicas hold the same weights: only
        kernel noise may separate them) raises, naming it."""
        every = distributed.all_gather_object(list(sequences))
        answers: list[list[list[float]]] | None = None
        if self.bridge is not None:
            request = self._requests
            self._requests += 1
            for replica in range(self.role.replicas):
                self._to_replica(
                    replica,
                    {
                        "op": "score",
                        "request": request,
                        "step": self.policy_version,
                        "sequences": [s for p in every for s in p],
                    },
                )
            answers = [self._answer(f"res/{request}/{r}", f"{self.role.replica_name(r)}: scores of the sync probe")
                       for r in range(self.role.replicas)]  # fmt: skip
            _check_replicas_agree(answers, self.role)
        first = distributed.broadcast_object(answers[0] if answers is not None else None)
        lo = sum(len(p) for p in every[: distributed.rank()])
        return first[lo : lo + len(sequences)]

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]], version: int) -> None:
        """Stream the learner's weights to every worker (all learner ranks iterate: ZeRO-3 gathers are
        collective; the driver sends). Returns once every worker has received them."""
        if self.bridge is None:
            for _ in named_tensors:
                pass
        else:
            publish_weights(self.bridge, named_tensors, version, self._command)
        self.policy_version = version

    def describe(self) -> str:
        """The workers, for error messages: "rollout replica 0 (worker 0, rank 1)", one per replica."""
        return ", ".join(self.role.replica_name(r) for r in range(self.role.replicas))

    def sleep(self) -> None:
        pass

    def wake(self) -> None:
        pass

    def close(self) -> None:
        """Tell the workers to stop (the driver; once), then wait, bounded by dist.timeout_s, until each has
        stopped: the driver may host the store (srun, submitit), and a worker still finishing a request in
        flight would fail posting its answer to a store that left with the driver's process. Not after a peer
        failed or hung (the run is failing already; a hung worker would not answer)."""
        if self._closed or self.bridge is None:
            return
        self._closed = True
        self.bridge.post("stopping", True)  # requests still queued are dropped, not generated
        for worker in range(self.role.workers):
            self._command(worker, {"op": "stop"})
        for worker in range(self.role.workers):
            if self.bridge.peer_failed:
                break
            try:
                self.bridge.read(f"stopped/{worker}", f"rollout worker {worker} to stop",
                                 watch=[f"failed/{worker + 1}"])  # fmt: skip
            except PeerFailure as err:
                log.warning("closing the rollout workers: %s", err)
        self.bridge.close()


@contextlib.contextmanager
def naming_the_workers(engine: Any, version: int) -> Iterator[None]:
    """A sync check failing inside the block names the policy version and, in disaggregated mode, the workers
    whose samples or scores disagreed (colocated engines: the error passes unchanged)."""
    from r1zero.sync import SyncVerificationError

    try:
        yield
    except SyncVerificationError as err:
        describe = getattr(engine, "describe", None)
        if describe is None:
            raise
        raise SyncVerificationError(f"{err} [policy version {version}; {describe()}]") from err


def _check_replicas_agree(answers: list[list[list[float]]], role: Role, tolerance: float = 1e-3) -> None:
    for replica, answer in enumerate(answers[1:], start=1):
        worst = max(
            (abs(a - b) for seq_a, seq_b in zip(answer, answers[0]) for a, b in zip(seq_a, seq_b)),
            default=0.0,
        )
        if not worst <= tolerance:
            from r1zero.sync import SyncVerificationError

            raise SyncVerificationError(
                f"{role.replica_name(replica)} scores the sync probe {worst:.4g} nats away from replica 0: its "
                "weights differ"
            )


def publish_weights(
    bridge: Bridge,
    named_tensors: Iterable[tuple[str, Any]],
    version: int,
    command: Callable[[int, dict], None],
) -> None:
    """Driver: announce version `version` to every worker, then each tensor: its (name, shape, dtype) header in
    the store, its data over the group. The headers of the previous version are deleted."""
    if bridge.published is not None:
        previous, tensors = bridge.published
        for i in range(tensors + 1):
            bridge.store.delete_key(f"w/{previous}/{i}")
    for worker in range(bridge.role.workers):
        command(worker, {"op": "weights", "version": version, "step": version})
    count = 0
    for name, tensor in named_tensors:
        data = tensor.detach().to(bridge.device).contiguous()
        bridge.post(f"w/{version}/{count}", (name, tuple(data.shape), data.dtype))
        bridge.broadcast(data)
        count += 1
    bridge.post(f"w/{version}/{count}", None)
    bridge.published = (version, count)
