"""torch.distributed setup shared by the learner and the loop (gloo on CPU, NCCL on GPUs).

Where the rank comes from, first match wins:
  - torchrun (and `deepspeed`): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are already set;
  - Slurm `srun` (one task per GPU) or a submitit job: SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and the first
    host of SLURM_JOB_NODELIST (or submitit's local SUBMITIT_LOCAL_*) are mapped onto those variables here;
  - nothing: a world of one on a free loopback port (only LOCAL_RANK=0 is set, see below), so
    the same code path (DeepSpeed needs a process group) serves `r1zero-train` and `torchrun --nproc_per_node N`.

Failure behaviour: every collective, including those DeepSpeed and vLLM run on groups they create later, waits
at most `timeout_s`; `phase(name, step)` turns any exception inside a phase of the loop (a collective that timed
out or lost its peer included) into `RankFailure("rank R failed in phase P at step S: ...")`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- launcher env


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list -> host names, in order (what `scontrol show hostnames` prints).

    Example: "node[01-03],gpu7" -> ["node01", "node02", "node03", "gpu7"]; "r[1-2]-n[8,10]" -> ["r1-n8",
    "r1-n10", "r2-n8", "r2-n10"]. Zero padding of a range is kept ("[08-10]" -> 08, 09, 10).
    """
    hosts: list[str] = []
    for item in re.findall(r"(?:[^,\[]+|\[[^\]]*\])+", hostlist):
        expanded = [""]
        for literal, bracket in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", item):
            choices = [literal]
            if bracket:
                choices = [literal + value for value in _expand_ranges(bracket)]
            expanded = [prefix + choice for prefix in expanded for choice in choices]
        hosts.extend(h for h in expanded if h)
    return hosts


def _expand_ranges(spec: str) -> list[str]:
    """ "01-03,7" -> ["01", "02", "03", "7"] (the inside of one bracket)."""
    out: list[str] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1))
        elif part:
            out.append(part)
    return out


