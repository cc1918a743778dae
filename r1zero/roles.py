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
both modes. A peer that dies or hangs fails the other side within dist.timeout_s, naming role, rank and request;
a worker waiting for its next command follows the driver's heartbeat instead (see `DriverWatch`): the driver may
legitimately keep it idle for longer (building the learner, resuming, saving a checkpoint or the final model).
Tested on CPU (gloo); the NCCL group is written for GPUs but was never run on one.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import pickle
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from r1zero import distributed
from r1zero.config import RunConfig
from r1zero.dp import contiguous_split

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


def bridge_device(backend: str, local_rank: int) -> str:
    """Where the bridge's weight buffers live: this process's own GPU with NCCL, indexed, because a bare "cuda"
    means the calling thread's current device, which is GPU 0 in any new thread (the read-ahead receiver).
    Example: nccl, LOCAL_RANK 3 -> "cuda:3"; gloo -> "cpu"."""
    return f"cuda:{local_rank}" if backend == "nccl" else "cpu"


HEARTBEAT_S = 5.0  # the driver's heartbeat period (shorter with a small dist.timeout_s: heartbeat_interval)
# The driver's phases that may keep the workers idle for longer than dist.timeout_s with nothing wrong: building
# the learner and resuming (setup), saving a checkpoint or the final model (checkpoint). Start-up before the
# first command counts as busy too. In every other phase a worker waits at most dist.timeout_s for a command.
BUSY_PHASES = frozenset({"setup", "checkpoint"})


def heartbeat_interval(timeout_s: float) -> float:
    """Seconds between beats: HEARTBEAT_S, or a tenth of the timeout when that is shorter (ten beats per
    timeout). Example: timeout 1800 -> 5; timeout 20 -> 2."""
    return min(HEARTBEAT_S, timeout_s / 10)


class DriverWatch:
    """A worker's patience while it waits for its next command, from the driver's beats (count, busy).

    It gives up when (a) the beat count has not changed for timeout_s (the driver's process froze, died or lost
    the store; no beat at all: counted from the start of the wait), or (b) the driver has been out of its busy
    states for timeout_s without sending a command (hung in a step: the old fixed deadline, now only where a
    long wait is a fault). A busy driver that keeps beating is waited for as long as it takes.

    Example, timeout 10: beats advancing, busy "checkpoint" for 40 s, then busy None from t = 40: gives up at
    t > 50, not at t = 10."""

    def __init__(self, timeout_s: float, now: float) -> None:
        self.timeout_s = timeout_s
        self.count: int | None = None
        self.beat_at = self.idle_since = now

    def give_up(self, beat: tuple[int, str | None] | None, now: float) -> str | None:
        """Why to stop waiting at time `now` given the latest beat, or None to wait on."""
        if beat is not None:
            count, busy = beat
            if count != self.count:
                self.count, self.beat_at = count, now
            if busy is not None:
                self.idle_since = now
        if now - self.beat_at > self.timeout_s:
            if self.count is None:
                return f"no answer within dist.timeout_s={self.timeout_s:g} s (no heartbeat from the driver)"
            return f"learner rank 0's heartbeat stopped {now - self.beat_at:.0f} s ago (dist.timeout_s)"
        if now - self.idle_since > self.timeout_s:
            return f"no answer within dist.timeout_s={self.timeout_s:g} s (learner rank 0 not busy)"
        return None


def split_replicas(count: int, replicas: int) -> list[tuple[int, int]]:
    """[lo, hi) of `count` prompts for each replica: contiguous, sizes differ by <= 1.
    Example: 5 prompts, 2 replicas -> [(0, 3), (3, 5)]."""
    return [contiguous_split(count, replicas, r) for r in range(replicas)]


