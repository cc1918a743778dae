"""Disaggregated mode: rollout workers and learner ranks in processes of their own, running at the same time.

    torchrun --nproc_per_node 2 -m r1zero.train roles.mode=disaggregated roles.rollout_workers=1

The launched processes (torchrun, srun, submitit: the same launch as colocated mode) split by rank: ranks [0, L)
learn (DeepSpeed, ZeRO-2/3; rank 0 is the driver: it logs, checkpoints and talks to the workers), ranks [L, W)
sample (each a rollout engine; `rollout.tensor_parallel_size` consecutive workers form one replica). Each role
gets its own default process group (the learners' is DeepSpeed's world, the workers' is vLLM's), so neither
library sees the other's ranks. Between the driver and the workers, the bridge:
  - commands and samples: pickled messages in the launcher's TCP store (prompts in; token ids, sampling
    logprobs and policy versions out), `cmd/<worker>/<n>` driver -> worker, `res/<request>/<replica>` back;
  - weights: a torch.distributed group of the driver and every worker (gloo on CPU, NCCL on GPUs), streamed
    parameter by parameter (ZeRO-3 gathers one at a time), stamped with the policy version.
A worker executes its commands in order, so whatever the driver requests after publishing version v is sampled
with v or later: the learner bounds staleness by how far ahead it requests (`r1zero.collect`, max_staleness).
The learner side sees the workers as one `RemoteEngine` (a RolloutEngine), so the training loop is the same in
both modes. A peer that dies or hangs fails the other side within dist.timeout_s, naming role, rank and request.
Tested on CPU (gloo); the NCCL group is written for GPUs but was never run on one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from r1zero import distributed
from r1zero.config import RunConfig
from r1zero.distributed import phase
from r1zero.rollout.base import SamplingSettings, TokenPair
from r1zero.types import Completion, Prompt

log = logging.getLogger("r1zero")


class PeerFailure(RuntimeError):
    """The other side of the bridge failed, hung, or went away; the message names it."""


def role_counts(world: int, rollout_workers: int, tensor_parallel_size: int) -> tuple[int, int]:
    """(learner ranks L, rollout workers N) of a disaggregated world of `world` processes, checked.

    Example: world 4, 2 workers, tp 2 -> (2, 2): ranks 0-1 learn, ranks 2-3 form one tp-2 replica.
    """
    if world < 2:
        raise ValueError(
            f"roles.mode=disaggregated needs at least 2 processes (learner + rollout worker); got {world}. "
            "Launch with torchrun --nproc_per_node N (or srun), or use roles.mode=colocated"
        )
    if not 1 <= rollout_workers < world:
        raise ValueError(
            f"roles.rollout_workers={rollout_workers} must leave at least one learner rank among the {world} "
            f"processes (1 <= rollout_workers <= {world - 1})"
        )
    if rollout_workers % tensor_parallel_size:
        raise ValueError(
            f"rollout.tensor_parallel_size ({tensor_parallel_size}) must divide roles.rollout_workers "
            f"({rollout_workers}): each replica is tensor_parallel_size consecutive workers"
        )
    return world - rollout_workers, rollout_workers


@dataclass(frozen=True)
class Role:
    """This process's place in a disaggregated world: global rank `rank` of L learners + N workers."""

    rank: int
    learners: int
    workers: int
    tp: int = 1

    @property
    def is_worker(self) -> bool:
        return self.rank >= self.learners

    @property
    def worker(self) -> int:
        """Index among the workers (worker ranks only)."""
        return self.rank - self.learners

    @property
    def replica(self) -> int:
        return self.worker // self.tp

    @property
    def replicas(self) -> int:
        return self.workers // self.tp

    def replica_name(self, replica: int) -> str:
        """Example: tp 2, 2 learners, replica 1 -> "rollout replica 1 (workers 2-3, ranks 4-5)"."""
        first, last = replica * self.tp, (replica + 1) * self.tp - 1
        workers = f"worker {first}" if first == last else f"workers {first}-{last}"
        ranks = (
            f"rank {first + self.learners}"
            if first == last
            else f"ranks {first + self.learners}-{last + self.learners}"
        )
        return f"rollout replica {replica} ({workers}, {ranks})"

    @property
    def bridge_rank(self) -> int | None:
        """0 for the driver (learner rank 0), 1 + worker index for workers, None for the other learners."""
        if self.is_worker:
            return 1 + self.worker
        return 0 if self.rank == 0 else None

    def name(self) -> str:
        if self.is_worker:
            return f"rollout worker {self.worker} (rank {self.rank})"
        return f"learner rank {self.rank}"