def launcher_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The torch.distributed variables a Slurm task or a submitit job implies; {} when RANK is already set or
    neither launcher is there. Pure (reads only `environ`), so it is unit-tested.

    Slurm: RANK = SLURM_PROCID, WORLD_SIZE = SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), LOCAL_RANK = SLURM_LOCALID,
    MASTER_ADDR = the first host of SLURM_STEP_NODELIST / SLURM_JOB_NODELIST, MASTER_PORT = 20000 +
    SLURM_JOB_ID % 20000 (every task computes the same one) unless set. Only inside a job step (SLURM_STEP_ID
    set, i.e. under `srun`): a plain `python` in an `salloc` shell stays a world of one. R1ZERO_SLURM_ENV=0 turns
    the mapping off.
    """
    if "RANK" in environ or environ.get("R1ZERO_SLURM_ENV", "1") == "0":
        return {}
    if environ.get("SUBMITIT_EXECUTOR") == "local" and "SUBMITIT_LOCAL_GLOBALID" in environ:
        job = environ.get("SUBMITIT_LOCAL_JOB_ID", "0")
        return {
            "RANK": environ["SUBMITIT_LOCAL_GLOBALID"],
            "WORLD_SIZE": environ.get("SUBMITIT_LOCAL_NTASKS", "1"),
            "LOCAL_RANK": environ.get("SUBMITIT_LOCAL_LOCALID", "0"),
            "MASTER_ADDR": environ.get("MASTER_ADDR", "127.0.0.1"),
            "MASTER_PORT": environ.get("MASTER_PORT", str(20000 + _job_number(job) % 20000)),
        }
    if "SLURM_PROCID" in environ and "SLURM_STEP_ID" in environ:
        nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        hosts = expand_hostlist(nodelist)
        world = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS", "1")
        return {
            "RANK": environ["SLURM_PROCID"],
            "WORLD_SIZE": world,
            "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
            "MASTER_ADDR": environ.get("MASTER_ADDR", hosts[0] if hosts else "127.0.0.1"),
            "MASTER_PORT": environ.get(
                "MASTER_PORT", str(20000 + _job_number(environ.get("SLURM_JOB_ID", "0")) % 20000)
            ),
        }
    return {}


def _job_number(job_id: str) -> int:
    digits = re.sub(r"\D", "", job_id)  # array jobs: "1234_5" -> 12345
    return int(digits) if digits else 0


def apply_launcher_env() -> dict[str, str]:
    """Map a Slurm/submitit task's variables onto torch.distributed's (see `launcher_env`); returns them."""
    mapped = launcher_env(os.environ)
    os.environ.update(mapped)
    return mapped


# ---------------------------------------------------------------------------------------------- the process group


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


# A disaggregated run (r1zero.roles) gives each role its own world (RANK is then the rank within the role):
# failures name the role.
_ROLE_NAME: str | None = None


def set_identity(name: str) -> None:
    """Name this process in failures once roles split the world, e.g. "rollout worker 0 (rank 1)"."""
    global _ROLE_NAME
    _ROLE_NAME = name


def rank_name() -> str:
    """ "rank 3", or with roles e.g. "rollout worker 0 (rank 1)"."""
    return _ROLE_NAME if _ROLE_NAME is not None else f"rank {rank()}"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def resolve_backend(backend: str) -> str:
    """dist.backend as torch.distributed takes it: "auto" -> nccl when a GPU is visible, gloo otherwise."""
    if backend != "auto":
        return backend
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group(timeout_s: float = 1800.0, backend: str = "auto", store: Any = None) -> None:
    """Initialise torch.distributed once (idempotent); single-process runs get a loopback world of one.

    `timeout_s` bounds every collective: the default group's, and (by setting torch's default) those of the
    groups DeepSpeed and vLLM create afterwards without a timeout of their own (30 min otherwise).
    `store`: rendezvous through this store with RANK / WORLD_SIZE as set in os.environ (r1zero.roles gives each
    role its own world this way); None: the launcher's env:// rendezvous.
    """
    import torch
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    if is_initialized():
        return
    apply_launcher_env()
    backend = resolve_backend(backend)
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    timeout = datetime.timedelta(seconds=timeout_s)
    c10d.default_pg_timeout = timeout  # read by new_group() when no timeout is passed
    if hasattr(c10d, "default_pg_nccl_timeout"):
        c10d.default_pg_nccl_timeout = timeout
    if store is not None:
        dist.init_process_group(backend, store=store, rank=rank(), world_size=world_size(), timeout=timeout)
        return
    if "RANK" in os.environ:
        dist.init_process_group(backend=backend, timeout=timeout)
        return
    # A world of one, set up without writing RANK / MASTER_PORT into os.environ: a child process (a test, a
    # launcher) would inherit them and try to listen on the port this process already holds. LOCAL_RANK only,
    # which DeepSpeed insists on (harmless in a child: without RANK it is a world of one too).
    os.environ.setdefault("LOCAL_RANK", "0")
    url = f"tcp://127.0.0.1:{_free_port()}"
    dist.init_process_group(backend=backend, init_method=url, rank=0, world_size=1, timeout=timeout)


def shutdown(clean: bool = True) -> None:
    """Destroy every process group this process holds (best effort; a no-op when none is): the end of a run, on
    success, Ctrl-C and error alike. NCCL warns at exit about groups left alive ("destroy_process_group() was
    not called before program exit, which can leak resources").

    clean (the run returned normally, on every rank of the group): first a barrier, so that no rank tears its
    connections down while a peer still has an operation in flight with it (CI saw one learner rank of a gloo run
    abort at exit, "terminate called without an active exception", while the other was still stopping the
    rollout workers). After an error or Ctrl-C a peer may never arrive: no barrier then."""
    global _OBJECT_GROUP
    if not is_initialized():
        return
    import torch.distributed as dist

    if clean and dist.get_world_size() > 1:
        try:
            dist.barrier()
        except Exception as err:  # a peer gone: tear down anyway
            log.warning("barrier before destroy_process_group failed: %s", err)
    _OBJECT_GROUP = None
    try:
        dist.destroy_process_group()
    except Exception as err:  # a peer gone or a communicator already aborted: nothing left to release
        log.debug("destroy_process_group: %s", err)


_OBJECT_GROUP: Any = None


def _object_group() -> Any:
    """The group for pickled-object collectives: the default one on gloo, a gloo side group next to NCCL (so
    metrics and texts never travel through GPU memory)."""
    import torch.distributed as dist

    global _OBJECT_GROUP
    if dist.get_backend() == "gloo":
        return None
    if _OBJECT_GROUP is None:
        _OBJECT_GROUP = dist.new_group(backend="gloo")
    return _OBJECT_GROUP


def _multi() -> bool:
    import torch.distributed as dist

    return is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(value: float) -> float:
    """Sum a Python number over ranks (identity in a world of one)."""
    return _all_reduce(value, "sum")


def all_reduce_max(value: float) -> float:
    """Largest of a Python number over ranks (identity in a world of one; NaN on any rank gives NaN)."""
    return _all_reduce(value, "max")


def _all_reduce(value: float, op: str) -> float:
    import torch
    import torch.distributed as dist

    if not _multi():
        return value
    device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return float(tensor.item())


def all_gather_object(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] in a world of one)."""
    import torch.distributed as dist

    if not _multi():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_object_group())
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s obj on every rank."""
    import torch.distributed as dist

    if not _multi():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_object_group())
    return box[0]


def barrier() -> None:
    import torch.distributed as dist

    if _multi():
        dist.barrier(group=_object_group())


# ---------------------------------------------------------------------------------------------- failures


class RankFailure(RuntimeError):
    """A rank failed inside a phase of the loop; the message names the rank, the phase and the step."""


@contextlib.contextmanager
def phase(name: str, step: int) -> Iterator[None]:
    """Run one phase of the loop (rollout, reward, learner, sync, checkpoint, eval, ...): an exception inside it
    (a collective that timed out or whose peer died included) becomes RankFailure naming rank, phase and step.

    The main thread's phases are recorded for `current_phase` (the driver's heartbeat tells the rollout workers
    what it is doing). tests/distributed inject faults here (their fault_hook wraps this function)."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        _PHASES.append(name)
    try:
        yield
    except RankFailure:
        raise
    except Exception as err:
        raise RankFailure(
            f"{rank_name()} failed in phase {name} at step {step}: {type(err).__name__}: {err}"
        ) from err
    finally:
        if main:
            _PHASES.pop()


_PHASES: list[str] = []  # the main thread's open phases, innermost last


def current_phase() -> str | None:
    """The innermost phase the main thread is in (None between phases). Read from other threads: the loop runs
    in the main thread, so a worker thread's own phases (a test's) do not count."""
    last = _PHASES[-1:]  # one slice: atomic, while the main thread may pop
    return last[0] if last else None
