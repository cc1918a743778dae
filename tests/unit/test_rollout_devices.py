"""Which GPU a disaggregated rollout worker uses (issue 34, items 2 and 3), decided on CPU with faked CUDA calls.

The CUDA facts the fakes model: the current device is per host thread and a new thread starts on device 0; a bare
"cuda" means the calling thread's current device; NCCL works on the current device. vLLM's "uni" executor takes
its device index from the device config ("cuda" without an index: 0), "external_launcher" from LOCAL_RANK.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
import torch.distributed as dist

from r1zero.roles import Bridge, Role
from r1zero.rollout import worker as worker_module
from r1zero.rollout.vllm_engine import _executor_backend


class FakeCuda:
    """Per-thread current device (0 in a new thread), as the CUDA runtime keeps it."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.allocations: list[tuple[str, int]] = []  # (device asked for, the thread's current device)

    def set_device(self, device: Any) -> None:
        self._local.index = torch.device(device).index

    def current(self) -> int:
        return getattr(self._local, "index", 0)

    def empty(self, shape: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
        self.allocations.append((str(device), self.current()))
        return torch.zeros(shape, dtype=dtype)  # the data stays on the CPU: only the choice is checked


class HeadersBridge:
    """A worker's bridge that hands out three tensor headers and checks each broadcast's device."""

    def __init__(self, cuda: FakeCuda, device: str) -> None:
        self.cuda, self.device = cuda, device
        self.headers: list[Any] = [(f"w{i}", (4,), torch.float32) for i in range(3)] + [None]
        self.broadcast_on: list[int] = []

    def read(self, key: str, waiting_for: str, **_: Any) -> Any:
        return self.headers[int(key.rsplit("/", 1)[1])]

    def broadcast(self, tensor: torch.Tensor) -> None:
        self.broadcast_on.append(self.cuda.current())


class Loader:
    def update_weights(self, stream: Any, version: int) -> None:
        self.names = [name for name, _ in stream]


def test_weights_read_ahead_land_on_the_workers_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker on LOCAL_RANK 3 (main thread on cuda:3), weights received by the read-ahead thread: every buffer
    must be allocated and broadcast with cuda:3 current in that thread, not the new thread's default GPU 0."""
    cuda = FakeCuda()
    monkeypatch.setattr(torch.cuda, "set_device", cuda.set_device)
    monkeypatch.setattr(torch, "empty", cuda.empty)
    cuda.set_device("cuda:3")  # the main thread, as r1zero.distributed.init_process_group sets it
    bridge = HeadersBridge(cuda, "cuda:3")
    engine = Loader()
    role = Role(rank=3, learners=3, workers=1)
    worker_module._execute({"op": "weights", "version": 1}, engine, bridge, role, read_ahead_bytes=1 << 20)  # type: ignore[arg-type]
    assert engine.names == ["w0", "w1", "w2"]
    assert cuda.allocations == [("cuda:3", 3)] * 3
    assert bridge.broadcast_on == [3, 3, 3]


class FakeNcclGroup:
    class Options:
        _timeout: Any = None

    def __init__(self, *args: Any) -> None:
        pass


def test_the_nccl_bridge_names_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """With NCCL the bridge's device carries LOCAL_RANK's index: "cuda" alone would mean GPU 0 in the read-ahead
    thread (the test above) and wherever else no device was set."""
    monkeypatch.setattr(dist, "ProcessGroupNCCL", FakeNcclGroup, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    bridge = Bridge(dist.HashStore(), Role(rank=3, learners=3, workers=1), 5.0, "nccl")
    assert bridge.device == "cuda:3"
    monkeypatch.setattr(dist, "ProcessGroupGloo", FakeNcclGroup)
    assert Bridge(dist.HashStore(), Role(rank=3, learners=3, workers=1), 5.0, "gloo").device == "cpu"


@pytest.mark.parametrize(
    "local_rank,tp,expected",
    [
        ("7", 1, "external_launcher"),  # a lone worker on the last of 8 GPUs: uni would take GPU 0
        ("0", 1, "uni"),  # a single process on GPU 0: in-process, no rendezvous
        ("0", 2, "external_launcher"),  # tensor parallel always needs the launcher's ranks
    ],
)
def test_a_lone_worker_builds_vllm_on_its_local_rank(
    local_rank: str, tp: int, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's own world has size 1 (roles.rollout_workers=1); its engine must still land on LOCAL_RANK's
    GPU, which only external_launcher reads."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 1)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert _executor_backend(tp) == expected