def split_replicas(count: int, replicas: int) -> list[tuple[int, int]]:
    """[lo, hi) of `count` prompts for each replica: contiguous, sizes differ by <= 1.
    Example: 5 prompts, 2 replicas -> [(0, 3), (3, 5)]."""
    base, extra = divmod(count, replicas)
    bounds, lo = [], 0
    for r in range(replicas):
        hi = lo + base + (1 if r < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


class Bridge:
    """Messages (TCP store) and weights (a process group) between the driver (bridge rank 0) and the workers."""

    def __init__(self, store: Any, role: Role, timeout_s: float, backend: str) -> None:
        import torch.distributed as dist

        self.role, self.timeout_s = role, timeout_s
        self.store = dist.PrefixStore("r1zero/bridge/", store)
        self.size, self.rank = role.workers + 1, role.bridge_rank
        assert self.rank is not None
        timeout = datetime.timedelta(seconds=timeout_s)
        self.group: Any
        group_store = dist.PrefixStore("r1zero/bridge-group/", store)
        if backend == "nccl":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.group = dist.ProcessGroupNCCL(group_store, self.rank, self.size, options)
            self.device = "cuda"
        else:
            self.group = dist.ProcessGroupGloo(group_store, self.rank, self.size, timeout)
            self.device = "cpu"

    def post(self, key: str, obj: Any) -> None:
        self.store.set(key, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))  # type: ignore[arg-type]

    def read(self, key: str, waiting_for: str, *, delete: bool = True, watch: Sequence[str] = ()) -> Any:
        """The object posted under `key`, waiting up to timeout_s. A failure posted under a `watch` key (a peer's
        `failed/<name>`) raises PeerFailure at once with the peer's message."""
        deadline, pause = time.monotonic() + self.timeout_s, 0.0005
        while not self.store.check([key]):
            for failed in watch:
                if self.store.check([failed]):
                    raise PeerFailure(
                        f"{pickle.loads(self.store.get(failed))} (while waiting for {waiting_for})"
                    )
            if time.monotonic() > deadline:
                raise PeerFailure(
                    f"no answer within dist.timeout_s={self.timeout_s:g} s while waiting for {waiting_for}"
                )
            time.sleep(pause)
            pause = min(0.02, pause * 2)
        data = self.store.get(key)
        if delete:
            self.store.delete_key(key)
        return pickle.loads(data)

    def report_failure(self, message: str) -> None:
        """Tell the other side this process failed (best effort: the store may be gone already)."""
        with contextlib.suppress(Exception):
            self.post(f"failed/{self.rank}", f"{self.role.name()} failed: {message}")

    def broadcast(self, tensor: Any) -> None:
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([tensor], options).wait()

    def worker_failures(self) -> list[str]:
        return [f"failed/{b}" for b in range(1, self.size)]


def join_role(cfg: RunConfig) -> tuple[Role, Bridge | None]:
    """Split the launched world by role (see the module doc): each role's default process group, and the bridge
    for the driver and the workers. Sets RANK / WORLD_SIZE in os.environ to the role's own world (LOCAL_RANK
    keeps choosing the device)."""
    import torch
    import torch.distributed as dist

    distributed.apply_launcher_env()
    if "RANK" not in os.environ:
        raise ValueError("roles.mode=disaggregated needs a launcher (torchrun, srun): RANK is not set")
    world, rank = distributed.world_size(), distributed.rank()
    learners, workers = role_counts(world, cfg.roles.rollout_workers, cfg.rollout.tensor_parallel_size)
    role = Role(rank, learners, workers, cfg.rollout.tensor_parallel_size)
    distributed.set_identity(rank, role.name())
    timeout = datetime.timedelta(seconds=cfg.dist.timeout_s)
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent hosts the store
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), None, rank == 0 and not agent_store,
        timeout=timeout, wait_for_workers=False,
    )  # fmt: skip
    if role.is_worker:
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(role.worker), str(workers)
        prefix = "r1zero/workers/"
    else:
        os.environ["WORLD_SIZE"] = str(learners)
        prefix = "r1zero/learners/"
    backend = cfg.dist.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    # The workers' world is what vLLM's engines use (a replica's tp ranks; data parallel replicas beside them).
    distributed.init_process_group(cfg.dist.timeout_s, backend, store=dist.PrefixStore(prefix, store))
    bridge = Bridge(store, role, cfg.dist.timeout_s, backend) if role.bridge_rank is not None else None
    log.info("%s of %d learner ranks + %d rollout workers", role.name(), learners, workers)
    return role, bridge


