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


# Launcher variables an in-process run may leave behind (DeepSpeed's init writes RANK, WORLD_SIZE, LOCAL_RANK,
# MASTER_ADDR/PORT into os.environ). A later test, or a command it starts, would then take itself for rank 0 of a
# torchrun world: HF's Trainer tried an env:// rendezvous without MASTER_ADDR and failed.
LAUNCHER_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
)
_LAUNCHER_ENV_AT_START = {name: os.environ.get(name) for name in LAUNCHER_VARS}


@pytest.fixture(autouse=True)
def _no_launcher_env_leaks() -> Iterator[None]:
    yield
    for name, value in _LAUNCHER_ENV_AT_START.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
