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