# ---------------------------------------------------------------------------------------------- learner side


@dataclass
class Ticket:
    """A generate request in flight: its id, and this learner rank's rows [lo, hi) of the request's prompts."""

    request: int
    lo: int
    hi: int
    label: str


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
        if self.bridge is not None:
            everything = [p for part in every for p in part]
            for replica, (lo, hi) in enumerate(split_replicas(len(everything), self.role.replicas)):
                sampling_r = dataclasses.replace(sampling, index_offset=offsets[0] + lo)
                command = {"op": "generate", "request": request, "prompts": everything[lo:hi],
                           "sampling": sampling_r, "offset": lo, "step": step}  # fmt: skip
                self._to_replica(replica, command)
        mine = distributed.rank()
        lo = sum(counts[:mine])
        return Ticket(request, lo, lo + counts[mine], label or f"request {request}")

    def fetch(self, ticket: Ticket) -> list[Completion]:
        """The request's completions for this rank (prompt-major, prompt_index local to this rank's prompts)."""
        everything: list[Completion] | None = None
        if self.bridge is not None:
            everything = []
            for replica in range(self.role.replicas):
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
        """Tell the workers to stop (the driver; once)."""
        if self._closed or self.bridge is None:
            return
        self._closed = True
        for worker in range(self.role.workers):
            self._command(worker, {"op": "stop"})


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
    previous = getattr(bridge, "_published", None)
    if previous is not None:
        for i in range(previous[1] + 1):
            bridge.store.delete_key(f"w/{previous[0]}/{i}")
    for worker in range(bridge.role.workers):
        command(worker, {"op": "weights", "version": version, "step": version})
    count = 0
    for name, tensor in named_tensors:
        data = tensor.detach().to(bridge.device).contiguous()
        bridge.post(f"w/{version}/{count}", (name, tuple(data.shape), data.dtype))
        bridge.broadcast(data)
        count += 1
    bridge.post(f"w/{version}/{count}", None)
    bridge._published = (version, count)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------- worker side


def receive_weights(bridge: Bridge, version: int) -> Iterator[tuple[str, Any]]:
    """Worker: the tensors of version `version`, as they arrive (fresh buffers: the engine may keep them)."""
    import torch

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


def serve_rollouts(
    cfg: RunConfig, role: Role, bridge: Bridge, release: list[Callable[[], None]]
) -> dict[str, Any]:
    """A rollout worker's life: build the engine, then run the driver's commands in order until "stop"."""
    import torch

    from r1zero.models import resolve_model
    from r1zero.rollout.base import build_engine

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
            command = bridge.read(
                f"cmd/{role.worker}/{index}", "learner rank 0's next command", watch=["failed/0"]
            )
            index += 1
            op = command["op"]
            if op == "stop":
                break
            begin = time.perf_counter()
            with phase(f"worker_{op}", int(command.get("step", 0))):
                _execute(command, engine, bridge, role)
            served[op] += 1
            busy += time.perf_counter() - begin
    except PeerFailure as err:
        bridge.report_failure(f"{type(err).__name__}: {err}")
        raise PeerFailure(f"{role.name()}, after {sum(served.values())} commands: {err}") from err
    except BaseException as err:
        bridge.report_failure(f"{type(err).__name__}: {err}")
        raise
    engine.close()
    wall = time.perf_counter() - started
    log.warning(
        "%s: %d generate, %d weight, %d score commands; busy %.0f%% of %.0f s",
        role.name(), served["generate"], served["weights"], served["score"], 100 * busy / max(wall, 1e-9), wall,
    )  # fmt: skip
    return {"role": "rollout_worker", "served": served, "busy_s": busy, "wall_s": wall}


def _execute(command: dict[str, Any], engine: Any, bridge: Bridge, role: Role) -> None:
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
        stream = receive_weights(bridge, command["version"])
        engine.update_weights(stream, command["version"])
        for _ in stream:  # whatever the engine did not consume: every worker joins every broadcast
            pass
    else:
        raise ValueError(f"unknown command {op!r}")