class Bridge:
    """Messages (TCP store) and weights (a process group) between the driver (bridge rank 0) and the workers."""

    def __init__(self, store: Any, role: Role, timeout_s: float, backend: str) -> None:
        import torch.distributed as dist

        self.role, self.timeout_s = role, timeout_s
        self.store = dist.PrefixStore("r1zero/bridge/", store)
        self.size, self.rank = role.workers + 1, role.bridge_rank
        self.published: tuple[int, int] | None = None  # (version, tensors) of the last push (the driver's)
        self.peer_failed = False  # a read gave up on a peer (failed or hung): the driver then does not wait
        self.commanded = False  # the driver has posted a command (its start-up is over)
        assert self.rank is not None
        timeout = datetime.timedelta(seconds=timeout_s)
        self.group: Any
        group_store = dist.PrefixStore("r1zero/bridge-group/", store)
        self.device = bridge_device(backend, distributed.local_rank())
        if backend == "nccl":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.group = dist.ProcessGroupNCCL(group_store, self.rank, self.size, options)
        else:
            self.group = dist.ProcessGroupGloo(group_store, self.rank, self.size, timeout)
        self._stop_beating = threading.Event()
        self._heart: threading.Thread | None = None
        if self.rank == 0:
            self._heart = threading.Thread(target=self._beat, name="r1zero-heartbeat", daemon=True)
            self._heart.start()

    def post(self, key: str, obj: Any) -> None:
        self.store.set(key, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))  # type: ignore[arg-type]
        if key.startswith("cmd/"):
            self.commanded = True

    def read(
        self,
        key: str,
        waiting_for: str,
        *,
        delete: bool = True,
        watch: Sequence[str] = (),
        patient: bool = False,
    ) -> Any:
        """The object posted under `key`, waiting up to timeout_s. A failure posted under a `watch` key (a peer's
        `failed/<name>`) raises PeerFailure at once with the peer's message. patient (a worker's wait for its
        next command): no fixed deadline, the driver's heartbeat decides (`DriverWatch`)."""
        started = time.monotonic()
        deadline, pause, patience = started + self.timeout_s, 0.0005, DriverWatch(self.timeout_s, started)
        beat_due = started
        while not self.store.check([key]):
            for failed in watch:
                if self.store.check([failed]):
                    self.peer_failed = True
                    raise PeerFailure(
                        f"{pickle.loads(self.store.get(failed))} (while waiting for {waiting_for})"
                    )
            now, reason = time.monotonic(), None
            if not patient and now > deadline:
                reason = f"no answer within dist.timeout_s={self.timeout_s:g} s"
            elif patient and now >= beat_due:
                beat_due = now + heartbeat_interval(self.timeout_s)
                reason = patience.give_up(self._last_beat(), now)
            if reason is not None:
                self.peer_failed = True
                raise PeerFailure(f"{reason} while waiting for {waiting_for}")
            time.sleep(pause)
            pause = min(0.02, pause * 2)
        data = self.store.get(key)
        if delete:
            self.store.delete_key(key)
        return pickle.loads(data)

    def agree(self, key: str, proposal: str, voters: int) -> str:
        """The first of `voters` processes to call this for `key` decides for all: each gets the first proposal
        (an atomic compare-and-set in the store). The last voter removes the keys.

        Example: a tp-2 replica's rank A proposes "run" before the driver posted `stopping`, rank B "drop" after:
        both get "run", so both enter the request's tensor-parallel collectives (or both skip them)."""
        decided = self.store.compare_set(key, "", proposal)
        if self.store.add(f"{key}/votes", 1) == voters:
            self.store.delete_key(key)
            self.store.delete_key(f"{key}/votes")
        return decided.decode() if isinstance(decided, bytes) else str(decided)

    # -- the driver's heartbeat
    def _beat(self) -> None:
        """Driver thread: post (count, busy) every heartbeat_interval; busy names what keeps the workers idle
        legitimately (start-up until the first command, or a BUSY_PHASES phase of the main thread), else None."""
        count = 0
        while True:
            count += 1
            phase_name = distributed.current_phase()
            busy = "start-up" if not self.commanded else phase_name if phase_name in BUSY_PHASES else None
            with contextlib.suppress(Exception):  # the store is going away: the process is exiting
                self.post("beat", (count, busy))
            if self._stop_beating.wait(heartbeat_interval(self.timeout_s)):
                return

    def _last_beat(self) -> tuple[int, str | None] | None:
        return pickle.loads(self.store.get("beat")) if self.store.check(["beat"]) else None

    def close(self) -> None:
        """Stop the heartbeat (the driver, once the workers have stopped)."""
        self._stop_beating.set()
        if self._heart is not None:
            self._heart.join(timeout=5)

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
    import torch.distributed as dist

    distributed.apply_launcher_env()
    if "RANK" not in os.environ:
        raise ValueError("roles.mode=disaggregated needs a launcher (torchrun, srun): RANK is not set")
    world, rank = distributed.world_size(), distributed.rank()
    learners, workers = role_counts(world, cfg.roles.rollout_workers, cfg.rollout.tensor_parallel_size)
    role = Role(rank, learners, workers, cfg.rollout.tensor_parallel_size)
    distributed.set_identity(role.name())
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
    backend = distributed.resolve_backend(cfg.dist.backend)
    # The workers' world is what vLLM's engines use (a replica's tp ranks; data parallel replicas beside them).
    distributed.init_process_group(cfg.dist.timeout_s, backend, store=dist.PrefixStore(prefix, store))
    bridge = Bridge(store, role, cfg.dist.timeout_s, backend) if role.bridge_rank is not None else None
    log.info("%s of %d learner ranks + %d rollout workers", role.name(), learners, workers)
    return role, bridge
