"""Shared test setup: the process environment, GPU skipping, and the tiny local model."""

from __future__ import annotations

import os
from collections.abc import Iterator

from r1zero.env import setup_environment

setup_environment()

import pytest  # noqa: E402


def _gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _gpu_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """The ~0.5M-param local Qwen2 model (built once, cached under R1ZERO_CACHE_DIR)."""
    from r1zero.models import build_preset

    return str(build_preset("tiny"))


@pytest.fixture(autouse=True)
def _no_wandb_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "offline"))


# Launcher variables an in-process run leaves behind: r1zero's single-process world sets LOCAL_RANK (DeepSpeed needs
# it for the rest of the session) and DeepSpeed's init may add RANK, WORLD_SIZE, MASTER_*. HF's Trainer (r1zero-sft)
# reads LOCAL_RANK as "launched by torchrun" and tries an env:// rendezvous: tests that run it in-process, or start
# commands a user would type, take this fixture.
LAUNCHER_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
)


@pytest.fixture
def clean_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def restore_launcher_env() -> Iterator[None]:
    """The launcher variables as they were before the test, including those a library sets while it runs
    (accelerate writes RANK and WORLD_SIZE when it finds a process group; monkeypatch restores only what it set).
    A RANK left behind sends the next in-process world to an env:// rendezvous without MASTER_ADDR."""
    before = {name: os.environ.get(name) for name in LAUNCHER_VARS}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
